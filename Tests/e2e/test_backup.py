"""End-to-end runs of backup/backup.sh against the local stack: the real helpers (KDL_BIN_DIR),
PostgreSQL 15, Ceph RGW (signatures and payload hashes checked), nx-27017 through the mongodump/mongorestore test
doubles, the Kubernetes API test double, real git trees and SQLite stores.

Each test writes under a prefix of its own, so tests share one stack without seeing each other.
Objects are read back with boto3 (an independent client) to re-check sizes and digests.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[2]
BACKUP_SH = ROOT / "backup" / "backup.sh"
sys.path.insert(0, str(ROOT / "Tests" / "fixtures"))
import manifest_schema  # noqa: E402
from capture_server import CaptureServer  # noqa: E402

ALL = ["gitea", "mongodb", "mlflow", "kubernetes"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def zstd_decompress(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-dc"], input=data, capture_output=True, check=True).stdout


class Run:
    """One backup.sh invocation's environment under a fresh prefix."""

    def __init__(self, stack, stack_env, bin_dir, tmp_path):
        self.stack = stack
        self.tmp = tmp_path
        self.prefix = f"backup-e2e-{uuid.uuid4().hex[:10]}"
        self.env = dict(stack_env)
        self.env["PATH"] = f"{bin_dir}:{self.env['PATH']}"
        self.env.update({"BACKUP_S3_PREFIX": self.prefix, "TMPDIR": str(tmp_path)})
        for name in ("BACKUP_AGE_RECIPIENTS", "BACKUP_REQUIRE_ENCRYPTION", "BACKUP_COMPONENTS", "BACKUP_ID",
                     "NOTIFY_WEBHOOK_URL", "NOTIFY_HEALTHCHECK_URL", "NOTIFY_SLACK_WEBHOOK_URL"):
            self.env.pop(name, None)
        self.bucket = stack["BACKUP_S3_BUCKET"]
        self.s3 = boto3.client(
            "s3", endpoint_url=stack["AWS_ENDPOINT_URL_S3"], region_name=stack["AWS_REGION"],
            aws_access_key_id=stack["AWS_ACCESS_KEY_ID"], aws_secret_access_key=stack["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}))
        self._ids = 0

    def new_id(self) -> str:
        # distinct, valid UTC-timestamp ids (one per second of 2024-01-01) for every run of a test
        self._ids += 1
        return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(1704067200 + self._ids))

    def backup(self, *args, env=None, set_id=None, timeout=300):
        run_env = dict(self.env)
        run_env["BACKUP_ID"] = set_id or self.new_id()
        run_env.update(env or {})
        result = subprocess.run(["bash", str(BACKUP_SH), *args], env=run_env, capture_output=True, text=True,
                                timeout=timeout)
        result.set_id = run_env["BACKUP_ID"]
        return result

    def keys(self, under="") -> dict[str, int]:
        found, token = {}, None
        while True:
            kwargs = {"Bucket": self.bucket, "Prefix": f"{self.prefix}/{under}"}
            if token:
                kwargs["ContinuationToken"] = token
            page = self.s3.list_objects_v2(**kwargs)
            for item in page.get("Contents", []):
                found[item["Key"][len(self.prefix) + 1:]] = item["Size"]
            if not page.get("IsTruncated"):
                return found
            token = page["NextContinuationToken"]

    def get(self, key: str) -> bytes:
        return self.s3.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{key}")["Body"].read()

    def manifest(self, set_id: str) -> dict:
        return manifest_schema.check(json.loads(self.get(f"{set_id}/manifest.json")))


@pytest.fixture
def run(stack, stack_env, bin_dir, tmp_path):
    return Run(stack, stack_env, bin_dir, tmp_path)


@pytest.fixture
def seed(stack):
    return json.loads(Path(stack["STACK_SEED_SUMMARY"]).read_text())


def known_secret_values(stack) -> list[str]:
    """A Secret value the backup must export (base64 as stored in the Secret, and decoded)."""
    objects = json.loads((Path(stack["STACK_K8S_DIR"]) / "objects.json").read_text())
    for item in objects["items"]:
        if item.get("kind") == "Secret" and item["metadata"]["name"].startswith("codeserver-oauth2-credentials-"):
            value = item["data"]["OAUTH2_PROXY_CLIENT_SECRET"]
            return [value, base64.b64decode(value).decode()]
    raise AssertionError("the seeded cluster has no codeserver-oauth2-credentials Secret")


def by_name(manifest: dict) -> dict[str, dict]:
    return {component["name"]: component for component in manifest["components"]}


def test_full_backup_every_object_rechecked_against_s3(run, seed):
    with CaptureServer(run.tmp / "capture") as hooks:
        result = run.backup(env={"NOTIFY_HEALTHCHECK_URL": f"{hooks.url}/ping/kdl"})
        assert result.returncode == 0, result.stderr
        requests = [request["path"] for request in hooks.requests()]
    set_id = result.set_id
    manifest = run.manifest(set_id)
    assert manifest["format"] == "kdl-backup/v1" and manifest["id"] == set_id
    assert manifest["status"] == "success" and manifest["encryption"] is None
    assert manifest["startedAt"] <= manifest["finishedAt"]
    assert set(manifest["tools"]) >= {"s3-put", "k8s-export", "mlflow-scan", "notify", "pg_dump", "mongodump", "zstd", "age"}
    assert manifest["tools"]["pg_dump"].split(".")[0] == "15"
    components = by_name(manifest)
    assert list(components) == ALL
    stored = run.keys(f"{set_id}/")
    listed = {f"{set_id}/{obj['key']}": obj for component in manifest["components"] for obj in component["objects"]}
    assert set(stored) == set(listed) | {f"{set_id}/manifest.json"}
    for key, obj in listed.items():
        body = run.get(key)
        assert len(body) == obj["bytes"] == stored[key], key
        assert hashlib.sha256(body).hexdigest() == obj["sha256"], key
        assert obj["verified"] is True and obj["encrypted"] is False, key
    for component in manifest["components"]:
        assert component["status"] == "success" and component["error"] is None, component
        assert set(component) == {"name", "status", "seconds", "error", "objects", "details"}
    # the layout of the issue, one kubernetes file per plural, one archive per MongoDB database
    projects = sorted(project["project"] for project in seed["mlflow"]["projects"])
    expected = {"gitea/postgres.dump", "gitea/data.tar.zst", "mongodb/kdl.archive.gz", "mongodb/admin.archive.gz",
                "kubernetes/kdlprojects.yaml.zst", "kubernetes/usertools.yaml.zst", "kubernetes/secrets.yaml.zst"}
    expected |= {f"mlflow/{project}/mlflow.db.zst" for project in projects}
    assert expected <= {obj["key"] for obj in listed.values()}
    # details an operator reads match what the stack was seeded with
    assert components["gitea"]["details"]["tar"]["repositories"] == seed["gitea"]["repo_count"]
    assert components["kubernetes"]["details"]["objects"] == {
        "kdlprojects": seed["k8s"]["objects"]["kdlprojects"], "usertools": seed["k8s"]["objects"]["usertools"],
        "secrets": seed["k8s"]["kdl_secrets"]}
    assert sorted(p["project"] for p in components["mlflow"]["details"]["projects"]) == projects
    # notify: started, then the success ping
    assert requests == ["/ping/kdl/start", "/ping/kdl"]
    # the data tar leaves the excluded folders out and holds every repository
    names = tarfile.open(fileobj=io.BytesIO(zstd_decompress(run.get(f"{set_id}/gitea/data.tar.zst")))).getnames()
    assert not [n for n in names if n.startswith(("./gitea/indexers", "./ssh", "./lost+found"))]
    for repo in seed["gitea"]["repos"]:
        assert f"./git/repositories/{repo}.git/HEAD" in names
    # only the wanted Secrets: no unrelated ones (helm releases, the postgres password)
    secrets = zstd_decompress(run.get(f"{set_id}/kubernetes/secrets.yaml.zst")).decode()
    for unrelated in seed["k8s"]["unrelated_secrets"]:
        assert f"name: {unrelated}\n" not in secrets
    # the dump is a real custom-format archive
    listing = subprocess.run(["pg_restore", "--list"], input=run.get(f"{set_id}/gitea/postgres.dump"),
                             capture_output=True, check=True).stdout.decode()
    assert " TABLE DATA public " in listing
    # a logfmt line per step and the summary table; no secret anywhere in the log
    assert "component=gitea step=pg_dump key=gitea/postgres.dump" in result.stderr
    assert "component   status   objects" in result.stderr
    for secret in (run.env["PGPASSWORD"], run.env["AWS_SECRET_ACCESS_KEY"], *known_secret_values(run.stack)):
        assert secret not in result.stderr


def test_encrypted_set_holds_no_plaintext_secret(run, tmp_path):
    identity = tmp_path / "identity.txt"
    subprocess.run(["age-keygen", "-o", str(identity)], check=True, capture_output=True)
    recipient = subprocess.run(["age-keygen", "-y", str(identity)], check=True, capture_output=True, text=True).stdout.strip()
    values = known_secret_values(run.stack)

    plain = run.backup(env={"BACKUP_COMPONENTS": "kubernetes"})
    assert plain.returncode == 0, plain.stderr
    assert "encrypted=false" in plain.stderr and "level=warn" in plain.stderr
    exported = zstd_decompress(run.get(f"{plain.set_id}/kubernetes/secrets.yaml.zst")).decode()
    assert values[0] in exported  # the check below can see the value when it is there

    result = run.backup(env={"BACKUP_AGE_RECIPIENTS": recipient, "BACKUP_REQUIRE_ENCRYPTION": "true"})
    assert result.returncode == 0, result.stderr
    manifest = run.manifest(result.set_id)
    assert manifest["encryption"] == {"type": "age", "recipients": [recipient]}
    objects = [obj for component in manifest["components"] for obj in component["objects"]]
    assert objects and all(obj["encrypted"] and obj["key"].endswith(".age") for obj in objects)
    for key in run.keys(f"{result.set_id}/"):
        body = run.get(key)
        for value in values:
            assert value.encode() not in body, key
        if not key.endswith("manifest.json"):
            assert body.startswith(b"age-encryption.org/v1\n"), key
    decrypted = subprocess.run(["age", "-d", "-i", str(identity)], input=run.get(f"{result.set_id}/kubernetes/secrets.yaml.zst.age"),
                               capture_output=True, check=True).stdout
    assert values[0] in zstd_decompress(decrypted).decode()


def test_postgres_unreachable_is_partial_and_notified(run):
    with CaptureServer(run.tmp / "capture") as hooks:
        result = run.backup(env={"PGPORT": str(free_port()), "NOTIFY_HEALTHCHECK_URL": f"{hooks.url}/ping/kdl",
                                 "NOTIFY_WEBHOOK_URL": f"{hooks.url}/hook"})
        assert result.returncode == 3, result.stderr
        requests = hooks.requests()
    manifest = run.manifest(result.set_id)
    components = by_name(manifest)
    assert manifest["status"] == "partial"
    assert {name: c["status"] for name, c in components.items()} == {
        "gitea": "failure", "mongodb": "success", "mlflow": "success", "kubernetes": "success"}
    assert "PostgreSQL 127.0.0.1:" in components["gitea"]["error"] and "unreachable" in components["gitea"]["error"]
    assert [obj["key"] for obj in components["gitea"]["objects"]] == ["gitea/data.tar.zst"]
    stored = run.keys(f"{result.set_id}/")
    for name in ("mongodb", "mlflow", "kubernetes"):
        for obj in components[name]["objects"]:
            assert f"{result.set_id}/{obj['key']}" in stored
    paths = [request["path"] for request in requests]
    assert "/ping/kdl/start" in paths and "/ping/kdl/fail" in paths
    hook = [request for request in requests if request["path"] == "/hook"]
    assert len(hook) == 1 and json.loads(hook[0]["body"])["status"] == "partial"
    assert "step=prune" not in result.stderr  # retention only after a success


def test_mongodb_unreachable_is_partial(run):
    result = run.backup(env={"MONGO_URI": f"mongodb://kdl:pw-never-logged@127.0.0.1:{free_port()}/"})
    assert result.returncode == 3, result.stderr
    components = by_name(run.manifest(result.set_id))
    assert components["mongodb"]["status"] == "failure" and components["mongodb"]["objects"] == []
    assert "MongoDB unreachable" in components["mongodb"]["error"]
    assert components["gitea"]["status"] == "success"
    assert "pw-never-logged" not in result.stderr
    assert "pw-never-logged" not in json.dumps(run.manifest(result.set_id))


def test_unreadable_mlflow_store_fails_only_that_store(run, stack):
    # as root every folder is readable: the run is made as nobody so the permission is real
    work = Path(tempfile.mkdtemp(prefix="kdl-backup-e2e-"))
    try:
        work.chmod(0o755)
        root = work / "shared-volume"
        shutil.copytree(stack["MLFLOW_ROOT"], root, symlinks=True)
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        (work / "tmp").mkdir(mode=0o1777)
        (work / "tmp").chmod(0o1777)
        stores = sorted(p for p in root.iterdir() if (p / "mlflow.db").exists())
        locked = stores[0]
        locked.chmod(0)
        env = dict(run.env, BACKUP_COMPONENTS="mlflow", MLFLOW_ROOT=str(root), TMPDIR=str(work / "tmp"),
                   HOME=str(work / "tmp"), BACKUP_ID=run.new_id())
        result = subprocess.run(["runuser", "-p", "-u", "nobody", "--", "bash", str(BACKUP_SH)], env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 1, result.stderr  # mlflow is the only component and it failed
        mlflow = by_name(run.manifest(env["BACKUP_ID"]))["mlflow"]
        assert mlflow["status"] == "failure"
        assert str(locked) in mlflow["error"]
        stored_projects = {obj["key"].split("/")[1] for obj in mlflow["objects"]}
        assert len(stored_projects) == len(stores) - 1
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)


def test_sigterm_mid_upload_then_next_run_and_prune(run, tmp_path, stack):
    data = tmp_path / "gitea-data"
    shutil.copytree(stack["GITEA_DATA_DIR"], data, symlinks=True)
    with open(data / "git" / "big.bin", "wb") as handle:  # incompressible: the upload takes seconds
        handle.write(os.urandom(160 * 1024 * 1024))
    env = dict(run.env, BACKUP_COMPONENTS="gitea", GITEA_DATA_DIR=str(data), BACKUP_ID=run.new_id())
    process = subprocess.Popen(["bash", str(BACKUP_SH)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        busy = subprocess.run(["pgrep", "-f", f"s3-put - s3://{run.bucket}/{run.prefix}/.*/gitea/data.tar.zst"],
                              capture_output=True).returncode == 0
        if busy and run.keys(f"{env['BACKUP_ID']}/gitea/postgres.dump"):
            break
        time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("the data upload never started")
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "step=terminate signal=TERM" in stderr
    assert f"{env['BACKUP_ID']}/manifest.json" not in run.keys(f"{env['BACKUP_ID']}/")
    assert subprocess.run(["pgrep", "-f", f"{run.prefix}/"], capture_output=True).returncode == 1  # no child left
    assert not list(tmp_path.glob("kdl-backup.*"))  # temp dir removed
    debris = run.keys(f"{env['BACKUP_ID']}/")
    assert debris  # the dump was stored before the signal

    following = run.backup(env={"BACKUP_COMPONENTS": "gitea"})
    assert following.returncode == 0, following.stderr
    # retention after the grace period (0s here) removes the incomplete set, keeps the complete one
    prune = subprocess.run(["s3-prune", "--keep-last", "8", "--incomplete-grace", "0s",
                            f"s3://{run.bucket}/{run.prefix}"], env=run.env, capture_output=True, text=True)
    assert prune.returncode == 0, prune.stderr
    assert run.keys(f"{env['BACKUP_ID']}/") == {}
    assert f"{following.set_id}/manifest.json" in run.keys(f"{following.set_id}/")


def test_preflight_passes_and_leaves_nothing(run):
    result = run.backup("--preflight")
    assert result.returncode == 0, result.stderr
    assert "step=preflight result=ok" in result.stderr
    assert run.keys() == {}


def test_preflight_wrong_credentials_is_77(run):
    result = run.backup("--preflight", env={"AWS_SECRET_ACCESS_KEY": "wrong" + run.env["AWS_SECRET_ACCESS_KEY"][5:]})
    assert result.returncode == 77, result.stderr
    assert "check=s3 result=failed code=77" in result.stderr
    assert "SignatureDoesNotMatch" in result.stderr or "InvalidAccessKeyId" in result.stderr or "AccessDenied" in result.stderr
    assert run.env["AWS_SECRET_ACCESS_KEY"][5:] not in result.stderr


def test_preflight_missing_bucket_is_64(run):
    result = run.backup("--preflight", env={"BACKUP_S3_BUCKET": f"no-such-bucket-{uuid.uuid4().hex[:8]}"})
    assert result.returncode == 64, result.stderr
    assert "NoSuchBucket" in result.stderr


def test_preflight_forbidden_secrets_is_77(run, stack):
    result = run.backup("--preflight", env={"K8S_TOKEN_FILE": stack["STACK_K8S_LIMITED_TOKEN_FILE"]})
    assert result.returncode == 77, result.stderr
    assert "check=kubernetes result=failed code=77" in result.stderr and "secrets" in result.stderr


def test_run_with_wrong_credentials_uploads_nothing(run):
    result = run.backup(env={"AWS_SECRET_ACCESS_KEY": "wrong" + run.env["AWS_SECRET_ACCESS_KEY"][5:]})
    assert result.returncode == 77, result.stderr
    assert "pg_dump key=" not in result.stderr
    assert run.keys() == {}


def damaged_store(folder: Path) -> None:
    """An MLflow-shaped store (rollback journal) whose last metric pages are noise: counting experiments
    and runs still works, so only the integrity check of the copy can find the damage."""
    import sqlite3

    folder.mkdir(parents=True)
    conn = sqlite3.connect(folder / "mlflow.db")
    conn.executescript("""
        CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name TEXT UNIQUE);
        CREATE TABLE runs (run_uuid TEXT PRIMARY KEY, experiment_id INTEGER);
        CREATE TABLE metrics (key TEXT, value REAL, timestamp INTEGER, run_uuid TEXT, step INTEGER);
        CREATE INDEX metrics_by_run ON metrics (run_uuid, key, step);
        INSERT INTO experiments VALUES (1, 'damaged');
        INSERT INTO runs VALUES ('r1', 1);
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 19999)
        INSERT INTO metrics SELECT 'loss', i / 7.0, 1700000000000 + i, 'r1', i FROM n;
    """)
    conn.commit()
    conn.close()
    data = bytearray((folder / "mlflow.db").read_bytes())
    page = 4096
    for index in range(len(data) - page * 20, len(data) - page * 2):
        data[index] = (index * 131) & 0xFF
    (folder / "mlflow.db").write_bytes(bytes(data))


def test_a_snapshot_failing_integrity_check_is_never_stored(run, stack, tmp_path):
    root = tmp_path / "shared-volume"
    shutil.copytree(stack["MLFLOW_ROOT"], root, symlinks=True)
    damaged_store(root / "kdl-damaged-mlflow-claim-pvc-0f0f")
    result = run.backup(env={"BACKUP_COMPONENTS": "mlflow", "MLFLOW_ROOT": str(root)})
    assert result.returncode == 1, result.stderr  # mlflow is the only component and it failed
    mlflow = by_name(run.manifest(result.set_id))["mlflow"]
    assert mlflow["status"] == "failure"
    assert "mlflow-damaged: producer exited 1: integrity_check of the snapshot failed, nothing stored" in mlflow["error"]
    stored = {obj["key"] for obj in mlflow["objects"]}
    healthy = {p.name for p in Path(stack["MLFLOW_ROOT"]).iterdir() if (p / "mlflow.db").exists()}
    assert len(stored) >= len(healthy) > 0 and all(obj["verified"] for obj in mlflow["objects"])
    assert not [key for key in run.keys(result.set_id) if "/mlflow/damaged/" in f"/{key}"]
    uploads = run.s3.list_multipart_uploads(Bucket=run.bucket, Prefix=f"{run.prefix}/")
    assert uploads.get("Uploads", []) == []
