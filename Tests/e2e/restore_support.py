"""Shared setup of the restore and verify end-to-end suites (test_restore*.py, test_verify*.py).

- Uses Tests/conftest.py's `stack` (the local stack's env) and `bin_dir` (the helpers) fixtures.
- `World`: one test's S3 prefix, environment, psql and hand-built sets (test_restore.py's Gitea-only sets).
- `FullBackup` / `full_backup`: the REAL backup/backup.sh run once per session against the stack (encrypted with a
  fresh age key) into a prefix of its own, with a snapshot of every source taken just before it and checked
  unchanged just after.
- `MongoServer`: a fresh nx-27017 on 127.0.0.1 to restore into; `createdb_role`: a role with CREATEDB;
  `clone_set`: a server-side copy of a set under another prefix/id (to damage or age it); `metrics`.
Comparisons reuse scripts/compare-restore.py (the demo's table): Mongo snapshots, trees, MLflow dumps.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shlex
import shutil
import socket
import subprocess
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import boto3
import manifest_schema
import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
RESTORE = ROOT / "backup" / "restore.sh"
BACKUP = ROOT / "backup" / "backup.sh"
GITEA_EXCLUDES = ("gitea/indexers", "ssh", "lost+found")
SECRET_REGEX = "-ssh-keys$|^codeserver-oauth2-"
K8S_EXPORTS = {  # file written by `restore kubernetes --output` -> k8s-export arguments backup.sh uses
    "kdlprojects.yaml": ["kdlprojects.v1.project.konstellation.io"],
    "usertools.yaml": ["usertools.v1alpha1.kdl.konstellation.io"],
    "secrets.yaml": [f"--name-regex={SECRET_REGEX}", "secrets"],
}


def _load_compare():
    spec = importlib.util.spec_from_file_location("compare_restore", ROOT / "scripts" / "compare-restore.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


compare = _load_compare()


def job_env(stack, bin_dir, tmp, prefix):
    """The environment backup.sh and restore.sh get: the stack's, the helpers first on PATH, our own prefix."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BACKUP_", "PG", "MONGO", "K8S_", "NOTIFY_"))}
    env.update(stack)
    env.update({
        "PATH": f"{bin_dir}:{stack.get('STACK_BIN_DIR', '')}:{os.environ['PATH']}",
        "BACKUP_S3_PREFIX": prefix,
        "TMPDIR": str(tmp),
    })
    return env


