#!/usr/bin/env bash
# Summary: back up KDL (Gitea's database and /data, MongoDB, the MLflow stores, the Kubernetes
#          objects the platform creates) to S3 as one verified, optionally age-encrypted set.
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

KDL_TOOL=backup
readonly EXIT_OK=0 EXIT_FAILURE=1 EXIT_PARTIAL=3 EXIT_USAGE=64 EXIT_UNAVAILABLE=69 EXIT_PERMISSION=77
readonly ALL_COMPONENTS=(gitea mongodb mlflow kubernetes)
readonly DEFAULT_K8S_RESOURCES="kdlprojects.v1.project.konstellation.io usertools.v1alpha1.kdl.konstellation.io"
readonly DEFAULT_SECRET_REGEX='-ssh-keys$|^codeserver-oauth2-'
readonly SERVICE_ACCOUNT_DIR=${KDL_SERVICE_ACCOUNT_DIR:-/var/run/secrets/kubernetes.io/serviceaccount}
readonly PROBE_ID=19700101T000000Z

MODE=run
SNAP_FILE=""
SNAP_ERROR=""
WORK=""
BACKUP_ID=${BACKUP_ID:-}
SELECTED=()
GITEA_DIR=""
GITEA_EXCLUDES=()
MONGO_DBS=()
MONGO_CONFIG=""
MLFLOW_DIR=""
K8S_NS=""
K8S_RES=()
K8S_CONN=()
SECRET_REGEX=""
KEEP_LAST=8
KEEP_DAYS=0
S3PUT_OPTS=()
STARTED_AT=""
START_NS=0
COMPONENT=""
COMPONENT_DIR=""
ENCRYPTED=false
PG_DUMP_COMPRESS=1
OBJECT_SEQ=0
declare -A OBJECT_JOBS=()

# usage: the header of this file.
usage() {
  sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

# parse_args ARGS...: --preflight, --help, --version; anything else is a usage error (64).
parse_args() {
  local arg
  for arg in "$@"; do
    case "$arg" in
      --preflight) MODE=preflight ;;
      -h | --help) usage; exit 0 ;;
      --version) printf 'backup.sh %s\n' "$(kdl_version)"; exit 0 ;;
      *) die "$EXIT_USAGE" "unknown argument '$arg' (usage: backup.sh [--preflight])" ;;
    esac
  done
}

# kdl_version: the project version, from the helpers (they share one) or unknown.
kdl_version() {
  local version
  version=$(s3-put --version 2>/dev/null | head -n1) || true
  printf '%s' "${version:-unknown}"
}

# is_true VALUE: true|1|yes|on (any case) → 0; false|0|no|off|"" → 1; else 2.
is_true() {
  case "${1,,}" in
    true | 1 | yes | on) return 0 ;;
    false | 0 | no | off | "") return 1 ;;
    *) return 2 ;;
  esac
}

