"""Restored MLflow stores as KDL's users meet them: real `mlflow server` (.venv-mlflow, MLflow 3.17) on each store,
read through MLflow's REST API (scripts/mlflow_rest.py) and compared with the source.

- the session's full backup, restored by `restore all`: every store answers as its source did;
- a store written through a live `mlflow server` while backup.sh runs: the restored store is one consistent moment
  between the start and the end of the backup (every run, param and tag; each metric history a prefix);
- a target store a fresh `mlflow server` just made (only the Default experiment) does not stop the restore (issue 18).

The stack's stores are copied before a server reads them: a server checkpoints a WAL store's -wal when it stops.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from restore_support import BACKUP, ROOT, full_backup, job_env, run_restore, s3_client, sh, sqlite_dump  # noqa: F401

sys.path.insert(0, str(ROOT / "scripts"))
import mlflow_rest  # noqa: E402


def copy_store(folder: Path, into: Path) -> Path:
    """mlflow.db with its -wal and -shm (a consistent copy while nothing writes), without artifacts."""
    target = into / folder.name
    target.mkdir(parents=True)
    for name in ("mlflow.db", "mlflow.db-wal", "mlflow.db-shm"):
        if (folder / name).exists():
            shutil.copy2(folder / name, target / name)
    return target / "mlflow.db"


@pytest.fixture(scope="module")
def full(full_backup):
    return full_backup


def test_every_restored_store_answers_mlflow_server_as_its_source(full, tmp_path):
    root = tmp_path / "restored"
    root.mkdir()
    result = run_restore(full.restore_env(MLFLOW_ROOT=str(root)), "restore", "mlflow", "latest",
                         "--identity", str(full.identity), "--yes")
    assert result.returncode == 0, result.stderr[-3000:]
    projects = full.details("mlflow")["projects"]
    assert len(projects) == 3
    for project in projects:
        source = copy_store(Path(full.env["MLFLOW_ROOT"]) / project["folder"], tmp_path / "source")
        assert sqlite_dump(source) == full.source["mlflow"][project["folder"]], "the source changed since the backup"
        before, after = mlflow_rest.read_store(source), mlflow_rest.read_store(root / project["folder"] / "mlflow.db")
        assert before["runs"] and before["registered_models"], project  # the seed's real MLflow stores
        assert mlflow_rest.differences(before, after) == [], project["folder"]
        assert after == before


class Writer(threading.Thread):
    """Logs one metric point after another to a run through the live server's REST API until stopped."""

    def __init__(self, server, run_id):
        super().__init__(daemon=True)
        self.server, self.run_id, self.step, self.stop = server, run_id, 0, threading.Event()
        self.error = None

    def run(self):
        try:
            while not self.stop.is_set():
                self.server.call("POST", "runs/log-batch", {"run_id": self.run_id, "metrics": [
                    {"key": "live_loss", "value": 1.0 / (self.step + 1), "timestamp": int(time.time() * 1000), "step": self.step}]})
                self.step += 1
                time.sleep(0.02)
        except Exception as error:  # noqa: BLE001  (reported by the test)
            self.error = error


def test_a_store_written_while_the_backup_runs_restores_to_one_consistent_moment(stack, bin_dir, tmp_path):
    live_root, restored_root = tmp_path / "live", tmp_path / "restored"
    restored_root.mkdir()
    source_folder = sorted(Path(stack["MLFLOW_ROOT"]).glob("kdl-churn-mlflow-claim-pvc-*"))[0]
    store = copy_store(source_folder, live_root)
    env = job_env(stack, bin_dir, tmp_path, f"e2e-mlflow-live-{uuid.uuid4().hex[:8]}")
    sh(f"age-keygen -o {tmp_path}/identity.txt 2>/dev/null", env)
    env.update(BACKUP_COMPONENTS="mlflow", MLFLOW_ROOT=str(live_root), BACKUP_KEEP_LAST="0",
               BACKUP_AGE_RECIPIENTS=sh(f"age-keygen -y {tmp_path}/identity.txt", env).stdout.strip())
    with mlflow_rest.MLflowServer(store) as server:
        experiment = next(e for e in server.call("POST", "experiments/search", {"max_results": 10})["experiments"]
                          if e["experiment_id"] != "0")
        run_id = server.call("POST", "runs/create", {"experiment_id": experiment["experiment_id"], "run_name": "live"})["run"]["info"]["run_id"]
        writer = Writer(server, run_id)
        writer.start()
        while writer.step < 20 and writer.is_alive():
            time.sleep(0.05)
        before = mlflow_rest.snapshot(server)
        backup = subprocess.run([str(BACKUP)], env=env, capture_output=True, text=True, timeout=600)
        after_backup = writer.step
        time.sleep(0.5)
        writer.stop.set()
        writer.join(30)
        after = mlflow_rest.snapshot(server)
    assert writer.error is None, writer.error
    assert backup.returncode == 0, backup.stderr[-3000:]
    assert len(before["runs"][run_id]["metrics"]["live_loss"]) < after_backup, "nothing was written while the backup ran"
    result = run_restore({**env, "MLFLOW_ROOT": str(restored_root)}, "restore", "mlflow", "latest",
                         "--identity", str(tmp_path / "identity.txt"), "--yes")
    assert result.returncode == 0, result.stderr[-3000:]
    restored = mlflow_rest.read_store(restored_root / source_folder.name / "mlflow.db")
    assert restored["experiments"] == after["experiments"] and restored["registered_models"] == after["registered_models"]
    assert set(restored["runs"]) == set(after["runs"])
    for run, got in restored["runs"].items():
        want = after["runs"][run]
        assert (got["params"], got["tags"]) == (want["params"], want["tags"]), run
        for key, history in want["metrics"].items():
            if run != run_id or key != "live_loss":
                assert got["metrics"][key] == history, (run, key)
    live = restored["runs"][run_id]["metrics"]["live_loss"]
    assert before["runs"][run_id]["metrics"]["live_loss"] == live[:len(before["runs"][run_id]["metrics"]["live_loss"])]
    assert live == after["runs"][run_id]["metrics"]["live_loss"][:len(live)], "not one moment of the store"
    s3, bucket = s3_client(stack), stack["BACKUP_S3_BUCKET"]
    [key] = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=env["BACKUP_S3_PREFIX"] + "/")["Contents"]
             if o["Key"].endswith("/manifest.json")]
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert manifest["status"] == "success"
    [component] = [c for c in manifest["components"] if c["name"] == "mlflow"]
    assert [p["folder"] for p in component["details"]["projects"]] == [source_folder.name]


def test_a_store_a_fresh_mlflow_server_just_made_does_not_stop_the_restore(full, tmp_path):
    root = tmp_path / "mlflow"
    folder = full.details("mlflow")["projects"][0]["folder"]
    fresh = root / folder / "mlflow.db"
    fresh.parent.mkdir(parents=True)
    with mlflow_rest.MLflowServer(fresh) as server:  # a new install's MLflow pod started once
        made = mlflow_rest.snapshot(server)
    assert [e["name"] for e in made["experiments"].values()] == ["Default"] and made["runs"] == {}
    result = run_restore(full.restore_env(MLFLOW_ROOT=str(root)), "restore", "mlflow", "latest",
                         "--identity", str(full.identity), "--yes")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sqlite_dump(fresh) == full.source["mlflow"][folder]
