"""Round trips of a full set made by the REAL backup/backup.sh (issue 8): every component restored by
restore.sh into fresh targets and compared with the source as it was when backed up.

One encrypted backup of the seeded stack per session (restore_support.full_backup); targets are new: a
database created by restore.sh (as a role with CREATEDB), an empty Gitea folder, a fresh nx-27017, an
empty MLflow root, and a kubectl stand-in that records what it is given and in which state it found
the other targets (there is no real kubectl or API server to apply to; `--output` is the other way).
Needs KDL_STACK_ENV (scripts/stack/up.sh) and KDL_BIN_DIR (the helpers).
"""
import json
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from restore_support import (GITEA_EXCLUDES, MongoServer, compare, createdb_role, full_backup,  # noqa: F401
                             database_exists, drop_database, k8s_export, run_restore, sqlite_dump,
                             table_fingerprint, tree_digest)

ORDER = ["k8s-secrets", "gitea-db", "gitea-data", "mongodb", "mlflow", "k8s-resources"]

# kubectl stand-in: one JSON line per call (its arguments, the kinds it was given, and what the other
# targets held at that moment), the YAML it was given, and the kubeconfig restore.sh wrote.
KUBECTL_STUB = r"""#!/usr/bin/env bash
set -euo pipefail
dir=$KUBECTL_STUB_DIR
n=$(( $(find "$dir" -name 'applied-*.yaml' | wc -l) + 1 ))
cat >"$dir/applied-$n.yaml"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  [[ "${args[i]}" == --kubeconfig ]] && cp "${args[i + 1]}" "$dir/kubeconfig-$n"
done
tables=$(psql -X -A -t -c "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'" 2>/dev/null || echo absent)
jq -nc --arg args "$*" --arg kinds "$(sed -n 's/^kind: //p' "$dir/applied-$n.yaml" | sort -u | paste -sd, -)" \
  --arg tables "$tables" --argjson data "$(find "$GITEA_DATA_DIR" -mindepth 1 | wc -l)" \
  --argjson mlflow "$(find "$MLFLOW_ROOT" -name mlflow.db | wc -l)" \
  '{args: $args, kinds: ($kinds | split(",")), pgTables: $tables, dataEntries: $data, mlflowDbs: $mlflow}' >>"$dir/calls.jsonl"
"""


@pytest.fixture(scope="module")
def full(full_backup):
    return full_backup


@pytest.fixture(scope="module")
def restored_all(full, tmp_path_factory):
    """`restore all latest --yes` into fresh targets; yields what the tests compare."""
    tmp = tmp_path_factory.mktemp("restore-all")
    stub = tmp / "stub"
    stub.mkdir()
    (stub / "kubectl").write_text(KUBECTL_STUB)
    (stub / "kubectl").chmod(0o755)
    with createdb_role(full.env, full.stack) as role, MongoServer(tmp / "mongo") as mongo:
        db = f"gitea_all_{uuid.uuid4().hex[:8]}"
        env = full.restore_env(**role, PGDATABASE=db, GITEA_DATA_DIR=str(tmp / "data"), MLFLOW_ROOT=str(tmp / "mlflow"),
                               MONGO_URI=mongo.uri, KUBECTL_STUB_DIR=str(stub), PATH=f"{stub}:{full.env['PATH']}")
        (tmp / "data").mkdir()
        (tmp / "mlflow").mkdir()
        existed = database_exists(full.env, full.stack, db)
        result = run_restore(env, "restore", "all", "latest", "--identity", str(full.identity), "--yes")
        yield {"env": env, "result": result, "db": db, "existed": existed, "tmp": tmp, "stub": stub, "mongo": mongo,
               "calls": [json.loads(line) for line in (stub / "calls.jsonl").read_text().splitlines()]
               if (stub / "calls.jsonl").exists() else []}


