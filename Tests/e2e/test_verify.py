"""Scheduled verification end to end (issue 11): `restore.sh verify latest`, as the verify CronJob runs it,
against a fresh encrypted set made by the REAL backup/backup.sh on the local stack, with every notification
captured by Tests/fixtures/capture_server.py (standing in for the Pushgateway, a webhook receiver and the
verification's healthchecks.io check) and asserted: metrics parsed with prometheus_client's parser.

Damaged, missing and stale sets are server-side copies of the fresh one under prefixes of their own.
Needs KDL_STACK_ENV (scripts/stack/up.sh) and KDL_BIN_DIR (the helpers).
"""
import json
import re
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

import pytest
import yaml
from restore_support import (ROOT, clone_set, createdb_role, database_exists,  # noqa: F401
                             drop_database, full_backup, iso, metrics, run_restore, set_id_at)

sys.path.insert(0, str(ROOT / "Tests" / "fixtures"))
from capture_server import CaptureServer  # noqa: E402

FORMAT_CHECKS = "PRAGMA integrity_check, YAML documents, mongorestore --dryRun, pg_restore --list, tar -t"


@pytest.fixture(scope="module")
def fresh(full_backup):
    """The session's fresh set (restore_support.full_backup); the copies made here are removed afterwards."""
    full_backup.clones = []
    yield full_backup
    for prefix in full_backup.clones:
        listing = full_backup.s3.list_objects_v2(Bucket=full_backup.bucket, Prefix=f"{prefix}/")
        for obj in listing.get("Contents", []):
            full_backup.s3.delete_object(Bucket=full_backup.bucket, Key=obj["Key"])


@pytest.fixture
def http(tmp_path):
    with CaptureServer(tmp_path / "http") as server:
        yield server


def clone(fresh, **kwargs):
    """A copy of the fresh set under a new prefix (removed after the module); returns the prefix."""
    prefix = f"e2e-verify-{uuid.uuid4().hex[:10]}"
    fresh.clones.append(prefix)
    clone_set(fresh.s3, fresh.bucket, fresh.prefix, fresh.set_id, prefix, **kwargs)
    return prefix


def verify(fresh, http, *args, **env):
    """restore.sh verify latest ARGS with the notification channels pointed at the capture server."""
    full_env = fresh.restore_env(
        NOTIFY_PUSHGATEWAY_URL=f"{http.url}/pgw", NOTIFY_WEBHOOK_URL=f"{http.url}/hook",
        NOTIFY_VERIFY_HEALTHCHECK_URL=f"{http.url}/ping/verify-check",
        NOTIFY_HEALTHCHECK_URL=f"{http.url}/ping/backup-check", NOTIFY_RETRIES="0", NOTIFY_TIMEOUT_SECONDS="10", **env)
    return run_restore(full_env, "verify", "latest", *args)


def reported(http):
    """(metrics, webhook body, ping paths) of the one notification sent."""
    [push] = http.requests("/pgw")
    assert push["method"] == "POST" and push["path"] == "/pgw/metrics/job/kdl_backup"
    [hook] = http.requests("/hook")
    assert hook["headers"]["x-kdl-backup-event"] == "verify"
    return metrics(push["body"]), json.loads(hook["body"]), [r["path"] for r in http.requests("/ping")]


