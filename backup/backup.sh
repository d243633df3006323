#!/usr/bin/env bash
# Summary: back up KDL (every component of backup/components/: Gitea's database and /data, MongoDB,
#          the MLflow stores, the Kubernetes objects the platform creates) to S3 as one verified,
#          optionally age-encrypted set.
# Usage: backup.sh [--preflight]
#        backup.sh --help | --version
#
# Every object is one streaming pipeline: producer -> (zstd) -> (age) -> s3-put -. The set
# lands under s3://$BACKUP_S3_BUCKET/$BACKUP_S3_PREFIX/$BACKUP_ID/ and manifest.json is
# written last. --preflight runs only the checks (tools, S3 probe, credentials, versions,
# sources reachable, recipients) and uploads nothing but the probe, which it deletes.
# Environment: docs/configuration.md#environment.
# Exit: 0 success, 3 partial, 1 failure, 64 configuration, 69 S3 or a source unavailable
#       (preflight), 77 permission refused, 143 terminated by SIGTERM/SIGINT (no manifest).
# shellcheck source-path=SCRIPTDIR
set -Eeuo pipefail
umask 077

KDL_BACKUP_HOME=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
# shellcheck source=lib/common.sh
source "$KDL_BACKUP_HOME/lib/common.sh"
# shellcheck source=lib/config.sh
source "$KDL_BACKUP_HOME/lib/config.sh"
# shellcheck source=lib/formats.sh
source "$KDL_BACKUP_HOME/lib/formats.sh"
# shellcheck source=lib/stream.sh
source "$KDL_BACKUP_HOME/lib/stream.sh"
# shellcheck source=lib/preflight.sh
source "$KDL_BACKUP_HOME/lib/preflight.sh"
# shellcheck source=lib/manifest.sh
source "$KDL_BACKUP_HOME/lib/manifest.sh"
# shellcheck source=lib/postgres.sh
source "$KDL_BACKUP_HOME/lib/postgres.sh"
# shellcheck source=lib/platform.sh
source "$KDL_BACKUP_HOME/lib/platform.sh"
# shellcheck source=lib/registry.sh
source "$KDL_BACKUP_HOME/lib/registry.sh"
kdl_load_components "$KDL_BACKUP_HOME/components"

KDL_TOOL=backup
# A volume is stored as it is; its unsafe tar entries are counted (restore refuses them).
KDL_TAR_HOSTILE=count

MODE=run
WORK=""
BACKUP_ID=${BACKUP_ID:-}
SELECTED=()
KEEP_LAST=$KDL_DEFAULT_KEEP_LAST
KEEP_DAYS=$KDL_DEFAULT_KEEP_DAYS
S3PUT_OPTS=()
STARTED_AT=""
START_NS=0
COMPONENT=""
COMPONENT_DIR=""
ENCRYPTED=false

# usage: the header of this file.
usage() {
  sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# parse_args ARGS...: --preflight, --help, --version; anything else is a usage error (64).
parse_args() {
  local arg
  for arg in "$@"; do
    case "$arg" in
      --preflight) MODE=preflight ;;
      -h | --help) usage; exit 0 ;;
      --version) printf 'backup.sh %s\n' "$(kdl_version)"; exit 0 ;;
      *) die "$EX_USAGE" "unknown argument '$arg' (usage: backup.sh [--preflight])" ;;
    esac
  done
}

# selected NAME: true when component NAME runs.
selected() {
  [[ " ${SELECTED[*]} " == *" $1 "* ]]
}

# default_components: every registered component the environment and the platform configure.
default_components() {
  local name
  for name in "${KDL_COMPONENTS[@]}"; do
    kdl_component_configured "$name" && printf '%s ' "$name"
  done
  return 0
}

