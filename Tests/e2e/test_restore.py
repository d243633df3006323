"""End-to-end round trips of backup/restore.sh against the local stack (issue 8).

A backup set is built by hand with the real helpers (pg_dump -Fc, tar | zstd, age, s3-put) into the
stack's Ceph RGW (signatures and payload hashes checked) under a prefix of its own, with a manifest as backup.sh writes it;
restore.sh then restores it into fresh targets (a new PostgreSQL database, an empty folder) with the
real s3-ls/s3-get, and the tests compare restored and source state.
Needs KDL_STACK_ENV (scripts/stack/up.sh) and KDL_BIN_DIR (the helpers).
"""
import json
import shlex
import uuid
from datetime import datetime, timezone

import manifest_schema
import pytest
from restore_support import job_env, psql, run_restore, s3_client, sh, table_fingerprint, tree_digest


class World:
    """One test's prefix, environment, and source data."""

    def __init__(self, stack, bin_dir, tmp):
        self.tmp = tmp
        self.prefix = f"restore-e2e-{uuid.uuid4().hex[:10]}"
        self.env = job_env(stack, bin_dir, tmp, self.prefix)
        self.super_env = dict(self.env, PGUSER=stack.get("STACK_PG_SUPERUSER", "postgres"),
                              PGPASSWORD=stack.get("STACK_PG_SUPERUSER_PASSWORD", ""))
        self.bucket = stack["BACKUP_S3_BUCKET"]
        self.s3 = s3_client(stack)

    def sh(self, script, env=None, check=True):
        return sh(script, env or self.env, check=check)

    def restore(self, *args, env=None):
        return run_restore(env or self.env, *args)

    def psql(self, db, sql, env=None):
        return psql(env or self.env, db, sql)

    def create_db(self, name):
        self.psql("postgres", f'CREATE DATABASE "{name}" OWNER "{self.env["PGUSER"]}"', env=self.super_env)

    def drop_db(self, name):
        self.psql("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', env=self.super_env)

    def table_fingerprint(self, db):
        """Per-table row count and md5 of the ordered rows, for every user table."""
        return table_fingerprint(self.env, db)

    def put(self, key, producer, encrypt_to=None, fmt=None):
        """producer | [age -r] | s3-put - ; returns the manifest object entry."""
        stored = key + (".age" if encrypt_to else "")
        age = f"| age -r {encrypt_to} " if encrypt_to else ""
        out = self.sh(f"{producer} {age}| s3-put - s3://{self.bucket}/{self.prefix}/{self.set_id}/{stored}").stdout
        put = json.loads(out.strip().splitlines()[-1])
        return {"key": stored, "bytes": put["size"], "sha256": put["sha256"], "format": fmt,
                "encrypted": bool(encrypt_to), "verified": True}

    def make_set(self, set_id, source_db, data_dir, status="success", encrypt_to=None, tar_source=None):
        self.set_id = set_id
        objects = [
            self.put("gitea/postgres.dump", f"PGDATABASE={shlex.quote(source_db)} pg_dump -Fc", encrypt_to, "pg_dump-custom"),
            self.put("gitea/data.tar.zst", tar_source or
                     f"tar -C {shlex.quote(str(data_dir))} --exclude=./gitea/indexers --exclude=./ssh -cf - . | zstd -q -c",
                     encrypt_to, "tar+zstd"),
        ]
        started = datetime.strptime(set_id, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        manifest = {
            "format": "kdl-backup/v1", "id": set_id, "startedAt": started, "finishedAt": started, "status": status,
            "encryption": {"type": "age", "recipients": [encrypt_to]} if encrypt_to else None, "tools": {},
            "components": [{"name": "gitea", "status": "success", "seconds": 1, "error": None,
                            "objects": objects, "details": {}}],
        }
        self.s3.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{set_id}/manifest.json",
                           Body=json.dumps(manifest_schema.check(manifest)).encode())
        return manifest


@pytest.fixture
def world(stack, bin_dir, tmp_path):
    w = World(stack, bin_dir, tmp_path)
    w.source_db = f"src_{uuid.uuid4().hex[:8]}"
    w.target_db = f"dst_{uuid.uuid4().hex[:8]}"
    w.create_db(w.source_db)
    w.psql(w.source_db, """
        CREATE TABLE repository (id bigserial PRIMARY KEY, owner_name text, name text, is_private bool);
        CREATE TABLE "user" (id bigserial PRIMARY KEY, name text UNIQUE, email text);
        INSERT INTO "user" (name, email) SELECT 'user' || g, 'user' || g || '@kdl.example' FROM generate_series(1, 50) g;
        INSERT INTO repository (owner_name, name, is_private) SELECT 'user' || (g % 50 + 1), 'repo' || g, g % 3 = 0 FROM generate_series(1, 200) g;
    """)
    data = tmp_path / "src-data"
    repo = data / "git" / "repositories" / "alice" / "demo.git"
    w.sh(f"""
        mkdir -p {data}/gitea/conf {data}/gitea/indexers/issues {data}/ssh
        echo '[database]' > {data}/gitea/conf/app.ini
        echo index > {data}/gitea/indexers/issues/seg
        echo key > {data}/ssh/gitea.rsa
        git init -q --bare -b main {repo}
        work={tmp_path}/work; git init -q -b main $work
        echo hello > $work/README.md
        git -C $work -c user.name=a -c user.email=a@kdl.example add README.md
        git -C $work -c user.name=a -c user.email=a@kdl.example commit -q -m init
        git -C $work push -q {repo} main
    """)
    w.data = data
    w.target_data = tmp_path / "restored-data"
    w.target_data.mkdir()
    w.env.update({"GITEA_DATA_DIR": str(w.target_data), "PGDATABASE": w.target_db, "BACKUP_VERIFY_MAX_AGE_HOURS": "0"})
    yield w
    w.drop_db(w.source_db)
    w.drop_db(w.target_db)


def test_gitea_round_trip_equal_tables_tree_and_fsck(world):
    world.make_set("20240101T000000Z", world.source_db, world.data)
    world.create_db(world.target_db)  # restore.sh creates a missing database too, given CREATEDB; gitea lacks it here
    r = world.restore("restore", "gitea", "latest", "--yes")
    assert r.returncode == 0, r.stderr
    assert world.table_fingerprint(world.target_db) == world.table_fingerprint(world.source_db)
    assert len(world.table_fingerprint(world.target_db)) == 2
    assert tree_digest(world.target_data) == tree_digest(world.data, skip=("gitea/indexers", "ssh"))
    assert not (world.target_data / "gitea" / "indexers").exists() and not (world.target_data / "ssh").exists()
    fsck = world.sh(f"git --git-dir={world.target_data}/git/repositories/alice/demo.git fsck --strict --no-progress 2>&1")
    assert fsck.stdout.strip() == ""
    # a second restore over the restored state (pg_restore --clean --if-exists) gives the same result
    r = world.restore("restore", "gitea-db", "latest", "--yes")
    assert r.returncode == 0, r.stderr
    assert world.table_fingerprint(world.target_db) == world.table_fingerprint(world.source_db)


def test_tampered_object_fails_verify_naming_the_key(world):
    world.make_set("20240101T000000Z", world.source_db, world.data)
    key = f"{world.prefix}/20240101T000000Z/gitea/data.tar.zst"
    body = bytearray(world.s3.get_object(Bucket=world.bucket, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0x01
    world.s3.put_object(Bucket=world.bucket, Key=key, Body=bytes(body))
    r = world.restore("verify", "latest")
    assert r.returncode == 74
    assert r.stderr.strip().splitlines()[-1].startswith(f"restore.sh: checksum mismatch: s3://{world.bucket}/{key} has sha256 ")
    r = world.restore("restore", "gitea-data", "latest", "--yes")
    assert r.returncode == 74
    assert list(world.target_data.iterdir()) == []


def test_dry_run_changes_nothing(world):
    world.make_set("20240101T000000Z", world.source_db, world.data)
    world.create_db(world.target_db)
    world.psql(world.target_db, "CREATE TABLE keep (v int); INSERT INTO keep VALUES (1), (2);")
    (world.target_data / "existing.txt").write_text("keep me\n")
    before = (world.table_fingerprint(world.target_db), tree_digest(world.target_data))
    r = world.restore("restore", "gitea", "latest", "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "dry run: 2 objects verified; nothing was changed" in r.stdout
    assert f"plan: gitea-db: database {world.env['PGHOST']}:{world.env['PGPORT']}/{world.target_db} exists" in r.stdout
    assert (world.table_fingerprint(world.target_db), tree_digest(world.target_data)) == before


def test_wrong_identity_fails_before_any_change(world):
    keys = world.tmp / "keys"
    keys.mkdir()
    world.sh(f"age-keygen -o {keys}/right.txt 2>/dev/null; age-keygen -o {keys}/wrong.txt 2>/dev/null")
    recipient = world.sh(f"age-keygen -y {keys}/right.txt").stdout.strip()
    world.make_set("20240101T000000Z", world.source_db, world.data, encrypt_to=recipient)
    world.create_db(world.target_db)
    world.psql(world.target_db, "CREATE TABLE keep (v int); INSERT INTO keep VALUES (1);")
    before = (world.table_fingerprint(world.target_db), tree_digest(world.target_data))
    r = world.restore("restore", "gitea", "latest", "--yes", "--identity", str(keys / "wrong.txt"))
    assert r.returncode == 77
    assert "wrong identity" in r.stderr.strip().splitlines()[-1]
    assert (world.table_fingerprint(world.target_db), tree_digest(world.target_data)) == before
    r = world.restore("restore", "gitea", "latest", "--yes", "--identity", str(keys / "right.txt"))
    assert r.returncode == 0, r.stderr
    restored = world.table_fingerprint(world.target_db)
    assert restored.pop("keep") == before[0]["keep"]  # pg_restore --clean drops only what the dump holds
    assert restored == world.table_fingerprint(world.source_db)


def test_latest_skips_a_partial_set(world):
    world.make_set("20240101T000000Z", world.source_db, world.data)
    world.make_set("20240102T000000Z", world.source_db, world.data, status="partial")
    r = world.restore("show", "latest", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["id"] == "20240101T000000Z"
    r = world.restore("list")
    assert [line.split()[:2] for line in r.stdout.splitlines()[1:]] == [
        ["20240102T000000Z", "partial"], ["20240101T000000Z", "success"]]


def test_hostile_tar_entry_refused(world):
    evil = world.tmp / "evil"
    evil.mkdir()
    (evil / "ok").write_text("ok\n")
    (evil / "escape").symlink_to("../../../../etc")
    world.make_set("20240101T000000Z", world.source_db, world.data, tar_source=f"tar -C {evil} -cf - . | zstd -q -c")
    r = world.restore("restore", "gitea-data", "latest", "--yes")
    assert r.returncode == 74
    assert "hostile tar entry refused: symlink leaving the root: ./escape -> ../../../../etc" in r.stderr
    assert list(world.target_data.iterdir()) == []