def test_restore_all_runs_in_order_secrets_first_custom_resources_last(restored_all):
    result = restored_all["result"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert [line.split()[1] for line in result.stdout.splitlines() if line.startswith("restored: ")] == ORDER
    first, *rest = restored_all["calls"]
    # Secrets are applied before anything else is restored ...
    assert first["kinds"] == ["Secret"]
    assert (first["pgTables"], first["dataEntries"], first["mlflowDbs"]) == ("absent", 0, 0)
    # ... the custom resources last, once the database, the Gitea files and the MLflow stores are back.
    assert sorted(kind for call in rest for kind in call["kinds"]) == ["KDLProject", "UserTools"]
    for call in rest:
        assert int(call["pgTables"]) > 0 and call["dataEntries"] > 0 and call["mlflowDbs"] == 3


def test_restore_all_applies_server_side_with_a_token_file_kubeconfig(restored_all, full):
    calls = restored_all["calls"]
    assert len(calls) == 3
    for n, call in enumerate(calls, 1):
        assert call["args"].endswith("apply --server-side --field-manager=kdl-restore -f -"), call["args"]
        assert "--namespace kdl" in call["args"]
        kubeconfig = (restored_all["stub"] / f"kubeconfig-{n}").read_text()
        assert f'server: "{full.env["K8S_SERVER"]}"' in kubeconfig
        assert f'tokenFile: "{full.env["K8S_TOKEN_FILE"]}"' in kubeconfig
        assert Path(full.env["K8S_TOKEN_FILE"]).read_text().strip() not in kubeconfig


def test_restore_all_kubernetes_objects_equal_a_fresh_export(restored_all, full):
    applied = sorted((restored_all["stub"] / f"applied-{n}.yaml").read_bytes() for n in (1, 2, 3))
    assert applied == sorted(full.k8s.values())
    assert b"kind: Secret" in (restored_all["stub"] / "applied-1.yaml").read_bytes()


def test_restore_all_creates_the_missing_database_with_equal_tables(restored_all, full):
    assert restored_all["result"].returncode == 0
    assert not restored_all["existed"]
    assert "created database" in restored_all["result"].stderr
    restored = table_fingerprint(restored_all["env"], restored_all["db"])
    assert restored == full.source["pg"]
    assert len(restored) == full.details("gitea")["pg_dump"]["tables"]


def test_restore_all_gitea_data_equal_without_excluded_folders_and_fsck_clean(restored_all, full):
    data = restored_all["tmp"] / "data"
    assert compare.tree(data, []) == full.source["data"]
    assert not any((data / excluded).exists() for excluded in GITEA_EXCLUDES)
    repos = sorted(data.glob("git/repositories/*/*.git"))
    assert len(repos) == full.details("gitea")["tar"]["repositories"] > 0
    for repo in repos:
        fsck = subprocess.run(["git", "--git-dir", str(repo), "fsck", "--full", "--strict", "--no-progress"],
                              capture_output=True, text=True)
        assert fsck.returncode == 0 and fsck.stdout.strip() == "", (repo, fsck.stdout, fsck.stderr)


def test_restore_all_mongodb_documents_equal_per_collection(restored_all, full):
    restored = compare.mongo_snapshot(restored_all["mongo"].uri)
    assert restored == full.source["mongo"]
    counted = {f"{db}.{c}": n for db, d in full.details("mongodb")["databases"].items() for c, n in d["collections"].items()}
    assert {name: count for name, (count, _) in restored.items()} == counted


def test_restore_all_mlflow_each_database_equal_in_its_original_folder(restored_all, full):
    root = restored_all["tmp"] / "mlflow"
    projects = full.details("mlflow")["projects"]
    assert sorted(p.name for p in root.iterdir()) == sorted(p["folder"] for p in projects)
    for project in projects:
        assert sqlite_dump(root / project["folder"] / "mlflow.db") == full.source["mlflow"][project["folder"]], project
    for folder, digest in full.source["mlruns"].items():
        assert tree_digest(root / folder / "mlruns") == digest


def test_restore_kubernetes_output_equals_a_fresh_export(full, tmp_path):
    out = tmp_path / "manifests"
    env = dict(full.restore_env(), PATH=f"{tmp_path}:{full.env['PATH']}")
    (tmp_path / "kubectl").write_text("#!/bin/sh\necho kubectl must not run >&2\nexit 99\n")
    (tmp_path / "kubectl").chmod(0o755)
    result = run_restore(env, "restore", "kubernetes", "latest", "--identity", str(full.identity), "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == full.k8s
    assert "kubectl must not run" not in result.stderr
    fresh = k8s_export(full.env, tmp_path / "fresh")  # the cluster still holds exactly what was restored
    assert fresh == full.k8s


def _copy_store(source_db, folder, sql):
    folder.mkdir(parents=True)
    # Read-only: a read-write connection's close would checkpoint and delete the shared stack's WAL files.
    src, dst = sqlite3.connect(f"file:{source_db}?mode=ro", uri=True), sqlite3.connect(folder / "mlflow.db")
    try:
        src.backup(dst)
        dst.executescript(sql)
        dst.commit()
    finally:
        src.close()
        dst.close()


def _stores(root):
    """Folders and mlflow.db bytes under root (mlflow-scan's read-only open of a WAL store may add empty
    -wal/-shm files beside it, as any SQLite reader does; the database itself must not change)."""
    return {p.relative_to(root).as_posix(): p.read_bytes() if p.name == "mlflow.db" else None
            for p in root.rglob("*") if p.is_dir() or p.name == "mlflow.db"}


def test_restore_mlflow_into_the_scanned_folders_creating_missing_ones_refusing_newer(full, tmp_path):
    projects = {p["project"]: p for p in full.details("mlflow")["projects"]}
    assert {"churn", "fraud-detection", "sales-forecast"} <= set(projects)
    source_root = Path(full.env["MLFLOW_ROOT"])
    root = tmp_path / "mlflow"
    # A fresh install: churn's and sales-forecast's claims exist under new names; fraud-detection's is missing.
    churn = root / "kdl-churn-mlflow-claim-pvc-0000new1"
    sales = root / "kdl-sales-forecast-mlflow-claim-pvc-0000new2"
    _copy_store(source_root / projects["churn"]["folder"] / "mlflow.db", churn,
                "UPDATE experiments SET name = name || ' (stale copy)';")
    later_ms = int((time.time() + 3600) * 1000)
    _copy_store(source_root / projects["sales-forecast"]["folder"] / "mlflow.db", sales,
                f"UPDATE runs SET end_time = {later_ms} WHERE run_uuid = (SELECT min(run_uuid) FROM runs);")
    before = _stores(root)
    env = full.restore_env(MLFLOW_ROOT=str(root))

    refused = run_restore(env, "restore", "mlflow", "latest", "--identity", str(full.identity), "--yes")
    assert refused.returncode == 64, refused.stderr
    assert refused.stderr.strip().splitlines()[-1] == (
        f"restore.sh: refusing to replace MLflow databases newer than set {full.set_id} (sales-forecast); --force replaces them")
    assert f"plan: mlflow: project sales-forecast: {sales}/mlflow.db has activity after the backup" in refused.stdout
    assert _stores(root) == before  # nothing changed, not even the projects that were not refused

    forced = run_restore(env, "restore", "mlflow", "latest", "--identity", str(full.identity), "--yes", "--force")
    assert forced.returncode == 0, forced.stderr[-3000:]
    created = root / projects["fraud-detection"]["folder"]
    assert f"plan: mlflow: project fraud-detection: write {created}/mlflow.db (folder created)" in forced.stdout
    assert sorted(p.name for p in root.iterdir()) == sorted([churn.name, sales.name, created.name])
    for folder, project in [(churn, "churn"), (sales, "sales-forecast"), (created, "fraud-detection")]:
        assert sqlite_dump(folder / "mlflow.db") == full.source["mlflow"][projects[project]["folder"]], project
    assert tree_digest(created / "mlruns") == full.source["mlruns"][projects["fraud-detection"]["folder"]]


def test_restore_gitea_db_into_a_missing_database_without_createdb_is_refused(full):
    db = f"gitea_nocreate_{uuid.uuid4().hex[:8]}"
    env = full.restore_env(PGDATABASE=db)  # the stack's gitea role has no CREATEDB
    try:
        result = run_restore(env, "restore", "gitea-db", "latest", "--identity", str(full.identity), "--yes")
        assert result.returncode == 77, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith(f"restore.sh: PostgreSQL at {env['PGHOST']}:{env['PGPORT']}/{db} refused us: ")
        assert "permission denied to create database" in last
        assert not database_exists(full.env, full.stack, db)
    finally:
        drop_database(full.env, full.stack, db)
