"""Sets written by kdl-backup 0.1.0 (Tests/fixtures/sets/, before the component modules) still verify and restore
with today's restore.sh: each is uploaded to the stack's S3 object by object, verified, and every component is
restored into fresh targets and compared with what its sources held at backup time (expected.json)."""
from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import manifest_schema
import pytest
from restore_support import GITEA_EXCLUDES, ROOT, MongoServer, compare, createdb_role, job_env, run_restore, s3_client

SETS = ROOT / "Tests" / "fixtures" / "sets"
EXPECTED = json.loads((SETS / "expected.json").read_text())


def upload(stack, prefix, set_id):
    s3 = s3_client(stack)
    for path in sorted((SETS / set_id).rglob("*")):
        if path.is_file():
            s3.put_object(Bucket=stack["BACKUP_S3_BUCKET"], Key=f"{prefix}/{set_id}/{path.relative_to(SETS / set_id).as_posix()}",
                          Body=path.read_bytes())


@pytest.mark.parametrize("set_id, encrypted", [("20250101T020000Z", False), ("20250102T020000Z", True)])
def test_a_set_written_by_0_1_0_verifies_and_restores_every_component(stack, bin_dir, tmp_path, monkeypatch, set_id,
                                                                     encrypted):
    manifest_schema.check(json.loads((SETS / set_id / "manifest.json").read_text()))
    prefix = f"legacy-{uuid.uuid4().hex[:8]}"
    upload(stack, prefix, set_id)
    work = tmp_path / "work"
    work.mkdir()
    identity = ["--identity", str(SETS / "identity.txt")] if encrypted else []
    base = job_env(stack, bin_dir, work, prefix)

    verify = run_restore(base, "verify", set_id, *identity)
    assert verify.returncode == 0, verify.stderr[-3000:]
    assert "encrypted and not decrypted (no identity): 0" in verify.stdout

    data, mlflow, k8s = tmp_path / "data", tmp_path / "mlflow", tmp_path / "k8s"
    data.mkdir()
    mlflow.mkdir()
    with createdb_role(base, stack) as role, MongoServer(tmp_path / "mongo") as mongo:
        db = f"gitea_legacy_{uuid.uuid4().hex[:8]}"
        env = dict(base, **role, PGDATABASE=db, GITEA_DATA_DIR=str(data), MLFLOW_ROOT=str(mlflow), MONGO_URI=mongo.uri)
        for component in ("gitea", "mongodb", "mlflow"):
            result = run_restore(env, "restore", component, set_id, *identity, "--yes")
            assert result.returncode == 0, f"{component}: {result.stderr[-3000:]}"
        output = run_restore(env, "restore", "kubernetes", set_id, *identity, "--output", str(k8s))
        assert output.returncode == 0, output.stderr[-3000:]

        for name, value in env.items():
            if name.startswith("PG"):
                monkeypatch.setenv(name, value)
        assert {table: list(fingerprint) for table, fingerprint in compare.pg_tables(db).items()} == EXPECTED["gitea-db"]
        assert compare.tree(data, GITEA_EXCLUDES) == EXPECTED["gitea-data"]
        assert compare.mongo_snapshot(mongo.uri) == EXPECTED["mongodb"]
    stores = {name: hashlib.sha256(compare.run("sqlite3", "-readonly", str(path), ".dump").encode()).hexdigest()
              for name, path in compare.mlflow_dbs(mlflow).items()}
    assert stores == EXPECTED["mlflow"]
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in k8s.glob("*.yaml")} == EXPECTED["kubernetes"]
