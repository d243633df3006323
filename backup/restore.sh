#!/usr/bin/env bash
# Summary: list, show, verify and restore kdl-backup sets from S3.
# Usage: restore.sh list
#        restore.sh show ID|latest [--json]
#        restore.sh verify ID|latest [--identity FILE] [--allow-partial]
#        restore.sh restore COMPONENT... ID|latest [--identity FILE] [--dry-run] [--yes] [--force]
#                           [--allow-partial] [--output DIR] [--target DIR] [--bucket NAME]...
#        restore.sh --help | --version
#
# COMPONENT: a component (gitea, postgres, volumes, mongodb, minio, mlflow, kubernetes: all its steps), one of its
#            steps (gitea-db, gitea-data, k8s-secrets, k8s-resources), postgres:NAME, volumes:NAME or minio:BUCKET (one
#            database, volume or bucket), or all (every step, in restore order)
# --target DIR: a volume goes into DIR instead of the path it was backed up from (one volume).
# --bucket NAME: with minio, restore only this bucket (repeatable; the same as minio:NAME).
# `latest` is the newest complete set with status success (success or partial with --allow-partial).
# Every object a command needs is downloaded and checked (size, sha256, decryption, format) before
# anything live changes; changes need --yes; --dry-run prints the plan and changes nothing.
# Environment: BACKUP_S3_BUCKET (or BUCKET_NAME), BACKUP_S3_PREFIX (kdl-backup), AWS_*, PG*, MONGO_URI,
# PG_<NAME>_HOST/PORT/USER/PASSWORD/DATABASE (postgres:NAME), BACKUP_PLATFORM (auto: the set's),
# MINIO_ENDPOINT MINIO_ACCESS_KEY_ID MINIO_SECRET_ACCESS_KEY MINIO_REGION MINIO_CA_FILE (minio: the MinIO restored into),
# GITEA_DATA_DIR (/data), MLFLOW_ROOT (/shared-volume), MLFLOW_RESTORE_OWNER (1000:1000: owner of MLflow folders it
# creates), K8S_SERVER K8S_TOKEN_FILE K8S_CA_FILE K8S_NAMESPACE,
# BACKUP_AGE_IDENTITY_FILE (default --identity), BACKUP_VERIFY_MAX_AGE_HOURS (192; 0: no limit; `verify latest`),
# BACKUP_VERIFY_SCRATCH_PGDATABASE (verify: also restore the Gitea dump into this scratch database, then drop it).
# `verify latest` reports its outcome with `notify --event verify` (NOTIFY_*; docs/operations.md), pass or fail.
# Exit: 0 ok, 1 failure, 64 usage, 66 unknown id or no complete set, 69 target or S3 unreachable,
#       74 checksum, size or format mismatch, 77 wrong identity or permission refused, 130/143 stopped by SIGINT/SIGTERM.
set -Eeuo pipefail
umask 077

KDL_BACKUP_HOME=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
# shellcheck source=backup/lib/common.sh
source "$KDL_BACKUP_HOME/lib/common.sh"
# shellcheck source=backup/lib/config.sh
source "$KDL_BACKUP_HOME/lib/config.sh"
# shellcheck source=backup/lib/formats.sh
source "$KDL_BACKUP_HOME/lib/formats.sh"
# shellcheck source=backup/lib/manifest.sh
source "$KDL_BACKUP_HOME/lib/manifest.sh"
# shellcheck source=backup/lib/postgres.sh
source "$KDL_BACKUP_HOME/lib/postgres.sh"
# shellcheck source=backup/lib/platform.sh
source "$KDL_BACKUP_HOME/lib/platform.sh"
# shellcheck source=backup/lib/registry.sh
source "$KDL_BACKUP_HOME/lib/registry.sh"
# shellcheck source=backup/lib/sets.sh
source "$KDL_BACKUP_HOME/lib/sets.sh"
kdl_load_components "$KDL_BACKUP_HOME/components"

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
TARGET_DIR=""
RESTORE_BUCKETS=()
JSON=false
FORCE_CONFLICTS=""
ARGS=()
STEPS=()
declare -A KDL_STEP_ONLY=()
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

