"""The chart's documentation stays true: the README's values table is generated from values.yaml
(and every value has a `# --` comment), the README's install command renders a clean release, and
docs/configuration.md's "Helm values" section names every variable the chart sets."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import helm_python as helm

from chart_support import CHART_DIR, ROOT, VALUES_DIR, env_of, load_chart, pod_spec, read_values, render, workloads

HELM_DOCS = ROOT / "scripts" / "helm-docs.py"


def run_helm_docs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(HELM_DOCS), *args], capture_output=True, text=True, timeout=60)


def test_readme_values_table_is_up_to_date():
    result = run_helm_docs("--check")
    assert result.returncode == 0, result.stderr


def test_every_value_is_in_the_readme():
    readme = (CHART_DIR / "README.md").read_text()
    values = read_values(CHART_DIR / "values.yaml")
    for key in ("backup.schedule", "backup.s3.existingSecret", "backup.verify.identity.key",
                "backup.encryption.ageRecipients", "global.mongodb.connectionString.uri"):
        assert f"| `{key}` |" in readme, key
    assert values["backup"]["enabled"] is False


def test_values_file_points_at_its_schema():
    first = (CHART_DIR / "values.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=values.schema.json"


def test_helm_docs_refuses_an_undocumented_value_and_a_stale_readme(tmp_path):
    copy = tmp_path / "kdl-server"
    shutil.copytree(CHART_DIR, copy)
    values = copy / "values.yaml"
    values.write_text(values.read_text().replace(
        "  # -- Deploy the backup CronJob", "  undocumented: 1\n  # -- Deploy the backup CronJob"))
    result = run_helm_docs("--check", str(copy))
    assert result.returncode == 1 and "backup.undocumented" in result.stderr
    values.write_text(values.read_text().replace("  undocumented: 1\n", "  # -- Newly documented\n  documented: 1\n"))
    result = run_helm_docs("--check", str(copy))
    assert result.returncode == 1 and "out of date" in result.stderr
    assert run_helm_docs(str(copy)).returncode == 0
    assert "| `backup.documented` | int | `1` | Newly documented |" in (copy / "README.md").read_text()
    assert run_helm_docs("--check", str(copy)).returncode == 0


def test_readme_install_command_renders_a_clean_release():
    readme = (CHART_DIR / "README.md").read_text()
    command = re.search(r"```bash\n(helm upgrade --install .*?)\n```", readme, re.S)
    assert command, "no install command in README.md"
    sets = re.findall(r"--set '?([^ '\\\n]+)'?", command.group(1))
    assert len(sets) >= 5
    values: dict = {}
    for expression in sets:
        values = _merge(values, helm.parse_set_string(expression))
    chart = load_chart()
    try:
        rendered = render(chart, values)
    finally:
        chart.close()
    assert "WARNING" not in rendered.notes, rendered.notes
    assert rendered.get("CronJob", "backup")


def test_configuration_doc_names_every_variable_the_chart_sets():
    doc = (ROOT / "docs" / "configuration.md").read_text()
    section = doc.split("## Helm values", 1)[1].split("\n## ", 1)[0]
    chart = load_chart()
    seen: set[str] = set()
    try:
        for path in VALUES_DIR.glob("*.yaml"):
            values = read_values(path)
            rendered = render(chart, values)
            extra = {entry["name"] for entry in values["backup"].get("extraEnv", [])}
            for obj in workloads(rendered):
                container = pod_spec(obj)["containers"][0]
                seen |= set(env_of(container)) - extra
            for secret in rendered.all("Secret"):
                seen |= {key for key in secret.get("data", {}) if key.startswith("NOTIFY_")}
    finally:
        chart.close()
    assert len(seen) > 30
    missing = sorted(name for name in seen if f"`{name}`" not in section)
    assert missing == []
    # And every value the section names exists in values.yaml.
    defaults = read_values(CHART_DIR / "values.yaml")
    for key in set(re.findall(r"`(backup\.[A-Za-z.]+)`", section)):
        node = defaults
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"docs/configuration.md names unknown value {key}"
            node = node[part]


def _merge(base: dict, update: dict) -> dict:
    merged = dict(base)
    for key, value in update.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged
