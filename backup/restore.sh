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
# Exit: 0 ok, 1 failure, 64 usage, 66 unknown id or no complete set, 69 target or S3 unreachable,
#       74 checksum, size or format mismatch, 77 wrong identity or permission refused.
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
VERIFIED_COUNT=0 VERIFIED_BYTES=0 VERIFIED_UNREAD=0

# usage: the header's usage lines.
usage() {
  sed -n '2,/^set -E/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

# cleanup: removes the one temporary directory.
cleanup() {
  [[ -n "$WORK" && -d "$WORK" ]] && rm -rf "$WORK"
  return 0
}

# setup_env: bucket, prefix, identity and defaults from the environment; the work directory.
setup_env() {
  kdl_load_s3_config || die "$EX_USAGE" "$KDL_CONFIG_ERROR"
  kdl_register_env_secrets
  [[ -n "$IDENTITY" ]] || IDENTITY=${BACKUP_AGE_IDENTITY_FILE:-}
  GITEA_DATA_DIR=${GITEA_DATA_DIR:-/data}
  MLFLOW_ROOT=${MLFLOW_ROOT:-/shared-volume}
  export PGDATABASE=${PGDATABASE:-gitea}
  need_cmd s3-ls s3-get jq sha256sum tee
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/kdl-restore.XXXXXX")
  trap cleanup EXIT
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

# check_age: `verify latest` fails when the set finished more than BACKUP_VERIFY_MAX_AGE_HOURS ago.
check_age() {
  local max=${BACKUP_VERIFY_MAX_AGE_HOURS:-192} finished now age
  [[ "$max" =~ ^[0-9]+$ ]] || die "$EX_USAGE" "BACKUP_VERIFY_MAX_AGE_HOURS is not a number of hours: $max"
  ((max > 0)) || return 0
  finished=$(jq -r '.finishedAt // .startedAt // empty' "$MANIFEST")
  finished=$(date -u -d "$finished" +%s 2>/dev/null) || finished=$(set_started_epoch)
  now=$(date -u +%s)
  age=$(((now - finished) / 3600))
  ((now - finished <= max * 3600)) ||
    die "$EX_FAILURE" "no successful backup in the last $max hours: the newest, $SET_ID, is $age hours old"
}

# need_identity TSV: dies 64 when an object to decrypt is encrypted and no identity was given.
need_identity() {
  [[ -n "$IDENTITY" ]] && return 0
  if awk -F'\t' '$5 == "true" { found = 1 } END { exit !found }' "$1"; then
    die "$EX_USAGE" "set $SET_ID is encrypted: pass --identity FILE (an age identity of one of its recipients)"
  fi
}

# scratch_restore_check: restores the set's Gitea dump into BACKUP_VERIFY_SCRATCH_PGDATABASE, compares
# per-table row counts with the manifest's details when it has them, then drops the scratch database.
scratch_restore_check() {
  local scratch=$1 key sha enc comp bytes tables mismatches
  [[ "$scratch" != "${PGDATABASE:-gitea}" ]] || die "$EX_USAGE" "BACKUP_VERIFY_SCRATCH_PGDATABASE must differ from PGDATABASE"
  [[ "$scratch" =~ ^[A-Za-z0-9_-]+$ ]] || die "$EX_USAGE" "BACKUP_VERIFY_SCRATCH_PGDATABASE is not a plain database name: $scratch"
  IFS=$'\t' read -r comp key bytes sha enc < <(objects_tsv '.name == "gitea"' | awk -F'\t' '$2 ~ /^gitea\/postgres\.dump/') || true
  [[ -n "${key:-}" ]] || { log warn "scratch restore skipped: the set has no Gitea dump"; return 0; }
  [[ "$(object_mode "$enc")" != raw ]] || { log warn "scratch restore skipped: no identity"; return 0; }
  PGDATABASE=$scratch pg_admin_sql <<<'DROP DATABASE IF EXISTS :"db";' >/dev/null
  PGDATABASE=$scratch pg_admin_sql <<<'CREATE DATABASE :"db";' >/dev/null
  PGDATABASE=$scratch object_pipeline "$key" "$sha" "$(object_mode "$enc")" pg_restore_into </dev/null
  PGDATABASE=$scratch psql -X -q -t -A -F $'\t' -d "$scratch" >"$WORK/scratch-counts.tsv" 2>"$WORK/psql.err" <<'SQL' || true
SELECT format('SELECT %L, count(*) FROM %I.%I', table_name, table_schema, table_name)
  FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1 \gexec
SQL
  PGDATABASE=$scratch pg_admin_sql <<<'DROP DATABASE IF EXISTS :"db";' >/dev/null
  tables=$(wc -l <"$WORK/scratch-counts.tsv")
  mismatches=$(jq -r --rawfile got "$WORK/scratch-counts.tsv" '
      ($got | split("\n") | map(select(length > 0) | split("\t") | {(.[0]): (.[1] | tonumber)}) | add // {}) as $g
      | [.components[] | select(.name == "gitea") | .details.tables // empty
         | (if type == "array" then map({(.name // .table): .rows}) | add // {} else . end)
         | to_entries[] | select((.value | type) == "number" and $g[.key] != .value)
         | "\(.key): backup \(.value), restored \($g[.key] // "missing")"] | join("; ")' "$MANIFEST")
  [[ -z "$mismatches" ]] || die "$EX_IOERR" "scratch restore of set $SET_ID: row counts differ from the manifest: $mismatches"
  log info "scratch restore ok" database="$scratch" tables="$tables"
  echo "scratch restore: $tables tables restored into $scratch, row counts as in the manifest, database dropped"
}

# cmd_verify: every object of a set checked without touching any live system.
cmd_verify() {
  ((${#ARGS[@]} == 1)) || die "$EX_USAGE" "usage: restore.sh verify ID|latest [--identity FILE]"
  resolve_set "${ARGS[0]}" "$ALLOW_PARTIAL"
  [[ "${ARGS[0]}" != latest ]] || check_age
  check_identity
  objects_tsv >"$WORK/verify.tsv"
  check_presence "$WORK/verify.tsv"
  verify_objects "$WORK/verify.tsv"
  local checked=$((VERIFIED_COUNT - VERIFIED_UNREAD))
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
  setup_env
  "cmd_$cmd"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
