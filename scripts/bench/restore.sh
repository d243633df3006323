#!/usr/bin/env bash
# Summary: issue 18's restore time: `restore.sh restore all` from one encrypted set into empty targets,
#          per step and in total, beside the original's manual restore (download the .tar.gz, extract,
#          pg_restore, copy the files back) on the same data and servers; and CPU seconds per GiB of
#          both process trees, for backup and for restore. Prints a markdown table against the targets.
# Usage: scripts/bench/restore.sh           (run by scripts/bench.sh; takes about 15 minutes)
#
# KDL_BIN_DIR: the release helpers (scripts/bench.sh sets it). KDL_BENCH_STACK_ENV: a stack seeded
# large; otherwise one is started here with --seed ${KDL_BENCH_SIZE:-2560MiB}. Both sides back up and
# restore Gitea (database and data), MongoDB and MLflow: the Kubernetes component is left out of both,
# as there is no kubectl or API server to apply to here. Empty targets: a database created by the
# restore (as the stack's superuser), empty folders, and a fresh nx-27017 per side.
set -Eeuo pipefail
umask 077

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=scripts/bench/backup.sh
source "$ROOT/scripts/bench/backup.sh" # measure, measured_ok, baseline, use_bench_stack, source_bytes, at_most, ratio, mib, cleanup
# shellcheck source=scripts/stack/lib.sh
source "$ROOT/scripts/stack/lib.sh" # free_port, start_service, wait_port, stop_service
MONGO_DIRS=()
DATABASES=()

# restore_cleanup: stops the MongoDB servers and drops the databases started here, then the shared cleanup.
restore_cleanup() {
  local dir db
  for dir in "${MONGO_DIRS[@]}"; do STACK_DIR=$dir stop_service mongo; done
  for db in "${DATABASES[@]}"; do
    PGUSER=$STACK_PG_SUPERUSER PGPASSWORD=$STACK_PG_SUPERUSER_PASSWORD dropdb --if-exists "$db" 2>/dev/null || true
  done
  cleanup
}

# fresh_mongo VAR DIR: starts an empty nx-27017 with its data, pid and logs in DIR (the stack's service helpers,
# with DIR as their folder); sets VAR to its URI.
fresh_mongo() {
  local port
  port=$(free_port)
  MONGO_DIRS+=("$2")
  mkdir -p "$2/data"
  STACK_DIR=$2 start_service mongo "$STACK_VENV/bin/nx-27017" --host 127.0.0.1 -p "$port" --data-dir "$2/data" \
    --log-file "$2/logs/server.log" --pid-file "$2/server.pid"
  STACK_DIR=$2 wait_port "$port" 60 mongo
  printf -v "$1" 'mongodb://127.0.0.1:%s/' "$port"
}

# step NAME CMD...: runs CMD and writes "step NAME SECONDS" to stderr (the baseline's per-step times).
step() {
  local name=$1 started=$EPOCHREALTIME
  shift
  "$@"
  awk -v n="$name" -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "step %s %.2f\n", n, b - a }' >&2
}

# copy_tree FROM TO [TAR_OPTION...]: FROM's contents into TO, owners and modes kept.
copy_tree() {
  tar -C "$1" "${@:3}" -cf - . | tar -C "$2" -xf -
}

# baseline_restore STAGING DB DATA MLFLOW: the original's manual restore of its latest .tar.gz.
baseline_restore() {
  local staging=$1 db=$2 data=$3 mlflow=$4 key archive
  key=$("$ROOT/.venv/bin/aws" s3 ls "s3://$BACKUP_S3_BUCKET/bench-baseline/" | awk '{print $4}' | tail -n1)
  step download "$ROOT/.venv/bin/aws" s3 cp --only-show-errors "s3://$BACKUP_S3_BUCKET/bench-baseline/$key" "$staging/$key"
  step extract tar -C "$staging" -xzf "$staging/$key"
  step gitea-db createdb "$db"
  step gitea-db pg_restore --no-owner -d "$db" "$staging/backup/gitea/gitea.dump"
  step gitea-data copy_tree "$staging/backup/gitea" "$data" --exclude=./gitea.dump
  for archive in "$staging"/backup/mongo/*.archive; do
    step "mongodb-$(basename "$archive" .archive)" mongorestore --uri "$MONGO_URI" --archive="$archive" --quiet
  done
  step mlflow copy_tree "$staging/backup/mlflow" "$mlflow"
}

# step_seconds LOG: "name seconds" per step of a measured run (restore.sh's log lines, or step()'s).
step_seconds() {
  sed -n -e 's/.*msg="restore step done" step=\([^ ]*\) seconds=\([0-9.]*\).*/\1 \2/p' \
    -e 's/.*msg="all objects verified".* seconds=\([0-9.]*\).*/verify-before-change \1/p' \
    -e 's/^step \([^ ]*\) \([0-9.]*\)$/\1 \2/p' "$1"
}

