# shellcheck shell=bash
# Summary: backup.sh's object stream: one pipeline per object, producer -> (check) -> zstd -> age ->
#          s3-put -, run as a cancellable job; and the running component's record (errors, details,
#          objects) that becomes its manifest entry.
# Usage: source lib/common.sh, lib/config.sh and lib/formats.sh first.
#
# Globals read: WORK BACKUP_ID ENCRYPTED KDL_RECIPIENTS S3PUT_OPTS; COMPONENT_DIR (set by run_component).

OBJECT_SEQ=0
declare -A OBJECT_JOBS=()

# encrypted: true when objects are encrypted (recipients given).
encrypted() {
  [[ "$ENCRYPTED" == true ]]
}

# tee_stage FIFO: copies stdin to stdout and to the check's FIFO ("" for none). A check that stops
# reading never stops the upload (-p).
tee_stage() {
  if [[ -n "$1" ]]; then exec tee -p -- "$1"; fi
  exec cat
}

# upload_stage DIR URL: s3-put - URL, its pid in DIR/put.pid (a producer that finds its stream bad
# stops the upload with TERM before end of input would complete it).
upload_stage() {
  printf '%s\n' "$BASHPID" >"$1/put.pid"
  exec s3-put "${S3PUT_OPTS[@]}" - "$2"
}