# setup_env: bucket, prefix, identity and every component's configuration from the environment; the
# work directory. MongoDB's connection string goes into a --config file there (never on a command line).
setup_env() {
  local name
  kdl_load_s3_config || die "$EX_USAGE" "$KDL_CONFIG_ERROR"
  kdl_register_env_secrets
  kdl_register_secret "${NOTIFY_VERIFY_HEALTHCHECK_URL:-}"
  [[ -n "$IDENTITY" ]] || IDENTITY=${BACKUP_AGE_IDENTITY_FILE:-}
  for name in "${KDL_COMPONENTS[@]}"; do
    "${name}_config" false || die "$EX_USAGE" "$KDL_CONFIG_ERROR"
  done
  need_cmd s3-ls s3-get jq sha256sum tee
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/kdl-restore.XXXXXX")
  KDL_LOG_FILE="$WORK/restore.log"
  : >"$KDL_LOG_FILE"
  if [[ -n "${MONGO_URI:-}" ]] && command -v mongorestore >/dev/null; then
    KDL_MONGO_CONFIG="$WORK/mongo.yaml"
    kdl_write_mongo_config "$KDL_MONGO_CONFIG"
  fi
}

# parse_options ARG...: flags into globals, positionals into ARGS.
# shellcheck disable=SC2034  # OUTPUT_DIR, TARGET_DIR, FORCE and FORCE_CONFLICTS are read by the components' restore steps
parse_options() {
  ARGS=()
  while (($#)); do
    case "$1" in
      --identity) (($# > 1)) || die "$EX_USAGE" "--identity needs a FILE"; IDENTITY=$2; shift ;;
      --identity=*) IDENTITY=${1#*=} ;;
      --output) (($# > 1)) || die "$EX_USAGE" "--output needs a DIR"; OUTPUT_DIR=$2; shift ;;
      --output=*) OUTPUT_DIR=${1#*=} ;;
      --target) (($# > 1)) || die "$EX_USAGE" "--target needs a DIR"; TARGET_DIR=$2; shift ;;
      --bucket) (($# > 1)) || die "$EX_USAGE" "--bucket needs a NAME"; RESTORE_BUCKETS+=("$2"); shift ;;
      --bucket=*) RESTORE_BUCKETS+=("${1#*=}") ;;
      --target=*) TARGET_DIR=${1#*=} ;;
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
  jq '[.components[].objects[].bytes] | add // 0' "$1"
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

# cmd_show: one set's manifest as a readable summary (each component's details in its own words), or
# raw with --json.
cmd_show() {
  ((${#ARGS[@]} == 1)) || die "$EX_USAGE" "usage: restore.sh show ID|latest [--json]"
  resolve_set "${ARGS[0]}" "$ALLOW_PARTIAL"
  if [[ "$JSON" == true ]]; then
    jq . "$MANIFEST"
    return
  fi
  jq -r --arg size "$(human_bytes "$(set_bytes "$MANIFEST")")" '
    "set:        \(.id)", "status:     \(.status)", "started:    \(.startedAt)", "finished:   \(.finishedAt)",
    "size:       \($size)",
    "encryption: \(if .encryption == null then "none" else "\(.encryption.type) to \(.encryption.recipients | length) recipient(s)" end)",
    "tools:      \(.tools | to_entries | map("\(.key) \(.value)") | join(", "))"' "$MANIFEST"
  local name status seconds error details
  # A unit separator, not a tab: IFS whitespace would merge an empty error field into the next.
  while IFS=$'\x1f' read -r name status seconds error details; do
    printf '\n%s: %s in %ss%s\n' "$name" "$status" "$seconds" "${error:+ (error: $error)}"
    jq -r --arg c "$name" '.components[] | select(.name == $c) | .objects[]
      | "  \(.key)  \(.bytes) bytes  sha256 \(.sha256[0:16])…  \(.format)\(if .encrypted then "  encrypted" else "" end)\(if .verified then "  verified" else "" end)"' "$MANIFEST"
    if [[ "$details" != '{}' ]]; then
      if kdl_is_component "$name" && kdl_has_fn "${name}_describe"; then
        printf '  details: %s\n' "$("${name}_describe" "$details")"
      else
        printf '  details: %s\n' "$details"
      fi
    fi
  done < <(jq -r '.components[] | [.name, .status, (.seconds | tostring), (.error // "" | gsub("[\u001f\n]"; " ")), (.details | tojson)] | join("\u001f")' "$MANIFEST")
}

# check_age: `verify latest` fails when the set finished more than BACKUP_VERIFY_MAX_AGE_HOURS ago
# (0: no limit); sets SET_AGE_SECONDS (now - finishedAt).
check_age() {
  local max=${BACKUP_VERIFY_MAX_AGE_HOURS:-$KDL_DEFAULT_VERIFY_MAX_AGE_HOURS} finished now age
  [[ "$max" =~ ^[0-9]+$ ]] || die "$EX_USAGE" "BACKUP_VERIFY_MAX_AGE_HOURS is not a number of hours: $max"
  finished=$(date -u -d "$(jq -r .finishedAt "$MANIFEST")" +%s 2>/dev/null) || finished=$(set_started_epoch)
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
  local name
  for name in "${KDL_COMPONENTS[@]}"; do
    if kdl_has_fn "${name}_verify"; then "${name}_verify"; fi
  done
}

# expand_components NAME...: STEPS, the steps to run, in restore order: a component stands for all its steps,
# `all` for every step, COMPONENT:PART for the objects of one database or volume (KDL_STEP_ONLY).
expand_components() {
  local -A want=()
  local c s part
  STEPS=()
  for c in "$@"; do
    part=""
    if [[ "$c" == *:* ]]; then
      part=${c#*:}
      c=${c%%:*}
      if ! kdl_is_component "$c" || [[ ! "$part" =~ ^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$ ]]; then
        die "$EX_USAGE" "unknown component: $c:$part (COMPONENT:NAME takes a component and one of its databases or volumes)"
      fi
    fi
    if [[ "$c" == all ]]; then
      for s in "${KDL_RESTORE_STEPS[@]}"; do want[$s]=1; done
    elif kdl_is_component "$c"; then
      while IFS= read -r s; do
        want[$s]=1
        [[ -z "$part" ]] || KDL_STEP_ONLY[$s]+="$part "
      done < <(kdl_component_steps "$c")
    elif [[ -n "${KDL_STEP_COMPONENT[$c]+set}" ]] && kdl_step_has "$c" alone; then
      want[$c]=1
    else
      die "$EX_USAGE" "unknown component: $c ($(restore_names), all)"
    fi
  done
  for s in "${KDL_RESTORE_STEPS[@]}"; do
    [[ -z "${want[$s]+set}" ]] || STEPS+=("$s")
  done
  for part in "${RESTORE_BUCKETS[@]}"; do
    [[ -n "${want[minio]+set}" ]] || die "$EX_USAGE" "--bucket $part: --bucket names buckets of the minio component (restore minio --bucket NAME ID)"
    [[ "$part" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || die "$EX_USAGE" "--bucket $part is not a bucket name"
    KDL_STEP_ONLY[minio]+="$part "
  done
}

# restore_names: what `restore` takes, for its error message: each component's steps that can be
# restored alone, then the component.
restore_names() {
  local name step names=()
  for name in "${KDL_COMPONENTS[@]}"; do
    while IFS= read -r step; do
      [[ "$step" == "$name" ]] || ! kdl_step_has "$step" alone || names+=("$step")
    done < <(kdl_component_steps "$name")
    names+=("$name")
  done
  local IFS=,
  printf '%s' "${names[*]}" | sed 's/,/, /g'
}

# step_is_live STEP: true unless the step only writes files (the component says so).
step_is_live() {
  local name=${KDL_STEP_COMPONENT[$1]}
  if kdl_has_fn "${name}_is_live"; then "${name}_is_live" "$1"; else return 0; fi
}

# set_platform: the platform the restore works for: BACKUP_PLATFORM when it says kdl5 or kdl6, else the set's
# (KDL 5 for sets written before the manifest recorded it).
set_platform() {
  if [[ "${BACKUP_PLATFORM:-auto}" == auto ]]; then
    KDL_PLATFORM=$(jq -r '.platform // "kdl5"' "$MANIFEST")
  else
    kdl_resolve_platform || die "$EX_USAGE" "$KDL_CONFIG_ERROR"
  fi
}

# cmd_restore: plan, verify every needed object, then (with --yes) restore each step in order.
cmd_restore() {
  ((${#ARGS[@]} >= 2)) || die "$EX_USAGE" "usage: restore.sh restore COMPONENT... ID|latest [--identity FILE] [--dry-run] [--yes]"
  local id=${ARGS[-1]} step active=() live=false
  expand_components "${ARGS[@]:0:${#ARGS[@]}-1}"
  ((${#STEPS[@]})) || die "$EX_USAGE" "no component given"
  resolve_set "$id" "$ALLOW_PARTIAL"
  set_platform
  : >"$WORK/needed.tsv"
  for step in "${STEPS[@]}"; do
    if step_objects "$step" "$ALLOW_PARTIAL"; then
      active+=("$step")
      cat "$WORK/steps/$step.tsv" >>"$WORK/needed.tsv"
      step_is_live "$step" && live=true
    fi
  done
  ((${#active[@]})) || die "$EX_NOINPUT" "nothing to restore from set $SET_ID for: ${ARGS[*]:0:${#ARGS[@]}-1}"
  need_identity "$WORK/needed.tsv"
  check_identity
  echo "plan: set $SET_ID ($(jq -r .status "$MANIFEST"), $(set_encrypted && echo encrypted || echo 'not encrypted')), steps in order: ${active[*]}"
  echo "plan: verify $(wc -l <"$WORK/needed.tsv") objects (size, sha256, decryption, format) before any change"
  for step in "${active[@]}"; do "${KDL_STEP_COMPONENT[$step]}_plan" "$step"; done
  if [[ "$DRY_RUN" != true && "$YES" != true && "$live" == true ]]; then
    die "$EX_USAGE" "refusing to change live systems without --yes (the plan is above; --dry-run checks everything and changes nothing)"
  fi
  local started
  kdl_now_ns_into started
  check_presence "$WORK/needed.tsv"
  verify_objects "$WORK/needed.tsv"
  log info "all objects verified" objects="$VERIFIED_COUNT" bytes="$VERIFIED_BYTES" seconds="$(kdl_seconds_since "$started")"
  if [[ "$DRY_RUN" == true ]]; then
    echo "dry run: $VERIFIED_COUNT objects verified; nothing was changed"
    return 0
  fi
  for step in "${active[@]}"; do
    log info "restore step" step="$step" set="$SET_ID"
    kdl_now_ns_into started
    "${KDL_STEP_COMPONENT[$step]}_apply" "$step"
    log info "restore step done" step="$step" seconds="$(kdl_seconds_since "$started")"
    echo "restored: $step from set $SET_ID"
  done
}

main() {
  local cmd=${1:-}
  case "$cmd" in
    -h | --help | help) usage; return 0 ;;
    --version) echo "restore.sh $(kdl_version)"; return 0 ;;
    list | show | verify | restore) shift ;;
    '') usage >&2; exit "$EX_USAGE" ;;
    *) die "$EX_USAGE" "unknown command: $cmd (list, show, verify, restore; see --help)" ;;
  esac
  parse_options "$@"
  [[ "$cmd" == verify && "${ARGS[*]}" == latest ]] && VERIFY_REPORT=true
  trap on_exit EXIT
  # A stopped run (the Job's activeDeadlineSeconds, ^C) fails: reported, scratch database dropped.
  trap 'die "$EX_SIGTERM" "stopped by SIGTERM"' TERM
  trap 'die "$EX_SIGINT" "stopped by SIGINT"' INT
  setup_env
  "cmd_$cmd"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
