"""Rendering and inspection helpers shared by the chart tests (Tests/helm)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Iterator

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "helm" / "kdl-server"
VALUES_DIR = Path(__file__).resolve().parent / "values"
INVALID_DIR = Path(__file__).resolve().parent / "invalid"
RELEASE = "kdl"
NAMESPACE = "kdl"
KUBE_VERSIONS = ["1.29", "1.30", "1.31", "1.32", "1.33", "1.34"]

# The Go side logs `fail` calls at INFO; the tests read the raised errors instead.
helm.disable_logging()


def load_chart() -> helm.Chart:
    return helm.Chart.load(CHART_DIR)


def read_values(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def expected_messages(path: Path) -> list[str]:
    """The `# expect: ...` header lines of an invalid values file."""
    return [
        line.split(":", 1)[1].strip()
        for line in path.read_text().splitlines()
        if line.startswith("# expect:")
    ]


class Rendered:
    """The manifests of one render, parsed, with lookups by kind and name."""

    def __init__(self, files: dict[str, str]):
        self.files = files
        self.notes = next((text for name, text in files.items() if name.endswith("NOTES.txt")), "")
        self.objects: list[dict[str, Any]] = []
        for name, text in files.items():
            if name.endswith(".txt"):
                continue
            self.objects.extend(doc for doc in yaml.safe_load_all(text) if doc)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        matches = [obj for obj in self.all(kind) if obj["metadata"]["name"] == name]
        assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}: {self.names()}"
        return matches[0]

    def names(self) -> list[str]:
        return sorted(f"{obj['kind']}/{obj['metadata']['name']}" for obj in self.objects)

    def manifest_text(self) -> str:
        return yaml.safe_dump_all(self.objects, sort_keys=True)


def render(chart: helm.Chart, values: dict[str, Any]) -> Rendered:
    return Rendered(chart.render(values, name=RELEASE, namespace=NAMESPACE))


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a CronJob or a Pod."""
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if obj["kind"] == "Pod":
        return obj["spec"]
    raise AssertionError(f"no pod spec in {obj['kind']}")


def workloads(rendered: Rendered) -> Iterator[dict[str, Any]]:
    yield from rendered.all("CronJob")
    yield from rendered.all("Pod")


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A container's env as {name: entry}; fails on duplicates."""
    entries = container.get("env", [])
    names = [entry["name"] for entry in entries]
    assert len(names) == len(set(names)), f"duplicate env names in {container['name']}: {names}"
    return {entry["name"]: entry for entry in entries}


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret.get("data", {}).items()}
