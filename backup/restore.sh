#!/usr/bin/env bash
# Summary: list, show, verify and restore kdl-backup sets from S3.
# Usage: restore.sh list
#        restore.sh show ID|latest [--json]
#        restore.sh verify ID|latest [--identity FILE] [--allow-partial]
#        restore.sh restore COMPONENT... ID|latest [--identity FILE] [--dry-run] [--yes] [--force]
#                           [--allow-partial] [--output DIR]
#        restore.sh --help | --version
#
# COMPONENT: gitea-db | gitea-data | gitea (both) | mongodb | mlflow | kubernetes | all
# `latest` is the newest complete set with status success (success or partial with --allow-partial).
# Every object a command needs is downloaded and checked (size, sha256, decryption, format) before
# anything live changes; changes need --yes; --dry-run prints the plan and changes nothing.
# Environment: BACKUP_S3_BUCKET (or BUCKET_NAME), BACKUP_S3_PREFIX (kdl-backup), AWS_*, PG*, MONGO_URI,
# GITEA_DATA_DIR (/data), MLFLOW_ROOT (/shared-volume), K8S_SERVER K8S_TOKEN_FILE K8S_CA_FILE K8S_NAMESPACE,
# BACKUP_AGE_IDENTITY_FILE (default --identity), BACKUP_VERIFY_MAX_AGE_HOURS (192; 0: no limit; `verify latest`),
# BACKUP_VERIFY_SCRATCH_PGDATABASE (verify: also restore the Gitea dump into this scratch database, then drop it).
# `verify latest` reports its outcome with `notify --event verify` (NOTIFY_*; docs/operations.md), pass or fail.
# Exit: 0 ok, 1 failure, 64 usage, 66 unknown id or no complete set, 69 target or S3 unreachable,
#       74 checksum, size or format mismatch, 77 wrong identity or permission refused, 130/143 stopped by SIGINT/SIGTERM.
set -Eeuo pipefail
umask 077

RESTORE_LIB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib"
# shellcheck source=backup/lib/common.sh
source "$RESTORE_LIB/common.sh"
# shellcheck source=backup/lib/config.sh
source "$RESTORE_LIB/config.sh"
# shellcheck source=backup/lib/restore-common.sh
source "$RESTORE_LIB/restore-common.sh"
# shellcheck source=backup/lib/restore-tar.sh
source "$RESTORE_LIB/restore-tar.sh"
# shellcheck source=backup/lib/restore-set.sh
source "$RESTORE_LIB/restore-set.sh"
# shellcheck source=backup/lib/restore-components.sh
source "$RESTORE_LIB/restore-components.sh"

readonly RESTORE_VERSION="${KDL_BACKUP_VERSION:-0.1.0}"

KDL_TOOL=restore.sh
WORK=""
IDENTITY=""
SET_ID=""
MANIFEST=""
DRY_RUN=false
YES=false
FORCE=false
ALLOW_PARTIAL=false
OUTPUT_DIR=""
JSON=false
FORCE_CONFLICTS=""
KUBECTL=()
ARGS=()
VERIFIED_COUNT=0 VERIFIED_BYTES=0 VERIFIED_UNREAD=0 VERIFIED_CHECKS=""
VERIFY_REPORT=false
VERIFY_CHECKED=()
SET_AGE_SECONDS=""
SCRATCH_DB=""