# load_config: reads and checks the environment contract into globals; sets KDL_CONFIG_ERROR
# and returns 64 for anything unusable.
load_config() {
  local word status=0 plural seen=" "
  kdl_load_s3_config || return "$EXIT_USAGE"

  BACKUP_ID=${BACKUP_ID:-$(date -u +%Y%m%dT%H%M%SZ)}
  if [[ ! "$BACKUP_ID" =~ ^[0-9]{8}T[0-9]{6}Z$ ]]; then
    KDL_CONFIG_ERROR="BACKUP_ID '$BACKUP_ID' must be a UTC timestamp YYYYMMDDTHHMMSSZ (retention reads a set's age from it)"
    return "$EXIT_USAGE"
  fi

  SELECTED=()
  while IFS= read -r word; do
    case "$word" in
      gitea | mongodb | mlflow | kubernetes) [[ " ${SELECTED[*]} " == *" $word "* ]] || SELECTED+=("$word") ;;
      *)
        KDL_CONFIG_ERROR="BACKUP_COMPONENTS: unknown component '$word' (any of: ${ALL_COMPONENTS[*]})"
        return "$EXIT_USAGE"
        ;;
    esac
  done < <(kdl_words "${BACKUP_COMPONENTS-${ALL_COMPONENTS[*]}}")
  if ((${#SELECTED[@]} == 0)); then
    KDL_CONFIG_ERROR="BACKUP_COMPONENTS selects nothing (any of: ${ALL_COMPONENTS[*]})"
    return "$EXIT_USAGE"
  fi

  GITEA_DIR=${GITEA_DATA_DIR:-/data}
  GITEA_EXCLUDES=()
  while IFS= read -r word; do
    word=${word#./}
    word=${word#/}
    word=${word%/}
    [[ -n "$word" ]] && GITEA_EXCLUDES+=("$word")
  done < <(kdl_words "${GITEA_DATA_EXCLUDE-gitea/indexers ssh lost+found}")

  export PGDATABASE=${PGDATABASE:-gitea}
  PG_DUMP_COMPRESS=${BACKUP_PG_DUMP_COMPRESS:-1}
  if [[ ! "$PG_DUMP_COMPRESS" =~ ^([0-9]|(none|gzip|lz4|zstd)(:[A-Za-z0-9=,_-]+)?)$ ]]; then
    KDL_CONFIG_ERROR="BACKUP_PG_DUMP_COMPRESS '$PG_DUMP_COMPRESS' is not a pg_dump --compress value (0-9, or gzip|lz4|zstd[:LEVEL] with pg_dump 16+)"
    return "$EXIT_USAGE"
  fi
  export PGCONNECT_TIMEOUT=${PGCONNECT_TIMEOUT:-10}
  mapfile -t MONGO_DBS < <(kdl_words "${MONGO_DATABASES:-kdl admin}")
  if [[ " ${SELECTED[*]} " == *" mongodb "* && -z "${MONGO_URI:-}" ]]; then
    KDL_CONFIG_ERROR="MONGO_URI is required to back up mongodb (or leave mongodb out of BACKUP_COMPONENTS)"
    return "$EXIT_USAGE"
  fi
  MLFLOW_DIR=${MLFLOW_ROOT:-/shared-volume}

  K8S_NS=${K8S_NAMESPACE:-}
  if [[ -z "$K8S_NS" && -r "$SERVICE_ACCOUNT_DIR/namespace" ]]; then K8S_NS=$(<"$SERVICE_ACCOUNT_DIR/namespace"); fi
  K8S_NS=${K8S_NS:-kdl}
  mapfile -t K8S_RES < <(kdl_words "${K8S_RESOURCES:-$DEFAULT_K8S_RESOURCES}")
  SECRET_REGEX=${K8S_SECRET_NAME_REGEX-$DEFAULT_SECRET_REGEX}
  if [[ -n "$SECRET_REGEX" && " ${K8S_RES[*]} " != *" secrets "* ]]; then K8S_RES+=(secrets); fi
  for word in "${K8S_RES[@]}"; do
    plural=${word%%.*}
    if [[ "$seen" == *" $plural "* ]]; then
      KDL_CONFIG_ERROR="K8S_RESOURCES: two resources share the plural '$plural' (each is stored as kubernetes/$plural.yaml)"
      return "$EXIT_USAGE"
    fi
    seen+="$plural "
  done
  K8S_CONN=()
  [[ -n "${K8S_SERVER:-}" ]] && K8S_CONN+=(--server "$K8S_SERVER")
  [[ -n "${K8S_TOKEN_FILE:-}" ]] && K8S_CONN+=(--token-file "$K8S_TOKEN_FILE")
  [[ -n "${K8S_CA_FILE:-}" ]] && K8S_CONN+=(--ca-file "$K8S_CA_FILE")

  KEEP_LAST=${BACKUP_KEEP_LAST:-8}
  KEEP_DAYS=${BACKUP_KEEP_DAYS:-0}
  if [[ ! "$KEEP_LAST" =~ ^[0-9]+$ || ! "$KEEP_DAYS" =~ ^[0-9]+$ ]]; then
    KDL_CONFIG_ERROR="BACKUP_KEEP_LAST and BACKUP_KEEP_DAYS must be whole numbers (got '$KEEP_LAST', '$KEEP_DAYS')"
    return "$EXIT_USAGE"
  fi

  S3PUT_OPTS=()
  [[ -n "${BACKUP_S3_SSE:-}" ]] && S3PUT_OPTS+=(--sse "$BACKUP_S3_SSE")
  [[ -n "${BACKUP_S3_STORAGE_CLASS:-}" ]] && S3PUT_OPTS+=(--storage-class "$BACKUP_S3_STORAGE_CLASS")

  kdl_load_recipients || return "$EXIT_USAGE"
  is_true "${BACKUP_REQUIRE_ENCRYPTION:-false}" || status=$?
  if ((status == 2)); then
    KDL_CONFIG_ERROR="BACKUP_REQUIRE_ENCRYPTION must be true or false (got '${BACKUP_REQUIRE_ENCRYPTION}')"
    return "$EXIT_USAGE"
  fi
  if ((status == 0 && ${#KDL_RECIPIENTS[@]} == 0)); then
    KDL_CONFIG_ERROR="BACKUP_REQUIRE_ENCRYPTION=true but BACKUP_AGE_RECIPIENTS is empty: refusing to store Secrets in plaintext"
    return "$EXIT_USAGE"
  fi
  ENCRYPTED=false
  if ((${#KDL_RECIPIENTS[@]} > 0)); then ENCRYPTED=true; fi
  return 0
}

# encrypted: true when objects are encrypted (recipients given).
encrypted() {
  [[ "$ENCRYPTED" == true ]]
}

# setup_workdir: one private temp dir (job log, statuses, one MLflow snapshot at a time),
# removed by the EXIT trap; TERM and INT stop the running pipeline and exit without a manifest.
setup_workdir() {
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/kdl-backup.XXXXXX" 2>/dev/null) ||
    die 74 "cannot create a temporary folder under ${TMPDIR:-/tmp} (set TMPDIR to a writable folder, e.g. an emptyDir)"
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

# on_signal NAME: stops the running pipeline (its whole process group: s3-put aborts its
# multipart upload on TERM), writes no manifest, exits 143 (130 for INT).
on_signal() {
  trap - TERM INT
  KDL_LOG_FIELDS=()
  log warn step=terminate signal="$1" id="$BACKUP_ID" component="${COMPONENT:-none}" "stopping: no manifest is written; the next run starts a new set and s3-prune removes this one after its grace period"
  kdl_cancel_job
  if [[ "$1" == INT ]]; then exit 130; fi
  exit 143
}

# --- checks -------------------------------------------------------------------------------

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

# check_tools: the tools the whole run needs (64 when one is missing).
check_tools() {
  local tools=(s3-put s3-ls s3-prune notify jq zstd tar tee mkfifo) missing
  encrypted && tools+=(age)
  if ! missing=$(require_cmd "${tools[@]}"); then
    check_fail tools "$EXIT_USAGE" "missing tools on PATH: $missing"
    return "$EXIT_USAGE"
  fi
  check_ok tools
}

# s3_status_to_exit STATUS: an S3 helper's exit status mapped to the run's: 77 permission,
# 64 configuration (no such bucket, bad usage), 69 otherwise (unreachable after retries).
s3_status_to_exit() {
  case "$1" in
    77) echo "$EXIT_PERMISSION" ;;
    64 | 66) echo "$EXIT_USAGE" ;;
    *) echo "$EXIT_UNAVAILABLE" ;;
  esac
}

# check_s3: the bucket is reachable and writable with these credentials: a probe object is
# put and deleted (it sits under <prefix>/.preflight/ in an incomplete "set" whose id is the
# epoch, which s3-prune deletes at once with no grace; no helper deletes single keys).
# Also refuses to overwrite an existing complete set with the same id.
check_s3() {
  local key=".preflight/$PROBE_ID/probe-$BACKUP_ID-$$" status=0 code
  printf 'kdl-backup preflight probe %s\n' "$BACKUP_ID" >"$WORK/checks/probe.txt"
  kdl_run_job s3-put --content-type text/plain "$WORK/checks/probe.txt" "$(kdl_s3_url "$key")" \
    >"$WORK/checks/probe.json" 2>"$WORK/checks/probe.err" || status=$?
  if ((status != 0)); then
    code=$(s3_status_to_exit "$status")
    check_fail s3 "$code" "S3 probe put to s3://$KDL_BUCKET/$KDL_PREFIX/$key failed (s3-put exit $status): $(kdl_tail_text "$WORK/checks/probe.err" 2)"
    return "$code"
  fi
  status=0
  kdl_run_job s3-prune --keep-last 1 --incomplete-grace 0s "s3://$KDL_BUCKET/$KDL_PREFIX/.preflight" >"$WORK/checks/probe-delete.out" 2>"$WORK/checks/probe-delete.err" || status=$?
  if ((status != 0)); then
    code=$(s3_status_to_exit "$status")
    check_fail s3 "$code" "S3 probe delete of s3://$KDL_BUCKET/$KDL_PREFIX/$key failed (s3-prune exit $status): $(kdl_tail_text "$WORK/checks/probe-delete.err" 2)"
    return "$code"
  fi
  status=0
  kdl_run_job s3-ls "s3://$KDL_BUCKET/$KDL_PREFIX/$BACKUP_ID" >"$WORK/checks/existing.txt" 2>"$WORK/checks/existing.err" || status=$?
  if ((status != 0)); then
    code=$(s3_status_to_exit "$status")
    check_fail s3 "$code" "S3 list of s3://$KDL_BUCKET/$KDL_PREFIX/$BACKUP_ID/ failed (s3-ls exit $status): $(kdl_tail_text "$WORK/checks/existing.err" 2)"
    return "$code"
  fi
  if grep -q "$KDL_PREFIX/$BACKUP_ID/manifest.json" "$WORK/checks/existing.txt"; then
    check_fail s3 "$EXIT_USAGE" "a complete set with id $BACKUP_ID already exists in s3://$KDL_BUCKET/$KDL_PREFIX/ (set another BACKUP_ID)"
    return "$EXIT_USAGE"
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

# major_of VERSION: the major version number in a PostgreSQL version string (15.4 → 15, 9.6.1 → 9).
major_of() {
  [[ "$1" =~ ([0-9]+)(\.[0-9]+)? ]] && printf '%s' "${BASH_REMATCH[1]}"
}

# check_gitea_db: psql/pg_dump present, the server answers, pg_dump's major ≥ the server's.
check_gitea_db() {
  local missing server_num server_major dump_version dump_major
  if ! missing=$(require_cmd pg_dump pg_restore psql); then
    check_fail gitea-db "$EXIT_UNAVAILABLE" "missing tools on PATH: $missing"
    return 1
  fi
  if ! kdl_run_job psql -X -A -t -q -c 'SHOW server_version_num' >"$WORK/checks/pg.out" 2>"$WORK/checks/pg.err"; then
    local code=$EXIT_UNAVAILABLE
    grep -qiE 'password authentication failed|permission denied|no pg_hba.conf entry' "$WORK/checks/pg.err" && code=$EXIT_PERMISSION
    check_fail gitea-db "$code" "PostgreSQL ${PGHOST:-localhost}:${PGPORT:-5432}/$PGDATABASE unreachable: $(kdl_tail_text "$WORK/checks/pg.err" 1)"
    return 1
  fi
  server_num=$(tr -dc '0-9' <"$WORK/checks/pg.out")
  server_major=$((${server_num:-0} / 10000))
  dump_version=$(pg_dump --version 2>/dev/null | head -n1)
  dump_major=$(major_of "${dump_version#*) }")
  printf '%s\n' "$server_num" >"$WORK/checks/pg.server_version_num"
  if ((${dump_major:-0} < server_major)); then
    check_fail gitea-db "$EXIT_UNAVAILABLE" "pg_dump $dump_major is older than the PostgreSQL $server_major server: install a client of major $server_major or newer"
    return 1
  fi
  check_ok gitea-db server_major="$server_major" pg_dump_major="$dump_major"
}

# check_gitea_data: Gitea's volume exists and can be listed.
check_gitea_data() {
  if [[ ! -d "$GITEA_DIR" ]]; then
    check_fail gitea-data "$EXIT_UNAVAILABLE" "GITEA_DATA_DIR $GITEA_DIR does not exist"
    return 1
  fi
  if [[ ! -r "$GITEA_DIR" || ! -x "$GITEA_DIR" ]]; then
    check_fail gitea-data "$EXIT_PERMISSION" "GITEA_DATA_DIR $GITEA_DIR is not readable"
    return 1
  fi
  check_ok gitea-data dir="$GITEA_DIR"
}

# check_mongodb: the tools are present and the server answers (a dump of a database that
# does not exist: it connects, lists nothing, writes an empty archive).
check_mongodb() {
  local missing
  if ! missing=$(require_cmd mongodump mongorestore); then
    check_fail mongodb "$EXIT_UNAVAILABLE" "missing tools on PATH: $missing"
    return 1
  fi
  if ! kdl_run_job mongodump --config "$MONGO_CONFIG" --db kdl_backup_preflight_probe --archive="$WORK/checks/mongo.archive" --quiet >/dev/null 2>"$WORK/checks/mongo.err"; then
    local code=$EXIT_UNAVAILABLE
    grep -qiE 'authentication failed|unauthorized|not authorized' "$WORK/checks/mongo.err" && code=$EXIT_PERMISSION
    check_fail mongodb "$code" "MongoDB unreachable: $(kdl_tail_text "$WORK/checks/mongo.err" 1)"
    return 1
  fi
  rm -f "$WORK/checks/mongo.archive"
  check_ok mongodb databases="${MONGO_DBS[*]}"
}

# check_mlflow: mlflow-scan is present and the MLflow root can be listed.
check_mlflow() {
  local missing
  if ! missing=$(require_cmd mlflow-scan sqlite3); then
    check_fail mlflow "$EXIT_UNAVAILABLE" "missing tools on PATH: $missing"
    return 1
  fi
  if [[ ! -d "$MLFLOW_DIR" ]]; then
    check_fail mlflow "$EXIT_UNAVAILABLE" "MLFLOW_ROOT $MLFLOW_DIR does not exist"
    return 1
  fi
  if [[ ! -r "$MLFLOW_DIR" || ! -x "$MLFLOW_DIR" ]]; then
    check_fail mlflow "$EXIT_PERMISSION" "MLFLOW_ROOT $MLFLOW_DIR is not readable"
    return 1
  fi
  check_ok mlflow root="$MLFLOW_DIR"
}

# check_kubernetes: k8s-export can list every resource (a list with a label selector that
# matches nothing: cheap, yet it needs the same permission).
check_kubernetes() {
  local missing resource status
  if ! missing=$(require_cmd k8s-export); then
    check_fail kubernetes "$EXIT_UNAVAILABLE" "missing tools on PATH: $missing"
    return 1
  fi
  for resource in "${K8S_RES[@]}"; do
    status=0
    kdl_run_job k8s-export "${K8S_CONN[@]}" --namespace "$K8S_NS" --label-selector "kdl-backup.konstellation.io/preflight=none" \
      "$resource" >/dev/null 2>"$WORK/checks/k8s.err" || status=$?
    if ((status != 0)); then
      local code=$EXIT_UNAVAILABLE
      ((status == 77)) && code=$EXIT_PERMISSION
      check_fail kubernetes "$code" "cannot list $resource in namespace $K8S_NS (k8s-export exit $status): $(kdl_tail_text "$WORK/checks/k8s.err" 1)"
      return 1
    fi
  done
  check_ok kubernetes namespace="$K8S_NS" resources="${K8S_RES[*]}"
}

# run_global_checks: the checks that concern the whole run; returns 64/69/77 on the first failure.
run_global_checks() {
  local status=0
  check_tools || return $?
  check_recipients
  check_s3 || status=$?
  return "$status"
}

# run_component_checks: the source checks of every selected component; returns 1 when any failed.
run_component_checks() {
  local name failed=0
  for name in "${SELECTED[@]}"; do
    case "$name" in
      gitea)
        check_gitea_db || failed=1
        check_gitea_data || failed=1
        ;;
      mongodb) check_mongodb || failed=1 ;;
      mlflow) check_mlflow || failed=1 ;;
      kubernetes) check_kubernetes || failed=1 ;;
    esac
  done
  return "$failed"
}

# preflight_exit: the --preflight exit status after component checks failed: 77 when one was
# refused permission, else 69.
preflight_exit() {
  if grep -qx "$EXIT_PERMISSION" "$WORK"/checks/*.code 2>/dev/null; then return "$EXIT_PERMISSION"; fi
  return "$EXIT_UNAVAILABLE"
}

# --- streaming one object ----------------------------------------------------------------

# tee_stage FIFO: copies stdin to stdout and to the verifier's FIFO ("" for none). A verifier
# that stops reading never stops the upload (-p).
tee_stage() {
  if [[ -n "$1" ]]; then exec tee -p -- "$1"; fi
  exec cat
}

# encode_stage COMPRESS: zstd (when COMPRESS is zstd) then age to every recipient (when
# encrypting); fails when either fails.
encode_stage() {
  local compress=$1 recipient age_args=()
  for recipient in "${KDL_RECIPIENTS[@]}"; do age_args+=(-r "$recipient"); done
  if [[ "$compress" == zstd ]] && encrypted; then
    zstd -q -c | age -e "${age_args[@]}"
    local statuses=("${PIPESTATUS[@]}")
    if ((statuses[0] == 0 && statuses[1] == 0)); then return 0; fi
    return 1
  fi
  if [[ "$compress" == zstd ]]; then exec zstd -q -c; fi
  if encrypted; then exec age -e "${age_args[@]}"; fi
  exec cat
}

# upload_stage DIR URL: s3-put - URL, its pid in DIR/put.pid (a producer that finds its
# stream bad stops the upload with TERM before end of input would complete it).
upload_stage() {
  printf '%s\n' "$BASHPID" >"$1/put.pid"
  exec s3-put "${S3PUT_OPTS[@]}" - "$2"
}

# stream_pipeline DIR URL VERIFIER PRODUCER...: the pipeline of one object (run as a job):
# PRODUCER | tee → VERIFIER | encode | s3-put - URL. Writes DIR/statuses (one per stage),
# DIR/put.json (s3-put's line), DIR/verify.status and every stage's stderr.
stream_pipeline() {
  local dir=$1 url=$2 verifier=$3 compress=$4 fifo="" vpid="" vstatus=0 fd
  shift 4
  set +e
  if [[ "$verifier" != - ]]; then
    fifo="$dir/verify.fifo"
    mkfifo "$fifo"
    "$verifier" <"$fifo" >"$dir/verify.out" 2>"$dir/verify.err" &
    vpid=$!
  fi
  if [[ -n "$vpid" ]]; then
    "$@" 2>"$dir/producer.err" |
      tee_stage "$fifo" 2>"$dir/tee.err" |
      encode_stage "$compress" 2>"$dir/encode.err" |
      upload_stage "$dir" "$url" >"$dir/put.json" 2>"$dir/put.err"
    printf '%s\n' "${PIPESTATUS[*]}" >"$dir/statuses"
  else
    "$@" 2>"$dir/producer.err" |
      encode_stage "$compress" 2>"$dir/encode.err" |
      upload_stage "$dir" "$url" >"$dir/put.json" 2>"$dir/put.err"
    local statuses=("${PIPESTATUS[@]}")
    printf '%s 0 %s %s\n' "${statuses[0]}" "${statuses[1]}" "${statuses[2]}" >"$dir/statuses"
  fi
  if [[ -n "$vpid" ]]; then
    # A verifier still waiting to open its FIFO (tee never started) gets EOF instead of hanging.
    exec {fd}<>"$fifo"
    exec {fd}>&-
    wait "$vpid"
    vstatus=$?
    printf '%s\n' "$vstatus" >"$dir/verify.status"
  fi
  kdl_now_ns >"$dir/end"
  return 0
}

# pipeline_error DIR: names the first stage that failed (SIGPIPE victims of a later failure
# are skipped) with its stderr; empty when every stage succeeded.
pipeline_error() {
  local dir=$1 names=(producer tee encode s3-put) files=(producer tee encode put) statuses i pick=-1
  read -r -a statuses <"$dir/statuses"
  for i in "${!statuses[@]}"; do
    if ((statuses[i] != 0 && statuses[i] != 141)); then pick=$i; break; fi
  done
  if ((pick < 0)); then
    for i in "${!statuses[@]}"; do
      if ((statuses[i] != 0)); then pick=$i; break; fi
    done
  fi
  ((pick >= 0)) || return 0
  printf '%s exited %s: %s' "${names[pick]}" "${statuses[pick]}" "$(kdl_tail_text "$dir/${files[pick]}.err" 3)"
}

# put_object STEP KEY FORMAT COMPRESS VERIFIER PRODUCER...: object_start then object_finish.
put_object() {
  object_start "$@"
  object_finish "$1"
}

# object_start STEP KEY FORMAT COMPRESS VERIFIER PRODUCER...: starts streaming PRODUCER's
# output to <prefix>/<id>/KEY[.age] as a background job (several may run at once; each writes
# only under its own folder). VERIFIER is a function reading the plaintext (- for none).
object_start() {
  local step=$1 key=$2 format=$3 compress=$4 verifier=$5
  shift 5
  local dir="$COMPONENT_DIR/objects/$step" now
  encrypted && key+=".age"
  rm -rf -- "$dir"
  mkdir -p "$dir"
  kdl_now_ns_into now
  OBJECT_SEQ=$((OBJECT_SEQ + 1))
  printf '%s\n' "$key" "$format" "$verifier" "$now" "$OBJECT_SEQ" >"$dir/meta"
  kdl_start_job stream_pipeline "$dir" "$(kdl_s3_url "$BACKUP_ID/$key")" "$verifier" "$compress" "$@"
  OBJECT_JOBS[$step]=$KDL_LAST_JOB
}

# object_finish STEP [VERIFIED]: waits for the object's job and records {key, bytes, sha256,
# format, encrypted, verified} in the component's objects (VERIFIED: what the producer
# checked itself, for objects without a verifier; default false); the verifier's JSON (if
# any) becomes details.STEP. Returns 1 (with the component's error recorded) when any stage
# or the verification failed. Bookkeeping runs here, in the main shell, one object at a time.
object_finish() {
  local step=$1 producer_verified=${2:-false} dir="$COMPONENT_DIR/objects/$1"
  local key format verifier start seq end seconds error verified=false
  kdl_wait_job "${OBJECT_JOBS[$step]}" || true
  unset "OBJECT_JOBS[$step]"
  { read -r key && read -r format && read -r verifier && read -r start && read -r seq; } <"$dir/meta"
  kdl_now_ns_into end
  [[ -s "$dir/end" ]] && end=$(<"$dir/end")
  seconds=$(kdl_seconds_between "$start" "$end")
  error=$(pipeline_error "$dir")
  if [[ -n "$error" ]]; then
    component_error "$step: $error (a partial object may remain at $key; the manifest does not list it)"
    return 1
  fi
  if [[ "$verifier" == - ]]; then
    verified=$producer_verified
  elif [[ "$(cat "$dir/verify.status" 2>/dev/null)" == 0 ]]; then
    verified=true
  else
    component_error "$step: verification of $key failed: $(kdl_tail_text "$dir/verify.err" 2)"
  fi
  if [[ -s "$dir/verify.out" ]]; then details_merge_file "$step" "$dir/verify.out"; fi
  local line="" size="" sha="" REPLY
  [[ -s "$dir/put.json" ]] && line=$(<"$dir/put.json")
  [[ "$line" =~ \"size\":([0-9]+)[,}] ]] && size=${BASH_REMATCH[1]}
  [[ "$line" =~ \"sha256\":\"([0-9a-f]{64})\" ]] && sha=${BASH_REMATCH[1]}
  if [[ -z "$size" || -z "$sha" ]]; then
    component_error "$step: s3-put printed no result line for $key"
    return 1
  fi
  kdl_json_string "$key"
  local key_json=$REPLY
  kdl_json_string "$format"
  printf '{"key":%s,"bytes":%s,"sha256":"%s","format":%s,"encrypted":%s,"verified":%s,"_seq":%s}\n' \
    "$key_json" "$size" "$sha" "$REPLY" "$ENCRYPTED" "$verified" "$seq" >>"$COMPONENT_DIR/objects.jsonl"
  log info step="$step" key="$key" bytes="$size" sha256="$sha" verified="$verified" encrypted="$ENCRYPTED" seconds="$seconds"
  [[ "$verified" == true || "$verifier" == - ]]
}

# --- verifiers: read the plaintext stream on stdin, print a JSON object, drain stdin -------

# verify_pg_dump: pg_restore --list reads the archive's table of contents; counts tables.
verify_pg_dump() {
  local status=0 list
  list=$(pg_restore --list) || status=$?
  cat >/dev/null
  ((status == 0)) || return "$status"
  jq -n --argjson tables "$(grep -c ' TABLE DATA ' <<<"$list" || true)" \
    --argjson entries "$(grep -vc '^;' <<<"$list" || true)" '{tables: $tables, tocEntries: $entries}'
}

# verify_tar: lists the tar stream; counts entries, bytes of regular files and git repositories.
verify_tar() {
  local status=0 summary
  summary=$(tar -tvf - | awk '
      { entries++ }
      substr($1, 1, 1) == "-" { files++; bytes += $3 }
      substr($1, 1, 1) == "d" && $NF ~ /\.git\/?$/ && $NF ~ /(^|\/)git\/repositories\// { repos++ }
      END { printf "{\"entries\":%d,\"files\":%d,\"bytes\":%d,\"repositories\":%d}\n", entries, files, bytes, repos }') ||
    status=$?
  cat >/dev/null
  ((status == 0)) || return "$status"
  printf '%s\n' "$summary"
}

# verify_mongo_archive: mongorestore --dryRun reads the archive back against the same server
# (it writes nothing).
verify_mongo_archive() {
  local status=0
  mongorestore --config "$MONGO_CONFIG" --archive --gzip --dryRun >/dev/null || status=$?
  cat >/dev/null
  return "$status"
}

# verify_yaml_documents: counts the YAML documents (top-level kind: lines) of an export.
verify_yaml_documents() {
  local count
  count=$(grep -c '^kind:' || true)
  jq -n --argjson objects "${count:-0}" '{objects: $objects}'
}

# --- components ---------------------------------------------------------------------------

# component_error MESSAGE: records an error of the running component (the component fails).
component_error() {
  kdl_redact "$*" >>"$COMPONENT_DIR/errors"
  printf '\n' >>"$COMPONENT_DIR/errors"
  log error "$*"
}

# details_merge JSON: merges a JSON object into the running component's details.
details_merge() {
  local merged
  merged=$(jq -c --argjson add "$1" '. * $add' "$COMPONENT_DIR/details.json") &&
    printf '%s\n' "$merged" >"$COMPONENT_DIR/details.json"
}

# details_merge_file KEY FILE: the JSON object in FILE (a verifier's report) as details.KEY.
details_merge_file() {
  local merged
  merged=$(jq -c --arg k "$1" --slurpfile v "$2" '.[$k] = (($v[0] // {}) | if type == "object" then . else {} end)' \
    "$COMPONENT_DIR/details.json" 2>/dev/null) && printf '%s\n' "$merged" >"$COMPONENT_DIR/details.json"
  return 0
}

# produce_pg_dump: Gitea's database in pg_dump's custom format (password from PGPASSWORD),
# compressed by pg_dump as BACKUP_PG_DUMP_COMPRESS says (default gzip level 1: about 5x
# faster than pg_dump's default level 6 for a quarter more bytes).
produce_pg_dump() {
  pg_dump --format=custom --no-password --compress="$PG_DUMP_COMPRESS"
}

# produce_tar DIR [--exclude=...] PATH...: a tar stream of PATHs under DIR, names sorted,
# numeric owners; "file changed as we read it" (tar's status 1 on a live volume) is a warning.
produce_tar() {
  local dir=$1 status=0
  shift
  tar --create --file=- --directory="$dir" --sort=name --numeric-owner --anchored "$@" || status=$?
  if ((status == 1)); then
    echo "warning: some files changed while tar read them" >&2
    status=0
  fi
  return "$status"
}

# component_gitea: postgres.dump (pg_dump -Fc, checked by pg_restore --list) and
# data.tar.zst (GITEA_DATA_DIR minus GITEA_DATA_EXCLUDE, listed by tar -t), streamed at the
# same time (the dump waits on the database, the tar on the disk and the upload).
component_gitea() {
  local db_error data_error exclude excludes=() started=()
  db_error=$(check_error gitea-db)
  data_error=$(check_error gitea-data)
  if [[ -n "$db_error" ]]; then
    component_error "pg_dump: skipped: $db_error"
  else
    details_merge "$(jq -nc --arg db "$PGDATABASE" --arg server "$(cat "$WORK/checks/pg.server_version_num" 2>/dev/null)" \
      --arg compress "$PG_DUMP_COMPRESS" '{database: $db, serverVersionNum: ($server | tonumber? // null), compress: $compress}')"
    object_start pg_dump gitea/postgres.dump pg_dump-custom none verify_pg_dump produce_pg_dump
    started+=(pg_dump)
  fi
  if [[ -n "$data_error" ]]; then
    component_error "tar: skipped: $data_error"
  else
    for exclude in "${GITEA_EXCLUDES[@]}"; do excludes+=("--exclude=./$exclude"); done
    details_merge "$(jq -nc --arg dir "$GITEA_DIR" '{dataDir: $dir, excluded: $ARGS.positional}' --args "${GITEA_EXCLUDES[@]}")"
    object_start tar gitea/data.tar.zst tar+zstd zstd verify_tar produce_tar "$GITEA_DIR" "${excludes[@]}" .
    started+=(tar)
  fi
  local step
  for step in "${started[@]}"; do object_finish "$step" || true; done
  if [[ -z "$db_error" ]]; then gitea_row_estimate; fi
}

# gitea_row_estimate: adds the planner's row estimate over user tables to the details
# (exact counts would scan every table a second time).
gitea_row_estimate() {
  local rows
  rows=$(psql -X -A -t -q -c 'SELECT coalesce(sum(n_live_tup), 0) FROM pg_stat_user_tables' 2>/dev/null | tr -dc '0-9') || true
  [[ -n "$rows" ]] && details_merge "{\"rowsEstimated\": $rows}"
  return 0
}

# produce_mongodump DB: one database as a gzipped mongodump archive (URI from the config file).
produce_mongodump() {
  mongodump --config "$MONGO_CONFIG" --db "$1" --archive --gzip
}

# component_mongodb: <db>.archive.gz per database of MONGO_DATABASES, each read back by
# mongorestore --dryRun; documents per collection from mongodump's own report.
component_mongodb() {
  local db error collections
  error=$(check_error mongodb)
  if [[ -n "$error" ]]; then
    component_error "mongodump: skipped: $error"
    return 0
  fi
  local started=()
  for db in "${MONGO_DBS[@]}"; do
    if [[ ! "$db" =~ ^[A-Za-z0-9_-]+$ ]]; then
      component_error "mongodump: skipped database '$db': not a plain database name"
      continue
    fi
    object_start "mongodump-$db" "mongodb/$db.archive.gz" mongodump-archive+gzip none verify_mongo_archive produce_mongodump "$db"
    started+=("$db")
  done
  for db in "${started[@]}"; do
    object_finish "mongodump-$db" || true
    collections=$(sed -nE 's/.*done dumping ([^ .]+)\.([^ ]+) \(([0-9]+) documents?\).*/\2 \3/p' \
      "$COMPONENT_DIR/objects/mongodump-$db/producer.err" 2>/dev/null |
      jq -Rn '[inputs | split(" ") | {key: .[0], value: (.[1] | tonumber)}] | from_entries')
    details_merge "$(jq -nc --arg db "$db" --argjson c "${collections:-{\}}" '{databases: {($db): {collections: $c}}}')"
  done
}

# mlflow_stores FILE: the stores of an mlflow-scan document, one line each of tab-separated
# project, path, status, error, artifact folders (comma-joined) and the store's details JSON,
# separated by \x1f (a tab would let read merge empty fields).
mlflow_stores() {
  jq -r 'if type == "array" then .[] else (.stores // [])[] end
    | (.path // "") as $path | ($path | sub("/[^/]*$"; "")) as $dir
    | [(.project // ""), $path, (.status // ""), (.error // "no detail"),
       ([(.artifacts // [])[] | if type == "object" then (.path // .name) else . end | select(. != null)
         | sub("^" + ($dir | gsub("[.^$*+?()\\[\\]{}|\\\\]"; "\\\\\(.)")) + "/"; "")] | join(",")),
       ({project, folder: ($dir | sub("^.*/"; "")), path, dbBytes, journalMode, experiments, runs, artifacts,
         status, error} | tojson)] | map(tostring) | join("\u001f")' "$1"
}

# snapshot_store PROJECT PATH: a consistent snapshot of one store (copied in one read
# transaction by mlflow-scan) under $WORK/snapshot. Sets SNAP_FILE (empty when there is
# none) and SNAP_ERROR; returns 1 when mlflow-scan failed.
snapshot_store() {
  local project=$1 path=$2 report=$COMPONENT_DIR/snapshot.json json
  SNAP_FILE="" SNAP_ERROR=""
  rm -rf -- "$WORK/snapshot" && mkdir -p "$WORK/snapshot"
  # --check none: produce_checked_snapshot checks the copy while it uploads it.
  kdl_run_job mlflow-scan --max-depth 0 --check none --snapshot "$WORK/snapshot" "${path%/*}" >"$report" \
    2>"$COMPONENT_DIR/snapshot.err" || return 1
  # The usual case without a jq process: mlflow-scan renames a copy into place once written.
  json=$(<"$report")
  if [[ -f "$WORK/snapshot/$project/mlflow.db" && "$json" == *'"status":"ok"'* && "$json" != *'"project":'*'"project":'* ]]; then
    SNAP_FILE="$WORK/snapshot/$project/mlflow.db"
    return 0
  fi
  IFS=$'\x1f' read -r SNAP_FILE SNAP_ERROR < <(jq -r --arg p "$project" '
    [(if type == "array" then .[] else (.stores // [])[] end) | select(.project == $p)][0] | select(. != null)
    | [(.snapshot.path // ""), (.snapshot.error // .error // "")] | join("\u001f")' "$report") || true
  return 0
}

# produce_checked_snapshot FILE DIR: FILE on stdout while PRAGMA integrity_check reads it (on
# the other core); the stream ends, and so the upload completes, only once the check said ok.
# Otherwise the object's s3-put (pid in DIR/put.pid) is stopped before its input ends: it
# aborts the upload and nothing is stored. The check's output goes to DIR/check.out.
produce_checked_snapshot() {
  local file=$1 dir=$2 checker status=0 i
  sqlite3 -readonly -bail "$file" 'PRAGMA integrity_check(20)' >"$dir/check.out" 2>&1 &
  checker=$!
  cat -- "$file" || status=$?
  wait "$checker" || status=$?
  if ((status == 0)) && [[ "$(<"$dir/check.out")" == ok ]]; then return 0; fi
  printf 'integrity_check of the snapshot failed, nothing stored: %s\n' "$(head -n 3 "$dir/check.out" | paste -sd ';' -)" >&2
  for ((i = 0; i < 100; i++)); do
    [[ -s "$dir/put.pid" ]] && break
    sleep 0.05
  done
  kill -TERM "$(<"$dir/put.pid")" 2>/dev/null || true
  return 1
}

# mlflow_finish STEP [VERIFIED]: object_finish, then its folder goes (50 stores' worth of
# small files would otherwise sit next to the next snapshot).
mlflow_finish() {
  object_finish "$@" || true
  rm -rf -- "$COMPONENT_DIR/objects/$1"
}

# component_mlflow: per MLflow store (one at a time): mlflow/<project>/mlflow.db.zst from a
# consistent snapshot (removed right after upload) and artifacts.tar.zst for local artifacts.
component_mlflow() {
  local error project path status detail artifacts store_json seen=" "
  local folders=() folder safe=() pending=""
  error=$(check_error mlflow)
  if [[ -n "$error" ]]; then
    component_error "mlflow-scan: skipped: $error"
    return 0
  fi
  if ! kdl_run_job mlflow-scan "$MLFLOW_DIR" >"$COMPONENT_DIR/scan.json" 2>"$COMPONENT_DIR/scan.err"; then
    component_error "mlflow-scan: $(kdl_tail_text "$COMPONENT_DIR/scan.err" 2)"
    return 0
  fi
  : >"$COMPONENT_DIR/projects.jsonl"
  : >"$COMPONENT_DIR/skipped.jsonl"
  while IFS=$'\x1f' read -r project path status detail artifacts store_json; do
    if [[ "$status" == not-mlflow ]]; then
      printf '%s\n' "$store_json" >>"$COMPONENT_DIR/skipped.jsonl"
      log info step=mlflow-scan path="$path" status="$status" "not an MLflow store: left out"
      continue
    fi
    if [[ "$status" != ok ]]; then
      component_error "mlflow store $path: $status: $detail"
      printf '%s\n' "$store_json" >>"$COMPONENT_DIR/skipped.jsonl"
      continue
    fi
    if [[ ! "$project" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]]; then
      component_error "mlflow store $path: project name '$project' cannot be an S3 key segment"
      continue
    fi
    if [[ "$seen" == *" $project "* ]]; then
      component_error "mlflow store $path: another store already maps to project '$project'; not stored (rename one folder)"
      continue
    fi
    seen+="$project "
    if ! snapshot_store "$project" "$path" || [[ -z "$SNAP_FILE" || ! -f "$SNAP_FILE" ]]; then
      component_error "mlflow snapshot of $path failed: ${SNAP_ERROR:-$(kdl_tail_text "$COMPONENT_DIR/snapshot.err" 2)}"
      continue
    fi
    object_start "mlflow-$project" "mlflow/$project/mlflow.db.zst" sqlite+zstd zstd - \
      produce_checked_snapshot "$SNAP_FILE" "$COMPONENT_DIR/objects/mlflow-$project"
    # A store's artifacts stream beside its database and on while the next store is copied
    # (no disk involved); one artifacts upload at a time.
    folders=() safe=()
    if [[ -n "$artifacts" ]]; then
      IFS=, read -r -a folders <<<"$artifacts"
      for folder in "${folders[@]}"; do
        [[ -n "$folder" && "$folder" != /* && "$folder" != *..* ]] && safe+=("$folder")
      done
    fi
    if ((${#safe[@]})); then
      if [[ -n "$pending" ]]; then mlflow_finish "$pending"; fi
      object_start "artifacts-$project" "mlflow/$project/artifacts.tar.zst" tar+zstd zstd verify_tar produce_tar "$(dirname "$path")" "${safe[@]}"
      pending="artifacts-$project"
    fi
    # Stored means checked: the upload completes only after integrity_check said ok.
    mlflow_finish "mlflow-$project" true
    rm -rf -- "$WORK/snapshot"
    printf '%s\n' "$store_json" >>"$COMPONENT_DIR/projects.jsonl"
  done < <(mlflow_stores "$COMPONENT_DIR/scan.json")
  if [[ -n "$pending" ]]; then mlflow_finish "$pending"; fi
  details_merge "$(jq -nc --arg r "$MLFLOW_DIR" --slurpfile p "$COMPONENT_DIR/projects.jsonl" --slurpfile s "$COMPONENT_DIR/skipped.jsonl" \
    '{root: $r, projects: [$p[] | del(.status, .error)], skipped: [$s[] | {path, status, error}]}')"
  return 0
}

# produce_k8s_export RESOURCE [NAME_REGEX]: the cleaned objects of RESOURCE as YAML.
produce_k8s_export() {
  local resource=$1 regex=${2:-} args=()
  [[ -n "$regex" ]] && args+=("--name-regex=$regex")
  k8s-export "${K8S_CONN[@]}" --namespace "$K8S_NS" --format yaml --summary "${args[@]}" "$resource"
}

# component_kubernetes: kubernetes/<plural>.yaml.zst per resource (Secrets filtered by
# K8S_SECRET_NAME_REGEX); warns when Secrets are stored unencrypted.
component_kubernetes() {
  local error resource plural regex
  error=$(check_error kubernetes)
  if [[ -n "$error" ]]; then
    component_error "k8s-export: skipped: $error"
    return 0
  fi
  details_merge "$(jq -nc --arg ns "$K8S_NS" '{namespace: $ns, objects: {}}')"
  for resource in "${K8S_RES[@]}"; do
    plural=${resource%%.*}
    regex=""
    if [[ "$plural" == secrets ]]; then
      regex=$SECRET_REGEX
      encrypted || log warn step=secrets encrypted=false "Kubernetes Secrets are stored unencrypted: set BACKUP_AGE_RECIPIENTS"
    fi
    object_start "$plural" "kubernetes/$plural.yaml.zst" yaml+zstd zstd verify_yaml_documents produce_k8s_export "$resource" "$regex"
  done
  for resource in "${K8S_RES[@]}"; do
    plural=${resource%%.*}
    object_finish "$plural" && check_k8s_summary "$resource" "$plural"
  done
}

# check_k8s_summary RESOURCE PLURAL: the number of YAML documents stored must equal the count
# k8s-export reported (--summary); on a mismatch the object is marked unverified. Keeps the
# count in details.objects.
check_k8s_summary() {
  local resource=$1 plural=$2 dir="$COMPONENT_DIR/objects/$2" documents reported merged
  documents=$(jq -r '.objects' "$dir/verify.out" 2>/dev/null)
  reported=$(grep '^{' "$dir/producer.err" 2>/dev/null | tail -n1 | jq -r --arg r "$resource" --arg p "$plural" '.[$r] // .[$p] // empty' 2>/dev/null)
  merged=$(jq -c --arg p "$plural" --argjson n "${documents:-null}" 'del(.[$p]) | .objects[$p] = $n' "$COMPONENT_DIR/details.json") &&
    printf '%s\n' "$merged" >"$COMPONENT_DIR/details.json"
  if [[ -n "$reported" && "$reported" != "$documents" ]]; then
    component_error "$plural: k8s-export reported $reported objects but $documents YAML documents were stored"
    merged=$(jq -c 'if .key | startswith("kubernetes/'"$plural"'.") then .verified = false else . end' "$COMPONENT_DIR/objects.jsonl") &&
      printf '%s\n' "$merged" >"$COMPONENT_DIR/objects.jsonl"
    return 1
  fi
  return 0
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
  "component_$name" || true
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

# write_component NAME STATUS SECONDS ERROR: the component's manifest entry as
# $WORK/components/NAME/component.json.
write_component() {
  local name=$1 dir="$WORK/components/$1"
  mkdir -p "$dir"
  [[ -f "$dir/objects.jsonl" ]] || : >"$dir/objects.jsonl"
  [[ -f "$dir/details.json" ]] || echo '{}' >"$dir/details.json"
  jq -n --arg name "$name" --arg status "$2" --argjson seconds "$3" --arg error "$4" \
    --slurpfile objects "$dir/objects.jsonl" --slurpfile details "$dir/details.json" \
    '{name: $name, status: $status, seconds: $seconds, error: (if $error == "" then null else $error end),
      objects: ($objects | sort_by(._seq) | map(del(._seq))), details: ($details[0] // {})}' >"$dir/component.json"
}

# --- manifest, summary, notifications, retention -----------------------------------------

# tool_version CMD: the version a tool reports, reduced to its number (empty when absent).
tool_version() {
  local out
  command -v "$1" >/dev/null 2>&1 || return 0
  out=$("$1" --version 2>&1 | head -n1) || true
  [[ "$out" =~ v?([0-9]+(\.[0-9]+)+) ]] && printf '%s' "${BASH_REMATCH[1]}"
  return 0
}

# tools_json: versions of the helpers and of pg_dump, mongodump, zstd, age, sqlite3, as a JSON object.
tools_json() {
  local tool args=()
  for tool in s3-put s3-ls s3-prune k8s-export mlflow-scan notify pg_dump mongodump zstd age sqlite3; do
    args+=("$tool" "$(tool_version "$tool")")
  done
  jq -n '$ARGS.positional | [range(0; length; 2) as $i | {key: .[$i], value: (.[$i + 1] | if . == "" then null else . end)}] | from_entries' \
    --args "${args[@]}"
}

# overall_status: success when every selected component succeeded, failure when none did,
# partial otherwise.
overall_status() {
  jq -rs '[.[] | select(.status != "skipped")] as $run
    | if ($run | all(.status == "success")) then "success"
      elif ($run | any(.status == "success")) then "partial" else "failure" end' \
    "$WORK"/components/*/component.json
}

# write_manifest STATUS FILE: manifest.json (kdl-backup/v1) from the component entries.
write_manifest() {
  local status=$1 file=$2 encryption=null
  if encrypted; then
    encryption=$(jq -nc '{type: "age", recipients: $ARGS.positional}' --args "${KDL_RECIPIENTS[@]}")
  fi
  local name components=()
  for name in "${ALL_COMPONENTS[@]}"; do components+=("$WORK/components/$name/component.json"); done
  jq -n --arg id "$BACKUP_ID" --arg started "$STARTED_AT" --arg finished "$(kdl_utc_iso)" --arg status "$status" \
    --argjson encryption "$encryption" --argjson tools "$(tools_json)" --slurpfile components <(cat "${components[@]}") \
    '{format: "kdl-backup/v1", id: $id, startedAt: $started, finishedAt: $finished, status: $status,
      encryption: $encryption, tools: $tools, components: $components}' >"$file"
}

# upload_manifest FILE: manifest.json, last, unencrypted.
upload_manifest() {
  local file=$1
  kdl_run_job s3-put "${S3PUT_OPTS[@]}" --content-type application/json "$file" \
    "$(kdl_s3_url "$BACKUP_ID/manifest.json")" >"$WORK/manifest.put.json" 2>"$WORK/manifest.put.err"
}

# print_summary MANIFEST: the final table on stderr.
print_summary() {
  say ""
  say "$(printf '%-11s %-8s %7s %14s %9s  %s' component status objects bytes seconds error)"
  local line
  while IFS= read -r line; do say "$line"; done < <(jq -r '.components[] |
    [.name, .status, (.objects | length | tostring), (.objects | map(.bytes) | add // 0 | tostring),
     (.seconds | tostring), (.error // "")] | @tsv' "$1" |
    while IFS=$'\t' read -r name status objects bytes seconds error; do
      printf '%-11s %-8s %7s %14s %9s  %s\n' "$name" "$status" "$objects" "$bytes" "$seconds" "${error:0:160}"
    done)
  say "$(jq -r '"set \(.id): \(.status), \([.components[].objects[]] | length) objects, \([.components[].objects[].bytes] | add // 0) bytes, encrypted: \(.encryption != null)"' "$1")"
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
    success) return "$EXIT_OK" ;;
    partial) return "$EXIT_PARTIAL" ;;
    *) return "$EXIT_FAILURE" ;;
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

# run_backup: checks, every component in turn, manifest last, summary, notification, retention.
run_backup() {
  local status=0 name manifest="$WORK/manifest.json" overall
  notify_event --event start
  if ! run_global_checks; then
    status=$(cat "$WORK"/checks/*.code 2>/dev/null | head -n1)
    log error step=preflight "stopping before anything is uploaded"
    notify_event --event finish --status failure --log-tail "$KDL_LOG_FILE"
    return "${status:-$EXIT_USAGE}"
  fi
  run_component_checks || true
  for name in "${ALL_COMPONENTS[@]}"; do
    if [[ " ${SELECTED[*]} " == *" $name "* ]]; then
      run_component "$name"
    else
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
  load_config || die "$EXIT_USAGE" "$KDL_CONFIG_ERROR"
  setup_workdir
  STARTED_AT=$(kdl_utc_iso)
  START_NS=$(kdl_now_ns)
  if [[ " ${SELECTED[*]} " == *" mongodb "* ]]; then
    MONGO_CONFIG="$WORK/mongo-tools.yaml"
    kdl_write_mongo_config "$MONGO_CONFIG"
  fi
  log info step="$MODE" id="$BACKUP_ID" bucket="$KDL_BUCKET" prefix="$KDL_PREFIX" components="${SELECTED[*]}" \
    encrypted="$(encrypted && echo true || echo false)"
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