# sum_steps: "name seconds" lines summed per name, in first-seen order, as one "name s, name s" line.
sum_steps() {
  awk '{ if (!($1 in t)) order[++n] = $1; t[$1] += $2 } END { for (i = 1; i <= n; i++) printf "%s%s %.2f", (i > 1 ? ", " : ""), order[i], t[order[i]] }'
}

# per_gib SECONDS BYTES: SECONDS per GiB of BYTES, two decimals.
per_gib() {
  awk -v s="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? s / (b / 1073741824) : 0) }'
}

main() {
  trap restore_cleanup EXIT
  WORK=$(mktemp -d /tmp/kdl-bench-restore.XXXXXX)
  chmod 755 "$WORK"
  use_bench_stack
  export BACKUP_COMPONENTS="gitea mongodb mlflow" BACKUP_PLATFORM=kdl5
  local source_bytes
  source_bytes=$(source_bytes)

  age-keygen -o "$WORK/identity.txt" 2>/dev/null
  local id
  id=$(date -u +%Y%m%dT%H%M%SZ)
  mkdir -p "$WORK/ours-tmp" "$WORK/baseline"
  echo "bench: backup.sh (encrypted) on $(mib "$source_bytes" 1073741824) GiB of sources" >&2
  measure backup-ours "$WORK/ours-tmp" env TMPDIR="$WORK/ours-tmp" BACKUP_ID="$id" BACKUP_S3_PREFIX=bench-ours BACKUP_KEEP_LAST=0 \
    BACKUP_AGE_RECIPIENTS="$(age-keygen -y "$WORK/identity.txt")" bash "$ROOT/backup/backup.sh"
  measured_ok backup-ours "backup.sh"
  echo "bench: the original's backup (staging copy, tar czf, aws s3 cp)" >&2
  measure backup-baseline "$WORK/baseline" bash -c "$(declare -f baseline); ROOT='$ROOT'; baseline '$WORK/baseline'"
  measured_ok backup-baseline "baseline"
  rm -rf "$WORK/baseline"

  local super=(PGUSER="$STACK_PG_SUPERUSER" PGPASSWORD="$STACK_PG_SUPERUSER_PASSWORD")
  local ours_db base_db ours_mongo base_mongo
  ours_db="bench_restore_ours_$RANDOM" base_db="bench_restore_baseline_$RANDOM"
  DATABASES+=("$ours_db" "$base_db")
  fresh_mongo ours_mongo "$WORK/mongo-ours"
  fresh_mongo base_mongo "$WORK/mongo-baseline"
  mkdir -p "$WORK/ours/data" "$WORK/ours/mlflow" "$WORK/restore-tmp" "$WORK/base/data" "$WORK/base/mlflow" "$WORK/base/staging"
  echo "bench: restore.sh restore all $id into empty targets" >&2
  measure restore-ours "$WORK/restore-tmp" env "${super[@]}" PGDATABASE="$ours_db" GITEA_DATA_DIR="$WORK/ours/data" \
    MLFLOW_ROOT="$WORK/ours/mlflow" MONGO_URI="$ours_mongo" TMPDIR="$WORK/restore-tmp" BACKUP_S3_PREFIX=bench-ours \
    bash "$ROOT/backup/restore.sh" restore all "$id" --identity "$WORK/identity.txt" --yes
  measured_ok restore-ours "restore.sh"
  echo "bench: the original's manual restore (download, extract, pg_restore, copy back)" >&2
  measure restore-baseline "$WORK/base/staging" env "${super[@]}" MONGO_URI="$base_mongo" \
    bash -c "$(declare -f step copy_tree baseline_restore); ROOT='$ROOT'; baseline_restore '$WORK/base/staging' '$base_db' '$WORK/base/data' '$WORK/base/mlflow'"
  measured_ok restore-baseline "baseline restore"

  local rs bs ob bb rc bc obc bbc
  rs=$(jq .seconds "$WORK/restore-ours.json") bs=$(jq .seconds "$WORK/restore-baseline.json")
  ob=$(jq .seconds "$WORK/backup-ours.json") bb=$(jq .seconds "$WORK/backup-baseline.json")
  rc=$(jq .cpu_seconds "$WORK/restore-ours.json") bc=$(jq .cpu_seconds "$WORK/restore-baseline.json")
  obc=$(jq .cpu_seconds "$WORK/backup-ours.json") bbc=$(jq .cpu_seconds "$WORK/backup-baseline.json")

  printf '| measure | ours | the original | ratio | target | met |\n|---|---|---|---|---|---|\n'
  printf '| restore wall time (s) | %.1f | %.1f | %s× | ≤ 0.5× the original | %s |\n' "$rs" "$bs" "$(ratio "$rs" "$bs")" \
    "$(at_most "$rs" 0.5 "$bs")"
  printf '| restore vs our backup of the same set (s) | %.1f restore, %.1f backup | | %s× | ≤ 1.2× our backup | %s |\n' "$rs" "$ob" \
    "$(ratio "$rs" "$ob")" "$(at_most "$rs" 1.2 "$ob")"
  printf '| restore CPU (s per GiB of sources) | %s | %s | %s× | ≤ 0.5× the original | %s |\n' "$(per_gib "$rc" "$source_bytes")" \
    "$(per_gib "$bc" "$source_bytes")" "$(ratio "$rc" "$bc")" "$(at_most "$rc" 0.5 "$bc")"
  printf '| backup wall time (s) | %.1f | %.1f | %s× | | |\n' "$ob" "$bb" "$(ratio "$ob" "$bb")"
  printf '| backup CPU (s per GiB of sources) | %s | %s | %s× | ≤ 0.5× the original | %s |\n' "$(per_gib "$obc" "$source_bytes")" \
    "$(per_gib "$bbc" "$source_bytes")" "$(ratio "$obc" "$bbc")" "$(at_most "$obc" 0.5 "$bbc")"
  printf '| peak RSS, largest process (MiB) | %s (%s) | %s (%s) | | | |\n' \
    "$(mib "$(jq .peak_rss_kib "$WORK/restore-ours.json")" 1024)" "$(jq -r .peak_rss_process "$WORK/restore-ours.json")" \
    "$(mib "$(jq .peak_rss_kib "$WORK/restore-baseline.json")" 1024)" "$(jq -r .peak_rss_process "$WORK/restore-baseline.json")"
  printf '| peak temporary disk during restore (MiB) | %s | %s (download + extract) | | | |\n' \
    "$(mib "$(jq .peak_disk_bytes "$WORK/restore-ours.json")" 1048576)" "$(mib "$(jq .peak_disk_bytes "$WORK/restore-baseline.json")" 1048576)"
  printf '\nRestore steps, ours (s): %s.\n' "$(step_seconds "$WORK/restore-ours.json.log" | sum_steps)"
  printf 'Restore steps, the original (s): %s.\n' "$(step_seconds "$WORK/restore-baseline.json.log" | sum_steps)"
  printf 'Sources: %s MiB (Gitea data + database + MLflow stores; MongoDB on top). Our set is encrypted (age), the original'"'"'s is not. CPU is user + system of each process tree (wait4), not the S3 server'"'"'s.\n' \
    "$(mib "$source_bytes" 1048576)"
  printf 'Check of the targets: restored files (Gitea data + MLflow), ours %s, the original %s (the original also copies what backup.sh leaves out: MLflow WAL files).\n' \
    "$(find "$WORK/ours/data" "$WORK/ours/mlflow" -type f | wc -l)" "$(find "$WORK/base/data" "$WORK/base/mlflow" -type f | wc -l)"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
