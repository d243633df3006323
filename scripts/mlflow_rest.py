"""Reads MLflow stores the way KDL's users do: `mlflow server` (.venv-mlflow) on the store, then MLflow's REST API.

Used by scripts/compare-restore.py (the demo's "MLflow server reads restored stores" row) and the end-to-end tests.
The server runs with job execution off and one worker (MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false, --workers 1):
about 400 MB while it runs, one server at a time.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MLFLOW = ROOT / ".venv-mlflow" / "bin" / "mlflow"
PAGE = 1000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MLflowServer:
    """`mlflow server` on one SQLite store, on a free port of 127.0.0.1; a context manager."""

    def __init__(self, store: Path, start_seconds: float = 180):
        if not os.access(MLFLOW, os.X_OK):
            raise RuntimeError(f"missing {MLFLOW}: run scripts/setup.sh")
        self.store = Path(store).resolve()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.scratch = tempfile.TemporaryDirectory(prefix="kdl-mlflow-server.")
        self.log = Path(self.scratch.name) / "server.log"
        self.start_seconds = start_seconds
        self.process = None

    def __enter__(self) -> "MLflowServer":
        env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_TRACKING_URI="")
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [str(MLFLOW), "server", "--backend-store-uri", f"sqlite:///{self.store}", "--host", "127.0.0.1",
                 "--port", str(self.port), "--workers", "1",
                 "--default-artifact-root", str(Path(self.scratch.name) / "artifacts")],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.scratch.name, start_new_session=True)
        deadline = time.monotonic() + self.start_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server on {self.store} exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server on {self.store} did not answer within {self.start_seconds:.0f}s: {self.log_tail()}")

    def __exit__(self, *_exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.scratch.cleanup()

    def log_tail(self) -> str:
        try:
            return " ".join(self.log.read_text(errors="replace").splitlines()[-5:])
        except OSError:
            return "(no log)"

    def call(self, method: str, path: str, body: dict | None = None, query: dict | None = None) -> dict:
        url = f"{self.url}/api/2.0/mlflow/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as answer:
            return json.loads(answer.read() or b"{}")


def paged(server: MLflowServer, method: str, path: str, field: str, body: dict | None = None, query: dict | None = None):
    """Every item of a paged MLflow list (page_token / next_page_token)."""
    token = None
    while True:
        if body is not None:
            page = server.call(method, path, {**body, **({"page_token": token} if token else {})})
        else:
            page = server.call(method, path, query={**(query or {}), **({"page_token": token} if token else {})})
        yield from page.get(field, [])
        token = page.get("next_page_token")
        if not token:
            return


def snapshot(server: MLflowServer) -> dict:
    """Experiments, runs (params, tags, every metric's full history) and registered models, as the API answers."""
    experiments = {}
    for experiment in paged(server, "POST", "experiments/search", "experiments", {"max_results": PAGE, "view_type": "ALL"}):
        experiments[experiment["experiment_id"]] = {
            "name": experiment["name"], "lifecycle_stage": experiment["lifecycle_stage"],
            "artifact_location": experiment.get("artifact_location"),
            "tags": {t["key"]: t.get("value") for t in experiment.get("tags", [])}}
    runs = {}
    if experiments:
        body = {"experiment_ids": sorted(experiments), "max_results": PAGE, "run_view_type": "ALL"}
        for run in paged(server, "POST", "runs/search", "runs", body):
            info, data = run["info"], run.get("data", {})
            histories = {}
            for metric in data.get("metrics", []):
                points = paged(server, "GET", "metrics/get-history", "metrics",
                               query={"run_id": info["run_id"], "metric_key": metric["key"], "max_results": 25000})
                histories[metric["key"]] = sorted((p.get("step", 0), p["timestamp"], p["value"]) for p in points)
            runs[info["run_id"]] = {
                "experiment_id": info["experiment_id"], "run_name": info.get("run_name"), "status": info["status"],
                "start_time": info.get("start_time"), "end_time": info.get("end_time"),
                "lifecycle_stage": info["lifecycle_stage"],
                "params": {p["key"]: p["value"] for p in data.get("params", [])},
                "tags": {t["key"]: t["value"] for t in data.get("tags", [])},
                "metrics": histories}
    models = {}
    for model in paged(server, "GET", "registered-models/search", "registered_models", query={"max_results": PAGE}):
        versions = [(v["version"], v.get("run_id"), v.get("source")) for v in
                    paged(server, "GET", "model-versions/search", "model_versions",
                          query={"filter": f"name='{model['name']}'", "max_results": PAGE})]
        models[model["name"]] = {"description": model.get("description", ""), "versions": sorted(versions)}
    return {"experiments": experiments, "runs": runs, "registered_models": models}


def read_store(store: Path) -> dict:
    """The snapshot of one store, read by a server started for it and stopped after."""
    with MLflowServer(store) as server:
        return snapshot(server)


def counts(snap: dict) -> tuple[int, int, int]:
    """Experiments, runs and metric points of a snapshot."""
    points = sum(len(h) for run in snap["runs"].values() for h in run["metrics"].values())
    return len(snap["experiments"]), len(snap["runs"]), points


def differences(source: dict, restored: dict) -> list[str]:
    """What differs between two snapshots, as short paths (empty: equal)."""
    found = []
    for part in ("experiments", "runs", "registered_models"):
        want, got = source[part], restored[part]
        for key in sorted(set(want) | set(got)):
            if want.get(key) != got.get(key):
                found.append(f"{part}/{key}")
    return found