# stream_pipeline DIR URL CHECK FORMAT PRODUCER...: the pipeline of one object (run as a job):
# PRODUCER | tee → CHECK | encode FORMAT | s3-put - URL. Writes DIR/statuses (one per stage),
# DIR/put.json (s3-put's line), DIR/verify.status and every stage's stderr.
stream_pipeline() {
  local dir=$1 url=$2 check=$3 format=$4 fifo="" vpid="" vstatus=0 fd
  shift 4
  set +e
  if [[ "$check" != - ]]; then
    fifo="$dir/verify.fifo"
    mkfifo "$fifo"
    "$check" <"$fifo" >"$dir/verify.out" 2>"$dir/verify.err" &
    vpid=$!
  fi
  if [[ -n "$vpid" ]]; then
    "$@" 2>"$dir/producer.err" |
      tee_stage "$fifo" 2>"$dir/tee.err" |
      encode_stage "$format" "${KDL_RECIPIENTS[@]}" 2>"$dir/encode.err" |
      upload_stage "$dir" "$url" >"$dir/put.json" 2>"$dir/put.err"
    printf '%s\n' "${PIPESTATUS[*]}" >"$dir/statuses"
  else
    "$@" 2>"$dir/producer.err" |
      encode_stage "$format" "${KDL_RECIPIENTS[@]}" 2>"$dir/encode.err" |
      upload_stage "$dir" "$url" >"$dir/put.json" 2>"$dir/put.err"
    local statuses=("${PIPESTATUS[@]}")
    printf '%s 0 %s %s\n' "${statuses[0]}" "${statuses[1]}" "${statuses[2]}" >"$dir/statuses"
  fi
  if [[ -n "$vpid" ]]; then
    # A check still waiting to open its FIFO (tee never started) gets EOF instead of hanging.
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

# object_dir STEP: the work folder of one object of the running component.
object_dir() {
  printf '%s/objects/%s' "$COMPONENT_DIR" "$1"
}

# put_object STEP KEY FORMAT VERIFY PRODUCER...: object_start then object_finish.
put_object() {
  object_start "$@"
  object_finish "$1"
}

# object_start STEP KEY FORMAT VERIFY PRODUCER...: starts streaming PRODUCER's output to
# <prefix>/<id>/KEY[.age] as a background job (several may run at once; each writes only under its
# own folder). FORMAT is one of lib/formats.sh; VERIFY is `check` (the format's check reads the
# plaintext on the way) or `producer` (the producer checks its own stream and fails it when bad).
object_start() {
  local step=$1 key=$2 format=$3 verify=$4 check=-
  shift 4
  local dir now
  dir=$(object_dir "$step")
  kdl_is_format "$format" || die "$EX_FAILURE" "object_start: unknown format '$format'"
  [[ "$verify" == check ]] && check=${KDL_FORMAT_CHECK[$format]}
  encrypted && key+=".age"
  rm -rf -- "$dir"
  mkdir -p "$dir"
  kdl_now_ns_into now
  OBJECT_SEQ=$((OBJECT_SEQ + 1))
  printf '%s\n' "$key" "$format" "$check" "$now" "$OBJECT_SEQ" >"$dir/meta"
  kdl_start_job stream_pipeline "$dir" "$(kdl_s3_url "$BACKUP_ID/$key")" "$check" "$format" "$@"
  OBJECT_JOBS[$step]=$KDL_LAST_JOB
}

# object_finish STEP [VERIFIED]: waits for the object's job and records {key, bytes, sha256,
# format, encrypted, verified} in the component's objects (VERIFIED: what the producer
# checked itself, for objects without a check; default false); the check's JSON (if
# any) becomes details.STEP. Returns 1 (with the component's error recorded) when any stage
# or the verification failed. Bookkeeping runs here, in the main shell, one object at a time.
object_finish() {
  local step=$1 producer_verified=${2:-false} dir
  local key format check start seq end seconds error verified=false
  dir=$(object_dir "$step")
  kdl_wait_job "${OBJECT_JOBS[$step]}" || true
  unset "OBJECT_JOBS[$step]"
  { read -r key && read -r format && read -r check && read -r start && read -r seq; } <"$dir/meta"
  kdl_now_ns_into end
  [[ -s "$dir/end" ]] && end=$(<"$dir/end")
  seconds=$(kdl_seconds_between "$start" "$end")
  error=$(pipeline_error "$dir")
  if [[ -n "$error" ]]; then
    component_error "$step: $error (a partial object may remain at $key; the manifest does not list it)"
    return 1
  fi
  if [[ "$check" == - ]]; then
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
  [[ "$verified" == true || "$check" == - ]]
}

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

# details_merge_file KEY FILE: the JSON object in FILE (a check's report) as details.KEY.
details_merge_file() {
  local merged
  merged=$(jq -c --arg k "$1" --slurpfile v "$2" '.[$k] = (($v[0] // {}) | if type == "object" then . else {} end)' \
    "$COMPONENT_DIR/details.json" 2>/dev/null) && printf '%s\n' "$merged" >"$COMPONENT_DIR/details.json"
  return 0
}

# details_nest GROUP STEP EXTRA_JSON: moves details.STEP (an object's check report) to details.GROUP.STEP,
# merged with EXTRA_JSON (a component of several objects of one kind: databases, volumes).
details_nest() {
  local merged
  merged=$(jq -c --arg g "$1" --arg s "$2" --argjson extra "$3" \
    '.[$g][$s] = ((.[$g][$s] // {}) + $extra + (if .[$s] | type == "object" then .[$s] else {} end)) | del(.[$s])' \
    "$COMPONENT_DIR/details.json") && printf '%s\n' "$merged" >"$COMPONENT_DIR/details.json"
}

# put_member GROUP NAME INFO_JSON CHECK_KEY KEY FORMAT PRODUCER...: one object of a component made of several of
# one kind (a database, a volume): an error of the component when its preflight check CHECK_KEY failed, else
# streamed and checked as FORMAT; details.GROUP.NAME gets INFO_JSON and `stored`. The others still run.
put_member() {
  local group=$1 name=$2 info=$3 check_key=$4 key=$5 format=$6 error stored=false
  shift 6
  error=$(check_error "$check_key")
  if [[ -n "$error" ]]; then
    component_error "$name: skipped: $error"
  else
    object_start "$name" "$key" "$format" check "$@"
    if object_finish "$name"; then stored=true; fi
  fi
  details_nest "$group" "$name" "$(jq -c --argjson stored "$stored" '. + {stored: $stored}' <<<"$info")"
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
