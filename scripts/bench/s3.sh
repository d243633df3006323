#!/usr/bin/env bash
# Summary: measure s3-put against the AWS CLI on the local S3 (Ceph RGW) and its peak RSS
#          at two object sizes; prints a markdown table of figures vs issue 3's targets.
# Usage: scripts/bench/s3.sh [SIZE_MiB]   (default 1024; KDL_BIN_DIR: the helpers as the image ships them,
#                                          built by `swift build -c release --static-swift-stdlib`, default
#                                          .build/release; KDL_STACK_ENV: a running stack's env file, else a
#                                          private S3 is started; S3_BENCH_RUNS: runs per client, default 3)
#
# The stream is read from stdin by both clients. The server's own ingest dominates and varies from run to run,
# so each client runs at least twice, alternating, and the best runs are compared. Both clients send
# CRC-32 checksums (the AWS CLI's default and s3-put's), so the server does the same work for each.
set -Eeuo pipefail
umask 077

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN_DIR=${KDL_BIN_DIR:-$ROOT/.build/release}
AWS=$ROOT/.venv/bin/aws
SIZE_MIB=${1:-1024}
SMALL_MIB=256
RUNS=${S3_BENCH_RUNS:-3}
WORK=""
OWN_STACK_DIR=""

cleanup() {
  if [[ -n "$OWN_STACK_DIR" ]]; then
    "$ROOT/scripts/stack/down.sh" --dir "$OWN_STACK_DIR" >/dev/null 2>&1 || true
  fi
  [[ -n "$WORK" ]] && rm -rf "$WORK"
}

# start_s3: uses the stack's S3 when KDL_STACK_ENV is set, else starts a stack without sample data privately.
start_s3() {
  if [[ -z "${KDL_STACK_ENV:-}" || ! -f "$KDL_STACK_ENV" ]]; then
    OWN_STACK_DIR="$WORK/stack"
    "$ROOT/scripts/stack/up.sh" --dir "$OWN_STACK_DIR" >&2
    KDL_STACK_ENV="$OWN_STACK_DIR/stack.env"
  fi
  # shellcheck source=/dev/null
  source "$KDL_STACK_ENV"
}

# timed OUT CMD...: runs CMD with stdin from a zero stream of SIZE MiB (env STREAM_MIB); writes "wall_s rss_kib" to OUT.
timed() {
  local out=$1
  shift
  head -c "$((STREAM_MIB << 20))" /dev/zero | /usr/bin/time -f '%e %M' -o "$out" "$@" >/dev/null
}

# remove KEY: deletes a benchmark object so the memstore OSD's memory does not pile up.
remove() {
  "$AWS" s3 rm --only-show-errors --endpoint-url "$AWS_ENDPOINT_URL_S3" "s3://$BACKUP_S3_BUCKET/$1" >/dev/null || true
}

best() { sort -n | head -n1; }

main() {
  [[ -x "$BIN_DIR/s3-put" ]] || { echo "s3 bench: no s3-put in $BIN_DIR" >&2; exit 1; }
  # A build without --static-swift-stdlib maps libswiftCore/Foundation/ICU (~30 MiB more RSS): not what ships.
  if ldd "$BIN_DIR/s3-put" | grep -q 'libswiftCore\.so'; then
    echo "s3 bench: $BIN_DIR/s3-put links the Swift runtime dynamically; build it with swift build -c release --static-swift-stdlib" >&2
    exit 1
  fi
  WORK=$(mktemp -d)
  chmod 0711 "$WORK" # the stack started here must be reachable by the postgres user
  trap cleanup EXIT
  start_s3
  export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION AWS_ENDPOINT_URL_S3
  local run key ours=() theirs=() rss=()
  STREAM_MIB=$SIZE_MIB
  for ((run = 1; run <= RUNS; run++)); do
    key="bench/s3-put-$run"
    timed "$WORK/ours-$run" "$BIN_DIR/s3-put" - "s3://$BACKUP_S3_BUCKET/$key"
    remove "$key"
    key="bench/aws-$run"
    timed "$WORK/aws-$run" "$AWS" s3 cp --only-show-errors --endpoint-url "$AWS_ENDPOINT_URL_S3" - "s3://$BACKUP_S3_BUCKET/$key"
    remove "$key"
    ours+=("$(cut -d' ' -f1 "$WORK/ours-$run")")
    theirs+=("$(cut -d' ' -f1 "$WORK/aws-$run")")
    rss+=("$(cut -d' ' -f2 "$WORK/ours-$run")")
  done
  STREAM_MIB=$SMALL_MIB
  timed "$WORK/ours-small" "$BIN_DIR/s3-put" - "s3://$BACKUP_S3_BUCKET/bench/s3-put-small"
  remove "bench/s3-put-small"

  local our_best aws_best aws_rss rss_big rss_small ratio
  our_best=$(printf '%s\n' "${ours[@]}" | best)
  aws_best=$(printf '%s\n' "${theirs[@]}" | best)
  aws_rss=$(cut -d' ' -f2 "$WORK"/aws-* | sort -n | tail -n1)
  rss_big=$(printf '%s\n' "${rss[@]}" | sort -n | tail -n1)
  rss_small=$(cut -d' ' -f2 "$WORK/ours-small")
  ratio=$(awk -v a="$our_best" -v b="$aws_best" 'BEGIN { printf "%.2f", a / b }')
  verdict() { if awk "BEGIN { exit !($1) }"; then echo ok; else echo MISSED; fi; }

  printf '| measure | figure | target | verdict |\n|---|---|---|---|\n'
  printf '| s3-put %s MiB from stdin, wall (best of %s: %s) | %s s | | |\n' "$SIZE_MIB" "$RUNS" "${ours[*]}" "$our_best"
  printf '| aws s3 cp - %s MiB, wall (best of %s: %s) | %s s | | |\n' "$SIZE_MIB" "$RUNS" "${theirs[*]}" "$aws_best"
  printf '| s3-put / AWS CLI wall | %s× | ≤ 1.0× | %s |\n' "$ratio" "$(verdict "$ratio <= 1.0")"
  printf '| s3-put peak RSS, %s MiB | %s MiB | ≤ 64 MiB | %s |\n' "$SMALL_MIB" "$((rss_small / 1024))" "$(verdict "$rss_small <= 65536")"
  printf '| s3-put peak RSS, %s MiB | %s MiB | ≤ 64 MiB, flat | %s |\n' "$SIZE_MIB" "$((rss_big / 1024))" \
    "$(verdict "$rss_big <= 65536 && $rss_big <= $rss_small * 1.1 + 2048")"
  printf '| AWS CLI peak RSS, %s MiB | %s MiB | (reference) | |\n' "$SIZE_MIB" "$((aws_rss / 1024))"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
