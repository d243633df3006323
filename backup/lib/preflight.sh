# shellcheck shell=bash
# Summary: backup.sh's checks: each records its outcome under $WORK/checks (so a component can tell
#          that its source was unreachable and fail by itself), and the checks of the whole run:
#          tools, recipients, the S3 probe.
# Usage: source lib/common.sh and lib/config.sh first.
#
# Globals read: WORK BACKUP_ID KDL_BUCKET KDL_PREFIX KDL_RECIPIENTS.

readonly PROBE_ID=19700101T000000Z

# check_fail KEY CODE MESSAGE: records a failed check (its exit code and message) and logs it.
check_fail() {
  local key=$1 code=$2
  shift 2
  printf '%s\n' "$code" >"$WORK/checks/$key.code"
  kdl_redact "$*" >"$WORK/checks/$key.err"
  log error step=preflight check="$key" result=failed code="$code" error="$*"
  return 1
}

# check_ok KEY [FIELDS...]: logs a passed check.
check_ok() {
  local key=$1
  shift
  log info step=preflight check="$key" result=ok "$@"
}

# check_error KEY: the recorded message of a failed check (empty when it passed).
check_error() {
  [[ -f "$WORK/checks/$1.err" ]] && cat "$WORK/checks/$1.err"
  return 0
}

# check_require KEY TOOL...: fails check KEY (69) naming the tools that are not on PATH.
check_require() {
  local key=$1 missing
  shift
  missing=$(require_cmd "$@") && return 0
  check_fail "$key" "$EX_UNAVAILABLE" "missing tools on PATH: $missing"
}

# check_readable_dir KEY VARIABLE DIR: DIR exists (69) and can be listed (77).
check_readable_dir() {
  local key=$1 variable=$2 dir=$3
  [[ -d "$dir" ]] || { check_fail "$key" "$EX_UNAVAILABLE" "$variable $dir does not exist"; return 1; }
  [[ -r "$dir" && -x "$dir" ]] || { check_fail "$key" "$EX_NOPERM" "$variable $dir is not readable"; return 1; }
}

# check_tools: the tools the whole run needs (64 when one is missing).
check_tools() {
  local tools=(s3-put s3-ls s3-prune notify jq zstd tar tee mkfifo) missing
  encrypted && tools+=(age)
  if ! missing=$(require_cmd "${tools[@]}"); then
    check_fail tools "$EX_USAGE" "missing tools on PATH: $missing"
    return "$EX_USAGE"
  fi
  check_ok tools
}

# s3_status_to_exit STATUS: an S3 helper's exit status mapped to the run's: 77 permission,
# 64 configuration (no such bucket, bad usage), 69 otherwise (unreachable after retries).
s3_status_to_exit() {
  case "$1" in
    "$EX_NOPERM") echo "$EX_NOPERM" ;;
    "$EX_USAGE" | "$EX_NOINPUT") echo "$EX_USAGE" ;;
    *) echo "$EX_UNAVAILABLE" ;;
  esac
}

# check_s3_step NAME WHAT HELPER ARGS...: runs an S3 helper for the S3 check, output in
# $WORK/checks/NAME.{out,err}; on failure records the check and returns the run's exit status.
check_s3_step() {
  local name=$1 what=$2 status=0 code
  shift 2
  kdl_run_job "$@" >"$WORK/checks/$name.out" 2>"$WORK/checks/$name.err" || status=$?
  ((status == 0)) && return 0
  code=$(s3_status_to_exit "$status")
  check_fail s3 "$code" "$what failed ($1 exit $status): $(kdl_tail_text "$WORK/checks/$name.err" 2)"
  return "$code"
}

# check_s3: the bucket is reachable and writable with these credentials: a probe object is
# put and deleted (it sits under <prefix>/.preflight/ in an incomplete "set" whose id is the
# epoch, which s3-prune deletes at once with no grace; no helper deletes single keys).
# Also refuses to overwrite an existing complete set with the same id.
check_s3() {
  local key=".preflight/$PROBE_ID/probe-$BACKUP_ID-$$"
  printf 'kdl-backup preflight probe %s\n' "$BACKUP_ID" >"$WORK/checks/probe.txt"
  check_s3_step probe "S3 probe put to s3://$KDL_BUCKET/$KDL_PREFIX/$key" \
    s3-put --content-type text/plain "$WORK/checks/probe.txt" "$(kdl_s3_url "$key")" || return
  check_s3_step probe-delete "S3 probe delete of s3://$KDL_BUCKET/$KDL_PREFIX/$key" \
    s3-prune --keep-last 1 --incomplete-grace 0s "s3://$KDL_BUCKET/$KDL_PREFIX/.preflight" || return
  check_s3_step existing "S3 list of s3://$KDL_BUCKET/$KDL_PREFIX/$BACKUP_ID/" \
    s3-ls "s3://$KDL_BUCKET/$KDL_PREFIX/$BACKUP_ID" || return
  if grep -q "$KDL_PREFIX/$BACKUP_ID/manifest.json" "$WORK/checks/existing.out"; then
    check_fail s3 "$EX_USAGE" "a complete set with id $BACKUP_ID already exists in s3://$KDL_BUCKET/$KDL_PREFIX/ (set another BACKUP_ID)"
    return "$EX_USAGE"
  fi
  check_ok s3 bucket="$KDL_BUCKET" prefix="$KDL_PREFIX"
}

# check_recipients: logs how objects will be stored (recipients were parsed by load_config).
check_recipients() {
  if encrypted; then
    check_ok recipients count="${#KDL_RECIPIENTS[@]}" encrypted=true
  else
    log warn step=preflight check=recipients result=ok encrypted=false "BACKUP_AGE_RECIPIENTS is empty: objects, including Kubernetes Secrets, are stored unencrypted"
  fi
}

# preflight_exit: the --preflight exit status after component checks failed: 77 when one was
# refused permission, else 69.
preflight_exit() {
  if grep -qx "$EX_NOPERM" "$WORK"/checks/*.code 2>/dev/null; then return "$EX_NOPERM"; fi
  return "$EX_UNAVAILABLE"
}
