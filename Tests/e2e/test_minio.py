"""The minio component end to end (issue 16): backup.sh backs up MinIO buckets incrementally through bucket-sync,
restore.sh restores them into an empty MinIO, s3-prune keeps exactly the blobs kept sets use.

MinIO is stood in for by the stack's Ceph RGW, as a user in tenant `minio` (scripts/stack/up.sh's STACK_MINIO_*):
each test makes buckets of its own there, and restores into an empty S3: a new RGW user in a tenant of its own
(scripts/stack/s3-user.sh), whose bucket namespace holds nothing. Sizes: KDL_MINIO_TEST_OBJECTS small
objects (default 300; the issue's 5,000 with KDL_MINIO_TEST_OBJECTS=5000) of 1-100 KiB and KDL_MINIO_TEST_LARGE
objects (default 2) above bucket-sync's 16 MiB pack threshold (the issue's 20 of 20-200 MiB are the bench's).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import time
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from restore_support import BACKUP, RESTORE, free_port
from stack_env import load_stack_env

SMALL = int(os.environ.get("KDL_MINIO_TEST_OBJECTS", "300"))
LARGE = int(os.environ.get("KDL_MINIO_TEST_LARGE", "2"))
S3_USER = Path(__file__).resolve().parents[2] / "scripts" / "stack" / "s3-user.sh"
NAMES = ["train set.csv", "état+été=2024 %.parquet", "日本語/メモ.txt", "a+b=c.json", "plain.csv"]


def s3(endpoint, key_id, secret):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=key_id,
                        aws_secret_access_key=secret, config=Config(s3={"addressing_style": "path"}))


def snapshot(client, bucket):
    """key -> (sha256, content type, user metadata) of every object."""
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            got = client.get_object(Bucket=bucket, Key=item["Key"])
            found[item["Key"]] = (hashlib.sha256(got["Body"].read()).hexdigest(), got["ContentType"], got["Metadata"])
    return found


class TargetMinIO:
    """An empty MinIO to restore into: a new RGW user in a tenant of its own (its own bucket namespace)."""

    def __init__(self, directory: Path, stack_dir: str):
        tenant = f"target_{uuid.uuid4().hex[:12]}"
        env_file = directory / f"{tenant}.env"
        subprocess.run([str(S3_USER), "--dir", stack_dir, "--tenant", tenant, "--env-file", str(env_file)],
                       check=True, capture_output=True, timeout=120)
        values = load_stack_env(env_file)
        self.env = {"MINIO_ENDPOINT": values["AWS_ENDPOINT_URL_S3"], "MINIO_ACCESS_KEY_ID": values["AWS_ACCESS_KEY_ID"],
                    "MINIO_SECRET_ACCESS_KEY": values["AWS_SECRET_ACCESS_KEY"]}
        self.client = s3(values["AWS_ENDPOINT_URL_S3"], values["AWS_ACCESS_KEY_ID"], values["AWS_SECRET_ACCESS_KEY"])
        assert self.client.list_buckets()["Buckets"] == [], "a new tenant must hold no bucket"


class Platform:
    """Buckets of this test in the stack's MinIO, the job's environment and its runs."""

    def __init__(self, stack, stack_env, bin_dir, tmp_path):
        self.tmp = tmp_path
        self.stack_dir = stack["STACK_DIR"]
        tag = uuid.uuid4().hex[:8]
        self.buckets = [f"churn-{tag}", f"churn-{tag}-backup-1733500000000"]
        self.prefix = f"minio-e2e-{tag}"
        self.minio = s3(stack["STACK_MINIO_ENDPOINT"], stack["STACK_MINIO_ACCESS_KEY_ID"], stack["STACK_MINIO_SECRET_ACCESS_KEY"])
        self.store = s3(stack["AWS_ENDPOINT_URL_S3"], stack["AWS_ACCESS_KEY_ID"], stack["AWS_SECRET_ACCESS_KEY"])
        self.bucket = stack["BACKUP_S3_BUCKET"]
        subprocess.run(["age-keygen", "-o", str(tmp_path / "identity.txt")], check=True, capture_output=True)
        recipient = subprocess.run(["age-keygen", "-y", str(tmp_path / "identity.txt")], check=True, capture_output=True,
                                   text=True).stdout.strip()
        self.identity = str(tmp_path / "identity.txt")
        self.env = {k: v for k, v in stack_env.items() if not k.startswith(("BACKUP_", "MINIO_", "NOTIFY_"))}
        self.env["BACKUP_S3_BUCKET"] = stack["BACKUP_S3_BUCKET"]
        self.env.update({
            "PATH": f"{bin_dir}:{self.env['PATH']}", "TMPDIR": str(tmp_path), "BACKUP_S3_PREFIX": self.prefix,
            "BACKUP_COMPONENTS": "minio", "BACKUP_AGE_RECIPIENTS": recipient, "MINIO_BUCKETS": " ".join(self.buckets),
            "MINIO_ENDPOINT": stack["STACK_MINIO_ENDPOINT"], "MINIO_ACCESS_KEY_ID": stack["STACK_MINIO_ACCESS_KEY_ID"],
            "MINIO_SECRET_ACCESS_KEY": stack["STACK_MINIO_SECRET_ACCESS_KEY"],
        })
        self.rng = random.Random(16)
        self.ids = 0

    def seed(self, small=SMALL, large=LARGE):
        for bucket in self.buckets:
            self.minio.create_bucket(Bucket=bucket)
        for index in range(small):
            bucket = self.buckets[index % 7 == 6]
            self.put(bucket, f"data/raw/{index:05d} {NAMES[index % len(NAMES)]}", self.rng.randint(1024, 100 * 1024))
        for index in range(large):
            self.put(self.buckets[0], f"mlflow-artifacts/1/run{index}/artifacts/model.pkl", (17 << 20) + index * 4096)

    def put(self, bucket, key, size, body=None):
        body = body if body is not None else self.rng.randbytes(size)
        self.minio.put_object(Bucket=bucket, Key=key, Body=body, ContentType="text/csv" if key.endswith(".csv") else "application/octet-stream",
                              Metadata={"kdl-project": bucket, "written": str(size)})
        return len(body)

    def backup(self, env=None, timeout=600):
        self.ids += 1
        run_env = dict(self.env, BACKUP_ID=time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(1704067200 + self.ids)), **(env or {}))
        result = subprocess.run(["bash", str(BACKUP)], env=run_env, capture_output=True, text=True, timeout=timeout)
        result.set_id = run_env["BACKUP_ID"]
        return result

    def restore(self, *args, env=None):
        return subprocess.run([str(RESTORE), *args], env=dict(self.env, **(env or {})), capture_output=True, text=True, timeout=600)

    def keys(self, under=""):
        found = {}
        for page in self.store.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=f"{self.prefix}/{under}"):
            for item in page.get("Contents", []):
                found[item["Key"][len(self.prefix) + 1:]] = item["Size"]
        return found

    def minio_component(self, set_id):
        manifest = json.loads(self.store.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{set_id}/manifest.json")["Body"].read())
        return next(c for c in manifest["components"] if c["name"] == "minio")

    def restore_into_fresh_target(self, set_id):
        target = TargetMinIO(self.tmp, self.stack_dir)
        result = self.restore("restore", "minio", set_id, "--identity", self.identity, "--yes", env=target.env)
        assert result.returncode == 0, result.stderr
        return {bucket: snapshot(target.client, bucket) for bucket in self.buckets}, result


@pytest.fixture
def platform(stack, stack_env, bin_dir, tmp_path):
    if "STACK_MINIO_ENDPOINT" not in stack:
        pytest.fail("the stack has no MinIO stand-in (scripts/stack/up.sh starts one)")
    return Platform(stack, stack_env, bin_dir, tmp_path)


def test_incremental_sets_restore_as_the_source_was(platform):
    platform.seed()
    total = SMALL + LARGE
    first = platform.backup()
    assert first.returncode == 0, first.stderr
    details = platform.minio_component(first.set_id)["details"]
    assert (details["objects"], details["objectsUploaded"], details["objectsReused"], details["chainLength"]) == (total, total, 0, 0)
    assert details["buckets"] == 2

    second = platform.backup()
    assert second.returncode == 0, second.stderr
    details = platform.minio_component(second.set_id)["details"]
    assert (details["objects"], details["objectsUploaded"], details["objectsReused"], details["chainLength"]) == (total, 0, total, 1)
    assert platform.keys(f"blobs/{second.set_id}/") == {}  # nothing but the indexes and blob lists uploaded
    set_bytes = sum(o["bytes"] for o in platform.minio_component(second.set_id)["objects"])
    assert details["bytesUploaded"] == set_bytes
    at_second = {bucket: snapshot(platform.minio, bucket) for bucket in platform.buckets}

    # about 1 % changed, 10 new, 5 deleted
    keys = sorted(at_second[platform.buckets[0]])
    changed_bytes = 0
    for key in keys[: max(1, total // 100)]:
        changed_bytes += platform.put(platform.buckets[0], key, 50 * 1024)
    for index in range(10):
        changed_bytes += platform.put(platform.buckets[1], f"data/processed/new {index} ü.csv", 20 * 1024)
    for key in keys[-5:]:
        platform.minio.delete_object(Bucket=platform.buckets[0], Key=key)
    third = platform.backup()
    assert third.returncode == 0, third.stderr
    details = platform.minio_component(third.set_id)["details"]
    changed = max(1, total // 100) + 10
    assert details["objectsUploaded"] == changed
    assert details["objectsReused"] == total - max(1, total // 100) - 5
    new_blob_bytes = sum(platform.keys(f"blobs/{third.set_id}/").values())
    assert 0 < new_blob_bytes <= 1.5 * changed_bytes
    at_third = {bucket: snapshot(platform.minio, bucket) for bucket in platform.buckets}

    restored, result = platform.restore_into_fresh_target(second.set_id)
    assert restored == at_second
    restored, result = platform.restore_into_fresh_target(third.set_id)
    assert restored == at_third
    assert "restore step done" in result.stderr


def test_one_bucket_restores_alone_and_extra_objects_stay(platform):
    platform.seed(small=20, large=0)
    result = platform.backup()
    assert result.returncode == 0, result.stderr
    target = TargetMinIO(platform.tmp, platform.stack_dir)
    target.client.create_bucket(Bucket=platform.buckets[0])
    target.client.put_object(Bucket=platform.buckets[0], Key="zz only in the target", Body=b"x")
    plan = platform.restore("restore", "minio", "--bucket", platform.buckets[0], "latest", "--identity", platform.identity,
                            "--dry-run", env=target.env)
    assert plan.returncode == 0, plan.stderr
    assert f"plan: minio:{platform.buckets[0]}: write" in plan.stdout and "1 objects there that the set lacks" in plan.stdout
    assert platform.buckets[1] not in plan.stdout
    assert target.client.list_objects_v2(Bucket=platform.buckets[0])["KeyCount"] == 1  # the dry run wrote nothing
    done = platform.restore("restore", f"minio:{platform.buckets[0]}", "latest", "--identity", platform.identity, "--yes",
                            env=target.env)
    assert done.returncode == 0, done.stderr
    got = snapshot(target.client, platform.buckets[0])
    assert "zz only in the target" in got
    del got["zz only in the target"]
    assert got == snapshot(platform.minio, platform.buckets[0])
    assert platform.buckets[1] not in [b["Name"] for b in target.client.list_buckets()["Buckets"]]


def test_no_plaintext_of_an_object_or_its_key_in_the_backup_bucket(platform):
    marker = b"KDL-PLAINTEXT-MARKER " * 4000  # compressible: zstd alone would not hide it
    key = "data/raw/confidential-dataset-name.csv"
    platform.seed(small=5, large=0)
    platform.put(platform.buckets[0], key, len(marker), body=marker)
    result = platform.backup()
    assert result.returncode == 0, result.stderr
    stored = platform.keys()
    assert any(k.startswith("blobs/") for k in stored)
    for stored_key in stored:
        body = platform.store.get_object(Bucket=platform.bucket, Key=f"{platform.prefix}/{stored_key}")["Body"].read()
        assert b"KDL-PLAINTEXT-MARKER" not in body, stored_key
        assert b"confidential-dataset-name" not in body, stored_key
    assert platform.env["MINIO_SECRET_ACCESS_KEY"] not in result.stderr + result.stdout
    verify = platform.restore("verify", result.set_id, "--identity", platform.identity)
    assert verify.returncode == 0, verify.stderr
    assert "every object decrypted and its sha256 checked" in verify.stdout


def test_prune_deletes_only_blobs_no_kept_set_uses_and_the_kept_set_restores(platform):
    platform.seed(small=30, large=0)
    first = platform.backup()
    assert first.returncode == 0, first.stderr
    for index in range(3):  # the second set stores these alone; the first set's pack is still used
        platform.put(platform.buckets[0], f"data/raw/{index:05d} {NAMES[index % len(NAMES)]}", 4096)
    second = platform.backup()
    assert second.returncode == 0, second.stderr
    platform.minio.delete_object(Bucket=platform.buckets[0], Key="data/raw/00003 a+b=c.json")
    # a third set with nothing reused from the second set's new blob: those objects are rewritten again
    for index in range(3):
        platform.put(platform.buckets[0], f"data/raw/{index:05d} {NAMES[index % len(NAMES)]}", 2048)
    third = platform.backup()
    assert third.returncode == 0, third.stderr
    before = platform.keys("blobs/")
    assert any(k.startswith(f"blobs/{second.set_id}/") for k in before)
    prune = subprocess.run(["s3-prune", "--keep-last", "1", "--incomplete-grace", "0s", f"s3://{platform.bucket}/{platform.prefix}"],
                           env=platform.env, capture_output=True, text=True)
    assert prune.returncode == 0, prune.stderr
    after = platform.keys("blobs/")
    assert not any(k.startswith(f"blobs/{second.set_id}/") for k in after)  # used by the second set only
    assert any(k.startswith(f"blobs/{first.set_id}/") for k in after)  # its pack still holds the third set's objects
    assert any(k.startswith(f"blobs/{third.set_id}/") for k in after)
    verify = platform.restore("verify", third.set_id, "--identity", platform.identity)
    assert verify.returncode == 0, verify.stderr
    restored, _ = platform.restore_into_fresh_target(third.set_id)
    assert restored == {bucket: snapshot(platform.minio, bucket) for bucket in platform.buckets}


def test_sigterm_mid_upload_leaves_no_set_and_the_next_run_succeeds(platform):
    platform.seed(small=10, large=0)
    for index in range(3):
        platform.put(platform.buckets[0], f"mlflow-artifacts/big-{index}.bin", 60 << 20)
    process = subprocess.Popen(["bash", str(BACKUP)], env=dict(platform.env, BACKUP_ID="20240101T000500Z"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not platform.keys("blobs/20240101T000500Z/"):
        multipart = platform.store.list_multipart_uploads(Bucket=platform.bucket, Prefix=f"{platform.prefix}/blobs/")
        if multipart.get("Uploads"):
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "20240101T000500Z/manifest.json" not in platform.keys("20240101T000500Z/")
    uploads = platform.store.list_multipart_uploads(Bucket=platform.bucket, Prefix=f"{platform.prefix}/")
    assert not uploads.get("Uploads"), "a multipart upload was left open"
    following = platform.backup()
    assert following.returncode == 0, following.stderr
    verify = platform.restore("verify", following.set_id, "--identity", platform.identity)
    assert verify.returncode == 0, verify.stderr


def test_full_every_bounds_the_chain(platform):
    platform.seed(small=10, large=0)
    chains = []
    for _ in range(3):
        result = platform.backup(env={"BACKUP_MINIO_FULL_EVERY": "1"})
        assert result.returncode == 0, result.stderr
        details = platform.minio_component(result.set_id)["details"]
        chains.append((details["chainLength"], details["objectsReused"]))
    assert chains == [(0, 0), (1, 10), (0, 0)]


def test_unreachable_minio_fails_this_component_only(platform):
    result = platform.backup(env={"BACKUP_COMPONENTS": "mongodb minio", "MINIO_ENDPOINT": f"http://127.0.0.1:{free_port()}"})
    assert result.returncode == 3, result.stderr
    assert "check=minio result=failed code=69" in result.stderr
    manifest = json.loads(platform.store.get_object(Bucket=platform.bucket, Key=f"{platform.prefix}/{result.set_id}/manifest.json")["Body"].read())
    statuses = {c["name"]: c["status"] for c in manifest["components"] if c["status"] != "skipped"}
    assert statuses == {"mongodb": "success", "minio": "failure"}


@pytest.mark.parametrize("setting, message", [
    ({"BACKUP_MINIO_FULL_EVERY": "weekly"}, "BACKUP_MINIO_FULL_EVERY must be a whole number"),
    ({"MINIO_SECRET_ACCESS_KEY": ""}, "MINIO_ACCESS_KEY_ID and MINIO_SECRET_ACCESS_KEY are required"),
    ({"MINIO_EXCLUDE_REGEX": "(unclosed"}, "MINIO_EXCLUDE_REGEX is not an extended regular expression"),
    ({"MINIO_BUCKETS": "Not_A_Bucket"}, "is not a bucket name"),
    ({"MINIO_ENDPOINT": "minio:9000"}, "MINIO_ENDPOINT must be http(s)://host[:port]"),
])
def test_bad_settings_exit_64_before_any_upload(platform, setting, message):
    result = platform.backup(env=setting)
    assert result.returncode == 64, result.stderr
    assert message in result.stderr
    assert platform.keys() == {}
