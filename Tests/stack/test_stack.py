"""The local KDL stack (scripts/stack/) and its test doubles, against the real services.

Uses the session stack (Tests/conftest.py: KDL_STACK_ENV or a tiny one); the start/stop tests
start their own stacks in temporary folders.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import botocore.exceptions
import bson
import pymongo
import pytest
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[2]
UP = ROOT / "scripts/stack/up.sh"
DOWN = ROOT / "scripts/stack/down.sh"
PYTHON = ROOT / ".venv/bin/python"
DOUBLE = ROOT / "Tests/fixtures/kube_api_double.py"
sys.path.insert(0, str(ROOT / "Tests/fixtures"))

import mongo_archive  # noqa: E402
from stack_env import load_stack_env  # noqa: E402


# ---------------------------------------------------------------------------------------------
# helpers


def stop(proc):
    """TERM, then KILL after 10 s: a server slow to stop on a loaded machine must not fail the test that used it."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture
def stack_dir():
    """A fresh folder for a stack of the test's own: under /tmp, since pytest's tmp_path sits in a 0700
    folder the postgres user cannot traverse."""
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="kdl-stack-test."))
    directory.chmod(0o711)
    yield directory
    for pids in directory.glob("**/pids"):
        subprocess.run([str(DOWN), "--dir", str(pids.parent)], capture_output=True, timeout=120)
    shutil.rmtree(directory, ignore_errors=True)


def stack_groups(stack_dir: str | Path) -> list[int]:
    return [int(p.read_text().strip()) for p in Path(stack_dir, "pids").glob("*.pid")]