def finished_epoch(manifest):
    return datetime.strptime(manifest["finishedAt"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


def assert_age(values, body, expected):
    assert abs(values[("kdl_backup_latest_set_age_seconds", None)] - expected) < 120
    assert body["verify"]["setAgeSeconds"] == values[("kdl_backup_latest_set_age_seconds", None)]


def test_verify_without_identity_passes_on_checksums_and_reports_success(fresh, http):
    n = len(fresh.keys())
    result = verify(fresh, http)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"verify: set {fresh.set_id} ok: {n} objects" in result.stdout
    assert f"format checked: 0; encrypted and not decrypted (no identity): {n}" in result.stdout
    values, body, pings = reported(http)
    assert values[("kdl_backup_verify_status", None)] == 1.0
    assert abs(values[("kdl_backup_last_verify_timestamp_seconds", None)] - time.time()) < 60
    assert_age(values, body, time.time() - finished_epoch(fresh.manifest))
    assert not any(name.startswith(("kdl_backup_status", "kdl_backup_last_success")) for name, _ in values)
    assert (body["event"], body["status"], body["backupId"]) == ("verify", "success", fresh.set_id)
    assert body["location"] == f"s3://{fresh.bucket}/{fresh.prefix}/{fresh.set_id}/"
    assert body["summary"] == f"KDL backup verification passed (set {fresh.set_id})"
    checked = body["verify"]["checked"]
    assert checked[0] == f"manifest of set {fresh.set_id}: kdl-backup/v1, status success"
    assert checked[1].startswith("set age: 0 hours (limit 192 hours)")
    assert checked[2:4] == [f"{n} objects present with the manifest's sizes", checked[3]]
    assert checked[3].startswith(f"sha256 of {n} objects (") and checked[3].endswith(") as in the manifest")
    assert checked[4:] == [f"not decrypted (no identity): {n} encrypted objects"]
    assert pings == ["/ping/verify-check"]  # its own check, never the backup's


def test_verify_with_identity_decrypts_and_checks_every_format(fresh, http):
    n = len(fresh.keys())
    result = verify(fresh, http, "--identity", str(fresh.identity))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"format checked: {n}; encrypted and not decrypted (no identity): 0" in result.stdout
    values, body, pings = reported(http)
    assert values[("kdl_backup_verify_status", None)] == 1.0
    assert body["verify"]["checked"][-1] == f"decrypted and format-checked: {n} objects ({FORMAT_CHECKS})"
    assert pings == ["/ping/verify-check"]


def assert_failure_reported(http, last_error, backup_id):
    values, body, pings = reported(http)
    assert values[("kdl_backup_verify_status", None)] == 0.0
    assert (body["status"], body["backupId"]) == ("failure", backup_id)
    assert body["verify"]["checked"][-1] == "failed: " + last_error
    assert body["logTail"][-1] == "restore.sh: " + last_error
    assert pings == ["/ping/verify-check/fail"]
    return values, body


def test_verify_fails_naming_a_missing_object(fresh, http):
    prefix = clone(fresh)
    key = next(k for k in fresh.keys() if k.startswith("mongodb/admin."))
    fresh.s3.delete_object(Bucket=fresh.bucket, Key=f"{prefix}/{fresh.set_id}/{key}")
    result = verify(fresh, http, BACKUP_S3_PREFIX=prefix)
    assert result.returncode == 66
    error = f"missing object: s3://{fresh.bucket}/{prefix}/{fresh.set_id}/{key} (component mongodb)"
    assert result.stderr.strip().splitlines()[-1] == "restore.sh: " + error
    assert result.stdout == ""
    assert_failure_reported(http, error, fresh.set_id)


@pytest.mark.parametrize("identity", [False, True], ids=["checksums-only", "with-identity"])
def test_verify_fails_naming_an_altered_object(fresh, http, identity):
    prefix = clone(fresh)
    key = next(k for k in fresh.keys() if k.startswith("mlflow/churn/mlflow.db"))
    s3_key = f"{prefix}/{fresh.set_id}/{key}"
    body = bytearray(fresh.s3.get_object(Bucket=fresh.bucket, Key=s3_key)["Body"].read())
    body[len(body) // 2] ^= 0x20  # same size: only the checksum can tell
    fresh.s3.put_object(Bucket=fresh.bucket, Key=s3_key, Body=bytes(body))
    args = ["--identity", str(fresh.identity)] if identity else []
    result = verify(fresh, http, *args, BACKUP_S3_PREFIX=prefix)
    assert result.returncode == 74
    last = result.stderr.strip().splitlines()[-1]
    expected = [o["sha256"] for c in fresh.manifest["components"] for o in c["objects"] if o["key"] == key][0]
    assert last.startswith(f"restore.sh: checksum mismatch: s3://{fresh.bucket}/{s3_key} has sha256 ")
    assert last.endswith(f", the manifest says {expected}")
    assert_failure_reported(http, last[len("restore.sh: "):], fresh.set_id)


def test_verify_fails_when_the_newest_successful_set_is_older_than_the_limit(fresh, http):
    now = time.time()
    nine_days = 9 * 86400
    old_id = set_id_at(now - nine_days)

    def age(manifest):
        manifest["startedAt"], manifest["finishedAt"] = iso(now - nine_days - 20), iso(now - nine_days)

    def partial(manifest):
        manifest["status"] = "partial"

    prefix = clone(fresh, new_id=old_id, edit=age)
    clone_set(fresh.s3, fresh.bucket, fresh.prefix, fresh.set_id, prefix, new_id=set_id_at(now - 3600), edit=partial)
    result = verify(fresh, http, BACKUP_S3_PREFIX=prefix)
    assert result.returncode == 1
    error = f"no successful backup in the last 192 hours: the newest, {old_id}, is 216 hours old"
    assert result.stderr.strip().splitlines()[-1] == "restore.sh: " + error
    values, body = assert_failure_reported(http, error, old_id)
    assert_age(values, body, nine_days)

    # The same set within a longer limit passes: only its age failed it.
    second = CaptureServer(http.dir.parent / "http-2").start()
    try:
        result = verify(fresh, second, BACKUP_S3_PREFIX=prefix, BACKUP_VERIFY_MAX_AGE_HOURS="240")
        assert result.returncode == 0, result.stderr[-3000:]
        values, body, _ = reported(second)
        assert values[("kdl_backup_verify_status", None)] == 1.0
        assert body["backupId"] == old_id and body["verify"]["checked"][1] == "set age: 216 hours (limit 240 hours)"
    finally:
        second.stop()


def test_verify_without_any_set_reports_no_backup_set_found(fresh, http):
    prefix = f"e2e-verify-empty-{uuid.uuid4().hex[:8]}"
    result = verify(fresh, http, BACKUP_S3_PREFIX=prefix, BACKUP_ID="20991231T000000Z")
    assert result.returncode == 66
    error = f"no complete backup set with status success under s3://{fresh.bucket}/{prefix}/"
    assert result.stderr.strip().splitlines()[-1] == "restore.sh: " + error
    values, body = assert_failure_reported(http, error, "unknown")
    assert body["summary"] == "KDL backup verification failed (no backup set found)"
    assert body["verify"]["setAgeSeconds"] is None
    assert ("kdl_backup_latest_set_age_seconds", None) not in values


def test_scratch_database_check_restores_counts_and_drops_it(fresh, http):
    scratch = f"kdl_verify_scratch_{uuid.uuid4().hex[:8]}"
    tables = fresh.details("gitea")["pg_dump"]["tables"]
    rows = sum(int(v.split(":")[0]) for v in fresh.source["pg"].values())
    with createdb_role(fresh.env, fresh.stack) as role:
        result = verify(fresh, http, "--identity", str(fresh.identity), BACKUP_VERIFY_SCRATCH_PGDATABASE=scratch, **role)
        assert result.returncode == 0, result.stderr[-3000:]
        assert (f"scratch restore: {tables} tables (the dump lists {tables}), {rows} rows restored into {scratch}; "
                "database dropped") in result.stdout
        assert not database_exists(fresh.env, fresh.stack, scratch)
        _, body, _ = reported(http)
        assert body["verify"]["checked"][-1] == (
            f"scratch restore into {scratch}: {tables} tables (as in the dump), {rows} rows, database dropped")


def test_scratch_database_check_fails_on_a_table_count_mismatch_and_still_drops_it(fresh, http):
    def more_tables(manifest):
        next(c for c in manifest["components"] if c["name"] == "gitea")["details"]["pg_dump"]["tables"] = 99

    prefix = clone(fresh, edit=more_tables)
    scratch = f"kdl_verify_scratch_{uuid.uuid4().hex[:8]}"
    tables = fresh.details("gitea")["pg_dump"]["tables"]
    with createdb_role(fresh.env, fresh.stack) as role:
        result = verify(fresh, http, "--identity", str(fresh.identity), BACKUP_S3_PREFIX=prefix,
                        BACKUP_VERIFY_SCRATCH_PGDATABASE=scratch, **role)
        assert result.returncode == 74
        error = f"scratch restore of set {fresh.set_id}: {tables} tables restored, the dump's table of contents lists 99"
        assert result.stderr.strip().splitlines()[-1] == "restore.sh: " + error
        assert not database_exists(fresh.env, fresh.stack, scratch)
        assert_failure_reported(http, error, fresh.set_id)


def test_scratch_database_check_without_createdb_is_refused(fresh, http):
    scratch = f"kdl_verify_scratch_{uuid.uuid4().hex[:8]}"
    try:
        result = verify(fresh, http, "--identity", str(fresh.identity), BACKUP_VERIFY_SCRATCH_PGDATABASE=scratch)
        assert result.returncode == 77
        last = result.stderr.strip().splitlines()[-1]
        assert "refused us" in last and "permission denied to create database" in last
        assert_failure_reported(http, last[len("restore.sh: "):], fresh.set_id)
    finally:
        drop_database(fresh.env, fresh.stack, scratch)


def test_operations_doc_lists_the_pushed_metrics_and_alerts_on_them(fresh, http, bin_dir):
    """docs/operations.md: its metrics table is what the two jobs push, its alert rules parse and only name
    those metrics, with the two rules issue 11 asks for."""
    result = verify(fresh, http)
    assert result.returncode == 0, result.stderr[-3000:]
    finish = subprocess.run([str(bin_dir / "notify"), "--event", "finish", "--manifest",
                             str(ROOT / "Tests" / "fixtures" / "manifests" / "success.json")],
                            env={"PATH": "/usr/bin:/bin", "NOTIFY_PUSHGATEWAY_URL": f"{http.url}/pgw"},
                            capture_output=True, text=True, timeout=60)
    assert finish.returncode == 0, finish.stderr
    pushed = {name for push in http.requests("/pgw") for name, _ in metrics(push["body"])}
    doc = (ROOT / "docs" / "operations.md").read_text()
    assert set(re.findall(r"^\| `(kdl_backup_\w+)", doc, re.M)) == pushed
    [block] = re.findall(r"```yaml\n(.*?)```", doc, re.S)
    rules = {rule["alert"]: rule["expr"] for group in yaml.safe_load(block)["groups"] for rule in group["rules"]}
    assert rules["KDLBackupStale"] == "kdl_backup_latest_set_age_seconds > 8*86400"
    assert rules["KDLBackupVerifyFailed"] == "kdl_backup_verify_status == 0"
    assert set(re.findall(r"kdl_backup_\w+", " ".join(rules.values()))) <= pushed
