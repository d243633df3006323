#!/usr/bin/env bash
# Summary: issue 7's performance: backup.sh vs the original's method (staging copy, tar czf,
#          aws s3 cp) vs the floor (the same S3 server ingesting our stored bytes as one upload),
#          on a generated dataset of at least 2 GiB; prints a markdown table against the targets.
# Usage: scripts/bench/backup.sh            (run by scripts/bench.sh; takes about 10 minutes)
#
# KDL_BIN_DIR: the release helpers (scripts/bench.sh sets it). KDL_BENCH_STACK_ENV: a stack
# already seeded large (scripts/stack/up.sh --seed 2560MiB: the seed's 2GiB lays out ~1.7 GiB of
# Gitea files, database and MLflow stores); otherwise one is started here with
# --seed ${KDL_BENCH_SIZE:-2560MiB} and stopped at the end. Peak RSS is the kernel's high-water
# mark (VmHWM) of every process in the run's tree, sampled every 0.1 s; peak temporary disk is
# sampled the same way over the run's TMPDIR (ours) or staging folder (the baseline).
set -Eeuo pipefail
umask 077

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY="$ROOT/.venv/bin/python"
OWN_STACK_DIR="" # not STACK_DIR: sourcing stack.env sets that one
WORK=""

# cleanup: removes what the run stored (the memstore OSD keeps objects in RAM, which
# pile up over runs against one stack), stops a stack started here, removes the work folder.
cleanup() {
  if [[ -n "${BACKUP_S3_BUCKET:-}" ]]; then
    local prefix
    for prefix in bench-ours bench-baseline bench-floor; do
      "$ROOT/.venv/bin/aws" s3 rm --recursive --only-show-errors "s3://$BACKUP_S3_BUCKET/$prefix/" >/dev/null 2>&1 || true
    done
  fi
  if [[ -n "$OWN_STACK_DIR" ]]; then
    "$ROOT/scripts/stack/down.sh" --dir "$OWN_STACK_DIR" >/dev/null 2>&1 || true
    rm -rf "$OWN_STACK_DIR"
  fi
  if [[ -n "$WORK" ]]; then rm -rf "$WORK"; fi
}

# measure NAME DISK_DIR CMD...: runs CMD, sampling its process tree and DISK_DIR; writes
# $WORK/NAME.json {seconds, status, peak_rss_kib, peak_rss_process, rss_by_process, peak_disk_bytes,
# peak_disk_snapshot_bytes (the MLflow snapshot's part of that peak), peak_snapshot_bytes, cpu_seconds}.
measure() {
  local name=$1 disk=$2
  shift 2
  "$PY" "$ROOT/scripts/bench/measure.py" "$WORK/$name.json" "$disk" "$@"
}

# baseline STAGING: what the original job did: copy everything to a staging folder, one tar czf,
# one aws s3 cp (k8s-export stands in for kubectl get; same objects).
baseline() {
  local staging=$1 stamp db store
  stamp=$(date -u +%Y%m%d)
  mkdir -p "$staging/backup/gitea" "$staging/backup/mongo" "$staging/backup/mlflow" "$staging/backup/k8s"
  pg_dump -F c -f "$staging/backup/gitea/gitea.dump"
  tar -C "$GITEA_DATA_DIR" --exclude=./gitea/indexers --exclude=./ssh --exclude=./lost+found -cf - . |
    tar -C "$staging/backup/gitea" -xf -
  for db in kdl admin; do mongodump --uri "$MONGO_URI" --db "$db" --archive="$staging/backup/mongo/$db.archive" --quiet; done
  while IFS= read -r store; do
    cp -r "$(dirname "$store")" "$staging/backup/mlflow/"
  done < <(find "$MLFLOW_ROOT" -maxdepth 3 -name mlflow.db)
  for resource in secrets kdlprojects.v1.project.konstellation.io usertools.v1alpha1.kdl.konstellation.io; do
    k8s-export --server "$K8S_SERVER" --token-file "$K8S_TOKEN_FILE" --ca-file "$K8S_CA_FILE" --namespace "$K8S_NAMESPACE" \
      --output "$staging/backup/k8s/${resource%%.*}.yaml" "$resource"
  done
  tar -C "$staging" -czf "$staging/backup_$stamp.tar.gz" backup
  "$ROOT/.venv/bin/aws" s3 cp --only-show-errors "$staging/backup_$stamp.tar.gz" "s3://$BACKUP_S3_BUCKET/bench-baseline/backup_$stamp.tar.gz"
}