# usage: the header's usage lines.
usage() {
  sed -n '2,/^set -E/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

# cleanup: removes the one temporary directory.
cleanup() {
  [[ -n "$WORK" && -d "$WORK" ]] && rm -rf "$WORK"
  return 0
}

# on_exit: the EXIT trap: drops a scratch database left by a failed check, reports `verify latest`
# through notify, removes the work directory; the exit status is kept.
on_exit() {
  local status=$?
  set +e
  if [[ -n "$SCRATCH_DB" ]]; then
    (PGDATABASE=$SCRATCH_DB pg_admin_sql <<<'DROP DATABASE IF EXISTS :"db";' >/dev/null 2>&1) ||
      log warn "scratch database not dropped" database="$SCRATCH_DB"
  fi
  [[ "$VERIFY_REPORT" == true ]] && report_verify "$status"
  cleanup
  return "$status"
}

# report_verify EXIT_STATUS: notify --event verify with the outcome, the set's age and what was checked;
# a failed check is the last `--checked` line. A notification failure is logged, never fatal
# (notify itself exits 0 when a channel fails; it logs that in its own lines, kept in $WORK).
report_verify() {
  local status=$1 outcome=success line args=() env_args=() nout=/dev/null nerr=/dev/null
  ((status == 0)) || outcome=failure
  [[ -n "$WORK" && -d "$WORK" ]] && nout="$WORK/notify.out" nerr="$WORK/notify.err"
  if ! command -v notify >/dev/null 2>&1; then
    log warn "notify not found on PATH: the verification is not reported"
    return 0
  fi
  if ((status != 0)) && [[ -n "$KDL_LOG_FILE" && -f "$KDL_LOG_FILE" ]]; then
    line=$(grep "^$KDL_TOOL: " "$KDL_LOG_FILE" | tail -n 1)
    line=${line#"$KDL_TOOL: "}
    VERIFY_CHECKED+=("failed: ${line:-exit status $status}")
  elif ((status != 0)); then
    VERIFY_CHECKED+=("failed: exit status $status")
  fi
  args=(--event verify --status "$outcome")
  if [[ -n "$SET_ID" && -f "$MANIFEST" ]]; then
    args+=(--manifest "$MANIFEST")
    env_args=("BACKUP_ID=$SET_ID")
  else
    env_args=(-u BACKUP_ID)
  fi
  [[ -n "$SET_AGE_SECONDS" ]] && args+=(--set-age-seconds "$SET_AGE_SECONDS")
  for line in "${VERIFY_CHECKED[@]}"; do args+=(--checked "$line"); done
  ((status == 0)) || [[ -z "$KDL_LOG_FILE" || ! -f "$KDL_LOG_FILE" ]] || args+=(--log-tail "$KDL_LOG_FILE")
  [[ -z "${KDL_BUCKET:-}" ]] || env_args+=("BACKUP_S3_BUCKET=$KDL_BUCKET" "BACKUP_S3_PREFIX=$KDL_PREFIX")
  # Quiet when delivered, so a failed verification's error stays the last line on stderr.
  env "${env_args[@]}" notify "${args[@]}" >"$nout" 2>"$nerr" </dev/null ||
    log warn "verification not reported" event=verify exit="$?" error="$(kdl_tail_text "$nerr" 2)"
  return 0
}

# setup_env: bucket, prefix, identity and defaults from the environment; the work directory.
setup_env() {
  kdl_load_s3_config || die "$EX_USAGE" "$KDL_CONFIG_ERROR"
  kdl_register_env_secrets
  kdl_register_secret "${NOTIFY_VERIFY_HEALTHCHECK_URL:-}"
  [[ -n "$IDENTITY" ]] || IDENTITY=${BACKUP_AGE_IDENTITY_FILE:-}
  GITEA_DATA_DIR=${GITEA_DATA_DIR:-/data}
  MLFLOW_ROOT=${MLFLOW_ROOT:-/shared-volume}
  export PGDATABASE=${PGDATABASE:-gitea}
  need_cmd s3-ls s3-get jq sha256sum tee
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/kdl-restore.XXXXXX")
  KDL_LOG_FILE="$WORK/restore.log"
  : >"$KDL_LOG_FILE"
}

# parse_options ARG...: flags into globals, positionals into ARGS.
parse_options() {
  ARGS=()
  while (($#)); do
    case "$1" in
      --identity) (($# > 1)) || die "$EX_USAGE" "--identity needs a FILE"; IDENTITY=$2; shift ;;
      --identity=*) IDENTITY=${1#*=} ;;
      --output) (($# > 1)) || die "$EX_USAGE" "--output needs a DIR"; OUTPUT_DIR=$2; shift ;;
      --output=*) OUTPUT_DIR=${1#*=} ;;
      --dry-run) DRY_RUN=true ;;
      --yes) YES=true ;;
      --force) FORCE=true; FORCE_CONFLICTS=1 ;;
      --allow-partial) ALLOW_PARTIAL=true ;;
      --json) JSON=true ;;
      --) shift; ARGS+=("$@"); break ;;
      -*) die "$EX_USAGE" "unknown option: $1 (see restore.sh --help)" ;;
      *) ARGS+=("$1") ;;
    esac
    shift
  done
}