def processes_in_groups(groups: list[int]) -> list[str]:
    """Live (non-zombie) processes whose process group is one of groups, as 'pid comm' strings."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,pgid=,stat=,comm="], capture_output=True, text=True, check=True).stdout
    alive = []
    for line in out.splitlines():
        pid, pgid, stat, comm = line.split(None, 3)
        if int(pgid) in groups and not stat.startswith("Z"):
            alive.append(f"{pid} {comm}")
    return alive


def listening() -> list[tuple[str, int, list[int]]]:
    """(address, port, pids) of every listening TCP socket (ss -ltnp)."""
    out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True, check=True).stdout
    sockets = []
    for line in out.splitlines():
        fields = line.split()
        address, _, port = fields[3].rpartition(":")
        pids = [int(p) for p in re.findall(r"pid=(\d+)", line)]
        sockets.append((address.strip("[]"), int(port), pids))
    return sockets


def pids_in_groups(groups: list[int]) -> set[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,pgid="], capture_output=True, text=True, check=True).stdout
    return {int(pid) for pid, pgid in (line.split() for line in out.splitlines()) if int(pgid) in groups}


def stack_ports(env: dict) -> dict[str, int]:
    return {
        "s3": int(env["AWS_ENDPOINT_URL_S3"].rsplit(":", 1)[1]),
        "postgres": int(env["PGPORT"]),
        "mongo": int(env["MONGO_URI"].rstrip("/").rsplit(":", 1)[1]),
        "k8s": int(env["K8S_SERVER"].rsplit(":", 1)[1]),
        "minio": int(env["STACK_MINIO_ENDPOINT"].rsplit(":", 1)[1]),
    }


def s3_client(env: dict, secret: str | None = None):
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL_S3"],
        region_name=env["AWS_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secret or env["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"max_attempts": 1}),
    )


def psql(env: dict, sql: str) -> str:
    return subprocess.run(["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql],
                          env=env, capture_output=True, text=True, check=True).stdout.strip()


class Kube:
    """A tiny client of the Kubernetes API double: (status, parsed JSON or raw bytes)."""

    def __init__(self, server: str, ca_file: str, token: str | None):
        self.server = server
        self.context = ssl.create_default_context(cafile=ca_file)
        self.token = token

    def request(self, path: str, method: str = "GET", body: bytes | None = None, token: str | None = "default"):
        request = urllib.request.Request(self.server + path, method=method, data=body)
        chosen = self.token if token == "default" else token
        if chosen:
            request.add_header("Authorization", f"Bearer {chosen}")
        try:
            with urllib.request.urlopen(request, context=self.context, timeout=30) as response:
                raw, code = response.read(), response.status
        except urllib.error.HTTPError as error:
            raw, code = error.read(), error.code
        try:
            return code, json.loads(raw)
        except ValueError:
            return code, raw

    def list_all(self, path: str, limit: int) -> tuple[list[dict], list[dict]]:
        items, pages, token = [], [], ""
        while True:
            sep = "&" if "?" in path else "?"
            code, page = self.request(f"{path}{sep}limit={limit}" + (f"&continue={token}" if token else ""))
            assert code == 200, page
            pages.append(page)
            items.extend(page["items"])
            token = page["metadata"].get("continue", "")
            if not token:
                return items, pages


@pytest.fixture(scope="module")
def kube(stack) -> Kube:
    return Kube(stack["K8S_SERVER"], stack["K8S_CA_FILE"], Path(stack["K8S_TOKEN_FILE"]).read_text().strip())


@pytest.fixture(scope="module")
def summary(stack) -> dict:
    return json.loads(Path(stack["STACK_DIR"], "seed-summary.json").read_text())


@pytest.fixture
def private_double(stack, tmp_path):
    """A second Kubernetes API double on port 0 with the stack's objects, for faults and expiry."""
    started = []

    def start(*extra: str) -> Kube:
        directory = tmp_path / f"k8s-{len(started)}"
        proc = subprocess.Popen([str(PYTHON), str(DOUBLE), "--port", "0", "--dir", str(directory),
                                 "--objects", str(Path(stack["STACK_DIR"], "k8s", "objects.json")), *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        line = proc.stdout.readline()
        assert line.startswith("listening on https://127.0.0.1:"), proc.stderr.read()
        port = int((directory / "port").read_text())
        assert line.strip().endswith(f":{port}")
        return Kube(f"https://127.0.0.1:{port}", str(directory / "ca.crt"), (directory / "token").read_text().strip())

    yield start
    for proc in started:
        stop(proc)


# ---------------------------------------------------------------------------------------------
# start and stop


def test_start_and_stop_twice_leaves_no_process_or_port_and_seeds_the_same_data(stack_dir):
    summaries, objects = [], []
    for round_number in (1, 2):
        directory = stack_dir / f"stack-{round_number}"
        up = subprocess.run([str(UP), "--dir", str(directory), "--seed", "tiny"], capture_output=True, text=True, timeout=120)
        assert up.returncode == 0, up.stderr
        env = load_stack_env(directory / "stack.env")
        groups = stack_groups(directory)
        assert len(groups) == 6, groups  # ceph-mon, ceph-osd, rgw, postgres, mongo, k8s
        ports = stack_ports(env)
        open_ports = {port for _, port, _ in listening()}
        assert set(ports.values()) <= open_ports
        summary = json.loads((directory / "seed-summary.json").read_text())
        summaries.append(json.dumps({k: v for k, v in summary.items() if k not in ("gitea", "mlflow")}, sort_keys=True)
                         + json.dumps(summary["gitea"]["repos"], sort_keys=True)
                         + json.dumps([{k: v for k, v in p.items()} for p in summary["mlflow"]["projects"]], sort_keys=True))
        objects.append((directory / "k8s" / "objects.json").read_text())

        down = subprocess.run([str(DOWN), "--dir", str(directory)], capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, down.stderr
        assert processes_in_groups(groups) == []
        still_open = {port for _, port, _ in listening()} & set(ports.values())
        assert still_open == set(), f"ports still listening after down.sh: {still_open}"
        assert not (directory / "stack.env").exists()
    assert summaries[0] == summaries[1], "the same seed number must give the same data"
    assert objects[0] == objects[1]


def test_a_service_that_does_not_come_up_in_time_fails_clearly_and_stops_the_rest(stack_dir):
    directory = stack_dir
    up = subprocess.run([str(UP), "--dir", str(directory)], capture_output=True, text=True, timeout=120,
                        env=dict(os.environ, STACK_START_TIMEOUT="0"))
    assert up.returncode != 0
    assert re.search(r"did not (listen|start|accept|create)", up.stderr), up.stderr
    assert "start failed; stopping" in up.stderr
    logs = list((directory / "logs").glob("*.log"))
    assert logs, "the services' logs stay for diagnosis"
    assert list((directory / "pids").glob("*.pid")) == []
    assert not (directory / "stack.env").exists()


def test_bad_arguments_exit_64_with_one_line():
    for args in ([], ["--dir"], ["--dir", "/tmp/x", "--seed", "huge"], ["--bogus"]):
        result = subprocess.run([str(UP), *args], capture_output=True, text=True, timeout=30)
        assert result.returncode == 64, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and "stack: error:" in result.stderr
    missing = subprocess.run([str(DOWN), "--dir", "/nonexistent/kdl-stack"], capture_output=True, text=True)
    assert missing.returncode == 66 and "no such stack directory" in missing.stderr


def test_a_second_up_on_a_running_stack_is_refused(stack):
    result = subprocess.run([str(UP), "--dir", stack["STACK_DIR"]], capture_output=True, text=True, timeout=60)
    assert result.returncode == 75
    assert "already running" in result.stderr
    assert Path(stack["STACK_DIR"], "stack.env").exists()


def test_nothing_of_the_stack_listens_beyond_loopback(stack):
    pids = pids_in_groups(stack_groups(stack["STACK_DIR"]))
    mine = [(address, port) for address, port, owners in listening() if set(owners) & pids]
    assert {port for _, port in mine} >= set(stack_ports(stack).values())
    assert all(address == "127.0.0.1" for address, _ in mine), mine


def test_env_file_holds_the_contract(stack):
    for key in ("STACK_DIR", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL_S3", "BACKUP_S3_BUCKET",
                "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "STACK_PG_BIN", "MONGO_URI", "K8S_SERVER",
                "K8S_TOKEN_FILE", "K8S_CA_FILE", "K8S_NAMESPACE", "STACK_K8S_LIMITED_TOKEN_FILE", "GITEA_DATA_DIR", "MLFLOW_ROOT",
                "STACK_BIN_DIR"):
        assert stack.get(key), key
    assert stack["AWS_REGION"] == "us-east-1" and stack["BACKUP_S3_BUCKET"] == "kdl-backups"
    assert stack["PGHOST"] == "127.0.0.1" and stack["PGDATABASE"] == "gitea" and stack["K8S_NAMESPACE"] == "kdl"
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", stack["AWS_ENDPOINT_URL_S3"])
    assert re.fullmatch(r"https://127\.0\.0\.1:\d+", stack["K8S_SERVER"])
    assert os.access(Path(stack["STACK_BIN_DIR"], "mongodump"), os.X_OK)
    assert Path(stack["STACK_PG_BIN"], "pg_ctl").exists()


# ---------------------------------------------------------------------------------------------
# S3


def test_s3_checks_signatures(stack):
    good = s3_client(stack)
    good.put_object(Bucket=stack["BACKUP_S3_BUCKET"], Key="stack-test/hello.txt", Body=b"hello")
    assert good.get_object(Bucket=stack["BACKUP_S3_BUCKET"], Key="stack-test/hello.txt")["Body"].read() == b"hello"
    bad = s3_client(stack, secret="not-the-secret-" + "x" * 25)
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        bad.list_objects_v2(Bucket=stack["BACKUP_S3_BUCKET"])
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert raised.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{stack['AWS_ENDPOINT_URL_S3']}/{stack['BACKUP_S3_BUCKET']}?list-type=2", timeout=10)
    assert anonymous.value.code == 403
    assert b"ListBucketResult" not in anonymous.value.read()
    good.delete_object(Bucket=stack["BACKUP_S3_BUCKET"], Key="stack-test/hello.txt")


def test_s3_refuses_a_body_that_does_not_match_its_signed_hash(stack):
    """AWS checks x-amz-content-sha256 against the body; RGW does too (moto did not: why the stack left it)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = f"{stack['AWS_ENDPOINT_URL_S3']}/{stack['BACKUP_S3_BUCKET']}/stack-test/hash-mismatch"
    signed_body, sent_body = b"what was signed", b"what was sent!!"
    request = AWSRequest(method="PUT", url=url, data=sent_body,
                         headers={"x-amz-content-sha256": hashlib.sha256(signed_body).hexdigest()})
    SigV4Auth(Credentials(stack["AWS_ACCESS_KEY_ID"], stack["AWS_SECRET_ACCESS_KEY"]), "s3", stack["AWS_REGION"]).add_auth(request)
    prepared = request.prepare()
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(url, data=sent_body, method="PUT", headers=dict(prepared.headers)), timeout=10)
    assert refused.value.code == 400
    assert b"XAmzContentSHA256Mismatch" in refused.value.read()
    with pytest.raises(botocore.exceptions.ClientError):
        s3_client(stack).head_object(Bucket=stack["BACKUP_S3_BUCKET"], Key="stack-test/hash-mismatch")


def test_aws_cli_with_a_wrong_secret_gets_403(stack_env):
    env = dict(stack_env, AWS_SECRET_ACCESS_KEY="wrong" * 8, AWS_MAX_ATTEMPTS="1")
    # --debug: awscli 1.45 then fails on RGW's empty <Message> ("argument of type 'NoneType' is not iterable")
    # instead of printing the error; the debug log still shows what RGW answered.
    result = subprocess.run([str(ROOT / ".venv/bin/aws"), "s3", "ls", f"s3://{env['BACKUP_S3_BUCKET']}", "--debug",
                             "--endpoint-url", env["AWS_ENDPOINT_URL_S3"]], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "<Code>SignatureDoesNotMatch</Code>" in result.stderr and "ListBucketResult" not in result.stderr


# ---------------------------------------------------------------------------------------------
# PostgreSQL


def test_postgres_is_15_on_loopback_with_gitea_owning_its_database(stack_env):
    assert psql(stack_env, "SHOW server_version").startswith("15.")
    assert psql(stack_env, "SHOW listen_addresses") == "127.0.0.1"
    assert psql(stack_env, "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'gitea'") == "gitea"
    fks = int(psql(stack_env, "SELECT count(*) FROM information_schema.table_constraints WHERE constraint_type = 'FOREIGN KEY'"))
    assert fks >= 10
    wrong = subprocess.run(["psql", "-X", "-c", "SELECT 1"], env=dict(stack_env, PGPASSWORD="wrong"), capture_output=True, text=True)
    assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr


def test_postgres_holds_the_seeded_rows(stack_env, summary):
    tables = summary["postgres"]["tables"]
    assert {"user", "repository", "issue", "comment", "action", "access_token", "public_key"} <= set(tables)
    for table, count in tables.items():
        assert int(psql(stack_env, f'SELECT count(*) FROM "{table}"')) == count, table
    admins = psql(stack_env, 'SELECT name FROM "user" WHERE is_admin')
    assert admins == "kdladmin"
    orphans = psql(stack_env, "SELECT count(*) FROM comment c LEFT JOIN issue i ON i.id = c.issue_id WHERE i.id IS NULL")
    assert orphans == "0"


# ---------------------------------------------------------------------------------------------
# MongoDB and the mongodump/mongorestore doubles


@pytest.fixture(scope="module")
def mongo(stack):
    client = pymongo.MongoClient(stack["MONGO_URI"], serverSelectionTimeoutMS=5000)
    yield client
    client.close()


@pytest.fixture
def scratch_mongo(tmp_path):
    """A private nx-27017 to restore into, so the shared stack's server keeps only the seeded databases."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = tmp_path / "scratch-mongo"
    data.mkdir()
    proc = subprocess.Popen([str(ROOT / ".venv/bin/nx-27017"), "--host", "127.0.0.1", "-p", str(port), "--data-dir", str(data),
                             "--log-file", str(tmp_path / "scratch-mongo.log"), "--pid-file", str(tmp_path / "scratch-mongo.pid")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "nx-27017 did not start"
            time.sleep(0.05)
    uri = f"mongodb://127.0.0.1:{port}/"
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    yield uri, client
    client.close()
    stop(proc)


def test_mongo_holds_the_seeded_documents(mongo, summary):
    for db_name, collections in (("kdl", summary["mongo"]["kdl"]), ("admin", summary["mongo"]["admin"])):
        for name, count in collections.items():
            assert mongo[db_name][name].count_documents({}) == count, f"{db_name}.{name}"
    admin_id = bson.ObjectId(summary["mongo"]["admin_user_id"])
    # Matched in Python: nx-27017's count and nested-array queries do not match ObjectIds (docs/stack.md).
    assert [u["user"] for u in mongo.admin.users.find() if u["_id"] == admin_id] == ["kdladmin"]
    projects = list(mongo.kdl.projects.find())
    assert all(any(m["userId"] == admin_id for m in p["members"]) for p in projects)
    project = mongo.kdl.projects.find_one()
    assert isinstance(project["creationDate"], __import__("datetime").datetime)


def test_crc64_is_go_crc64_ecma():
    crc = mongo_archive.CRC64()
    crc.update(b"123456789")
    assert crc.crc == 0x995DC9BBDF1939FA  # CRC-64/XZ check value, what Go's crc64.ECMA gives


def documents(client, db_name: str) -> dict[str, list[bytes]]:
    """Every collection's documents as BSON bytes, sorted, for exact comparison."""
    return {name: sorted(bson.encode(doc) for doc in client[db_name][name].find())
            for name in sorted(client[db_name].list_collection_names())}


def run(cmd, env, **kwargs):
    return subprocess.run(cmd, env=env, capture_output=True, timeout=120, **kwargs)


def test_mongodump_writes_the_real_archive_format(stack_env, tmp_path, summary):
    path = tmp_path / "kdl.archive"
    result = run(["mongodump", "--uri", stack_env["MONGO_URI"], "--db", "kdl", f"--archive={path}"], stack_env)
    assert result.returncode == 0, result.stderr
    assert b"done dumping kdl.projects" in result.stderr
    with path.open("rb") as stream:
        assert stream.read(4) == bytes.fromhex("6de29981")
        stream.seek(0)
        reader = mongo_archive.Reader(stream)
        header, metadata = mongo_archive.read_prelude(reader)
        assert header["version"] == "0.1" and {"concurrent_collections", "server_version", "tool_version"} <= set(header)
        assert sorted(m["collection"] for m in metadata) == sorted(summary["mongo"]["kdl"])
        assert all(m["db"] == "kdl" and json.loads(m["metadata"])["collectionName"] == m["collection"] for m in metadata)
        counts, eofs = {}, []
        for _, collection, raw in mongo_archive.read_namespaces(reader):
            if raw is None:
                eofs.append(collection)
            else:
                counts[collection] = counts.get(collection, 0) + 1
    assert counts == summary["mongo"]["kdl"]
    assert sorted(eofs) == sorted(summary["mongo"]["kdl"])


@pytest.mark.parametrize("gzip", [False, True])
def test_mongodump_then_mongorestore_into_another_db_gives_equal_documents(stack_env, mongo, scratch_mongo, gzip):
    uri, scratch = scratch_mongo
    flags = ["--gzip"] if gzip else []
    dump = subprocess.Popen(["mongodump", "--uri", stack_env["MONGO_URI"], "--db", "kdl", "--archive", "--quiet", *flags],
                            env=stack_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    restore = run(["mongorestore", "--uri", uri, "--archive", "--nsFrom", "kdl.*", "--nsTo", "kdl_copy.*", *flags],
                  stack_env, stdin=dump.stdout)
    dump.stdout.close()
    assert dump.wait(timeout=60) == 0, dump.stderr.read()
    assert restore.returncode == 0, restore.stderr
    total = sum(mongo.kdl[name].count_documents({}) for name in mongo.kdl.list_collection_names())
    assert f"{total} document(s) restored successfully. 0 document(s) failed".encode() in restore.stderr
    assert documents(scratch, "kdl_copy") == documents(mongo, "kdl")
    archive = run(["mongodump", "--uri", stack_env["MONGO_URI"], "--db", "kdl", "--archive", "--quiet", *flags], stack_env).stdout
    twice = run(["mongorestore", "--uri", uri, "--archive", "--nsFrom", "kdl.*", "--nsTo", "kdl_copy.*", *flags], stack_env, input=archive)
    assert twice.returncode == 0 and f"0 document(s) restored successfully. {total} document(s) failed".encode() in twice.stderr
    dropped = run(["mongorestore", "--uri", uri, "--archive", "--drop", "--quiet", "--nsFrom", "kdl.*", "--nsTo", "kdl_copy.*", *flags],
                  stack_env, input=archive)
    assert dropped.returncode == 0, dropped.stderr
    assert documents(scratch, "kdl_copy") == documents(mongo, "kdl")


def test_mongorestore_ns_include_and_dry_run(stack_env, mongo, scratch_mongo, tmp_path):
    uri, scratch = scratch_mongo
    path = tmp_path / "all.archive"
    assert run(["mongodump", "--uri", stack_env["MONGO_URI"], f"--archive={path}", "--quiet"], stack_env).returncode == 0
    only = run(["mongorestore", "--uri", uri, f"--archive={path}", "--nsInclude", "kdl.users"], stack_env)
    assert only.returncode == 0, only.stderr
    assert set(scratch.list_database_names()) <= {"admin", "kdl"} and scratch.kdl.list_collection_names() == ["users"]
    assert scratch.kdl.users.count_documents({}) == mongo.kdl.users.count_documents({})
    admin = run(["mongorestore", "--uri", uri, f"--archive={path}", "--db", "admin", "--nsFrom", "admin.*", "--nsTo", "admin_copy.*"], stack_env)
    assert admin.returncode == 0, admin.stderr
    assert sorted(scratch.admin_copy.list_collection_names()) == sorted(mongo.admin.list_collection_names())
    dry = run(["mongorestore", "--uri", uri, f"--archive={path}", "--dryRun", "--nsFrom", "kdl.*", "--nsTo", "kdl_dry.*"], stack_env)
    assert dry.returncode == 0, dry.stderr
    assert "kdl_dry" not in scratch.list_database_names()


def test_mongorestore_rejects_truncated_corrupt_and_foreign_archives(stack_env, scratch_mongo, tmp_path):
    uri, scratch = scratch_mongo
    path = tmp_path / "kdl.archive"
    assert run(["mongodump", "--uri", stack_env["MONGO_URI"], "--db", "kdl", f"--archive={path}", "--quiet"], stack_env).returncode == 0
    data = path.read_bytes()
    cases = {
        "truncated": (data[: len(data) * 2 // 3], b"truncated"),
        "cut-before-last-eof": (data[:-9], b"truncated"),
        "bit-flip": (data[:-200] + bytes([data[-200] ^ 0x01]) + data[-199:], b"CRC mismatch|corruption|truncated"),
        "not-an-archive": (b"PK\x03\x04" + data[4:], b"does not appear to be a mongodump archive"),
        "empty": (b"", b"does not appear to be a mongodump archive"),
    }
    for name, (payload, message) in cases.items():
        broken = tmp_path / f"{name}.archive"
        broken.write_bytes(payload)
        for mode in (["--dryRun"], []):
            result = run(["mongorestore", "--uri", uri, f"--archive={broken}", "--quiet", *mode], stack_env)
            assert result.returncode == 1, (name, mode, result.stderr)
            assert re.search(message, result.stderr), (name, result.stderr)
            assert result.stderr.startswith(b"Failed: ") and result.stderr.count(b"\n") == 1, (name, result.stderr)
    gz = run(["mongodump", "--uri", stack_env["MONGO_URI"], "--db", "kdl", "--archive", "--gzip", "--quiet"], stack_env).stdout
    cut = run(["mongorestore", "--uri", uri, "--archive", "--gzip", "--dryRun", "--quiet"], stack_env, input=gz[: len(gz) // 2])
    assert cut.returncode == 1 and cut.stderr.startswith(b"Failed: ")


def test_unreachable_server_fails_clearly_without_printing_the_password(stack_env, tmp_path):
    secret = "s3cr3t-Pa55word"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = f"mongodb://backup:{secret}@127.0.0.1:{port}/?authSource=admin&serverSelectionTimeoutMS=500"
    for tool in ("mongodump", "mongorestore"):
        result = run([tool, "--uri", uri, f"--archive={tmp_path / 'x.archive'}"], stack_env)
        assert result.returncode == 1
        assert result.stderr.startswith(b"Failed: ")
        assert secret.encode() not in result.stderr + result.stdout
    version = run(["mongodump", "--version"], stack_env)
    assert version.returncode == 0 and version.stdout.startswith(b"mongodump version: ")


# ---------------------------------------------------------------------------------------------
# Kubernetes API double


def test_k8s_double_needs_a_valid_token_over_tls(kube, stack):
    assert kube.request("/api/v1/namespaces/kdl/secrets", token=None)[0] == 401
    code, body = kube.request("/api/v1/namespaces/kdl/secrets", token="not-a-token")
    assert code == 401 and body["kind"] == "Status" and body["reason"] == "Unauthorized"
    assert kube.request("/version")[1]["major"] == "1"
    with pytest.raises(urllib.error.URLError):  # a client that does not trust the double's CA refuses it
        urllib.request.urlopen(stack["K8S_SERVER"] + "/version", context=ssl.create_default_context(), timeout=10)


def test_k8s_lists_have_the_real_shapes(kube, summary):
    code, secrets = kube.request("/api/v1/namespaces/kdl/secrets")
    assert code == 200 and secrets["kind"] == "SecretList" and secrets["apiVersion"] == "v1"
    assert secrets["metadata"]["resourceVersion"]
    assert len(secrets["items"]) == summary["k8s"]["objects"]["secrets"]
    names = [item["metadata"]["name"] for item in secrets["items"]]
    assert names == sorted(names)
    assert set(summary["k8s"]["ssh_key_secrets"]) <= set(names) and "postgres" in names
    assert "alice-ssh-keys" not in names  # lives in another namespace
    item = secrets["items"][0]
    assert "kind" not in item and "apiVersion" not in item
    assert {"uid", "resourceVersion", "creationTimestamp", "managedFields"} <= set(item["metadata"])
    ssh = next(i for i in secrets["items"] if i["metadata"]["name"] == summary["k8s"]["ssh_key_secrets"][0])
    assert base64.b64decode(ssh["data"]["KDL_USER_PRIVATE_SSH_KEY"]).startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert any(i["metadata"].get("ownerReferences") for i in secrets["items"])
    code, projects = kube.request("/apis/project.konstellation.io/v1/namespaces/kdl/kdlprojects")
    assert code == 200 and projects["kind"] == "KDLProjectList"
    assert len(projects["items"]) == summary["k8s"]["objects"]["kdlprojects"]
    project = projects["items"][0]
    assert project["kind"] == "KDLProject" and project["apiVersion"] == "project.konstellation.io/v1"
    assert project["metadata"]["labels"]["app"] == project["metadata"]["name"]
    assert project["status"]["conditions"] and project["metadata"]["generation"] == 1
    assert any("kubectl.kubernetes.io/last-applied-configuration" in p["metadata"].get("annotations", {}) for p in projects["items"])
    code, tools = kube.request("/apis/kdl.konstellation.io/v1alpha1/namespaces/kdl/usertools")
    assert code == 200 and len(tools["items"]) == summary["k8s"]["objects"]["usertools"]
    code, groups = kube.request("/apis")
    assert {g["name"] for g in groups["groups"]} == {"project.konstellation.io", "kdl.konstellation.io"}
    code, resources = kube.request("/apis/kdl.konstellation.io/v1alpha1")
    assert code == 200 and resources["resources"][0]["name"] == "usertools"
    code, one = kube.request(f"/api/v1/namespaces/kdl/secrets/{summary['k8s']['ssh_key_secrets'][0]}")
    assert code == 200 and one["metadata"]["name"] == summary["k8s"]["ssh_key_secrets"][0]


def test_k8s_pagination_returns_every_item_once(kube):
    _, whole = kube.request("/api/v1/namespaces/kdl/secrets")
    items, pages = kube.list_all("/api/v1/namespaces/kdl/secrets", limit=4)
    assert [i["metadata"]["name"] for i in items] == [i["metadata"]["name"] for i in whole["items"]]
    assert len(pages) == -(-len(items) // 4)
    assert all(len(p["items"]) == 4 for p in pages[:-1])
    assert [p["metadata"].get("remainingItemCount") for p in pages[:-1]] == [len(items) - 4 * (n + 1) for n in range(len(pages) - 1)]
    assert "continue" not in pages[-1]["metadata"]
    code, bad = kube.request("/api/v1/namespaces/kdl/secrets?limit=2&continue=%%%not-base64")
    assert code == 400 and bad["reason"] == "BadRequest"


def test_k8s_label_selectors(kube, summary):
    project = summary["projects"][0]
    code, one = kube.request(f"/apis/project.konstellation.io/v1/namespaces/kdl/kdlprojects?labelSelector=app%3Dkdlproject-{project}")
    assert code == 200 and [i["metadata"]["name"] for i in one["items"]] == [f"kdlproject-{project}"]
    code, rest = kube.request(f"/apis/project.konstellation.io/v1/namespaces/kdl/kdlprojects?labelSelector=app!%3Dkdlproject-{project}")
    assert len(rest["items"]) == len(summary["projects"]) - 1
    code, helm = kube.request("/api/v1/namespaces/kdl/secrets?labelSelector=owner%3Dhelm,status%20in%20(deployed)")
    assert [i["metadata"]["name"] for i in helm["items"]] == ["sh.helm.release.v1.kdl-server.v3"]
    code, paged = kube.request("/api/v1/namespaces/kdl/secrets?labelSelector=owner%3Dhelm&limit=1")
    assert len(paged["items"]) == 1 and paged["metadata"]["continue"] and "remainingItemCount" not in paged["metadata"]
    code, bad = kube.request("/api/v1/namespaces/kdl/secrets?labelSelector=%3D%3Dbroken")
    assert code == 400


def test_k8s_limited_token_gets_403_on_secrets_only(stack):
    limited = Kube(stack["K8S_SERVER"], stack["K8S_CA_FILE"], Path(stack["STACK_K8S_LIMITED_TOKEN_FILE"]).read_text().strip())
    code, body = limited.request("/api/v1/namespaces/kdl/secrets")
    assert code == 403 and body["kind"] == "Status" and body["reason"] == "Forbidden"
    assert body["message"] == ('secrets is forbidden: User "system:serviceaccount:kdl:kdl-backup-limited" cannot list resource '
                               '"secrets" in API group "" in the namespace "kdl"')
    assert limited.request("/apis/project.konstellation.io/v1/namespaces/kdl/kdlprojects")[0] == 200
    assert limited.request("/api/v1/namespaces/kdl/configmaps")[0] == 200
    assert limited.request("/_double/faults", method="POST", body=b'{"kind":"500"}')[0] == 403


def test_k8s_missing_crd_is_404_status(kube):
    code, body = kube.request("/apis/serving.knative.dev/v1/namespaces/kdl/services")
    assert code == 404 and body["kind"] == "Status" and body["reason"] == "NotFound" and body["code"] == 404
    code, body = kube.request("/api/v1/namespaces/kdl/secrets/does-not-exist")
    assert code == 404 and body["message"] == 'secrets "does-not-exist" not found'


def test_k8s_expired_continue_token_is_410(private_double):
    kube = private_double()
    code, first = kube.request("/api/v1/namespaces/kdl/secrets?limit=2")
    token = first["metadata"]["continue"]
    assert kube.request(f"/api/v1/namespaces/kdl/secrets?limit=2&continue={token}")[0] == 200
    assert kube.request("/_double/expire-continue", method="POST", body=b"")[0] == 200
    code, gone = kube.request(f"/api/v1/namespaces/kdl/secrets?limit=2&continue={token}")
    assert code == 410 and gone["reason"] == "Expired" and gone["kind"] == "Status"
    assert gone["metadata"]["continue"]  # the inconsistent-list token the real server offers
    short = private_double("--continue-ttl", "0.5")
    _, page = short.request("/api/v1/namespaces/kdl/secrets?limit=2")
    time.sleep(0.8)
    assert short.request(f"/api/v1/namespaces/kdl/secrets?limit=2&continue={page['metadata']['continue']}")[0] == 410


def test_k8s_faults_and_request_log(private_double, tmp_path):
    kube = private_double()
    assert kube.request("/_double/faults", method="POST", body=json.dumps({"kind": "500", "match": "/secrets", "count": 2}).encode())[0] == 201
    assert kube.request("/api/v1/namespaces/kdl/secrets")[0] == 500
    assert kube.request("/api/v1/namespaces/kdl/configmaps")[0] == 200  # does not match
    assert kube.request("/api/v1/namespaces/kdl/secrets")[0] == 500
    assert kube.request("/api/v1/namespaces/kdl/secrets")[0] == 200
    kube.request("/_double/faults", method="POST", body=b'{"kind": "malformed"}')
    code, raw = kube.request("/api/v1/namespaces/kdl/secrets")
    assert code == 200 and isinstance(raw, bytes)
    kube.request("/_double/faults", method="POST", body=b'{"kind": "huge", "bytes": 3000000}')
    code, huge = kube.request("/api/v1/namespaces/kdl/secrets")
    assert code == 200 and len(huge["items"][0]["metadata"]["annotations"]["padding"]) == 3000000
    kube.request("/_double/faults", method="POST", body=b'{"kind": "slow", "delay": 1}')
    started = time.monotonic()
    assert kube.request("/api/v1/namespaces/kdl/configmaps")[0] == 200
    assert time.monotonic() - started >= 1
    kube.request("/_double/faults", method="POST", body=b'{"kind": "drop"}')
    with pytest.raises((urllib.error.URLError, ConnectionError, http_client_errors())):
        kube.request("/api/v1/namespaces/kdl/secrets")
    assert kube.request("/_double/faults", method="POST", body=b'{"kind": "nonsense"}')[0] == 400
    log_file = tmp_path / "k8s-0" / "requests.log"
    entries = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert [e["status"] for e in entries if e["path"] == "/api/v1/namespaces/kdl/secrets"][:3] == [500, 500, 200]
    assert all(e["token"] == "full" for e in entries)
    assert kube.token not in log_file.read_text()


def http_client_errors():
    import http.client

    return http.client.HTTPException


# ---------------------------------------------------------------------------------------------
# Sample data on disk


def test_gitea_data_has_real_repos_and_the_folders_a_backup_excludes(stack, summary):
    root = Path(stack["GITEA_DATA_DIR"])
    assert summary["gitea"]["repo_count"] == len(summary["gitea"]["repos"]) >= 3
    env = dict(os.environ, GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="safe.directory", GIT_CONFIG_VALUE_0="*")
    for name, repo in summary["gitea"]["repos"].items():
        path = root / "git" / "repositories" / f"{name}.git"
        head = subprocess.run(["git", "--git-dir", str(path), "rev-parse", "refs/heads/main"], env=env, capture_output=True, text=True)
        assert head.stdout.strip() == repo["head"], (name, head.stderr)
        count = subprocess.run(["git", "--git-dir", str(path), "rev-list", "--count", "main"], env=env, capture_output=True, text=True)
        assert int(count.stdout) == repo["commits"]
        assert subprocess.run(["git", "--git-dir", str(path), "fsck", "--strict"], env=env, capture_output=True).returncode == 0
    for folder in ("gitea/conf", "gitea/indexers", "ssh", "lost+found"):
        assert (root / folder).is_dir(), folder
    assert "DB_TYPE = postgres" in (root / "gitea/conf/app.ini").read_text()
    assert (root / "gitea/conf/app.ini").stat().st_uid == 1000
    files = sum(len(names) for _, _, names in os.walk(root))
    assert files == summary["gitea"]["files"]


def test_mlflow_stores_match_the_summary(stack, summary, tmp_path):
    root = Path(stack["MLFLOW_ROOT"])
    projects = summary["mlflow"]["projects"]
    assert any(p["wal"] for p in projects) and any(p["local_artifacts"] for p in projects)
    for project in projects:
        folder = root / project["dir"]
        assert re.fullmatch(r"kdl-[a-z0-9-]+-mlflow-claim-pvc-[0-9a-f-]{36}", project["dir"])
        if project["wal"]:
            assert (folder / "mlflow.db-wal").stat().st_size > 0 and (folder / "mlflow.db-shm").exists()
        if project["local_artifacts"]:
            assert (folder / project["local_artifacts"]).is_dir()
        copy = tmp_path / project["dir"]
        copy.mkdir()
        for name in ("mlflow.db", "mlflow.db-wal", "mlflow.db-shm"):
            if (folder / name).exists():
                shutil.copy(folder / name, copy / name)
        db = sqlite3.connect(copy / "mlflow.db")
        try:
            for table, count in project["tables"].items():
                assert db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == count, (project["dir"], table)
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            db.close()
    stores = sorted(p.parent.name for p in root.glob("*/mlflow.db"))
    assert stores == sorted(p["dir"] for p in projects)


def test_k8s_double_serves_the_seeded_object_counts(kube, summary):
    paths = {"secrets": "/api/v1/namespaces/kdl/secrets", "configmaps": "/api/v1/namespaces/kdl/configmaps",
             "serviceaccounts": "/api/v1/namespaces/kdl/serviceaccounts",
             "kdlprojects": "/apis/project.konstellation.io/v1/namespaces/kdl/kdlprojects",
             "usertools": "/apis/kdl.konstellation.io/v1alpha1/namespaces/kdl/usertools"}
    served = {name: len(kube.request(path)[1]["items"]) for name, path in paths.items()}
    assert served == summary["k8s"]["objects"]
