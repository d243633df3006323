# shellcheck shell=bash
# Summary: shared shell helpers for backup.sh and restore.sh: logfmt logging with secret
#          redaction, die/say/require_cmd, the version, word lists, timing and cancellable background jobs.
# Usage: source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
#
# Functions return explicit statuses: a bare `return` inside a trap handler (and in functions
# it calls) returns the status from before the trap, which breaks $(...) under set -e.
#
# Sourcing defines functions and a few KDL_* globals only; it runs nothing. Callers set
# KDL_TOOL (the name printed in every line) and may set KDL_LOG_FILE (a copy of every line)
# and KDL_LOG_FIELDS (an array of key=value pairs added to every line, e.g. component=gitea).

# shellcheck source=backup/lib/exit-codes.sh
source "$(dirname "${BASH_SOURCE[0]}")/exit-codes.sh"

KDL_TOOL=${KDL_TOOL:-kdl-backup}
KDL_LOG_FILE=${KDL_LOG_FILE:-}
KDL_LOG_FIELDS=()
KDL_SECRETS=()
KDL_JOBS=()
KDL_LAST_JOB=""

# kdl_register_secret VALUE...: values never to be printed; every log line and recorded
# error passes through kdl_redact. Values shorter than 4 characters would redact ordinary
# words and are ignored (as in BackupKit's Log).
kdl_register_secret() {
  local value
  for value in "$@"; do
    ((${#value} >= 4)) && KDL_SECRETS+=("$value")
  done
  return 0
}

# kdl_register_env_secrets: registers the secret-bearing variables the jobs read (AWS keys,
# database passwords (PGPASSWORD, every PG_<NAME>_PASSWORD), connection strings, notification URLs, SMTP password, webhook secret)
# and the password part of any URI among them.
kdl_register_env_secrets() {
  local name value password
  for name in AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN PGPASSWORD MONGO_URI MINIO_SECRET_ACCESS_KEY \
    NOTIFY_SLACK_WEBHOOK_URL NOTIFY_WEBHOOK_URL NOTIFY_WEBHOOK_SECRET NOTIFY_SMTP_URL \
    NOTIFY_SMTP_PASSWORD NOTIFY_PUSHGATEWAY_URL NOTIFY_HEALTHCHECK_URL $(compgen -v | grep -E '^PG_[A-Z0-9_]+_PASSWORD$'); do
    value=${!name:-}
    [[ -n "$value" ]] || continue
    kdl_register_secret "$value"
    if [[ "$value" =~ ^[A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:([^/@]*)@ ]]; then
      password=${BASH_REMATCH[1]}
      kdl_register_secret "$password"
    fi
  done
}

# kdl_redact TEXT: prints TEXT with every registered secret replaced by [REDACTED] and the
# password of any scheme://user:password@ URI masked.
kdl_redact() {
  local text
  kdl_redact_into text "$1"
  printf '%s' "$text"
}

# kdl_redact_into VAR TEXT: kdl_redact's result in VAR (no subshell).
kdl_redact_into() {
  # Locals carry a prefix: printf -v into a caller's variable of the same name would set ours.
  local kdl_rtext=$2 kdl_rsecret
  for kdl_rsecret in "${KDL_SECRETS[@]}"; do
    kdl_rtext=${kdl_rtext//"$kdl_rsecret"/[REDACTED]}
  done
  while [[ "$kdl_rtext" =~ ([A-Za-z][A-Za-z0-9+.-]*://[^/@:[:space:]]*:)([^/@[:space:]]+)@ ]] && [[ "${BASH_REMATCH[2]}" != "[REDACTED]" ]]; do
    kdl_rtext=${kdl_rtext//"${BASH_REMATCH[0]}"/"${BASH_REMATCH[1]}[REDACTED]@"}
  done
  printf -v "$1" '%s' "$kdl_rtext"
}

# kdl_logfmt_value VALUE: VALUE quoted for logfmt when it holds spaces, quotes, = or controls.
kdl_logfmt_value() {
  local REPLY
  kdl_logfmt_quote "$1"
  printf '%s' "$REPLY"
}

# kdl_logfmt_quote VALUE: kdl_logfmt_value into REPLY (no subshell: log runs once per step).
kdl_logfmt_quote() {
  local value=$1
  if [[ -n "$value" && ! "$value" =~ [[:space:]\"=\\[:cntrl:]] ]]; then
    REPLY=$value
    return 0
  fi
  value=${value//\\/\\\\}
  value=${value//\"/\\\"}
  value=${value//$'\n'/\\n}
  value=${value//$'\t'/\\t}
  value=${value//$'\r'/\\r}
  REPLY="\"$value\""
}

# log LEVEL KEY=VALUE...: one logfmt line on stderr (and in KDL_LOG_FILE):
# ts=... level=... tool=... [KDL_LOG_FIELDS] KEY=VALUE...; a bare word becomes msg=...
log() {
  local level=$1 pair key line REPLY
  shift
  kdl_utc_iso_into line
  line="ts=$line level=$level tool=$KDL_TOOL"
  for pair in "${KDL_LOG_FIELDS[@]}" "$@"; do
    if [[ "$pair" =~ ^[A-Za-z_][A-Za-z0-9_.-]*= ]]; then
      key=${pair%%=*}
      kdl_logfmt_quote "${pair#*=}"
      line+=" $key=$REPLY"
    else
      kdl_logfmt_quote "$pair"
      line+=" msg=$REPLY"
    fi
  done
  kdl_redact_into line "$line"
  printf '%s\n' "$line" >&2
  if [[ -n "$KDL_LOG_FILE" ]]; then printf '%s\n' "$line" >>"$KDL_LOG_FILE"; fi
  return 0
}

# say TEXT...: a plain line for people on stderr (usage, summary tables), redacted.
say() {
  local text
  text=$(kdl_redact "$*")
  printf '%s\n' "$text" >&2
  if [[ -n "$KDL_LOG_FILE" ]]; then printf '%s\n' "$text" >>"$KDL_LOG_FILE"; fi
  return 0
}

# die STATUS MESSAGE: one clear line on stderr (tool: message) and exit with a sysexits STATUS.
die() {
  local status=$1
  shift
  say "$KDL_TOOL: $*"
  exit "$status"
}

# require_cmd NAME...: succeeds when every NAME is on PATH; otherwise prints the missing ones
# on stdout (space separated) and returns 1.
require_cmd() {
  local name missing=()
  for name in "$@"; do
    command -v "$name" >/dev/null 2>&1 || missing+=("$name")
  done
  ((${#missing[@]} == 0)) && return 0
  printf '%s\n' "${missing[*]}"
  return 1
}

# need_cmd NAME...: exits 69 naming the commands that are not on PATH.
need_cmd() {
  local missing
  missing=$(require_cmd "$@") || die "$EX_UNAVAILABLE" "required command not found: $missing"
}

# kdl_version: the project's version, from backup/VERSION (the one place it is written).
kdl_version() {
  local file
  file="$(dirname "${BASH_SOURCE[0]}")/../VERSION"
  if [[ -r "$file" ]]; then tr -d ' \n' <"$file"; else printf 'unknown'; fi
}

# is_true VALUE: true|1|yes|on (any case) → 0; false|0|no|off|"" → 1; else 2.
is_true() {
  case "${1,,}" in
    true | 1 | yes | on) return 0 ;;
    false | 0 | no | off | "") return 1 ;;
    *) return 2 ;;
  esac
}

# kdl_words TEXT: TEXT split on spaces, commas and newlines, one word a line (empty words dropped).
kdl_words() {
  local text=${1//,/ } word
  for word in $text; do printf '%s\n' "$word"; done
}

# kdl_now_ns: nanoseconds since the epoch (for durations; microsecond resolution, no fork).
kdl_now_ns() {
  local now
  kdl_now_ns_into now
  printf '%s' "$now"
}

# kdl_now_ns_into VAR: kdl_now_ns's value in VAR (no subshell).
kdl_now_ns_into() {
  printf -v "$1" '%s000' "${EPOCHREALTIME//[.,]/}"
}

# kdl_seconds_since START_NS: elapsed seconds with two decimals.
kdl_seconds_since() {
  local now
  kdl_now_ns_into now
  kdl_seconds_between "$1" "$now"
}

# kdl_seconds_between START_NS END_NS: END - START in seconds with two decimals.
kdl_seconds_between() {
  local elapsed=$(($2 - $1))
  printf '%d.%02d' $((elapsed / 1000000000)) $((elapsed % 1000000000 / 10000000))
}

# kdl_json_string TEXT: TEXT as a JSON string literal in REPLY (quotes, backslashes and
# control characters escaped).
kdl_json_string() {
  local text=$1 out="" char code i special='[\"[:cntrl:]]'
  if [[ ! "$text" =~ $special ]]; then
    REPLY="\"$text\""
    return 0
  fi
  for ((i = 0; i < ${#text}; i++)); do
    char=${text:i:1}
    case "$char" in
      '"') out+='\"' ;;
      "\\") out+="\\\\" ;;
      *)
        if [[ "$char" =~ [[:cntrl:]] ]]; then
          printf -v code '%d' "'$char"
          printf -v char '\\u%04x' "$code"
        fi
        out+=$char
        ;;
    esac
  done
  REPLY="\"$out\""
}

# kdl_utc_iso: the current UTC time as RFC 3339 (seconds).
kdl_utc_iso() {
  local now
  kdl_utc_iso_into now
  printf '%s' "$now"
}

# kdl_utc_iso_into VAR: kdl_utc_iso's value in VAR (bash's own strftime: no date process per line).
kdl_utc_iso_into() {
  TZ=UTC0 printf -v "$1" '%(%Y-%m-%dT%H:%M:%SZ)T' -1
}

# kdl_tail_text FILE [LINES]: the last LINES (default 3) non-empty lines of FILE joined by "; ",
# redacted; for error messages built from a tool's stderr.
kdl_tail_text() {
  local file=$1 lines=${2:-3} text
  [[ -s "$file" ]] || return 0
  text=$(grep -v '^[[:space:]]*$' "$file" | tail -n "$lines" | paste -sd ';' - | sed 's/;/; /g')
  kdl_redact "$text"
}

# tool_error_line FILE: the last non-empty line of a tool's stderr (redacted), for a one-line error.
tool_error_line() {
  kdl_tail_text "$1" 1 | cut -c1-300
}

# human_bytes N: N bytes as a short human size (KiB, MiB, ...).
human_bytes() {
  local n=${1:-0} units=(B KiB MiB GiB TiB) i=0 whole frac
  whole=$n
  frac=0
  while ((whole >= 1024 && i < 4)); do
    frac=$(((whole % 1024) * 10 / 1024))
    whole=$((whole / 1024))
    i=$((i + 1))
  done
  if ((i == 0)); then printf '%d B' "$n"; else printf '%d.%d %s' "$whole" "$frac" "${units[$i]}"; fi
}

# kdl_start_job CMD [ARGS...]: starts CMD (a function or program, with its pipelines) in the
# background in its own process group, so kdl_cancel_job can stop the whole pipeline; its pid
# is KDL_LAST_JOB. Several jobs may run at once; collect each with kdl_wait_job.
kdl_start_job() {
  set -m
  "$@" </dev/null &
  KDL_LAST_JOB=$!
  set +m
  KDL_JOBS+=("$KDL_LAST_JOB")
  return 0
}

# kdl_wait_job PID: waits for a job of kdl_start_job (a TERM trap still runs at once) and
# returns its status.
kdl_wait_job() {
  local status=0 job kept=()
  wait "$1" || status=$?
  for job in "${KDL_JOBS[@]}"; do
    [[ "$job" == "$1" ]] || kept+=("$job")
  done
  KDL_JOBS=("${kept[@]}")
  return "$status"
}

# kdl_run_job CMD [ARGS...]: kdl_start_job then kdl_wait_job: CMD's status.
kdl_run_job() {
  kdl_start_job "$@"
  kdl_wait_job "$KDL_LAST_JOB"
}

# kdl_cancel_job: sends TERM to the process group of every running job, then KILL after a
# grace of KDL_CANCEL_GRACE seconds (default 5).
kdl_cancel_job() {
  local job waited=0 alive
  ((${#KDL_JOBS[@]})) || return 0
  for job in "${KDL_JOBS[@]}"; do kill -TERM -- "-$job" 2>/dev/null || true; done
  while ((waited < ${KDL_CANCEL_GRACE:-5} * 10)); do
    alive=false
    for job in "${KDL_JOBS[@]}"; do
      if kill -0 -- "-$job" 2>/dev/null; then alive=true; fi
    done
    [[ "$alive" == true ]] || break
    sleep 0.1
    waited=$((waited + 1))
  done
  for job in "${KDL_JOBS[@]}"; do kill -KILL -- "-$job" 2>/dev/null || true; done
  KDL_JOBS=()
}