# set_bytes MANIFEST: total stored bytes of a set.
set_bytes() {
  jq '[.components[] | (.objects // [])[] | .bytes] | add // 0' "$1"
}

# cmd_list: complete sets, newest first: id, status, size, components.
cmd_list() {
  ((${#ARGS[@]} == 0)) || die "$EX_USAGE" "list takes no arguments"
  local id file n=0
  load_listing
  printf '%-20s %-8s %10s  %s\n' ID STATUS SIZE COMPONENTS
  while IFS= read -r id; do
    valid_id "$id" || continue
    file=$(fetch_manifest "$id")
    printf '%-20s %-8s %10s  %s\n' "$id" "$(jq -r .status "$file")" "$(human_bytes "$(set_bytes "$file")")" \
      "$(jq -r '[.components[] | .name + (if .status == "success" then "" else "(" + .status + ")" end)] | join(",")' "$file")"
    n=$((n + 1))
  done < <(set_ids)
  log info "listed sets" count="$n" location="$(s3_url "")"
}

# cmd_show: one set's manifest as a readable summary, or raw with --json.
cmd_show() {
  ((${#ARGS[@]} == 1)) || die "$EX_USAGE" "usage: restore.sh show ID|latest [--json]"
  resolve_set "${ARGS[0]}" "$ALLOW_PARTIAL"
  if [[ "$JSON" == true ]]; then
    jq . "$MANIFEST"
    return
  fi
  jq -r --arg size "$(human_bytes "$(set_bytes "$MANIFEST")")" '
    "set:        \(.id)", "status:     \(.status)", "started:    \(.startedAt // "-")", "finished:   \(.finishedAt // "-")",
    "size:       \($size)",
    "encryption: \(if .encryption == null then "none" else "\(.encryption.type) to \(.encryption.recipients | length) recipient(s)" end)",
    "tools:      \((.tools // {}) | to_entries | map("\(.key) \(.value)") | join(", "))",
    "",
    (.components[] |
      "\(.name): \(.status)\(if .seconds then " in \(.seconds)s" else "" end)\(if .error then " (error: \(.error))" else "" end)",
      ((.objects // [])[] | "  \(.key)  \(.bytes) bytes  sha256 \(.sha256[0:16])…\(if .encrypted then "  encrypted" else "" end)\(if .verified == true then "  verified" else "" end)"),
      (if (.details // null) != null then "  details: \(.details | tojson | .[0:400])" else empty end))' "$MANIFEST"
}

# check_age: `verify latest` fails when the set finished more than BACKUP_VERIFY_MAX_AGE_HOURS ago
# (0: no limit); sets SET_AGE_SECONDS (now - finishedAt, else startedAt or the id's time).
check_age() {
  local max=${BACKUP_VERIFY_MAX_AGE_HOURS:-192} finished now age
  [[ "$max" =~ ^[0-9]+$ ]] || die "$EX_USAGE" "BACKUP_VERIFY_MAX_AGE_HOURS is not a number of hours: $max"
  finished=$(jq -r '.finishedAt // .startedAt // empty' "$MANIFEST")
  finished=$(date -u -d "$finished" +%s 2>/dev/null) || finished=$(set_started_epoch)
  now=$(date -u +%s)
  SET_AGE_SECONDS=$((now - finished))
  age=$((SET_AGE_SECONDS / 3600))
  if ((max == 0)); then
    VERIFY_CHECKED+=("set age: $age hours (no limit)")
    return 0
  fi
  ((SET_AGE_SECONDS <= max * 3600)) ||
    die "$EX_FAILURE" "no successful backup in the last $max hours: the newest, $SET_ID, is $age hours old"
  VERIFY_CHECKED+=("set age: $age hours (limit $max hours)")
}

# need_identity TSV: dies 64 when an object to decrypt is encrypted and no identity was given.
need_identity() {
  [[ -n "$IDENTITY" ]] && return 0
  if awk -F'\t' '$5 == "true" { found = 1 } END { exit !found }' "$1"; then
    die "$EX_USAGE" "set $SET_ID is encrypted: pass --identity FILE (an age identity of one of its recipients)"
  fi
}

# scratch_restore_check DB: restores the set's Gitea dump into the scratch database DB (created, and
# dropped afterwards, also when a check fails), then compares what was restored with the manifest:
# the number of tables with the dump's table of contents (details.pg_dump.tables), and per-table
# row counts when the details carry them (details.tables).
scratch_restore_check() {
  local scratch=$1 key sha enc comp bytes tables rows dumped mismatches
  [[ "$scratch" != "${PGDATABASE:-gitea}" ]] || die "$EX_USAGE" "BACKUP_VERIFY_SCRATCH_PGDATABASE must differ from PGDATABASE"
  [[ "$scratch" =~ ^[A-Za-z0-9_-]+$ ]] || die "$EX_USAGE" "BACKUP_VERIFY_SCRATCH_PGDATABASE is not a plain database name: $scratch"
  IFS=$'\t' read -r comp key bytes sha enc < <(objects_tsv '.name == "gitea"' | awk -F'\t' '$2 ~ /^gitea\/postgres\.dump/') || true
  if [[ -z "${key:-}" ]]; then
    log warn "scratch restore skipped: the set has no Gitea dump"
    VERIFY_CHECKED+=("scratch restore skipped: the set has no Gitea dump")
    return 0
  fi
  if [[ "$(object_mode "$enc")" == raw ]]; then
    log warn "scratch restore skipped: the dump is encrypted and no identity was given"
    VERIFY_CHECKED+=("scratch restore skipped: the dump is encrypted and no identity was given")
    return 0
  fi
  SCRATCH_DB=$scratch
  PGDATABASE=$scratch pg_admin_sql <<<'DROP DATABASE IF EXISTS :"db";' >/dev/null
  PGDATABASE=$scratch pg_admin_sql <<<'CREATE DATABASE :"db";' >/dev/null
  log info "scratch restore" key="$key" target="$(PGDATABASE=$scratch pg_target)"
  PGDATABASE=$scratch object_pipeline "$key" "$sha" "$(object_mode "$enc")" pg_restore_into </dev/null
  PGDATABASE=$scratch psql -X -q -t -A -v ON_ERROR_STOP=1 -F $'\t' >"$WORK/scratch-counts.tsv" 2>"$WORK/psql.err" <<'SQL' ||
SELECT format('SELECT %L, count(*) FROM %I.%I',
              CASE WHEN table_schema = 'public' THEN table_name ELSE table_schema || '.' || table_name END,
              table_schema, table_name)
  FROM information_schema.tables
 WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE' ORDER BY 1 \gexec
SQL
    die "$EX_FAILURE" "counting the rows restored into $scratch failed: $(tool_error_line "$WORK/psql.err")"
  PGDATABASE=$scratch pg_admin_sql <<<'DROP DATABASE IF EXISTS :"db";' >/dev/null
  SCRATCH_DB=""
  tables=$(grep -c . "$WORK/scratch-counts.tsv" || true)
  rows=$(awk -F'\t' '{ n += $2 } END { print n + 0 }' "$WORK/scratch-counts.tsv")
  dumped=$(jq -r '[.components[] | select(.name == "gitea") | .details.pg_dump.tables // empty][0] // empty' "$MANIFEST")
  if [[ -n "$dumped" && "$dumped" != "$tables" ]]; then
    die "$EX_IOERR" "scratch restore of set $SET_ID: $tables tables restored, the dump's table of contents lists $dumped"
  fi
  mismatches=$(jq -r --rawfile got "$WORK/scratch-counts.tsv" '
      ($got | split("\n") | map(select(length > 0) | split("\t") | {(.[0]): (.[1] | tonumber)}) | add // {}) as $g
      | [.components[] | select(.name == "gitea") | .details.tables // empty
         | (if type == "array" then map({(.name // .table): .rows}) | add // {} else . end)
         | to_entries[] | select((.value | type) == "number" and $g[.key] != .value)
         | "\(.key): backup \(.value), restored \($g[.key] // "missing")"] | join("; ")' "$MANIFEST")
  [[ -z "$mismatches" ]] || die "$EX_IOERR" "scratch restore of set $SET_ID: row counts differ from the manifest: $mismatches"
  log info "scratch restore ok" database="$scratch" tables="$tables" rows="$rows"
  VERIFY_CHECKED+=("scratch restore into $scratch: $tables tables${dumped:+ (as in the dump)}, $rows rows, database dropped")
  echo "scratch restore: $tables tables${dumped:+ (the dump lists $dumped)}, $rows rows restored into $scratch; database dropped"
}

# cmd_verify: every object of a set checked without touching any live system; each check that
# passes is added to VERIFY_CHECKED (what `verify latest` reports through notify).
cmd_verify() {
  ((${#ARGS[@]} == 1)) || die "$EX_USAGE" "usage: restore.sh verify ID|latest [--identity FILE]"
  resolve_set "${ARGS[0]}" "$ALLOW_PARTIAL"
  VERIFY_CHECKED+=("manifest of set $SET_ID: kdl-backup/v1, status $(jq -r .status "$MANIFEST")")
  [[ "${ARGS[0]}" != latest ]] || check_age
  check_identity
  objects_tsv >"$WORK/verify.tsv"
  check_presence "$WORK/verify.tsv"
  VERIFY_CHECKED+=("$(wc -l <"$WORK/verify.tsv") objects present with the manifest's sizes")
  verify_objects "$WORK/verify.tsv"
  local checked=$((VERIFIED_COUNT - VERIFIED_UNREAD))
  VERIFY_CHECKED+=("sha256 of $VERIFIED_COUNT objects ($(human_bytes "$VERIFIED_BYTES")) as in the manifest")
  ((checked == 0)) || VERIFY_CHECKED+=("decrypted and format-checked: $checked objects ($VERIFIED_CHECKS)")
  ((VERIFIED_UNREAD == 0)) || VERIFY_CHECKED+=("not decrypted (no identity): $VERIFIED_UNREAD encrypted objects")
  echo "verify: set $SET_ID ok: $VERIFIED_COUNT objects, $(human_bytes "$VERIFIED_BYTES"), size and sha256 match the manifest; format checked: $checked; encrypted and not decrypted (no identity): $VERIFIED_UNREAD"
  if [[ -n "${BACKUP_VERIFY_SCRATCH_PGDATABASE:-}" ]]; then
    scratch_restore_check "$BACKUP_VERIFY_SCRATCH_PGDATABASE"
  fi
}

# expand_components NAME...: the steps to run, in the order of `all`.
expand_components() {
  local -A want=()
  local c s
  for c in "$@"; do
    case "$c" in
      gitea-db | gitea-data | mongodb | mlflow) want[$c]=1 ;;
      gitea) want[gitea-db]=1 want[gitea-data]=1 ;;
      kubernetes) want[k8s-secrets]=1 want[k8s-resources]=1 ;;
      all) for s in "${ALL_STEPS[@]}"; do want[$s]=1; done ;;
      *) die "$EX_USAGE" "unknown component: $c (gitea-db, gitea-data, gitea, mongodb, mlflow, kubernetes, all)" ;;
    esac
  done
  for s in "${ALL_STEPS[@]}"; do
    [[ -z "${want[$s]+set}" ]] || echo "$s"
  done
}

# cmd_restore: plan, verify every needed object, then (with --yes) restore each step in order.
cmd_restore() {
  ((${#ARGS[@]} >= 2)) || die "$EX_USAGE" "usage: restore.sh restore COMPONENT... ID|latest [--identity FILE] [--dry-run] [--yes]"
  local id=${ARGS[-1]} steps=() step active=() live=false
  expand_components "${ARGS[@]:0:${#ARGS[@]}-1}" >/dev/null
  mapfile -t steps < <(expand_components "${ARGS[@]:0:${#ARGS[@]}-1}")
  ((${#steps[@]})) || die "$EX_USAGE" "no component given"
  resolve_set "$id" "$ALLOW_PARTIAL"
  : >"$WORK/needed.tsv"
  for step in "${steps[@]}"; do
    if step_objects "$step" "$ALLOW_PARTIAL"; then
      active+=("$step")
      cat "$WORK/steps/$step.tsv" >>"$WORK/needed.tsv"
      step_changes_live "$step" && live=true
    fi
  done
  ((${#active[@]})) || die "$EX_NOINPUT" "nothing to restore from set $SET_ID for: ${ARGS[*]:0:${#ARGS[@]}-1}"
  need_identity "$WORK/needed.tsv"
  check_identity
  echo "plan: set $SET_ID ($(jq -r .status "$MANIFEST"), $(set_encrypted && echo encrypted || echo 'not encrypted')), steps in order: ${active[*]}"
  echo "plan: verify $(wc -l <"$WORK/needed.tsv") objects (size, sha256, decryption, format) before any change"
  for step in "${active[@]}"; do plan_step "$step"; done
  if [[ "$DRY_RUN" != true && "$YES" != true && "$live" == true ]]; then
    die "$EX_USAGE" "refusing to change live systems without --yes (the plan is above; --dry-run checks everything and changes nothing)"
  fi
  check_presence "$WORK/needed.tsv"
  verify_objects "$WORK/needed.tsv"
  log info "all objects verified" objects="$VERIFIED_COUNT" bytes="$VERIFIED_BYTES"
  if [[ "$DRY_RUN" == true ]]; then
    echo "dry run: $VERIFIED_COUNT objects verified; nothing was changed"
    return 0
  fi
  for step in "${active[@]}"; do
    log info "restore step" step="$step" set="$SET_ID"
    apply_step "$step"
    echo "restored: $step from set $SET_ID"
  done
}

main() {
  local cmd=${1:-}
  case "$cmd" in
    -h | --help | help) usage; return 0 ;;
    --version) echo "restore.sh $RESTORE_VERSION"; return 0 ;;
    list | show | verify | restore) shift ;;
    '') usage >&2; exit "$EX_USAGE" ;;
    *) die "$EX_USAGE" "unknown command: $cmd (list, show, verify, restore; see --help)" ;;
  esac
  parse_options "$@"
  [[ "$cmd" == verify && "${ARGS[*]}" == latest ]] && VERIFY_REPORT=true
  trap on_exit EXIT
  # A stopped run (the Job's activeDeadlineSeconds, ^C) fails: reported, scratch database dropped.
  trap 'die 143 "stopped by SIGTERM"' TERM
  trap 'die 130 "stopped by SIGINT"' INT
  setup_env
  "cmd_$cmd"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
