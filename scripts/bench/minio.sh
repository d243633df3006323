#!/usr/bin/env bash
# Summary: issue 16's performance: the minio component (bucket-sync) against restic on the same objects and the
#          same S3 server: a first run, an unchanged second run, a third after 1 % of the objects changed, and
#          one bucket restored against `aws s3 cp --recursive` of the same bucket; prints markdown tables.
# Usage: scripts/bench/minio.sh         (run by scripts/bench.sh minio; about 15 minutes)
#
# A stack is started here without sample data; its MinIO stand-in (an RGW tenant) is seeded with
# KDL_BENCH_MINIO_OBJECTS small objects per bucket (default 2500, 4 buckets: 10,000 of 1-100 KiB) and
# KDL_BENCH_MINIO_LARGE objects of 20-200 MiB (default 16), random bytes (at least 2 GiB). Ours is backup.sh with
# BACKUP_COMPONENTS=minio, encrypted; restic's staging (every object downloaded as a file with aws s3 cp) is timed
# apart and excluded. Requests: ours from bucket-sync's own counts (its last log line); restic does not report
# them. Peak RSS is the high-water mark of every process of the run's tree.
set -Eeuo pipefail
umask 077

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY="$ROOT/.venv/bin/python"
AWS="$ROOT/.venv/bin/aws"
# shellcheck source=scripts/bench/backup.sh
source "$ROOT/scripts/bench/backup.sh" # measure, measured_ok, ratio, at_most, mib (its cleanup is replaced below)
OWN_STACK_DIR=""
WORK=""
IDS=(20260101T000100Z 20260101T000200Z 20260101T000300Z)

# cleanup: stops the stack started here (its memstore OSD holds every stored byte in RAM) and removes the work folder.
cleanup() {
  if [[ -n "$OWN_STACK_DIR" ]]; then
    "$ROOT/scripts/stack/down.sh" --dir "$OWN_STACK_DIR" >/dev/null 2>&1 || true
    rm -rf "$OWN_STACK_DIR"
  fi
  if [[ -n "$WORK" ]]; then rm -rf "$WORK"; fi
}

# minio_aws ARGS...: the AWS CLI against the stack's MinIO stand-in.
minio_aws() {
  AWS_ACCESS_KEY_ID=$STACK_MINIO_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY=$STACK_MINIO_SECRET_ACCESS_KEY \
    "$AWS" --endpoint-url "$STACK_MINIO_ENDPOINT" "$@"
}

# prefix_bytes PREFIX: bytes stored under PREFIX/ in the backup bucket.
prefix_bytes() {
  s3-ls --json "s3://$BACKUP_S3_BUCKET/$1/" 2>/dev/null | jq -s 'map(.size) | add // 0'
}

# ours N ID: backup.sh (minio only) measured as ours-N; prints nothing.
ours() {
  BACKUP_ID=$2 measure "ours-$1" "$WORK/tmp" env TMPDIR="$WORK/tmp" "$ROOT/backup/backup.sh"
  measured_ok "ours-$1" "our run $1"
}

# detail ID FIELD: a field of the minio component's details in set ID's manifest.
detail() {
  s3-get "s3://$BACKUP_S3_BUCKET/bench-minio/$1/manifest.json" "$WORK/manifest-$1.json" >/dev/null
  jq -r --arg f "$2" '.components[] | select(.name == "minio") | .details[$f]' "$WORK/manifest-$1.json"
}

# requests N: bucket-sync's requests (MinIO + backup bucket) in run N.
requests() {
  sed -nE 's/.*tool=bucket-sync msg=done .*requests_minio=([0-9]+) requests_store=([0-9]+).*/\1 \2/p' "$WORK/ours-$1.json.log" |
    awk '{print $1 + $2}'
}

# rss NAME: the largest high-water mark of run NAME in MiB, and which process.
rss() {
  jq -r '"\(.peak_rss_kib / 1024 | . * 10 | round / 10) MiB (\(.peak_rss_process))"' "$WORK/$1.json"
}

