"""The chart refuses to render into the release that holds the platform (issue 17): Helm would delete the
platform's objects. The refusal (kdl-server.refuseSharedRelease) is rendered here from the chart's own _helpers.tpl
in a throw-away chart, fed the workloads that `lookup` would return; the chart calls it with the namespace's
Deployments and StatefulSets (empty under `helm template`, where nothing can be looked up)."""

from __future__ import annotations

import shutil

import helm_python as helm
import pytest

from chart_support import CHART_DIR, load_chart, render

CALLER = ('{{- include "kdl-server.refuseSharedRelease" (dict "objects" .Values.objects "release" .Release.Name '
          '"namespace" .Release.Namespace) }}\n')


@pytest.fixture
def probe_chart(tmp_path):
    (tmp_path / "templates").mkdir()
    shutil.copy(CHART_DIR / "Chart.yaml", tmp_path / "Chart.yaml")
    shutil.copy(CHART_DIR / "templates" / "_helpers.tpl", tmp_path / "templates" / "_helpers.tpl")
    (tmp_path / "templates" / "refuse.yaml").write_text(CALLER)
    chart = helm.Chart.load(tmp_path)
    yield chart
    chart.close()


def workload(kind, name, release):
    return {"kind": kind, "name": name, "annotations": {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": "kdl"}}


def test_a_workload_of_this_release_stops_the_render_with_what_to_do(probe_chart):
    with pytest.raises(helm.HelmRenderError) as caught:
        probe_chart.render({"objects": [workload("StatefulSet", "gitea", "kdl-server")]}, name="kdl-server", namespace="kdl")
    message = str(caught.value)
    assert 'release "kdl-server" already holds the platform (StatefulSet gitea)' in message
    assert "helm upgrade --install kdl-backup ./helm/kdl-server -n kdl --set backup.enabled=true" in message


def test_other_releases_and_unmanaged_workloads_pass(probe_chart):
    objects = [workload("Deployment", "kdl-server", "kdl-server"), {"kind": "Deployment", "name": "manual", "annotations": {}}]
    assert probe_chart.render({"objects": objects}, name="kdl-backup", namespace="kdl") is not None


def test_the_chart_itself_renders_without_an_api_server():
    chart = load_chart()
    try:
        assert "CronJob/backup" in render(chart, {"backup": {"enabled": True}}).names()
    finally:
        chart.close()
