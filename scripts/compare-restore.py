#!/usr/bin/env python3
"""Compare a restored KDL installation with its source and print one verification row per component.

Usage: compare-restore.py snapshot-mongo URI OUT.json
       compare-restore.py snapshot-minio MINIO_ENV OUT.json
       compare-restore.py table --source-db DB --restored-db DB --source-data DIR --restored-data DIR
                                --excludes "gitea/indexers ssh lost+found" --mongo-uri URI --mongo-before FILE
                                --source-mlflow DIR --restored-mlflow DIR --source-k8s DIR --restored-k8s DIR
                                [--minio-before FILE --restored-minio-env MINIO_ENV] [--mlflow-servers]
MINIO_ENV: a file of `export AWS_ACCESS_KEY_ID=...`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT_URL_S3` lines (the stack's
MinIO stand-in writes one).

Postgres connection comes from the PG* environment (libpq's names); psql, git and sqlite3 must be on PATH.
Exit status 0 when every component matches, 1 otherwise.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path


def run(*args, env=None):
    return subprocess.run(args, check=True, capture_output=True, text=True, env=env).stdout


# --- PostgreSQL: per-table row counts and content checksums -------------------------------------

def pg_tables(database):
    env = dict(os.environ, PGDATABASE=database)
    names = run("psql", "-XAtq", "-c",
                "SELECT quote_ident(tablename) FROM pg_tables WHERE schemaname='public' ORDER BY 1", env=env).split()
    result = {}
    for name in names:
        row = run("psql", "-XAtq", "-F", " ", "-c",
                  f"SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {name} t",
                  env=env).split()
        result[name] = (int(row[0]), row[1] if len(row) > 1 else "")
    return result


def compare_postgres(source_db, restored_db):
    source, restored = pg_tables(source_db), pg_tables(restored_db)
    def describe(tables):
        return f"{len(tables)} tables, {sum(count for count, _ in tables.values())} rows"

    ok = source == restored and bool(source)
    differing = sorted(t for t in set(source) | set(restored) if source.get(t) != restored.get(t))
    return ok, describe(source), describe(restored), differing


# --- Gitea /data: file tree equal minus the excludes, git fsck clean ------------------------------

def tree(root, excludes):
    root = Path(root)
    entries = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if any(rel == e or rel.startswith(e + "/") for e in excludes):
            continue
        if path.is_symlink():
            entries[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            entries[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            entries[rel] = "dir"
    return entries


def compare_gitea_data(source, restored, excludes):
    want, got = tree(source, excludes), tree(restored, [])
    leaked = [e for e in excludes if (Path(restored) / e).exists()]
    repos = sorted(Path(restored).glob("git/repositories/*/*.git"))
    fsck_failed = []
    for repo in repos:
        # The restored files belong to Gitea's uid 1000; git run as another user must be told to trust them.
        check = subprocess.run(["git", "-c", "safe.directory=*", "-C", str(repo), "fsck", "--full", "--no-progress"],
                               capture_output=True)
        if check.returncode != 0:
            fsck_failed.append(repo.name)
    files = sum(1 for v in want.values() if v != "dir")
    restored_files = sum(1 for v in got.values() if v != "dir")
    ok = want == got and not leaked and not fsck_failed and bool(repos)
    detail = [f"differs: {k}" for k in sorted(set(want) ^ set(got))][:3] + [f"excluded present: {e}" for e in leaked]
    detail += [f"fsck failed: {r}" for r in fsck_failed]
    fsck = "fsck clean" if not fsck_failed else f"{len(fsck_failed)} fsck errors"
    return ok, f"{files} files", f"{restored_files} files, {len(repos)} repos {fsck}", detail


# --- MongoDB: documents per collection ------------------------------------------------------------

def mongo_snapshot(uri, databases=("kdl", "admin")):
    import bson
    from pymongo import MongoClient

    client = MongoClient(uri, serverSelectionTimeoutMS=5000)
    snapshot = {}
    for name in databases:
        for collection in sorted(client[name].list_collection_names()):
            docs = sorted(client[name][collection].find({}), key=lambda d: bson.encode({"k": d.get("_id")}))
            digest = hashlib.sha256(b"".join(bson.encode(d) for d in docs)).hexdigest()
            snapshot[f"{name}.{collection}"] = [len(docs), digest]
    client.close()
    return snapshot


def compare_snapshots(before_file, after, describe):
    """A row from a snapshot taken before the backup and one of the restored state: (ok, source, restored, differing)."""
    before = json.loads(Path(before_file).read_text())
    differing = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    return before == after and bool(before), describe(before), describe(after), differing


def compare_mongo(uri, before_file):
    return compare_snapshots(before_file, mongo_snapshot(uri),
                             lambda snapshot: f"{len(snapshot)} collections, {sum(count for count, _ in snapshot.values())} docs")


# --- MLflow: each database's .dump equal and in a folder of the same name -------------------------

def mlflow_dbs(root):
    return {p.parent.name: p for p in sorted(Path(root).glob("*/mlflow.db"))}


def compare_mlflow(source, restored):
    want, got = mlflow_dbs(source), mlflow_dbs(restored)
    differing = [name for name in want if name not in got or
                 run("sqlite3", "-readonly", str(want[name]), ".dump") != run("sqlite3", "-readonly", str(got[name]), ".dump")]
    return not differing and bool(want), f"{len(want)} stores", f"{len(got)} stores", differing


# --- MLflow server: what `mlflow server` answers on each restored store equals what it answers on its source ------

def compare_mlflow_servers(source, restored):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import mlflow_rest

    want, got = mlflow_dbs(source), mlflow_dbs(restored)
    differing, totals = [], {"source": [0, 0, 0], "restored": [0, 0, 0]}
    for name, db in want.items():
        if name not in got:
            differing.append(f"{name} missing")
            continue
        before, after = mlflow_rest.read_store(db), mlflow_rest.read_store(got[name])
        for side, snap in (("source", before), ("restored", after)):
            totals[side] = [total + n for total, n in zip(totals[side], mlflow_rest.counts(snap))]
        differing += [f"{name}: {path}" for path in mlflow_rest.differences(before, after)[:3]]
    describe = lambda t: f"{t[0]} experiments, {t[1]} runs, {t[2]} metric points"  # noqa: E731
    return not differing and bool(want), describe(totals["source"]), describe(totals["restored"]), differing


# --- MinIO: every bucket's objects, bytes, content types and user metadata -------------------------

def minio_snapshot(env_file):
    import boto3
    from botocore.config import Config
    env = dict(line[len("export "):].strip().split("=", 1) for line in Path(env_file).read_text().splitlines()
               if line.startswith("export "))
    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], region_name="us-east-1",
                          aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                          config=Config(s3={"addressing_style": "path"}))
    snapshot = {}
    for bucket in sorted(b["Name"] for b in client.list_buckets()["Buckets"]):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                got = client.get_object(Bucket=bucket, Key=item["Key"])
                snapshot[f"{bucket}/{item['Key']}"] = [hashlib.sha256(got["Body"].read()).hexdigest(), got["ContentType"],
                                                       got["Metadata"]]
    return snapshot


def compare_minio(before_file, restored_env):
    return compare_snapshots(before_file, minio_snapshot(restored_env),
                             lambda snapshot: f"{len({key.split('/', 1)[0] for key in snapshot})} buckets, {len(snapshot)} objects")


# --- Kubernetes: restored manifests equal a fresh export of the source ----------------------------

def compare_k8s(source, restored):
    want = {p.name: p.read_bytes() for p in sorted(Path(source).glob("*.yaml"))}
    got = {p.name: p.read_bytes() for p in sorted(Path(restored).glob("*.yaml"))}
    def describe(files):
        documents = sum(body.count(b"\n---") + 1 for body in files.values() if body.strip())
        return f"{len(files)} files, {documents} objects"

    differing = sorted(n for n in set(want) | set(got) if want.get(n) != got.get(n))
    return want == got and bool(want), describe(want), describe(got), differing


def table(args):
    rows = [
        ("gitea-db", *compare_postgres(args.source_db, args.restored_db)),
        ("gitea-data", *compare_gitea_data(args.source_data, args.restored_data, args.excludes.split())),
        ("mongodb", *compare_mongo(args.mongo_uri, args.mongo_before)),
        ("mlflow", *compare_mlflow(args.source_mlflow, args.restored_mlflow)),
        ("kubernetes", *compare_k8s(args.source_k8s, args.restored_k8s)),
    ]
    if args.minio_before:
        rows.insert(3, ("minio", *compare_minio(args.minio_before, args.restored_minio_env)))
    if args.mlflow_servers:
        rows.append(("MLflow server reads restored stores", *compare_mlflow_servers(args.source_mlflow, args.restored_mlflow)))
    print("| component | source | restored | verified |")
    print("|---|---|---|---|")
    for name, ok, source, restored, detail in rows:
        mark = "yes" if ok else "NO: " + "; ".join(map(str, detail))[:200]
        print(f"| {name} | {source} | {restored} | {mark} |")
    return 0 if all(row[1] for row in rows) else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    snap = sub.add_parser("snapshot-mongo")
    snap.add_argument("uri")
    snap.add_argument("out")
    tab = sub.add_parser("table")
    for flag in ("source-db", "restored-db", "source-data", "restored-data", "excludes", "mongo-uri",
                 "mongo-before", "source-mlflow", "restored-mlflow", "source-k8s", "restored-k8s"):
        tab.add_argument("--" + flag, required=True)
    tab.add_argument("--minio-before")
    tab.add_argument("--restored-minio-env")
    tab.add_argument("--mlflow-servers", action="store_true",
                     help="also start `mlflow server` (.venv-mlflow) on each source and restored store and compare their REST answers")
    snap_minio = sub.add_parser("snapshot-minio")
    snap_minio.add_argument("env_file")
    snap_minio.add_argument("out")
    args = parser.parse_args()
    if args.command == "snapshot-mongo":
        Path(args.out).write_text(json.dumps(mongo_snapshot(args.uri), sort_keys=True))
        return 0
    if args.command == "snapshot-minio":
        Path(args.out).write_text(json.dumps(minio_snapshot(args.env_file), sort_keys=True))
        return 0
    return table(args)


if __name__ == "__main__":
    sys.exit(main())