def s3_client(stack):
    return boto3.client("s3", endpoint_url=stack["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                        aws_access_key_id=stack["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=stack["AWS_SECRET_ACCESS_KEY"])


def sh(script, env, check=True, timeout=300):
    return subprocess.run(["bash", "-c", "set -Eeuo pipefail\n" + script], env=env, capture_output=True, text=True,
                          check=check, timeout=timeout)


def run_restore(env, *args, timeout=300):
    return subprocess.run([str(RESTORE), *args], env=env, capture_output=True, text=True, timeout=timeout)


def psql(env, db, sql):
    return sh(f"psql -X -q -t -A -v ON_ERROR_STOP=1 -d {shlex.quote(db)} -c {shlex.quote(sql)}", env).stdout


def superuser_env(env, stack):
    return dict(env, PGUSER=stack.get("STACK_PG_SUPERUSER", "postgres"),
                PGPASSWORD=stack.get("STACK_PG_SUPERUSER_PASSWORD", ""))


def table_fingerprint(env, db):
    """Per-table row count and md5 of the ordered rows, for every user table (one psql run)."""
    row = "count(*) || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '')"
    sql = (f"SELECT format('SELECT %L, {row.replace(chr(39), chr(39) * 2)} FROM public.%I x', tablename, tablename) "
           "FROM pg_tables WHERE schemaname = 'public' ORDER BY 1 \\gexec\n")
    out = subprocess.run(["psql", "-X", "-q", "-t", "-A", "-F", "\t", "-v", "ON_ERROR_STOP=1", "-d", db], input=sql,
                         env=env, capture_output=True, text=True, check=True, timeout=120).stdout
    return dict(line.split("\t", 1) for line in out.splitlines() if line)


def database_exists(env, stack, name):
    return psql(superuser_env(env, stack), "postgres", f"SELECT count(*) FROM pg_database WHERE datname = '{name}'").strip() == "1"


def drop_database(env, stack, name):
    psql(superuser_env(env, stack), "postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def createdb_role(env, stack):
    """A login role with CREATEDB (the stack's gitea role lacks it), created as the stack's superuser; yields
    the PG* overrides to run as it. Databases it owns are dropped with it."""
    name = f"restorer_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    su = superuser_env(env, stack)
    psql(su, "postgres", f"CREATE ROLE {name} LOGIN CREATEDB PASSWORD '{password}'")
    try:
        yield {"PGUSER": name, "PGPASSWORD": password}
    finally:
        for db in psql(su, "postgres", f"SELECT datname FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba "
                                       f"WHERE r.rolname = '{name}'").split():
            drop_database(env, stack, db)
        psql(su, "postgres", f"DROP ROLE {name}")


def tree_digest(root, skip=()):
    """Names, types, link targets and file contents under root (minus skipped top-level paths)."""
    h = hashlib.sha256()
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root).as_posix()
        if any(rel == s or rel.startswith(s + "/") for s in skip):
            continue
        if path.is_symlink():
            h.update(f"L {rel} {os.readlink(path)}\n".encode())
        elif path.is_dir():
            h.update(f"D {rel}\n".encode())
        else:
            h.update(f"F {rel} {hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def sqlite_dump(path):
    return subprocess.run(["sqlite3", "-readonly", str(path), ".dump"], capture_output=True, text=True,
                          check=True).stdout


def k8s_export(env, out_dir):
    """A fresh export of what backup.sh exports, cleaned the same way, as DIR/<plural>.yaml."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    conn = ["--server", env["K8S_SERVER"], "--token-file", env["K8S_TOKEN_FILE"], "--ca-file", env["K8S_CA_FILE"],
            "--namespace", env["K8S_NAMESPACE"]]
    for name, args in K8S_EXPORTS.items():
        subprocess.run(["k8s-export", *conn, *args, "--output", str(out_dir / name)], env=env, check=True,
                       capture_output=True, timeout=60)
    return {name: (out_dir / name).read_bytes() for name in K8S_EXPORTS}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MongoServer:
    """A fresh, empty nx-27017 on 127.0.0.1, a MongoDB to restore into."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.port = free_port()
        self.uri = f"mongodb://127.0.0.1:{self.port}/"
        self.process = None

    def __enter__(self):
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "nx-27017"), "--host", "127.0.0.1", "-p", str(self.port),
             "--data-dir", str(self.dir / "data"), "--log-file", str(self.dir / "server.log"),
             "--pid-file", str(self.dir / "server.pid")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return self
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError(f"nx-27017 did not start on port {self.port}")
            time.sleep(0.1)

    def __exit__(self, *exc):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def clone_set(s3, bucket, src_prefix, set_id, dst_prefix, new_id=None, edit=None):
    """Copies set_id's objects (server side) to dst_prefix/new_id/; edit(manifest) may change the manifest
    (its id is set to new_id). Returns new_id."""
    new_id = new_id or set_id
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"{src_prefix}/{set_id}/")
    for obj in listing.get("Contents", []):
        rel = obj["Key"][len(f"{src_prefix}/{set_id}/"):]
        if rel == "manifest.json":
            continue
        s3.copy_object(Bucket=bucket, Key=f"{dst_prefix}/{new_id}/{rel}",
                       CopySource={"Bucket": bucket, "Key": obj["Key"]})
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"{src_prefix}/{set_id}/manifest.json")["Body"].read())
    manifest["id"] = new_id
    if edit:
        edit(manifest)
    manifest_schema.check(manifest)
    s3.put_object(Bucket=bucket, Key=f"{dst_prefix}/{new_id}/manifest.json", Body=json.dumps(manifest).encode())
    return new_id