# load_selection: SELECTED from BACKUP_COMPONENTS (default: every configured component), in the
# order given, without repeats; 64 for an unknown name or an empty selection.
load_selection() {
  local word
  SELECTED=()
  while IFS= read -r word; do
    if ! kdl_is_component "$word"; then
      KDL_CONFIG_ERROR="BACKUP_COMPONENTS: unknown component '$word' (any of: ${KDL_COMPONENTS[*]})"
      return "$EX_USAGE"
    fi
    selected "$word" || SELECTED+=("$word")
  done < <(kdl_words "${BACKUP_COMPONENTS-$(default_components)}")
  if ((${#SELECTED[@]} == 0)); then
    KDL_CONFIG_ERROR="BACKUP_COMPONENTS selects nothing (any of: ${KDL_COMPONENTS[*]})"
    return "$EX_USAGE"
  fi
}

# load_encryption: recipients and BACKUP_REQUIRE_ENCRYPTION; sets ENCRYPTED.
load_encryption() {
  local status=0
  kdl_load_recipients || return "$EX_USAGE"
  is_true "${BACKUP_REQUIRE_ENCRYPTION:-$KDL_DEFAULT_REQUIRE_ENCRYPTION}" || status=$?
  if ((status == 2)); then
    KDL_CONFIG_ERROR="BACKUP_REQUIRE_ENCRYPTION must be true or false (got '${BACKUP_REQUIRE_ENCRYPTION}')"
    return "$EX_USAGE"
  fi
  if ((status == 0 && ${#KDL_RECIPIENTS[@]} == 0)); then
    KDL_CONFIG_ERROR="BACKUP_REQUIRE_ENCRYPTION=true but BACKUP_AGE_RECIPIENTS is empty: refusing to store Secrets in plaintext"
    return "$EX_USAGE"
  fi
  ENCRYPTED=false
  if ((${#KDL_RECIPIENTS[@]} > 0)); then ENCRYPTED=true; fi
  return 0
}

# load_config: reads and checks the environment contract (the run's, then every component's) into
# globals; sets KDL_CONFIG_ERROR and returns 64 for anything unusable.
load_config() {
  local name
  kdl_load_s3_config || return "$EX_USAGE"
  BACKUP_ID=${BACKUP_ID:-$(date -u +%Y%m%dT%H%M%SZ)}
  if [[ ! "$BACKUP_ID" =~ ^[0-9]{8}T[0-9]{6}Z$ ]]; then
    KDL_CONFIG_ERROR="BACKUP_ID '$BACKUP_ID' must be a UTC timestamp YYYYMMDDTHHMMSSZ (retention reads a set's age from it)"
    return "$EX_USAGE"
  fi
  kdl_resolve_platform || return "$EX_USAGE"
  load_selection || return
  for name in "${KDL_COMPONENTS[@]}"; do
    "${name}_config" "$(selected "$name" && echo true || echo false)" || return "$EX_USAGE"
  done
  KEEP_LAST=${BACKUP_KEEP_LAST:-$KDL_DEFAULT_KEEP_LAST}
  KEEP_DAYS=${BACKUP_KEEP_DAYS:-$KDL_DEFAULT_KEEP_DAYS}
  if [[ ! "$KEEP_LAST" =~ ^[0-9]+$ || ! "$KEEP_DAYS" =~ ^[0-9]+$ ]]; then
    KDL_CONFIG_ERROR="BACKUP_KEEP_LAST and BACKUP_KEEP_DAYS must be whole numbers (got '$KEEP_LAST', '$KEEP_DAYS')"
    return "$EX_USAGE"
  fi
  S3PUT_OPTS=()
  [[ -n "${BACKUP_S3_SSE:-}" ]] && S3PUT_OPTS+=(--sse "$BACKUP_S3_SSE")
  [[ -n "${BACKUP_S3_STORAGE_CLASS:-}" ]] && S3PUT_OPTS+=(--storage-class "$BACKUP_S3_STORAGE_CLASS")
  load_encryption
}

# log_unconfigured: one line for each component the environment leaves out that says why (its note).
log_unconfigured() {
  local name
  for name in "${KDL_COMPONENTS[@]}"; do
    if ! selected "$name" && ! kdl_component_configured "$name" && kdl_has_fn "${name}_unconfigured_note"; then
      log info step="$MODE" component="$name" result=skipped "$("${name}_unconfigured_note")"
    fi
  done
}

# setup_workdir: one private temp dir (job log, statuses, one MLflow snapshot at a time),
# removed by the EXIT trap; TERM and INT stop the running pipelines and exit without a manifest.
setup_workdir() {
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/kdl-backup.XXXXXX" 2>/dev/null) ||
    die "$EX_IOERR" "cannot create a temporary folder under ${TMPDIR:-/tmp} (set TMPDIR to a writable folder, e.g. an emptyDir)"
  mkdir -p "$WORK/checks" "$WORK/components" "$WORK/snapshot"
  KDL_LOG_FILE="$WORK/job.log"
  : >"$KDL_LOG_FILE"
  trap cleanup EXIT
  trap 'on_signal TERM' TERM
  trap 'on_signal INT' INT
}

# cleanup: removes the temp dir (EXIT trap).
cleanup() {
  if [[ -n "$WORK" && -d "$WORK" ]]; then rm -rf -- "$WORK"; fi
}

# on_signal NAME: stops the running pipelines (their whole process groups: s3-put aborts its
# multipart upload on TERM), writes no manifest, exits 143 (130 for INT).
on_signal() {
  trap - TERM INT
  KDL_LOG_FIELDS=()
  log warn step=terminate signal="$1" id="$BACKUP_ID" component="${COMPONENT:-none}" "stopping: no manifest is written; the next run starts a new set and s3-prune removes this one after its grace period"
  kdl_cancel_job
  if [[ "$1" == INT ]]; then exit "$EX_SIGINT"; fi
  exit "$EX_SIGTERM"
}

# run_global_checks: the checks that concern the whole run; returns 64/69/77 on the first failure.
run_global_checks() {
  check_tools || return $?
  check_recipients
  check_s3
}

# run_component_checks: the preflight of every selected component; returns 1 when any failed.
run_component_checks() {
  local name failed=0
  for name in "${SELECTED[@]}"; do
    "${name}_preflight" || failed=1
  done
  return "$failed"
}

# run_component NAME: runs one selected component, timing it and writing its manifest entry.
run_component() {
  local name=$1 start seconds status error
  COMPONENT=$name
  COMPONENT_DIR="$WORK/components/$name"
  mkdir -p "$COMPONENT_DIR/objects"
  : >"$COMPONENT_DIR/objects.jsonl"
  : >"$COMPONENT_DIR/errors"
  echo '{}' >"$COMPONENT_DIR/details.json"
  KDL_LOG_FIELDS=("component=$name")
  log info step=start
  start=$(kdl_now_ns)
  "${name}_backup" || true
  seconds=$(kdl_seconds_since "$start")
  error=$(grep -v '^$' "$COMPONENT_DIR/errors" | paste -sd ';' - | sed 's/;/; /g') || true
  status=success
  [[ -n "$error" ]] && status=failure
  write_component "$name" "$status" "$seconds" "$error"
  rm -rf -- "$COMPONENT_DIR/objects" # read by now; it would only sit beside the MLflow snapshots
  log "$([[ $status == success ]] && echo info || echo error)" step=done status="$status" seconds="$seconds" \
    objects="$(jq -s length "$COMPONENT_DIR/objects.jsonl")" \
    bytes="$(jq -s 'map(.bytes) | add // 0' "$COMPONENT_DIR/objects.jsonl")"
  KDL_LOG_FIELDS=()
  COMPONENT=""
}

# notify_event ARGS...: runs notify; a notification failure is logged, never fatal.
notify_event() {
  local status=0
  kdl_run_job notify "$@" >"$WORK/notify.out" 2>"$WORK/notify.err" || status=$?
  if ((status != 0)); then
    log warn step=notify event="$2" exit="$status" error="$(kdl_tail_text "$WORK/notify.err" 2)"
  else
    log info step=notify event="$2"
  fi
  return 0
}

# prune: retention after a successful run (both rules 0: keep everything).
prune() {
  if ((KEEP_LAST == 0 && KEEP_DAYS == 0)); then
    log info step=prune "BACKUP_KEEP_LAST and BACKUP_KEEP_DAYS are 0: keeping every set"
    return 0
  fi
  local status=0
  kdl_run_job s3-prune --keep-last "$KEEP_LAST" --keep-days "$KEEP_DAYS" "s3://$KDL_BUCKET/$KDL_PREFIX" \
    >"$WORK/prune.out" 2>"$WORK/prune.err" || status=$?
  if ((status != 0)); then
    log warn step=prune exit="$status" error="$(kdl_tail_text "$WORK/prune.err" 2)"
  else
    log info step=prune keep_last="$KEEP_LAST" keep_days="$KEEP_DAYS"
  fi
}

# status_exit STATUS: 0 success, 3 partial, 1 failure.
status_exit() {
  case "$1" in
    success) return "$EX_OK" ;;
    partial) return "$EX_PARTIAL" ;;
    *) return "$EX_FAILURE" ;;
  esac
}

# run_preflight: --preflight: every check, nothing but the probe uploaded.
run_preflight() {
  local status=0
  run_global_checks || return $?
  run_component_checks || preflight_exit || status=$?
  if ((status == 0)); then log info step=preflight result=ok "all checks passed"; fi
  return "$status"
}

# run_backup: checks, every component in backup order, manifest last, summary, notification, retention.
run_backup() {
  local status=0 name manifest="$WORK/manifest.json" overall
  notify_event --event start
  if ! run_global_checks; then
    status=$(cat "$WORK"/checks/*.code 2>/dev/null | head -n1)
    log error step=preflight "stopping before anything is uploaded"
    notify_event --event finish --status failure --log-tail "$KDL_LOG_FILE"
    return "${status:-$EX_USAGE}"
  fi
  run_component_checks || true
  for name in "${KDL_COMPONENTS[@]}"; do
    if selected "$name"; then
      run_component "$name"
    elif kdl_component_configured "$name"; then
      write_component "$name" skipped 0 ""
    fi
  done
  overall=$(overall_status)
  write_manifest "$overall" "$manifest"
  if ! upload_manifest "$manifest"; then
    log error step=manifest error="$(kdl_tail_text "$WORK/manifest.put.err" 2)" "the set is incomplete without its manifest"
    overall=failure
  else
    log info step=manifest key=manifest.json status="$overall"
  fi
  print_summary "$manifest"
  notify_event --event finish --status "$overall" --manifest "$manifest" --log-tail "$KDL_LOG_FILE"
  if [[ "$overall" == success ]]; then prune; fi
  status_exit "$overall" || status=$?
  log info step=finish id="$BACKUP_ID" status="$overall" exit="$status" seconds="$(kdl_seconds_since "$START_NS")"
  return "$status"
}

main() {
  local status=0
  parse_args "$@"
  kdl_register_env_secrets
  load_config || die "$EX_USAGE" "$KDL_CONFIG_ERROR"
  setup_workdir
  STARTED_AT=$(kdl_utc_iso)
  START_NS=$(kdl_now_ns)
  log info step="$MODE" id="$BACKUP_ID" bucket="$KDL_BUCKET" prefix="$KDL_PREFIX" components="${SELECTED[*]}" \
    encrypted="$(encrypted && echo true || echo false)"
  log info step="$MODE" platform="$KDL_PLATFORM" reason="$KDL_PLATFORM_REASON"
  log_unconfigured
  if [[ "$MODE" == preflight ]]; then
    run_preflight || status=$?
  else
    run_backup || status=$?
  fi
  exit "$status"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
