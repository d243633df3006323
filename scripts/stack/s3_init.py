"""Bootstrap the local S3 (moto_server with authentication ON).

Usage: s3_init.py --endpoint URL --bucket NAME --out FILE

moto_server is started with INITIAL_NO_AUTH_ACTION_COUNT=3: the first three
requests (create the IAM user, give it an s3:* inline policy, create its access
key) go through unsigned-checked; every later request must carry a valid SigV4
signature from a known key. The bucket is then created with the new key, so a
working stack proves the key works. The key is written to FILE (mode 0600) as
two lines, access key id then secret, never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import boto3
from botocore.config import Config

BOOTSTRAP_CALLS = 3  # must match INITIAL_NO_AUTH_ACTION_COUNT in up.sh
USER = "kdl-backup"
POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="moto_server URL, http://127.0.0.1:PORT")
    parser.add_argument("--bucket", required=True, help="bucket to create with the new key")
    parser.add_argument("--out", required=True, help="file receiving the access key id and secret")
    args = parser.parse_args()
    config = Config(retries={"max_attempts": 1})
    anonymous = {"aws_access_key_id": "bootstrap", "aws_secret_access_key": "bootstrap"}
    iam = boto3.client("iam", endpoint_url=args.endpoint, region_name="us-east-1", config=config, **anonymous)
    iam.create_user(UserName=USER)
    iam.put_user_policy(UserName=USER, PolicyName="kdl-backup-s3", PolicyDocument=json.dumps(POLICY))
    key = iam.create_access_key(UserName=USER)["AccessKey"]
    s3 = boto3.client(
        "s3",
        endpoint_url=args.endpoint,
        region_name="us-east-1",
        config=config,
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )
    s3.create_bucket(Bucket=args.bucket)
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"{key['AccessKeyId']}\n{key['SecretAccessKey']}\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as error:  # one clear line, no traceback, no key material
        print(f"s3_init: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