# stored_bytes PREFIX ID: total bytes of our set (from its manifest, kept as $WORK/manifest.json).
stored_bytes() {
  s3-get "s3://$BACKUP_S3_BUCKET/$1/$2/manifest.json" "$WORK/manifest.json" >/dev/null
  jq '[.components[].objects[].bytes] | add' "$WORK/manifest.json"
}

# ratio A B: A/B with two decimals.
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'
}

# at_most A FACTOR B: "yes" when A <= FACTOR × B, else "no".
at_most() {
  awk -v a="$1" -v f="$2" -v b="$3" 'BEGIN { print (a <= f * b ? "yes" : "no") }'
}

# measured_ok NAME WHAT: returns 1 with NAME's log and "WHAT failed" when the measured run NAME did not exit 0.
measured_ok() {
  [[ "$(jq .status "$WORK/$1.json")" == 0 ]] && return 0
  cat "$WORK/$1.json.log" >&2
  echo "bench: $2 failed" >&2
  return 1
}

# source_bytes: bytes of the sources on disk: Gitea's data, the MLflow stores and Gitea's database.
source_bytes() {
  local files db
  files=$(du -sb "$GITEA_DATA_DIR" "$MLFLOW_ROOT" | awk '{s += $1} END {print s}')
  db=$(psql -X -A -t -q -c "SELECT pg_database_size(current_database())")
  echo $((files + db))
}

# mib KIB_OR_BYTES DIVISOR: a size in MiB with one decimal.
mib() {
  awk -v v="$1" -v d="$2" 'BEGIN { printf "%.1f", v / d }'
}

# use_bench_stack: the helpers and a large stack on PATH and in the environment: KDL_BENCH_STACK_ENV's, or
# one started here (stopped by cleanup).
use_bench_stack() {
  export PATH="${KDL_BIN_DIR:?set KDL_BIN_DIR (scripts/bench.sh does)}:$PATH"
  local env_file=${KDL_BENCH_STACK_ENV:-}
  if [[ -z "$env_file" ]]; then
    OWN_STACK_DIR=$(mktemp -d /tmp/kdl-bench-stack.XXXXXX)
    "$ROOT/scripts/stack/up.sh" --dir "$OWN_STACK_DIR" --seed "${KDL_BENCH_SIZE:-2560MiB}" >&2
    env_file="$OWN_STACK_DIR/stack.env"
  fi
  # shellcheck source=/dev/null
  source "$env_file"
  export PATH="$STACK_BIN_DIR:$PATH"
}

