# shellcheck shell=bash
# Summary: component minio: the platform's MinIO buckets (datasets, MLflow artifacts, deleted projects' buckets),
#          backed up incrementally by bucket-sync: unchanged objects reuse the bytes an earlier set stored under
#          <prefix>/blobs/; new and changed ones are packed (small) or stored alone (large), zstd | age.
#
# Environment: MINIO_ENDPOINT (the component is configured when set), MINIO_ACCESS_KEY_ID, MINIO_SECRET_ACCESS_KEY,
#              MINIO_REGION (us-east-1), MINIO_CA_FILE, MINIO_BUCKETS (names, or * for every bucket listed),
#              MINIO_EXCLUDE_REGEX (ERE of bucket names left out), BACKUP_MINIO_FULL_EVERY (8).
# Objects:     minio/<bucket>.index.jsonl.zst[.age] (minio-index+zstd: every object and where its bytes are) and
#              minio/<bucket>.blobs.jsonl (minio-blobs: the blobs the index references; keys, sizes, digests).
# Restore:     minio (every bucket; `minio:BUCKET` or --bucket BUCKET for some), after MongoDB, before MLflow:
#              bucket-sync restore into MINIO_ENDPOINT; objects the target has and the set lacks stay.
# shellcheck disable=SC2034  # globals read by tests and by the other functions of this file

kdl_component minio 45
kdl_restore_step minio minio 45 '^minio/[^/]+\.index\.jsonl\.zst(\.age)?$'

MINIO_SELECTED_BUCKETS=()
MINIO_FULL_EVERY=8
MINIO_BUCKET_ARGS=()

# minio_configured: MINIO_ENDPOINT names the platform's MinIO.
minio_configured() {
  [[ -n "${MINIO_ENDPOINT:-}" ]]
}

# minio_unconfigured_note: why the run leaves minio out (logged at the start).
minio_unconfigured_note() {
  echo "MINIO_ENDPOINT is not set: MinIO buckets (datasets, MLflow artifacts) are not backed up"
}

