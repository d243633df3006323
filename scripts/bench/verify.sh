#!/usr/bin/env bash
# Summary: measure restore.sh on a set made by backup.sh: `verify latest` without and with an identity,
#          with the scratch-database check, and a restore of every component into fresh targets; wall
#          time, peak RSS and peak temporary disk, as a markdown table against the design's bounds.
# Usage: scripts/bench/verify.sh     (run by scripts/bench.sh)
#
# KDL_BIN_DIR: the release helpers (default .build/release). KDL_STACK_ENV: a running local stack;
# otherwise one is started with --seed ${KDL_BENCH_SEED:-small} and stopped at the end.
# Issues 8 and 11 set no figures; the bounds are the design's: every object read once per check (bytes
# read = the set's size), no process above 64 MiB RSS (issue 7's bound), and temporary disk no larger
# than the largest MLflow database plus 1 MiB of manifests and logs (verify stages one database at a
# time for PRAGMA integrity_check). Peak RSS is the largest VmHWM in the run's process tree (the
# mongorestore test double included), sampled every 0.1 s, as is TMPDIR's size.
set -Eeuo pipefail
umask 077

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN_DIR=${KDL_BIN_DIR:-$ROOT/.build/release}
PY="$ROOT/.venv/bin/python"
STACK_DIR=""
WORK=""
ROLE=""

cleanup() {
  if [[ -n "$ROLE" ]]; then
    PGUSER=$STACK_PG_SUPERUSER PGPASSWORD=$STACK_PG_SUPERUSER_PASSWORD psql -X -q -d postgres \
      -c "DROP DATABASE IF EXISTS bench_restored WITH (FORCE)" -c "DROP ROLE IF EXISTS $ROLE" >/dev/null 2>&1 || true
  fi
  if [[ -n "$STACK_DIR" ]]; then
    "$ROOT/scripts/stack/down.sh" --dir "$STACK_DIR" >/dev/null 2>&1 || true
    rm -rf "$STACK_DIR"
  fi
  if [[ -n "$WORK" ]]; then rm -rf "$WORK"; fi
}

# measure NAME CMD...: runs CMD with TMPDIR=$WORK/tmp-NAME, sampling its process tree's VmHWM and TMPDIR's
# size; prints "seconds status peak_rss_kib peak_tmp_bytes".
measure() {
  local name=$1
  shift
  mkdir -p "$WORK/tmp-$name"
  TMPDIR="$WORK/tmp-$name" "$PY" - "$WORK/tmp-$name" "$@" <<'PYEOF'
import os, subprocess, sys, time

tmp, argv = sys.argv[1], sys.argv[2:]

def tree(root):
    kids = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                kids.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(pid))
        except OSError:
            pass
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(kids.get(pid, []))
    return out

def hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0

def disk(path):
    total = 0
    for base, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(base, name)).st_blocks * 512
            except OSError:
                pass
    return total

start = time.monotonic()
proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=open(os.path.join(os.path.dirname(tmp), os.path.basename(tmp) + ".err"), "w"))
rss = tmp_peak = 0
while proc.poll() is None:
    rss = max([rss] + [hwm(p) for p in tree(proc.pid)])
    tmp_peak = max(tmp_peak, disk(tmp))
    time.sleep(0.1)
print(f"{time.monotonic() - start:.2f} {proc.returncode} {rss} {tmp_peak}")
PYEOF
  # A failed run's own error lines (not its logfmt progress), for the note under the table.
  if [[ -s "$WORK/tmp-$name.err" ]] && grep -qv '^ts=' "$WORK/tmp-$name.err"; then
    grep -v '^ts=' "$WORK/tmp-$name.err" | tail -n 3 >&2
  fi
}

mib() {
  awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'
}