main() {
  trap cleanup EXIT
  WORK=$(mktemp -d /tmp/kdl-bench-backup.XXXXXX)
  use_bench_stack
  local summary=${STACK_SEED_SUMMARY:-}
  local source_bytes largest_db
  source_bytes=$(source_bytes)
  largest_db=$(find "$MLFLOW_ROOT" -name mlflow.db -printf '%s\n' | sort -n | tail -n1)

  mkdir -p "$WORK/ours-tmp" "$WORK/baseline"
  local id
  id=$(date -u +%Y%m%dT%H%M%SZ)
  echo "bench: backup.sh on $(mib "$source_bytes" 1073741824) GiB of sources (Gitea files + database, MLflow stores; MongoDB and Kubernetes on top)" >&2
  measure ours "$WORK/ours-tmp" env TMPDIR="$WORK/ours-tmp" BACKUP_ID="$id" BACKUP_S3_PREFIX=bench-ours BACKUP_KEEP_LAST=0 \
    bash "$ROOT/backup/backup.sh"
  measured_ok ours backup.sh
  local stored
  stored=$(stored_bytes bench-ours "$id")

  echo "bench: baseline (staging copy, tar czf, aws s3 cp)" >&2
  measure baseline "$WORK/baseline" bash -c "$(declare -f baseline); ROOT='$ROOT'; baseline '$WORK/baseline'"
  measured_ok baseline baseline
  local baseline_stored
  baseline_stored=$(du -b "$WORK"/baseline/backup_*.tar.gz 2>/dev/null | awk '{print $1}')
  rm -rf "$WORK/baseline"

  echo "bench: floor (the server ingesting $stored bytes as one upload)" >&2
  head -c "$stored" /dev/urandom >"$WORK/floor.bin"
  measure floor "$WORK/none" s3-put "$WORK/floor.bin" "s3://$BACKUP_S3_BUCKET/bench-floor/floor.bin"
  rm -f "$WORK/floor.bin"

  local ours_s base_s floor_s ours_rss ours_proc base_rss base_proc ours_disk base_disk our_max our_max_proc
  ours_s=$(jq .seconds "$WORK/ours.json")
  base_s=$(jq .seconds "$WORK/baseline.json")
  floor_s=$(jq .seconds "$WORK/floor.json")
  ours_rss=$(jq .peak_rss_kib "$WORK/ours.json")
  ours_proc=$(jq -r .peak_rss_process "$WORK/ours.json")
  base_rss=$(jq .peak_rss_kib "$WORK/baseline.json")
  base_proc=$(jq -r .peak_rss_process "$WORK/baseline.json")
  ours_disk=$(jq .peak_disk_bytes "$WORK/ours.json")
  base_disk=$(jq .peak_disk_bytes "$WORK/baseline.json")
  # "ours": the helpers, backup.sh and the tools it pipes through; not the MongoDB tools' test double
  read -r our_max our_max_proc < <(jq -r '.rss_by_process | to_entries | map(select(.key | test("mongodump|mongorestore|python") | not))
    | max_by(.value) | "\(.value) \(.key)"' "$WORK/ours.json")

  printf '| measure | backup.sh | baseline (copy + tar czf + aws s3 cp) | floor (one upload of our bytes) | target | met |\n'
  printf '|---|---|---|---|---|---|\n'
  printf '| wall time (s) | %.1f | %.1f | %.1f | ≤ 0.45× baseline, ≤ 1.3× floor | %s |\n' "$ours_s" "$base_s" "$floor_s" \
    "$(awk -v o="$ours_s" -v b="$base_s" -v f="$floor_s" 'BEGIN { print ((o <= 0.45 * b && o <= 1.3 * f) ? "yes" : "no") }')"
  printf '| ratio | %s× baseline, %s× floor | 1.00 | %s× baseline | | |\n' "$(ratio "$ours_s" "$base_s")" "$(ratio "$ours_s" "$floor_s")" "$(ratio "$floor_s" "$base_s")"
  printf '| peak RSS, largest process (MiB) | %s (%s) | %s (%s) | %s | | |\n' "$(mib "$ours_rss" 1024)" "$ours_proc" \
    "$(mib "$base_rss" 1024)" "$base_proc" "$(mib "$(jq .peak_rss_kib "$WORK/floor.json")" 1024)"
  printf '| peak RSS, largest of ours (MiB) | %s (%s) | | | ≤ 64 MiB | %s |\n' "$(mib "$our_max" 1024)" "$our_max_proc" \
    "$(awk -v r="$our_max" 'BEGIN { print (r <= 65536 ? "yes" : "no") }')"
  printf '| peak temporary disk (MiB) | %s | %s | 0 | ≤ largest MLflow DB (%s MiB) | %s |\n' "$(mib "$ours_disk" 1048576)" \
    "$(mib "$base_disk" 1048576)" "$(mib "$largest_db" 1048576)" "$(at_most "$ours_disk" 1 "$largest_db")"
  local snap_at_peak snap_peak
  snap_at_peak=$(jq .peak_disk_snapshot_bytes "$WORK/ours.json")
  snap_peak=$(jq .peak_snapshot_bytes "$WORK/ours.json")
  printf '| of which the staged MLflow snapshot (MiB) | %s (the rest, %s KiB, is the job'"'"'s logs and status files) | | | ≤ largest MLflow DB | %s |\n' \
    "$(mib "$snap_at_peak" 1048576)" "$(awk -v d="$ours_disk" -v s="$snap_at_peak" 'BEGIN { printf "%d", (d - s) / 1024 }')" \
    "$(at_most "$snap_peak" 1 "$largest_db")"
  printf '| bytes stored (MiB) | %s | %s | %s | | |\n' "$(mib "$stored" 1048576)" "$(mib "${baseline_stored:-0}" 1048576)" "$(mib "$stored" 1048576)"
  printf '\nbackup.sh per component: %s.\n' "$(jq -r '[.components[] | "\(.name) \(.seconds) s (\(.objects | length) objects, \([.objects[].bytes] | add // 0 | . / 1048576 | floor) MiB)"] | join(", ")' "$WORK/manifest.json")"
  printf '\nSources: %s MiB (Gitea data + database + MLflow stores)%s. RSS of backup.sh'"'"'s processes: %s\n' \
    "$(mib "$source_bytes" 1048576)" "${summary:+, seed summary $summary}" \
    "$(jq -r '.rss_by_process | to_entries | map("\(.key) \(.value / 1024 | floor) MiB") | join(", ")' "$WORK/ours.json")"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