def iso(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def set_id_at(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def metrics(text):
    """{(name, frozenset(labels)) or (name, None): value} from the text exposition format."""
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, frozenset(sample.labels.items()) or None)] = sample.value
    return values


class FullBackup:
    """The real backup.sh run once into a prefix of its own, encrypted to a fresh age key, with the
    sources snapshotted just before (and checked unchanged just after) so restores compare with what
    was backed up even though other suites share the stack."""

    def __init__(self, stack, bin_dir, tmp):
        self.stack = stack
        self.tmp = Path(tmp)
        self.prefix = f"e2e-full-{uuid.uuid4().hex[:10]}"
        self.env = job_env(stack, bin_dir, self.tmp, self.prefix)
        self.bucket = stack["BACKUP_S3_BUCKET"]
        self.s3 = s3_client(stack)
        self.identity = self.tmp / "identity.txt"
        sh(f"age-keygen -o {shlex.quote(str(self.identity))} 2>/dev/null", self.env)
        self.recipient = sh(f"age-keygen -y {shlex.quote(str(self.identity))}", self.env).stdout.strip()
        self.env["BACKUP_AGE_RECIPIENTS"] = self.recipient
        self.env["BACKUP_KEEP_LAST"] = "0"

    def snapshot(self):
        env = self.env
        mlflow = {}
        for db in sorted(Path(env["MLFLOW_ROOT"]).glob("*/mlflow.db")):
            mlflow[db.parent.name] = sqlite_dump(db)
        return {
            "pg": table_fingerprint(env, env["PGDATABASE"]),
            "data": compare.tree(env["GITEA_DATA_DIR"], list(GITEA_EXCLUDES)),
            "mongo": compare.mongo_snapshot(env["MONGO_URI"]),
            "mlflow": mlflow,
            "mlruns": {d.parent.name: tree_digest(d) for d in Path(env["MLFLOW_ROOT"]).glob("*/mlruns")},
        }

    def run(self):
        before = self.snapshot()
        result = subprocess.run([str(BACKUP)], env=self.env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        assert self.snapshot() == before, "the stack's sources changed while the backup ran"
        self.source = before
        self.k8s = k8s_export(self.env, self.tmp / "source-k8s")
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/")
        [self.set_id] = {o["Key"].split("/")[1] for o in listing["Contents"] if o["Key"].endswith("/manifest.json")}
        self.manifest = manifest_schema.check(json.loads(self.s3.get_object(
            Bucket=self.bucket, Key=f"{self.prefix}/{self.set_id}/manifest.json")["Body"].read()))
        assert self.manifest["status"] == "success" and self.manifest["encryption"]["recipients"] == [self.recipient]
        return self

    def details(self, component):
        return next(c["details"] for c in self.manifest["components"] if c["name"] == component)

    def keys(self):
        return [o["key"] for c in self.manifest["components"] for o in c["objects"]]

    def restore_env(self, **overrides):
        return {**self.env, "BACKUP_VERIFY_MAX_AGE_HOURS": "192", **overrides}

    def cleanup(self):
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/")
        for obj in listing.get("Contents", []):
            self.s3.delete_object(Bucket=self.bucket, Key=obj["Key"])
        shutil.rmtree(self.tmp, ignore_errors=True)


_SHARED: dict = {}


@pytest.fixture(scope="session")
def full_backup(stack, bin_dir, tmp_path_factory):
    """One FullBackup per test session, shared by every module that imports this fixture (each import is its
    own fixture definition, hence the cache); nothing may change the set itself (clone it to damage it)."""
    if "full" not in _SHARED:
        _SHARED["full"] = FullBackup(stack, bin_dir, tmp_path_factory.mktemp("full-backup")).run()
    yield _SHARED["full"]
    backup = _SHARED.pop("full", None)
    if backup is not None:
        backup.cleanup()
