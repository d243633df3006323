"""End-to-end tests of s3-put, s3-get, s3-ls and s3-prune against S3 with authentication on.

They run against the local stack's Ceph RGW (KDL_STACK_ENV, or the `stack` fixture), which checks signatures
against the path as sent and payload hashes against the body, as AWS does. One test uses moto instead: RGW 16
ignores CRC-32 checksums, so only moto can show that s3-put sends them. Faults come from Tests/fixtures/fault_proxy.py.
"""
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "Tests" / "fixtures"
MiB = 1 << 20

sys.path.insert(0, str(FIXTURES))


def wait_for(path, process, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if Path(path).exists():
            return
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        time.sleep(0.1)
    raise TimeoutError(f"{path} did not appear")


@pytest.fixture(scope="session")
def helpers(request):
    """The directory holding the built helpers."""
    try:
        return Path(request.getfixturevalue("bin_dir"))
    except pytest.FixtureLookupError:
        pass
    candidates = [os.environ.get("KDL_BIN_DIR", "")] + [str(ROOT / p) for p in (".build/release", ".build/debug")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "s3-put").exists():
            return Path(candidate)
    pytest.fail("no built helpers: set KDL_BIN_DIR or run swift build")


@pytest.fixture(scope="session")
def s3(stack):
    """The local stack's RGW: the backup's user and bucket."""
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ENDPOINT_URL_S3", "BACKUP_S3_BUCKET")
    return {k: stack[k] for k in keys}


@pytest.fixture(scope="session")
def moto_s3():
    """moto in this process, for the one thing RGW 16 cannot show: stored CRC-32 checksums (authentication off)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "moto", "AWS_SECRET_ACCESS_KEY": "moto-secret-" + "m" * 28, "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}", "BACKUP_S3_BUCKET": "kdl-backups"}
    boto(env).create_bucket(Bucket=env["BACKUP_S3_BUCKET"])
    yield env
    server.stop()


def boto(env):
    return boto3.client(
        "s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], region_name=env.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def run(helpers, tool, *args, env, input=None, check=True):
    full_env = {"PATH": "/usr/bin:/bin", **env}
    result = subprocess.run(
        [str(helpers / tool), *map(str, args)], env=full_env, input=input, capture_output=True, timeout=300
    )
    for secret in (env.get("AWS_SECRET_ACCESS_KEY"),):
        if secret:
            assert secret.encode() not in result.stdout + result.stderr, f"{tool} printed the secret"
    if check:
        assert result.returncode == 0, result.stderr.decode()
    return result


def sha(data):
    return hashlib.sha256(data).hexdigest()


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# Exactly one part (5 MiB), and a multi-part object whose last part is short.
SIZES = [0, 1, 5 * MiB, 12 * MiB + 3]


@pytest.mark.parametrize("from_stdin", [False, True], ids=["file", "stdin"])
@pytest.mark.parametrize("size", SIZES, ids=["empty", "1-byte", "one-part", "multipart"])
def test_round_trip_is_byte_identical(helpers, s3, tmp_path, size, from_stdin):
    data = os.urandom(size)
    source = tmp_path / "source"
    source.write_bytes(data)
    bucket, key = s3["BACKUP_S3_BUCKET"], f"{unique('roundtrip')}/object.bin"
    args = ["--part-size", "5MiB", "-" if from_stdin else source, f"s3://{bucket}/{key}"]
    result = run(helpers, "s3-put", *args, env=s3, input=data if from_stdin else None)
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["bucket"] == bucket and out["key"] == key
    assert out["size"] == size and out["sha256"] == sha(data)
    assert out["parts"] == (3 if size > 5 * MiB else 1)
    assert out["etag"] and out["seconds"] >= 0
    stored = boto(s3).get_object(Bucket=bucket, Key=key)["Body"].read()
    assert stored == data

    dest = tmp_path / "back"
    got = run(helpers, "s3-get", "--sha256", sha(data), f"s3://{bucket}/{key}", dest, env=s3)
    assert dest.read_bytes() == data
    assert json.loads(got.stdout)["sha256"] == sha(data)
    streamed = run(helpers, "s3-get", f"s3://{bucket}/{key}", "-", env=s3)
    assert streamed.stdout == data


TRICKY_KEYS = [
    "with space/a b.txt",
    "plus+equals=dollar$.bin",
    "semi;colon;key.bin",
    "unicodé/ключ/鍵.bin",
    "all of them + = $ ; é/x",
]


@pytest.mark.parametrize("key", TRICKY_KEYS)
def test_tricky_keys_round_trip_under_raw_path_signing(helpers, s3, tmp_path, key):
    data = os.urandom(4096)
    source = tmp_path / "source"
    source.write_bytes(data)
    bucket = s3["BACKUP_S3_BUCKET"]
    prefix = unique("tricky")
    full_key = f"{prefix}/{key}"
    out = json.loads(run(helpers, "s3-put", source, f"s3://{bucket}/{full_key}", env=s3).stdout)
    assert out["key"] == full_key
    listed = boto(s3).list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]
    assert [o["Key"] for o in listed] == [full_key]
    assert run(helpers, "s3-get", f"s3://{bucket}/{full_key}", "-", env=s3).stdout == data
    ls = run(helpers, "s3-ls", "--json", f"s3://{bucket}/{prefix}/", env=s3).stdout.decode().splitlines()
    assert [json.loads(line)["key"] for line in ls] == [full_key]


def test_a_wrong_signature_on_a_tricky_key_is_still_refused(helpers, s3, tmp_path):
    source = tmp_path / "source"
    source.write_bytes(b"x")
    env = {**s3, "AWS_SECRET_ACCESS_KEY": "not-the-secret-" + "x" * 25}
    result = run(helpers, "s3-put", source, f"s3://{s3['BACKUP_S3_BUCKET']}/a+b=$;é", env=env, check=False)
    assert result.returncode == 77
    assert b"SignatureDoesNotMatch" in result.stderr


def test_a_wrong_secret_exits_77_naming_signature_does_not_match(helpers, s3, tmp_path):
    source = tmp_path / "source"
    source.write_bytes(b"payload")
    wrong = "wrong-secret-" + uuid.uuid4().hex
    env = {**s3, "AWS_SECRET_ACCESS_KEY": wrong}
    bucket = s3["BACKUP_S3_BUCKET"]
    result = run(helpers, "s3-put", source, f"s3://{bucket}/denied/object", env=env, check=False)
    assert result.returncode == 77
    line = result.stderr.decode().strip().splitlines()[-1]
    assert "SignatureDoesNotMatch" in line and "PutObject" in line and f"s3://{bucket}/denied/object" in line
    assert wrong not in result.stderr.decode()
    for tool, args in [("s3-ls", [f"s3://{bucket}/"]), ("s3-get", [f"s3://{bucket}/x", tmp_path / "x"])]:
        other = run(helpers, tool, *args, env=env, check=False)
        assert other.returncode == 77 and b"SignatureDoesNotMatch" in other.stderr
    assert not (tmp_path / "x").exists()


def test_a_missing_bucket_is_named(helpers, s3, tmp_path):
    source = tmp_path / "source"
    source.write_bytes(b"payload")
    missing = unique("no-such-bucket")
    result = run(helpers, "s3-put", source, f"s3://{missing}/key", env=s3, check=False)
    assert result.returncode == 66
    assert "NoSuchBucket" in result.stderr.decode() and missing in result.stderr.decode()
    listing = run(helpers, "s3-ls", f"s3://{missing}/", env=s3, check=False)
    assert listing.returncode == 66 and b"NoSuchBucket" in listing.stderr


def test_missing_key_and_bad_usage(helpers, s3, tmp_path):
    bucket = s3["BACKUP_S3_BUCKET"]
    dest = tmp_path / "dest"
    result = run(helpers, "s3-get", f"s3://{bucket}/{unique('absent')}", dest, env=s3, check=False)
    assert result.returncode == 66 and b"NoSuchKey" in result.stderr
    assert not dest.exists()
    assert run(helpers, "s3-put", tmp_path / "absent-file", f"s3://{bucket}/k", env=s3, check=False).returncode == 66
    assert run(helpers, "s3-put", "-", "not-a-uri", env=s3, input=b"", check=False).returncode == 64
    assert run(helpers, "s3-put", "--part-size", "1MiB", "-", f"s3://{bucket}/k", env=s3, input=b"", check=False).returncode == 64
    assert run(helpers, "s3-get", "--sha256", "abc", f"s3://{bucket}/k", "-", env=s3, check=False).returncode == 64
    no_keys = {k: v for k, v in s3.items() if not k.startswith("AWS_SECRET")}
    assert run(helpers, "s3-ls", f"s3://{bucket}/", env=no_keys, check=False).returncode == 64


def test_a_sha256_mismatch_removes_the_partial_file(helpers, s3, tmp_path):
    bucket, key = s3["BACKUP_S3_BUCKET"], f"{unique('mismatch')}/object"
    boto(s3).put_object(Bucket=bucket, Key=key, Body=b"the stored bytes")
    dest = tmp_path / "dest"
    result = run(helpers, "s3-get", "--sha256", "0" * 64, f"s3://{bucket}/{key}", dest, env=s3, check=False)
    assert result.returncode == 74
    assert b"sha256 mismatch" in result.stderr
    assert not dest.exists()


@pytest.fixture
def proxy(tmp_path):
    """Starts fault_proxy.py in front of `upstream` with the given options; stops it afterwards."""
    processes = []

    def start(upstream, *options):
        port_file = tmp_path / f"proxy-{len(processes)}.port"
        log = open(tmp_path / f"proxy-{len(processes)}.log", "w")
        process = subprocess.Popen(
            [sys.executable, str(FIXTURES / "fault_proxy.py"), "--listen-port", "0", "--upstream", upstream,
             "--port-file", str(port_file), *options],
            stdout=log, stderr=subprocess.STDOUT,
        )
        processes.append(process)
        wait_for(port_file, process)
        return f"http://127.0.0.1:{port_file.read_text().strip()}", tmp_path / f"proxy-{len(processes) - 1}.log"

    yield start
    for process in processes:
        process.terminate()
        process.wait(10)


def test_faults_still_end_byte_identical(helpers, s3, proxy, tmp_path):
    data = os.urandom(26 * MiB + 17)
    bucket, key = s3["BACKUP_S3_BUCKET"], f"{unique('faults')}/object.bin"
    endpoint, log = proxy(s3["AWS_ENDPOINT_URL_S3"], "--seed", "15", "--rate", "0.4", "--stall-seconds", "4")
    options = ["--endpoint", endpoint, "--stall-timeout", "1", "--retries", "8"]
    out = run(helpers, "s3-put", *options, "--part-size", "5MiB", "-", f"s3://{bucket}/{key}", env=s3, input=data)
    assert json.loads(out.stdout)["sha256"] == sha(data)
    assert boto(s3).get_object(Bucket=bucket, Key=key)["Body"].read() == data
    got = run(helpers, "s3-get", *options, "--sha256", sha(data), f"s3://{bucket}/{key}", tmp_path / "back", env=s3)
    assert (tmp_path / "back").read_bytes() == data
    injected = log.read_text()
    assert injected.count("fault_proxy: ") >= 3, injected  # faults really happened
    assert json.loads(got.stdout)["size"] == len(data)


def test_downloads_resume_after_dropped_connections(helpers, s3, proxy, tmp_path):
    data = os.urandom(9 * MiB)
    bucket, key = s3["BACKUP_S3_BUCKET"], f"{unique('resume')}/object.bin"
    boto(s3).put_object(Bucket=bucket, Key=key, Body=data)
    endpoint, log = proxy(s3["AWS_ENDPOINT_URL_S3"], "--seed", "3", "--rate", "0.6", "--faults", "reset,truncate",
                          "--match", "^GET ")
    got = run(helpers, "s3-get", "--endpoint", endpoint, "--retries", "10", f"s3://{bucket}/{key}", tmp_path / "back",
              env=s3)
    assert (tmp_path / "back").read_bytes() == data
    assert json.loads(got.stdout)["resumes"] >= 1, log.read_text()


def test_a_final_failure_aborts_the_multipart_upload(helpers, s3, proxy):
    bucket, key = s3["BACKUP_S3_BUCKET"], f"{unique('abort')}/object.bin"
    endpoint, log = proxy(s3["AWS_ENDPOINT_URL_S3"], "--rate", "1", "--faults", "slowdown,500", "--match", "partNumber=3")
    data = os.urandom(16 * MiB)
    result = run(helpers, "s3-put", "--endpoint", endpoint, "--retries", "2", "--part-size", "5MiB", "-",
                 f"s3://{bucket}/{key}", env=s3, input=data, check=False)
    assert result.returncode == 69, result.stderr.decode()
    assert "UploadPart" in result.stderr.decode().splitlines()[-1]
    assert log.read_text().count("partNumber=3") == 3  # first try and two retries
    client = boto(s3)
    assert client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", []) == []
    assert client.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0) == 0


def test_ls_follows_continuation_tokens(helpers, s3):
    bucket, prefix = s3["BACKUP_S3_BUCKET"], unique("many")
    client = boto(s3)
    keys = sorted(f"{prefix}/{i:05d}.txt" for i in range(1_234))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: client.put_object(Bucket=bucket, Key=k, Body=k.encode()), keys))
    plain = run(helpers, "s3-ls", f"s3://{bucket}/{prefix}/", env=s3).stdout.decode().splitlines()
    assert [line.split(" ", 2)[2] for line in plain] == keys
    lines = run(helpers, "s3-ls", "--json", f"s3://{bucket}/{prefix}", env=s3).stdout.decode().splitlines()
    objects = [json.loads(line) for line in lines]
    assert [o["key"] for o in objects] == keys
    assert all(o["size"] == len(o["key"]) and o["lastModified"] and o["etag"] for o in objects)


NOW = "20250110T020000Z"
# (id, complete): nine nightly complete sets, one fresh incomplete set (a run in progress), one old debris set.
HISTORY = [(f"202501{day:02d}T020000Z", True) for day in range(1, 10)] + [
    ("20250110T010000Z", False),
    ("20250106T030000Z", False),
]


def seed_history(client, bucket, prefix):
    for backup_id, complete in HISTORY:
        for name in ("gitea/postgres.dump", "mongodb/kdl.archive.gz"):
            client.put_object(Bucket=bucket, Key=f"{prefix}/{backup_id}/{name}", Body=b"x" * 10)
        if complete:
            client.put_object(Bucket=bucket, Key=f"{prefix}/{backup_id}/manifest.json", Body=b"{}")
    client.put_object(Bucket=bucket, Key=f"{prefix}/README.txt", Body=b"not a set")
    client.put_object(Bucket=bucket, Key=f"{prefix}/not-an-id/file", Body=b"not a set")


def all_keys(client, bucket, prefix):
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def test_prune_dry_run_then_for_real(helpers, s3):
    bucket, prefix = s3["BACKUP_S3_BUCKET"], unique("kdl-backup")
    client = boto(s3)
    seed_history(client, bucket, prefix)
    before = all_keys(client, bucket, prefix)
    args = ["--keep-last", "3", "--keep-days", "5", "--now", NOW, f"s3://{bucket}/{prefix}"]

    dry = run(helpers, "s3-prune", "--dry-run", *args, env=s3)
    decisions = {d["id"]: d for d in map(json.loads, dry.stdout.decode().splitlines())}
    assert all_keys(client, bucket, prefix) == before
    deleted = sorted(i for i, d in decisions.items() if d["action"] == "delete")
    # Kept: the last 3 (7th-9th) and those younger than 5 days (6th-9th); the 1 h old incomplete set is in its grace period.
    assert deleted == [f"202501{day:02d}T020000Z" for day in range(1, 6)] + ["20250106T030000Z"]
    assert decisions["20250110T010000Z"]["action"] == "keep" and not decisions["20250110T010000Z"]["complete"]
    assert decisions["20250109T020000Z"]["reason"] == "newest complete set"
    assert decisions["20250101T020000Z"]["objects"] == 3

    run(helpers, "s3-prune", *args, env=s3)
    after = all_keys(client, bucket, prefix)
    expected = [k for k in before if k.split("/")[1] not in deleted]
    assert after == expected
    assert f"{prefix}/README.txt" in after and f"{prefix}/not-an-id/file" in after


def test_prune_keeps_the_newest_complete_set_whatever_the_rules(helpers, s3):
    bucket, prefix = s3["BACKUP_S3_BUCKET"], unique("kdl-backup")
    client = boto(s3)
    seed_history(client, bucket, prefix)
    run(helpers, "s3-prune", "--keep-days", "1", "--incomplete-grace", "0", "--now", "20260101T000000Z",
        f"s3://{bucket}/{prefix}/", env=s3)
    remaining = {k.split("/")[1] for k in all_keys(client, bucket, prefix)}
    assert remaining == {"20250109T020000Z", "README.txt", "not-an-id"}


def test_prune_refuses_an_empty_prefix(helpers, s3):
    bucket = s3["BACKUP_S3_BUCKET"]
    for target in (f"s3://{bucket}", f"s3://{bucket}/", f"s3://{bucket}//"):
        result = run(helpers, "s3-prune", "--keep-last", "1", target, env=s3, check=False)
        assert result.returncode == 64, target
        assert b"refusing" in result.stderr


def test_sigterm_aborts_the_multipart_upload_in_progress(helpers, s3):
    import signal

    bucket, key = s3["BACKUP_S3_BUCKET"], f"{unique('sigterm')}/object.bin"
    client = boto(s3)
    process = subprocess.Popen(
        [str(helpers / "s3-put"), "--part-size", "5MiB", "-", f"s3://{bucket}/{key}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin", **s3},
    )
    try:
        process.stdin.write(os.urandom(12 * MiB))
        process.stdin.flush()
        deadline = time.time() + 30
        while not client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads"):
            assert time.time() < deadline, "the multipart upload never started"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 128 + signal.SIGTERM
    finally:
        process.kill()
        process.wait()
    assert client.list_multipart_uploads(Bucket=bucket, Prefix=key).get("Uploads", []) == []
    assert client.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0) == 0


def crc32_b64(data):
    import base64
    import zlib

    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def test_uploads_carry_crc32_checksums_that_s3_keeps(helpers, moto_s3, tmp_path):
    """Like the AWS CLI: CRC-32 per part (a composite checksum of the parts) or of the single PutObject."""
    s3 = moto_s3
    client = boto(s3)
    bucket = s3["BACKUP_S3_BUCKET"]
    small, big = os.urandom(1000), os.urandom(12 * MiB + 3)
    prefix = unique("checksums")
    run(helpers, "s3-put", "-", f"s3://{bucket}/{prefix}/small", env=s3, input=small)
    run(helpers, "s3-put", "--part-size", "5MiB", "-", f"s3://{bucket}/{prefix}/big", env=s3, input=big)
    head = client.head_object(Bucket=bucket, Key=f"{prefix}/small", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32"] == crc32_b64(small)
    import base64

    parts = [big[i:i + 5 * MiB] for i in range(0, len(big), 5 * MiB)]
    composite = b"".join(base64.b64decode(crc32_b64(part)) for part in parts)
    head = client.head_object(Bucket=bucket, Key=f"{prefix}/big", ChecksumMode="ENABLED")
    # S3 answers a composite checksum as "<crc of the part crcs>-<parts>"; moto's HeadObject leaves out the count.
    assert head["ChecksumCRC32"] in (f"{crc32_b64(composite)}-3", crc32_b64(composite))
    assert client.get_object(Bucket=bucket, Key=f"{prefix}/big")["Body"].read() == big


def test_checksums_can_be_turned_off_for_stores_that_refuse_them(helpers, moto_s3):
    s3 = moto_s3
    client = boto(s3)
    bucket = s3["BACKUP_S3_BUCKET"]
    key = f"{unique('no-checksum')}/object"
    data = os.urandom(1000)
    run(helpers, "s3-put", "-", f"s3://{bucket}/{key}", env={**s3, "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required"}, input=data)
    head = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    assert "ChecksumCRC32" not in head
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == data
    bad = run(helpers, "s3-ls", f"s3://{bucket}/{key}", env={**s3, "AWS_REQUEST_CHECKSUM_CALCULATION": "sometimes"}, check=False)
    assert bad.returncode == 64 and b"AWS_REQUEST_CHECKSUM_CALCULATION" in bad.stderr


def test_force_path_style_from_the_environment(helpers, s3):
    """The chart's s3.forcePathStyle arrives as AWS_S3_FORCE_PATH_STYLE; --path-style/--no-path-style win."""
    bucket = s3["BACKUP_S3_BUCKET"]
    key = f"{unique('path-style')}/object"
    run(helpers, "s3-put", "-", f"s3://{bucket}/{key}", env={**s3, "AWS_S3_FORCE_PATH_STYLE": "true"}, input=b"x")
    virtual = {**s3, "AWS_S3_FORCE_PATH_STYLE": "false"}
    # Virtual-hosted style puts the bucket in the host name, which does not resolve on loopback.
    refused = run(helpers, "s3-ls", "--retries", "0", f"s3://{bucket}/{key}", env=virtual, check=False)
    assert refused.returncode == 69, refused.stderr.decode()
    assert b"resolve host" in refused.stderr
    listed = run(helpers, "s3-ls", "--path-style", f"s3://{bucket}/{key}", env=virtual)
    assert key.encode() in listed.stdout
    bad = run(helpers, "s3-ls", f"s3://{bucket}/{key}", env={**s3, "AWS_S3_FORCE_PATH_STYLE": "maybe"}, check=False)
    assert bad.returncode == 64
    assert bad.stderr.decode().strip().count("\n") == 0 and "AWS_S3_FORCE_PATH_STYLE" in bad.stderr.decode()


def test_an_unknown_option_is_named_before_a_missing_argument(helpers):
    for tool in ("s3-put", "s3-get", "s3-ls", "s3-prune"):
        result = run(helpers, tool, "--no-such-option", env={}, check=False)
        assert result.returncode == 64 and b"--no-such-option" in result.stderr
        result = run(helpers, tool, env={}, check=False)
        assert result.returncode == 64 and b"Missing expected argument" in result.stderr
