#!/usr/bin/env python3
"""Seeds the stack's MinIO stand-in with KDL's buckets (see ../shared/KDL-FACTS.md, "MinIO").

One bucket per project (the projects of DIR/seed-summary.json, else three sample ids) with data/raw/,
data/processed/, mlflow-artifacts/<experiment>/<run>/artifacts/ and krt/ objects, content types and user
metadata; keys with spaces, unicode, + = and %; one deleted project's <id>-backup-<ms> bucket; with
--large N, N objects above bucket-sync's 16 MiB pack threshold. The same --seed-number gives the same bytes.

Usage: seed_minio.py --env-file MINIO_ENV [--summary SEED_SUMMARY] [--objects N] [--large N] [--large-mib MIN-MAX]
                     [--seed-number N]
Prints one JSON line: {"buckets": [...], "objects": N, "bytes": N}.
"""
import argparse
import json
import random

import boto3
from botocore.config import Config


def client(env_file):
    env = {}
    with open(env_file, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("export "):
                key, _, value = line[len("export "):].strip().partition("=")
                env[key] = value
    return boto3.client(
        "s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}))


def project_ids(summary_file):
    try:
        with open(summary_file, encoding="utf-8") as handle:
            summary = json.load(handle)
        return [p["project"] for p in summary["mlflow"]["projects"]][:3] or ["churn", "sales-forecast", "fraud-detection"]
    except (OSError, KeyError, ValueError, TypeError):
        return ["churn", "sales-forecast", "fraud-detection"]


NAMES = ["train set.csv", "état-2024.parquet", "a+b=c.json", "100% clean.csv", "日本語.txt", "plain.csv"]
TYPES = {"csv": "text/csv", "parquet": "application/octet-stream", "json": "application/json", "txt": "text/plain"}


def seed(s3, projects, objects, large, rng, large_mib=(17, 17)):
    buckets, total, count = [], 0, 0
    deleted = f"{projects[-1]}-backup-1733500000000"
    for bucket in projects + [deleted]:
        s3.create_bucket(Bucket=bucket)
        buckets.append(bucket)
        for index in range(objects):
            name = NAMES[index % len(NAMES)]
            folder = ["data/raw", "data/processed", f"mlflow-artifacts/{index % 3}/{rng.randbytes(8).hex()}/artifacts", "krt"][index % 4]
            key = f"{folder}/{index:04d} {name}"
            body = rng.randbytes(rng.randint(1024, 100 * 1024))
            s3.put_object(
                Bucket=bucket, Key=key, Body=body, ContentType=TYPES.get(name.rsplit(".", 1)[-1], "binary/octet-stream"),
                Metadata={"kdl-project": bucket, "origin": f"seed {index}"})
            total += len(body)
            count += 1
    for index in range(large):
        body = rng.randbytes(rng.randint(large_mib[0], large_mib[1]) * 1024 * 1024 + index)
        s3.put_object(Bucket=projects[0], Key=f"mlflow-artifacts/0/model-{index}/artifacts/model.pkl", Body=body,
                      ContentType="application/octet-stream", Metadata={"mlflow-run": f"run-{index}"})
        total += len(body)
        count += 1
    return {"buckets": buckets, "objects": count, "bytes": total}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", required=True)
    parser.add_argument("--summary", default="")
    parser.add_argument("--objects", type=int, default=12, help="small objects per bucket")
    parser.add_argument("--large", type=int, default=1, help="objects of 17 MiB in the first bucket")
    parser.add_argument("--large-mib", default="17-17", help="size range of the large objects in MiB, MIN-MAX")
    parser.add_argument("--seed-number", type=int, default=1)
    args = parser.parse_args()
    low, _, high = args.large_mib.partition("-")
    result = seed(client(args.env_file), project_ids(args.summary), args.objects, args.large, random.Random(args.seed_number),
                  (int(low), int(high or low)))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
