"""Values the chart must refuse: each file under Tests/helm/invalid names the message it expects
(`# expect:` lines); the schema or a template `fail` must stop the render with it."""

from __future__ import annotations

import helm_python as helm
import pytest

from chart_support import CHART_DIR, INVALID_DIR, NAMESPACE, expected_messages, read_values, render

INVALID_FILES = sorted(INVALID_DIR.glob("*.yaml"))


def test_there_are_at_least_ten():
    assert len(INVALID_FILES) >= 10


@pytest.mark.parametrize("path", INVALID_FILES, ids=lambda path: path.stem)
def test_render_refuses_with_the_expected_message(chart, path):
    expected = expected_messages(path)
    assert expected, f"{path.name} has no '# expect:' line"
    with pytest.raises(helm.HelmError) as caught:
        render(chart, read_values(path))
    message = str(caught.value)
    assert isinstance(caught.value, (helm.HelmValuesError, helm.HelmRenderError)), type(caught.value)
    for text in expected:
        assert text in message, f"{path.name}: {text!r} not in {message!r}"


SCHEMA_REFUSED = [path for path in INVALID_FILES if any("at '" in text for text in expected_messages(path))]


def test_both_layers_are_exercised():
    assert 10 <= len(SCHEMA_REFUSED) < len(INVALID_FILES), "schema and template checks both need cases"


@pytest.mark.parametrize("path", SCHEMA_REFUSED, ids=lambda path: path.stem)
def test_schema_errors_are_also_lint_errors(path):
    """What the schema refuses, `helm lint` reports too (a template `fail` is a render error only)."""
    report = helm.lint(CHART_DIR, read_values(path), strict=True, namespace=NAMESPACE)
    errors = "\n".join(report["errors"])
    for text in expected_messages(path):
        assert text in errors, f"{path.name}: lint did not report {text!r}: {errors!r}"
