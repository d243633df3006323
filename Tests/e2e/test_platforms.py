"""KDL 5 and KDL 6 (issue 17), end to end with the real helpers against the stack: BACKUP_PLATFORM=auto against a
KDL 5-shaped API (the stack's double) and a KDL 6-shaped one (a second double serving KDL 6's custom resources, shapes
from KDL-FACTS.md), the `postgres` component with two databases on two PostgreSQL servers, and the `volumes` component.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from restore_support import (  # noqa: E402
    ROOT, createdb_role, drop_database, free_port, job_env, psql, run_restore, s3_client, sh, superuser_env,
    table_fingerprint, tree_digest,
)

BACKUP = ROOT / "backup" / "backup.sh"
DOUBLE = ROOT / "Tests" / "fixtures" / "kube_api_double.py"
KDL6_PROJECTS = "kdlprojects.v1.kdl.konstellation.io"
KDL6_USERTOOLS = "kdlusertools.v1.kdl.konstellation.io"


def kdl6_objects(namespace: str) -> dict:
    """What a KDL 6 platform puts in its namespace: KDLProject named <projectId>, KDLUserTools, per-user Secrets."""
    crds = [{"group": "kdl.konstellation.io", "version": "v1", "plural": "kdlprojects", "kind": "KDLProject", "singular": "kdlproject"},
            {"group": "kdl.konstellation.io", "version": "v1", "plural": "kdlusertools", "kind": "KDLUserTools", "singular": "kdlusertools"}]
    items = []
    for project in ("churn", "sales-forecast"):
        items.append({"apiVersion": "kdl.konstellation.io/v1", "kind": "KDLProject",
                      "metadata": {"name": project, "namespace": namespace, "uid": str(uuid.uuid4())},
                      "spec": {"projectId": project, "mlflow": {"persistentVolume": {"size": "1Gi"}}}})
    for user in ("alice", "bob"):
        items.append({"apiVersion": "kdl.konstellation.io/v1", "kind": "KDLUserTools",
                      "metadata": {"name": f"{user}-usertools", "namespace": namespace},
                      "spec": {"username": user, "usernameSlug": user}})
        items.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                      "metadata": {"name": f"{user}-ssh-keys", "namespace": namespace},
                      "data": {"KDL_USER_PUBLIC_SSH_KEY": "c3NoLWVkMjU1MTkgQUFBQQ=="}})
    # KDL 5's names: not KDL 6's Secrets, left out by its default regex.
    items.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                  "metadata": {"name": "codeserver-oauth2-secrets-alice", "namespace": namespace}, "data": {"X": "eA=="}})
    items.append({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                  "metadata": {"name": "keycloak", "namespace": namespace}, "data": {"admin-password": "eA=="}})
    return {"crds": crds, "items": items}


@pytest.fixture(scope="module")
def kdl6_api(tmp_path_factory):
    directory = tmp_path_factory.mktemp("kdl6-api")
    (directory / "objects.json").write_text(json.dumps(kdl6_objects("kdl")))
    process = subprocess.Popen([sys.executable, str(DOUBLE), "--port", "0", "--dir", str(directory),
                                "--objects", str(directory / "objects.json")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not (directory / "port").exists():
        assert process.poll() is None and time.monotonic() < deadline, "the KDL 6 API double did not start"
        time.sleep(0.05)
    yield {"K8S_SERVER": f"https://127.0.0.1:{(directory / 'port').read_text().strip()}", "K8S_TOKEN_FILE": str(directory / "token"),
           "K8S_CA_FILE": str(directory / "ca.crt"), "K8S_NAMESPACE": "kdl"}
    process.terminate()
    process.wait(timeout=10)


def manifest(env, set_id=None):
    shown = run_restore(env, "show", set_id or "latest", "--json", "--allow-partial")
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def backup(env, **extra):
    return subprocess.run([str(BACKUP)], env=dict(env, **extra), capture_output=True, text=True, timeout=600)


def kdl6_mlflow_root(stack, root: Path) -> dict[str, str]:
    """KDL 6's host-path folders, <ns>-<project>-mlflow-pvc-<uid>, each with a copy of a seeded store."""
    sources = sorted(Path(stack["MLFLOW_ROOT"]).glob("kdl-*-mlflow-claim-pvc-*/mlflow.db"))[:2]
    folders = {}
    for source, project in zip(sources, ("churn", "sales-forecast")):
        folder = root / f"kdl-{project}-mlflow-pvc-{uuid.uuid4()}"
        folder.mkdir(parents=True)
        shutil.copy(source, folder / "mlflow.db")
        folders[project] = folder.name
    return folders