main() {
  [[ -x "$BIN_DIR/s3-get" ]] || { echo "verify bench: no helpers in $BIN_DIR (swift build -c release)" >&2; exit 66; }
  WORK=$(mktemp -d /tmp/kdl-bench-verify.XXXXXX)
  trap cleanup EXIT
  local env_file=${KDL_STACK_ENV:-}
  if [[ -z "$env_file" ]]; then
    STACK_DIR=$(mktemp -d /tmp/kdl-bench-stack.XXXXXX)
    "$ROOT/scripts/stack/up.sh" --dir "$STACK_DIR" --seed "${KDL_BENCH_SEED:-small}" >&2
    env_file="$STACK_DIR/stack.env"
  fi
  set -a
  # shellcheck source=/dev/null
  source "$env_file"
  set +a
  export PATH="$BIN_DIR:$STACK_BIN_DIR:$PATH" BACKUP_S3_PREFIX="bench-verify-$$-$RANDOM" BACKUP_KEEP_LAST=0
  unset BACKUP_ID
  age-keygen -o "$WORK/identity.txt" 2>/dev/null
  BACKUP_AGE_RECIPIENTS=$(age-keygen -y "$WORK/identity.txt")
  export BACKUP_AGE_RECIPIENTS
  "$ROOT/backup/backup.sh" 2>"$WORK/backup.err" || { tail -n 5 "$WORK/backup.err" >&2; exit 1; }
  local set_bytes largest_db
  set_bytes=$("$ROOT/backup/restore.sh" show latest --json 2>/dev/null | jq '[.components[].objects[].bytes] | add')
  largest_db=$(find "$MLFLOW_ROOT" -name mlflow.db -printf '%s\n' | sort -n | tail -n1)

  ROLE="bench_restorer_$$"
  PGUSER=$STACK_PG_SUPERUSER PGPASSWORD=$STACK_PG_SUPERUSER_PASSWORD psql -X -q -d postgres \
    -c "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD 'bench-$$'" >/dev/null
  mkdir -p "$WORK/stub" "$WORK/data" "$WORK/mlflow"
  printf '#!/bin/sh\ncat >/dev/null\n' >"$WORK/stub/kubectl"
  chmod 755 "$WORK/stub/kubectl"

  local rows=() line
  line=$(measure verify "$ROOT/backup/restore.sh" verify latest)
  rows+=("verify latest (no identity)|$line")
  line=$(measure verify-id "$ROOT/backup/restore.sh" verify latest --identity "$WORK/identity.txt")
  rows+=("verify latest --identity|$line")
  line=$(PGUSER=$ROLE PGPASSWORD="bench-$$" BACKUP_VERIFY_SCRATCH_PGDATABASE=bench_scratch \
    measure verify-scratch "$ROOT/backup/restore.sh" verify latest --identity "$WORK/identity.txt")
  rows+=("verify latest --identity + scratch database|$line")
  line=$(PGUSER=$ROLE PGPASSWORD="bench-$$" PGDATABASE=bench_restored GITEA_DATA_DIR="$WORK/data" MLFLOW_ROOT="$WORK/mlflow" \
    PATH="$WORK/stub:$PATH" measure restore-all "$ROOT/backup/restore.sh" restore all latest --identity "$WORK/identity.txt" --yes)
  rows+=("restore all into fresh targets (kubectl discarded)|$line")

  echo "set: $(mib "$set_bytes") MiB stored; largest MLflow database $(mib "$largest_db") MiB; stack: ${STACK_DIR:+seed ${KDL_BENCH_SEED:-small}, started in }${STACK_DIR:-$env_file}" >&2
  echo "| run | seconds | exit | peak RSS (MiB) | bound | peak TMPDIR (MiB) | bound |"
  echo "|---|---|---|---|---|---|---|"
  local name seconds status rss tmp
  for line in "${rows[@]}"; do
    name=${line%%|*}
    read -r seconds status rss tmp <<<"${line#*|}"
    ((status == 0)) || echo "verify bench: $name exited $status (its last lines are above)" >&2
    printf '| %s | %s | %s | %s | 64 | %s | %s |\n' "$name" "$seconds" "$status" "$(mib $((rss * 1024)))" "$(mib "$tmp")" \
      "$(mib $((largest_db + 1048576)))"
  done
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