# minio_config SELECTED: checks the MINIO_* settings (64 when selected and unusable); without an endpoint the
# component is left out (minio_unconfigured_note says so in the log).
minio_config() {
  if ! minio_configured; then
    if [[ "$1" == true ]]; then
      KDL_CONFIG_ERROR="BACKUP_COMPONENTS selects minio but MINIO_ENDPOINT is not set (the platform's MinIO, http(s)://host:port)"
      return "$EX_USAGE"
    fi
    return 0
  fi
  [[ "$1" == true ]] || return 0
  if [[ ! "$MINIO_ENDPOINT" =~ ^https?://[^/[:space:]]+/?$ ]]; then
    KDL_CONFIG_ERROR="MINIO_ENDPOINT must be http(s)://host[:port] (got '$(kdl_redact "$MINIO_ENDPOINT")')"
    return "$EX_USAGE"
  fi
  if [[ -z "${MINIO_ACCESS_KEY_ID:-}" || -z "${MINIO_SECRET_ACCESS_KEY:-}" ]]; then
    KDL_CONFIG_ERROR="MINIO_ACCESS_KEY_ID and MINIO_SECRET_ACCESS_KEY are required with MINIO_ENDPOINT"
    return "$EX_USAGE"
  fi
  if [[ -n "${MINIO_CA_FILE:-}" && ! -r "$MINIO_CA_FILE" ]]; then
    KDL_CONFIG_ERROR="MINIO_CA_FILE $MINIO_CA_FILE is not a readable file"
    return "$EX_USAGE"
  fi
  MINIO_FULL_EVERY=${BACKUP_MINIO_FULL_EVERY:-8}
  if [[ ! "$MINIO_FULL_EVERY" =~ ^[0-9]+$ ]] || ((MINIO_FULL_EVERY > 1000)); then
    KDL_CONFIG_ERROR="BACKUP_MINIO_FULL_EVERY must be a whole number from 0 to 1000 (got '$MINIO_FULL_EVERY')"
    return "$EX_USAGE"
  fi
  local status=0 name
  # shellcheck disable=SC2319  # the test's own status: 2 is a malformed expression
  if [[ "" =~ ${MINIO_EXCLUDE_REGEX:-} ]]; then status=0; else status=$?; fi
  if ((status == 2)); then
    KDL_CONFIG_ERROR="MINIO_EXCLUDE_REGEX is not an extended regular expression: ${MINIO_EXCLUDE_REGEX}"
    return "$EX_USAGE"
  fi
  MINIO_SELECTED_BUCKETS=()
  MINIO_BUCKET_ARGS=()
  if [[ "${MINIO_BUCKETS:-*}" != "*" ]]; then
    while IFS= read -r name; do
      if [[ ! "$name" =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]]; then
        KDL_CONFIG_ERROR="MINIO_BUCKETS: '$name' is not a bucket name (or give * for every bucket)"
        return "$EX_USAGE"
      fi
      MINIO_SELECTED_BUCKETS+=("$name")
      MINIO_BUCKET_ARGS+=(--bucket "$name")
    done < <(kdl_words "$MINIO_BUCKETS")
  fi
  [[ -z "${MINIO_EXCLUDE_REGEX:-}" ]] || MINIO_BUCKET_ARGS+=(--exclude-regex "$MINIO_EXCLUDE_REGEX")
}

# minio_preflight: bucket-sync is present and MinIO lists the buckets (each named one must exist).
minio_preflight() {
  local status=0 count code
  check_require minio bucket-sync || return 1
  kdl_run_job bucket-sync buckets "${MINIO_BUCKET_ARGS[@]}" >"$WORK/checks/minio.out" 2>"$WORK/checks/minio.err" || status=$?
  if ((status != 0)); then
    code=$EX_UNAVAILABLE
    ((status == EX_NOPERM)) && code=$EX_NOPERM
    check_fail minio "$code" "MinIO at ${MINIO_ENDPOINT} cannot list the buckets (bucket-sync exit $status): $(tool_error_line "$WORK/checks/minio.err")"
    return 1
  fi
  count=$(grep -c '^{' "$WORK/checks/minio.out" || true)
  check_ok minio endpoint="$MINIO_ENDPOINT" buckets="$count"
}

# minio_sync_args: bucket-sync backup's arguments for this run (recipients are public keys).
minio_sync_args() {
  local recipient
  printf '%s\0' "s3://$KDL_BUCKET/$KDL_PREFIX" --set "$BACKUP_ID" --full-every "$MINIO_FULL_EVERY" "${MINIO_BUCKET_ARGS[@]}"
  for recipient in "${KDL_RECIPIENTS[@]}"; do printf '%s\0' --recipient "$recipient"; done
}

# minio_backup: bucket-sync backup; its stored objects become the component's, its counts the details. Its log
# (progress every 10 s) goes to the job's log as it comes.
minio_backup() {
  local error status=0 args=() out="$COMPONENT_DIR/bucket-sync.out" err="$COMPONENT_DIR/bucket-sync.err"
  error=$(check_error minio)
  if [[ -n "$error" ]]; then
    component_error "bucket-sync: skipped: $error"
    return 0
  fi
  mapfile -d '' -t args < <(minio_sync_args)
  kdl_run_job minio_run_sync "$out" "$err" backup "${args[@]}" || status=$?
  minio_record_objects "$out"
  details_merge "$(grep '^{"details"' "$out" | tail -n1 | jq -c '.details | del(.bucketsFailed, .previous)' 2>/dev/null || echo '{}')"
  if ((status != 0)); then
    component_error "bucket-sync exited $status: $(tool_error_line "$err")$(grep -E 'msg="bucket failed"' "$err" | sed -E 's/^.* bucket=/; bucket /' | head -n 3 | paste -sd ' ' - | cut -c1-600)"
  fi
  return 0
}

# minio_run_sync OUT ERR ARGS...: bucket-sync ARGS with stdout in OUT, its log in ERR and, as it comes, in the job's log.
minio_run_sync() {
  local out=$1 err=$2
  shift 2
  bucket-sync "$@" 2>&1 >"$out" | tee "$err" | minio_relay_log >&2
  return "${PIPESTATUS[0]}"
}

# minio_relay_log: bucket-sync's log lines copied into the job's log file too (the notification's tail).
minio_relay_log() {
  local line
  while IFS= read -r line; do
    printf '%s\n' "$line"
    if [[ -n "$KDL_LOG_FILE" ]]; then printf '%s\n' "$line" >>"$KDL_LOG_FILE"; fi
  done
}

# minio_record_objects FILE: bucket-sync's object lines as the component's objects (in the order printed).
minio_record_objects() {
  local line
  while IFS= read -r line; do
    OBJECT_SEQ=$((OBJECT_SEQ + 1))
    jq -c --argjson seq "$OBJECT_SEQ" '{key, bytes, sha256, format, encrypted, verified: false, _seq: $seq}' <<<"$line" \
      >>"$COMPONENT_DIR/objects.jsonl"
  done < <(grep '^{"bytes"' "$1")
}

# minio_describe DETAILS: one line for `restore.sh show`.
minio_describe() {
  jq -r '"\(.buckets // 0) buckets, \(.objects // 0) objects (\(.objectsUploaded // 0) uploaded, \(.objectsReused // 0) reused), \(.bytes // 0) bytes, \(.bytesUploaded // 0) uploaded, chain \(.chainLength // 0)\(if (.changedDuringBackup // 0) > 0 then ", \(.changedDuringBackup) changed while read" else "" end)"' <<<"$1"
}

# --- restore ---------------------------------------------------------------------------------

# minio_buckets_of STEP: the buckets of the step's index objects.
minio_buckets_of() {
  local comp key rest
  while IFS=$'\t' read -r comp key rest; do
    key=${key#minio/}
    printf '%s\n' "${key%%.index.jsonl*}"
  done < <(step_objects_of "$1")
}

# minio_restore_args STEP: bucket-sync restore's arguments: the set, each bucket, the identity.
minio_restore_args() {
  local bucket
  printf '%s\0' "s3://$KDL_BUCKET/$KDL_PREFIX/$SET_ID"
  while IFS= read -r bucket; do printf '%s\0' --bucket "$bucket"; done < <(minio_buckets_of "$1")
  [[ -z "$IDENTITY" ]] || printf '%s\0' --identity "$IDENTITY"
}

# minio_plan STEP: bucket-sync's dry run: per bucket, objects and bytes to write and what the target already has.
minio_plan() {
  [[ -n "${MINIO_ENDPOINT:-}" ]] || die "$EX_USAGE" "MINIO_ENDPOINT is not set (the MinIO to restore into)"
  local args=() status=0
  mapfile -d '' -t args < <(minio_restore_args "$1")
  kdl_run_job bucket-sync restore --dry-run "${args[@]}" >"$WORK/minio-plan.out" 2>"$WORK/minio-plan.err" || status=$?
  ((status == 0)) || die "$status" "bucket-sync restore --dry-run failed: $(tool_error_line "$WORK/minio-plan.err")"
  jq -r --arg t "$MINIO_ENDPOINT" '"plan: minio:\(.bucket): write \(.objects) objects (\(.bytes) bytes) into \($t)\(if .createdBucket then " (bucket created)" else "" end); \(.extraInTarget) objects there that the set lacks are left alone"' \
    "$WORK/minio-plan.out"
}

# minio_apply STEP: bucket-sync restore of the step's buckets.
minio_apply() {
  local args=() status=0
  mapfile -d '' -t args < <(minio_restore_args "$1")
  kdl_run_job minio_run_sync "$WORK/minio-restore.out" "$WORK/minio-restore.err" restore "${args[@]}" || status=$?
  ((status == 0)) || die "$status" "bucket-sync restore failed: $(tool_error_line "$WORK/minio-restore.err")"
  jq -r '"restored: minio:\(.bucket): \(.objects) objects, \(.bytes) bytes\(if .createdBucket then " (bucket created)" else "" end); \(.extraInTarget) objects not in the set left alone"' \
    "$WORK/minio-restore.out"
}

# minio_verify: `restore.sh verify`: every blob the set's buckets reference exists with its recorded size; with
# an identity, every object is decrypted and its sha256 checked.
minio_verify() {
  local status=0 args=() what="blobs present with their recorded sizes"
  [[ "$(jq -r '[.components[] | select(.name == "minio") | .status][0] // "absent"' "$MANIFEST")" == success ]] || return 0
  args=("s3://$KDL_BUCKET/$KDL_PREFIX/$SET_ID")
  if [[ -n "$IDENTITY" ]]; then
    args+=(--identity "$IDENTITY")
    what="blobs present; every object decrypted and its sha256 checked"
  fi
  kdl_run_job bucket-sync verify "${args[@]}" >"$WORK/minio-verify.out" 2>"$WORK/minio-verify.err" || status=$?
  ((status == 0)) || die "$status" "minio: bucket-sync verify failed: $(tool_error_line "$WORK/minio-verify.err")"
  local summary
  summary=$(jq -rs '"\(length) buckets, \(map(.blobs) | add // 0) blobs\(if (map(.objects) | add // 0) > 0 then ", \(map(.objects) | add) objects" else "" end)"' "$WORK/minio-verify.out")
  VERIFY_CHECKED+=("minio: $what ($summary)")
  echo "verify: minio: $what: $summary"
}