# change_one_percent: rewrites 1 % of the small objects with new random bytes; prints the bytes written.
change_one_percent() {
  "$PY" - "$STACK_MINIO_ENV_FILE" <<'PYEOF'
import random, sys
sys.path.insert(0, "scripts/stack")
from seed_minio import client
s3, rng, written = client(sys.argv[1]), random.Random(7), 0
keys = [(b["Name"], o["Key"]) for b in s3.list_buckets()["Buckets"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=b["Name"]) for o in page.get("Contents", [])
        if o["Size"] < 16 << 20]
for bucket, key in rng.sample(keys, len(keys) // 100):
    body = rng.randbytes(rng.randint(1024, 100 * 1024))
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    written += len(body)
print(written)
PYEOF
}

# restic_run N: restic backup of the staging folder, measured as restic-N.
restic_run() {
  measure "restic-$1" "$WORK/restic-cache" env RESTIC_CACHE_DIR="$WORK/restic-cache" restic -q backup "$WORK/staging"
  measured_ok "restic-$1" "restic run $1"
}

# start_target: an empty MinIO to restore one bucket into: a new RGW user in a tenant of its own; sets TARGET_* .
start_target() {
  local env_file="$WORK/target.env"
  "$ROOT/scripts/stack/s3-user.sh" --dir "$OWN_STACK_DIR" --tenant bench_target --env-file "$env_file"
  TARGET_ENDPOINT=$(sed -n 's/^export AWS_ENDPOINT_URL_S3=//p' "$env_file")
  TARGET_KEY_ID=$(sed -n 's/^export AWS_ACCESS_KEY_ID=//p' "$env_file")
  TARGET_SECRET=$(sed -n 's/^export AWS_SECRET_ACCESS_KEY=//p' "$env_file")
}

main() {
  trap cleanup EXIT
  export PATH="${KDL_BIN_DIR:?set KDL_BIN_DIR (scripts/bench.sh does)}:$PATH"
  WORK=$(mktemp -d /tmp/kdl-bench-minio.XXXXXX)
  OWN_STACK_DIR=$(mktemp -d /tmp/kdl-bench-stack.XXXXXX)
  chmod 0755 "$OWN_STACK_DIR"
  "$ROOT/scripts/stack/up.sh" --dir "$OWN_STACK_DIR" >&2
  # shellcheck source=/dev/null
  source "$OWN_STACK_DIR/stack.env"
  mkdir -p "$WORK/tmp" "$WORK/staging" "$WORK/restic-cache" "$WORK/awscp"

  local started=$SECONDS seed objects bytes
  seed=$("$PY" "$ROOT/scripts/stack/seed_minio.py" --env-file "$STACK_MINIO_ENV_FILE" --objects "${KDL_BENCH_MINIO_OBJECTS:-2500}" \
    --large "${KDL_BENCH_MINIO_LARGE:-16}" --large-mib 20-200 --seed-number 3)
  objects=$(jq .objects <<<"$seed")
  bytes=$(jq .bytes <<<"$seed")
  echo "bench: seeded $objects objects, $(mib "$bytes" 1048576) MiB in $((SECONDS - started)) s" >&2

  age-keygen -o "$WORK/identity.txt" 2>/dev/null
  export BACKUP_AGE_RECIPIENTS BACKUP_COMPONENTS=minio BACKUP_S3_PREFIX=bench-minio BACKUP_KEEP_LAST=0 BACKUP_KEEP_DAYS=0
  BACKUP_AGE_RECIPIENTS=$(age-keygen -y "$WORK/identity.txt")
  export MINIO_ENDPOINT=$STACK_MINIO_ENDPOINT MINIO_ACCESS_KEY_ID=$STACK_MINIO_ACCESS_KEY_ID
  export MINIO_SECRET_ACCESS_KEY=$STACK_MINIO_SECRET_ACCESS_KEY

  echo "bench: our first run" >&2
  ours 1 "${IDS[0]}"
  echo "bench: our second run (nothing changed)" >&2
  ours 2 "${IDS[1]}"
  local changed
  changed=$(change_one_percent)
  echo "bench: our third run (1 % changed: $(mib "$changed" 1048576) MiB)" >&2
  ours 3 "${IDS[2]}"

  echo "bench: restic: staging every object as a file (not timed against restic)" >&2
  local staged=$SECONDS bucket
  for bucket in $(minio_aws s3api list-buckets --query 'Buckets[].Name' --output text); do
    minio_aws s3 cp --only-show-errors --recursive "s3://$bucket" "$WORK/staging/$bucket"
  done
  local staging_seconds=$((SECONDS - staged))
  export RESTIC_REPOSITORY="s3:$AWS_ENDPOINT_URL_S3/$BACKUP_S3_BUCKET/bench-restic" RESTIC_PASSWORD=bench-only
  restic -q init >/dev/null
  local restic_before restic_first restic_second
  restic_before=$(prefix_bytes bench-restic)
  echo "bench: restic first run" >&2
  restic_run 1
  restic_first=$(($(prefix_bytes bench-restic) - restic_before))
  echo "bench: restic second run" >&2
  restic_run 2
  restic_second=$(($(prefix_bytes bench-restic) - restic_before - restic_first))

  # One bucket restored (the largest: it holds the large objects) vs aws s3 cp --recursive of the same bucket.
  local largest largest_bytes
  largest=$(du -sb "$WORK"/staging/* | sort -n | tail -n1 | awk '{print $2}')
  largest_bytes=$(du -sb "$largest" | awk '{print $1}')
  largest=$(basename "$largest")
  start_target
  echo "bench: restore of bucket $largest" >&2
  MINIO_ENDPOINT=$TARGET_ENDPOINT MINIO_ACCESS_KEY_ID=$TARGET_KEY_ID MINIO_SECRET_ACCESS_KEY=$TARGET_SECRET \
    measure ours-restore "$WORK/tmp" "$ROOT/backup/restore.sh" restore minio --bucket "$largest" 20260101T000300Z \
    --identity "$WORK/identity.txt" --yes
  measured_ok ours-restore "our restore"
  measure aws-cp "$WORK/awscp" env AWS_ACCESS_KEY_ID="$STACK_MINIO_ACCESS_KEY_ID" AWS_SECRET_ACCESS_KEY="$STACK_MINIO_SECRET_ACCESS_KEY" \
    "$AWS" --endpoint-url "$STACK_MINIO_ENDPOINT" --only-show-errors s3 cp --recursive "s3://$largest" "$WORK/awscp"
  measured_ok aws-cp "aws s3 cp --recursive"

  local s1 s2 r1 r2 up1 up2 up3 idx2
  s1=$(jq .seconds "$WORK/ours-1.json"); s2=$(jq .seconds "$WORK/ours-2.json")
  r1=$(jq .seconds "$WORK/restic-1.json"); r2=$(jq .seconds "$WORK/restic-2.json")
  up1=$(detail 20260101T000100Z bytesUploaded); up2=$(detail 20260101T000200Z bytesUploaded); up3=$(detail 20260101T000300Z bytesUploaded)
  idx2=$(jq '[.components[] | select(.name == "minio") | .objects[].bytes] | add' "$WORK/manifest-20260101T000200Z.json")
  local new_blobs3
  new_blobs3=$(s3-ls --json "s3://$BACKUP_S3_BUCKET/bench-minio/blobs/20260101T000300Z/" 2>/dev/null | jq -s 'map(.size) | add // 0')

  printf '%s objects, %s MiB in %s buckets (Ceph RGW for MinIO and for the backup bucket, one 2-core machine); restic %s; staging for restic %s s (excluded)\n\n' \
    "$objects" "$(mib "$bytes" 1048576)" "$(jq '.buckets | length' <<<"$seed")" "$(restic version | awk '{print $2}')" "$staging_seconds"
  echo "| run | wall s | CPU s | uploaded MiB | requests | peak RSS |"
  echo "|---|---|---|---|---|---|"
  local n names=("" first "second (unchanged)" "third (1 % changed)")
  for n in 1 2 3; do
    printf '| ours %s | %.1f | %s | %s | %s | %s |\n' "${names[n]}" "$(jq .seconds "$WORK/ours-$n.json")" "$(jq .cpu_seconds "$WORK/ours-$n.json")" \
      "$(mib "$(detail "${IDS[n - 1]}" bytesUploaded)" 1048576)" "$(requests "$n")" "$(rss "ours-$n")"
  done
  printf '| restic first | %.1f | %s | %s | n/a | %s |\n' "$r1" "$(jq .cpu_seconds "$WORK/restic-1.json")" "$(mib "$restic_first" 1048576)" "$(rss restic-1)"
  printf '| restic second | %.1f | %s | %s | n/a | %s |\n' "$r2" "$(jq .cpu_seconds "$WORK/restic-2.json")" "$(mib "$restic_second" 1048576)" "$(rss restic-2)"
  echo
  echo "| target | measured | met |"
  echo "|---|---|---|"
  printf '| first run wall time <= restic first run | %.1f s vs %.1f s (%s x) | %s |\n' "$s1" "$r1" "$(ratio "$s1" "$r1")" "$(at_most "$s1" 1 "$r1")"
  printf '| unchanged second run <= 5 %% of our first | %.1f s = %s %% | %s |\n' "$s2" "$(awk -v a="$s2" -v b="$s1" 'BEGIN{printf "%.1f", 100*a/b}')" "$(at_most "$s2" 0.05 "$s1")"
  printf '| unchanged second run uploads only the indexes | %s bytes uploaded, indexes and blob lists %s bytes | %s |\n' "$up2" "$idx2" "$([[ "$up2" == "$idx2" ]] && echo yes || echo no)"
  printf '| third run uploads <= 1.5 x the changed bytes | new blobs %s MiB for %s MiB changed (%s x) | %s |\n' "$(mib "$new_blobs3" 1048576)" "$(mib "$changed" 1048576)" "$(ratio "$new_blobs3" "$changed")" "$(at_most "$new_blobs3" 1.5 "$changed")"
  local worst
  worst=$(jq -s 'map(.peak_rss_kib) | max' "$WORK"/ours-{1,2,3,restore}.json)
  printf '| every process <= 64 MiB RSS | largest %s MiB (%s) | %s |\n' "$(mib "$worst" 1024)" \
    "$(jq -rs 'max_by(.peak_rss_kib) | .peak_rss_process' "$WORK"/ours-{1,2,3,restore}.json)" "$(at_most "$worst" 1 65536)"
  local ours_rate aws_rate
  ours_rate=$(awk -v b="$largest_bytes" -v s="$(jq .seconds "$WORK/ours-restore.json")" 'BEGIN{printf "%.1f", b/1048576/s}')
  aws_rate=$(awk -v b="$largest_bytes" -v s="$(jq .seconds "$WORK/aws-cp.json")" 'BEGIN{printf "%.1f", b/1048576/s}')
  printf '| one bucket restores at >= 80 %% of aws s3 cp --recursive | %s MiB/s vs %s MiB/s (%s MiB, bucket %s) | %s |\n' "$ours_rate" "$aws_rate" \
    "$(mib "$largest_bytes" 1048576)" "$largest" "$(at_most "$aws_rate" 1.25 "$ours_rate")"
  echo
  echo "Per process peak RSS of our first run (KiB): $(jq -c .rss_by_process "$WORK/ours-1.json")"
  echo "Our runs' own accounting: first $(mib "$up1" 1048576) MiB uploaded, second $up2 bytes, third $(mib "$up3" 1048576) MiB."
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