def test_auto_finds_kdl6_and_backs_up_what_kdl6_holds(stack, bin_dir, tmp_path, kdl6_api):
    env = job_env(stack, bin_dir, tmp_path, f"platform-kdl6-{uuid.uuid4().hex[:8]}")
    env.update(kdl6_api)
    mlflow_root = tmp_path / "hostpath"
    folders = kdl6_mlflow_root(stack, mlflow_root)
    env["MLFLOW_ROOT"] = str(mlflow_root)
    result = backup(env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'platform=kdl6 reason="BACKUP_PLATFORM=auto: the API server serves {KDL6_PROJECTS}"' in result.stderr

    m = manifest(env)
    assert m["platform"] == "kdl6"
    assert [c["name"] for c in m["components"]] == ["mongodb", "mlflow", "kubernetes"]  # no Gitea on KDL 6
    keys = {o["key"] for c in m["components"] for o in c["objects"]}
    assert {k for k in keys if k.startswith("mongodb/")} == {"mongodb/kdl.archive.gz"}  # not admin
    assert {k for k in keys if k.startswith("kubernetes/")} == {
        "kubernetes/kdlprojects.yaml.zst", "kubernetes/kdlusertools.yaml.zst", "kubernetes/secrets.yaml.zst"}
    mlflow = next(c for c in m["components"] if c["name"] == "mlflow")["details"]
    assert sorted(p["project"] for p in mlflow["projects"]) == ["churn", "sales-forecast"]

    out = tmp_path / "yaml"
    restored = run_restore(env, "restore", "kubernetes", "latest", "--output", str(out))
    assert restored.returncode == 0, restored.stderr
    names = {f.name: sorted(d["metadata"]["name"] for d in yaml.safe_load_all(f.read_text()) if d) for f in out.glob("*.yaml")}
    assert names == {"kdlprojects.yaml": ["churn", "sales-forecast"], "kdlusertools.yaml": ["alice-usertools", "bob-usertools"],
                     "secrets.yaml": ["alice-ssh-keys", "bob-ssh-keys"]}

    # A new cluster: each claim has a new uid and an empty folder; the restore finds it by project (KDL 6's names).
    target = tmp_path / "new-hostpath"
    new = {p: target / f"kdl-{p}-mlflow-pvc-{uuid.uuid4()}" for p in folders}
    for folder in new.values():
        folder.mkdir(parents=True)
    restored = run_restore(dict(env, MLFLOW_ROOT=str(target)), "restore", "mlflow", "latest", "--yes")
    assert restored.returncode == 0, restored.stderr
    for project, folder in new.items():
        assert (folder / "mlflow.db").is_file(), f"{project} was not restored into its new claim's folder"
    assert sorted(p.name for p in target.iterdir()) == sorted(f.name for f in new.values())


def test_auto_finds_kdl5_on_the_stack_and_an_explicit_platform_wins(stack, bin_dir, tmp_path):
    env = job_env(stack, bin_dir, tmp_path, f"platform-kdl5-{uuid.uuid4().hex[:8]}")
    env["BACKUP_COMPONENTS"] = "gitea kubernetes"
    result = backup(env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "platform=kdl5 reason=\"BACKUP_PLATFORM=auto: the API server serves kdlprojects.v1.project.konstellation.io\"" in result.stderr
    m = manifest(env)
    assert m["platform"] == "kdl5"
    assert [(c["name"], c["status"]) for c in m["components"]] == [
        ("gitea", "success"), ("mongodb", "skipped"), ("mlflow", "skipped"), ("kubernetes", "success")]

    # BACKUP_PLATFORM=kdl6 against KDL 5's API: its defaults, though nothing of KDL 6's is served.
    env["BACKUP_COMPONENTS"] = "kubernetes"
    result = backup(env, BACKUP_PLATFORM="kdl6", BACKUP_ID="20300101T000000Z")
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'reason="BACKUP_PLATFORM=kdl6"' in result.stderr
    m = manifest(env, "20300101T000000Z")
    assert m["platform"] == "kdl6"
    assert [c["name"] for c in m["components"]] == ["mongodb", "mlflow", "kubernetes"]

    bad = backup(env, BACKUP_PLATFORM="kdl7")
    assert bad.returncode == 64
    assert bad.stderr.strip().splitlines()[-1] == "backup: BACKUP_PLATFORM must be auto, kdl5 or kdl6 (got 'kdl7')"


def test_without_an_api_server_auto_falls_back_to_kdl5_and_says_why(stack, bin_dir, tmp_path):
    env = job_env(stack, bin_dir, tmp_path, f"platform-none-{uuid.uuid4().hex[:8]}")
    for name in ("K8S_SERVER", "K8S_TOKEN_FILE", "K8S_CA_FILE"):
        env.pop(name, None)
    env["BACKUP_COMPONENTS"] = "gitea"
    result = backup(env, BACKUP_PLATFORM="auto")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "platform=kdl5 reason=\"BACKUP_PLATFORM=auto: the API server could not be asked (k8s-export exit 64" in result.stderr
    assert manifest(env)["platform"] == "kdl5"


class PostgresServer:
    """A second PostgreSQL 15 cluster (Debian's binaries, as the stack's) on a free port, password auth; run as the
    postgres user when we are root (initdb refuses root), in a folder of its own under /tmp it can reach."""

    def __init__(self, bin_dir: str):
        self.dir, self.bin, self.port = Path(tempfile.mkdtemp(prefix="kdl-pg2.")), Path(bin_dir), free_port()
        self.password = uuid.uuid4().hex
        self.as_pg = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] if os.geteuid() == 0 else []

    def __enter__(self):
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        os.chmod(self.dir, 0o755)
        if self.as_pg:
            shutil.chown(self.dir, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        subprocess.run([*self.as_pg, str(self.bin / "initdb"), "-D", str(self.dir / "data"), "-U", "postgres", "--auth=scram-sha-256",
                        f"--pwfile={pwfile}", "--no-sync"], check=True, capture_output=True, timeout=120)
        subprocess.run([*self.as_pg, str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w", "-o",
                        f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                       check=True, capture_output=True, timeout=120)
        return self

    def env(self, base):
        return dict(base, PGHOST="127.0.0.1", PGPORT=str(self.port), PGUSER="postgres", PGPASSWORD=self.password)

    def __exit__(self, *exc):
        subprocess.run([*self.as_pg, str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)


def seed_table(env, db, rows):
    psql(env, db, f"CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, {rows}) g")


def test_postgres_two_databases_on_two_servers_restore_table_by_table(stack, bin_dir, tmp_path):
    env = job_env(stack, bin_dir, tmp_path, f"postgres-{uuid.uuid4().hex[:8]}")
    su = superuser_env(env, stack)
    drop_database(env, stack, "drone")
    psql(su, "postgres", "CREATE DATABASE drone")
    seed_table(su, "drone", 120)
    with PostgresServer(stack["STACK_PG_BIN"]) as keycloak:
        kc = keycloak.env(env)
        psql(kc, "postgres", "CREATE DATABASE keycloak")
        seed_table(kc, "keycloak", 75)
        before = {"drone": table_fingerprint(su, "drone"), "keycloak": table_fingerprint(kc, "keycloak")}
        dbs = {"BACKUP_POSTGRES_DATABASES": "drone keycloak", "BACKUP_COMPONENTS": "postgres",
               "PG_DRONE_USER": su["PGUSER"], "PG_DRONE_PASSWORD": su["PGPASSWORD"],
               "PG_KEYCLOAK_PORT": str(keycloak.port), "PG_KEYCLOAK_USER": "postgres", "PG_KEYCLOAK_PASSWORD": keycloak.password}
        result = backup(env, **dbs)
        assert result.returncode == 0, result.stderr[-3000:]
        assert keycloak.password not in result.stderr and su["PGPASSWORD"] not in result.stderr
        m = manifest(env)
        [pg] = [c for c in m["components"] if c["name"] == "postgres"]
        assert [o["key"] for o in pg["objects"]] == ["postgres/drone.dump", "postgres/keycloak.dump"]
        assert pg["details"]["databases"]["keycloak"]["port"] == keycloak.port
        assert keycloak.password not in json.dumps(m)

        # Both dropped, then restored (one at a time, then both): table by table as they were.
        drop_database(env, stack, "drone")
        psql(kc, "postgres", "DROP DATABASE keycloak WITH (FORCE)")
        restore_env = dict(env, **dbs)
        one = run_restore(restore_env, "restore", "postgres:keycloak", "latest", "--yes")
        assert one.returncode == 0, one.stderr
        assert table_fingerprint(kc, "keycloak") == before["keycloak"]
        assert psql(su, "postgres", "SELECT count(*) FROM pg_database WHERE datname = 'drone'").strip() == "0"
        both = run_restore(restore_env, "restore", "postgres", "latest", "--yes")
        assert both.returncode == 0, both.stderr
        assert table_fingerprint(su, "drone") == before["drone"]
        assert table_fingerprint(kc, "keycloak") == before["keycloak"]

        unknown = run_restore(restore_env, "restore", "postgres:hub", "latest", "--dry-run")
        assert unknown.returncode == 66
        assert "has no postgres:hub (it has: drone.dump keycloak.dump)" in unknown.stderr

        # A wrong password for one database: only that one fails (exit 3, partial, beside Gitea); the other is stored.
        result = backup(env, **dict(dbs, PG_KEYCLOAK_PASSWORD="wrong-" + uuid.uuid4().hex, BACKUP_ID="20300102T000000Z",
                                    BACKUP_COMPONENTS="gitea postgres"))
        assert result.returncode == 3, result.stderr[-3000:]
        m = manifest(env, "20300102T000000Z")
        assert m["status"] == "partial"
        [pg] = [c for c in m["components"] if c["name"] == "postgres"]
        assert [o["key"] for o in pg["objects"]] == ["postgres/drone.dump"]
        assert pg["status"] == "failure" and pg["error"].startswith("keycloak: skipped: PostgreSQL 127.0.0.1:")
        assert pg["details"]["databases"]["keycloak"]["stored"] is False
    drop_database(env, stack, "drone")


def test_postgres_and_volumes_need_their_lists(stack, bin_dir, tmp_path):
    env = job_env(stack, bin_dir, tmp_path, "unused")
    for components, line in (("postgres", "BACKUP_COMPONENTS selects postgres but BACKUP_POSTGRES_DATABASES lists no database"),
                             ("volumes", "BACKUP_COMPONENTS selects volumes but BACKUP_VOLUMES lists no folder")):
        result = backup(env, BACKUP_COMPONENTS=components)
        assert result.returncode == 64
        assert result.stderr.strip().splitlines()[-1] == f"backup: {line}"
    result = backup(env, BACKUP_VOLUMES="drone=relative/path")
    assert result.returncode == 64 and "is not name=/absolute/path" in result.stderr


def test_volumes_two_folders_one_with_excludes_and_hostile_entries_refused(stack, bin_dir, tmp_path):
    env = job_env(stack, bin_dir, tmp_path, f"volumes-{uuid.uuid4().hex[:8]}")
    drone, extra = tmp_path / "drone-pvc", tmp_path / "extra"
    for folder, files in ((drone, {"data/builds.txt": "1\n2\n", "cache/tmp.bin": "x" * 100, "logs/a.log": "log\n"}),
                          (extra, {"conf/app.ini": "[server]\n"})):
        for name, text in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
    os.symlink("/etc", extra / "escape")  # stored (counted unsafe), refused on restore
    vols = {"BACKUP_COMPONENTS": "volumes", "BACKUP_VOLUMES": f"drone={drone} extra={extra}",
            "BACKUP_VOLUME_DRONE_EXCLUDE": "cache logs/"}
    result = backup(env, **vols)
    assert result.returncode == 0, result.stderr[-3000:]
    [comp] = [c for c in manifest(env)["components"] if c["name"] == "volumes"]
    assert [o["key"] for o in comp["objects"]] == ["volumes/drone.tar.zst", "volumes/extra.tar.zst"]
    assert comp["details"]["volumes"]["drone"]["excluded"] == ["cache", "logs"]
    assert comp["details"]["volumes"]["extra"]["unsafe"] == 1

    target = tmp_path / "restored"
    target.mkdir()
    restored = run_restore(env, "restore", "volumes:drone", "latest", "--target", str(target))
    assert restored.returncode == 0, restored.stderr
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == ["data", "data/builds.txt"]
    assert tree_digest(target) == tree_digest(drone, skip=("cache", "logs"))

    two = run_restore(env, "restore", "volumes", "latest", "--target", str(target), "--dry-run")
    assert two.returncode == 64 and "--target takes one volume" in two.stderr
    live = run_restore(env, "restore", "volumes:drone", "latest")
    assert live.returncode == 64 and "without --yes" in live.stderr
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    refused = run_restore(env, "restore", "volumes:extra", "latest", "--target", str(hostile))
    assert refused.returncode == 74
    assert "symlink to absolute path" in refused.stderr
    assert list(hostile.iterdir()) == []
