# shellcheck shell=bash
# Summary: shared shell helpers for backup.sh and restore.sh: logfmt logging with secret
#          redaction, die/say/require_cmd, word lists, timing and cancellable background jobs.
# Usage: source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
#
# Functions return explicit statuses: a bare `return` inside a trap handler (and in functions
# it calls) returns the status from before the trap, which breaks $(...) under set -e.
#
# Sourcing defines functions and a few KDL_* globals only; it runs nothing. Callers set
# KDL_TOOL (the name printed in every line) and may set KDL_LOG_FILE (a copy of every line)
# and KDL_LOG_FIELDS (an array of key=value pairs added to every line, e.g. component=gitea).

KDL_TOOL=${KDL_TOOL:-kdl-backup}
KDL_LOG_FILE=${KDL_LOG_FILE:-}
KDL_LOG_FIELDS=()
KDL_SECRETS=()
KDL_CURRENT_JOB=""

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
# database passwords, connection strings, notification URLs, SMTP password, webhook secret)
# and the password part of any URI among them.
kdl_register_env_secrets() {
  local name value password
  for name in AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN PGPASSWORD MONGO_URI \
    NOTIFY_SLACK_WEBHOOK_URL NOTIFY_WEBHOOK_URL NOTIFY_WEBHOOK_SECRET NOTIFY_SMTP_URL \
    NOTIFY_SMTP_PASSWORD NOTIFY_PUSHGATEWAY_URL NOTIFY_HEALTHCHECK_URL; do
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
  local text=$1 secret
  for secret in "${KDL_SECRETS[@]}"; do
    text=${text//"$secret"/[REDACTED]}
  done
  while [[ "$text" =~ ([A-Za-z][A-Za-z0-9+.-]*://[^/@:[:space:]]*:)([^/@[:space:]]+)@ ]] && [[ "${BASH_REMATCH[2]}" != "[REDACTED]" ]]; do
    text=${text//"${BASH_REMATCH[0]}"/"${BASH_REMATCH[1]}[REDACTED]@"}
  done
  printf '%s' "$text"
}

# kdl_logfmt_value VALUE: VALUE quoted for logfmt when it holds spaces, quotes, = or controls.
kdl_logfmt_value() {
  local value=$1
  if [[ -n "$value" && ! "$value" =~ [[:space:]\"=\\[:cntrl:]] ]]; then
    printf '%s' "$value"
    return 0
  fi
  value=${value//\\/\\\\}
  value=${value//\"/\\\"}
  value=${value//$'\n'/\\n}
  value=${value//$'\t'/\\t}
  value=${value//$'\r'/\\r}
  printf '"%s"' "$value"
}

# log LEVEL KEY=VALUE...: one logfmt line on stderr (and in KDL_LOG_FILE):
# ts=... level=... tool=... [KDL_LOG_FIELDS] KEY=VALUE...; a bare word becomes msg=...
log() {
  local level=$1 pair key line
  shift
  line="ts=$(date -u +%Y-%m-%dT%H:%M:%SZ) level=$level tool=$KDL_TOOL"
  for pair in "${KDL_LOG_FIELDS[@]}" "$@"; do
    if [[ "$pair" =~ ^[A-Za-z_][A-Za-z0-9_.-]*= ]]; then
      key=${pair%%=*}
      line+=" $key=$(kdl_logfmt_value "${pair#*=}")"
    else
      line+=" msg=$(kdl_logfmt_value "$pair")"
    fi
  done
  line=$(kdl_redact "$line")
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

# kdl_words TEXT: TEXT split on spaces, commas and newlines, one word a line (empty words dropped).
kdl_words() {
  local text=${1//,/ } word
  for word in $text; do printf '%s\n' "$word"; done
}

# kdl_now_ns: nanoseconds since the epoch (for durations).
kdl_now_ns() {
  date +%s%N
}

# kdl_seconds_since START_NS: elapsed seconds with two decimals.
kdl_seconds_since() {
  local elapsed=$(($(kdl_now_ns) - $1))
  printf '%d.%02d' $((elapsed / 1000000000)) $((elapsed % 1000000000 / 10000000))
}

# kdl_utc_iso: the current UTC time as RFC 3339 (seconds).
kdl_utc_iso() {
  date -u +%Y-%m-%dT%H:%M:%SZ
}

# kdl_tail_text FILE [LINES]: the last LINES (default 3) non-empty lines of FILE joined by "; ",
# redacted; for error messages built from a tool's stderr.
kdl_tail_text() {
  local file=$1 lines=${2:-3} text
  [[ -s "$file" ]] || return 0
  text=$(grep -v '^[[:space:]]*$' "$file" | tail -n "$lines" | paste -sd ';' - | sed 's/;/; /g')
  kdl_redact "$text"
}

# kdl_run_job CMD [ARGS...]: runs CMD (a function or program, with its pipelines) in the
# background in its own process group and waits for it, so a TERM trap runs at once and
# kdl_cancel_job can stop the whole pipeline. Returns CMD's status.
kdl_run_job() {
  local status=0
  set -m
  "$@" </dev/null &
  KDL_CURRENT_JOB=$!
  set +m
  wait "$KDL_CURRENT_JOB" || status=$?
  KDL_CURRENT_JOB=""
  return "$status"
}

# kdl_cancel_job: sends TERM to the process group of the running kdl_run_job, then KILL
# after a grace of KDL_CANCEL_GRACE seconds (default 5).
kdl_cancel_job() {
  local job=$KDL_CURRENT_JOB waited=0
  [[ -n "$job" ]] || return 0
  kill -TERM -- "-$job" 2>/dev/null || return 0
  while kill -0 -- "-$job" 2>/dev/null && ((waited < ${KDL_CANCEL_GRACE:-5} * 10)); do
    sleep 0.1
    waited=$((waited + 1))
  done
  kill -KILL -- "-$job" 2>/dev/null || true
  KDL_CURRENT_JOB=""
}
