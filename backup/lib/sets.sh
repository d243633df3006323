# shellcheck shell=bash
# Summary: backup sets in S3 for restore.sh: listing, manifests (checked against the schema), the
#          objects of a component or a restore step, and the checked object pipeline
#          s3-get | sha256 | age -d | decode | consumer.
# Usage: source lib/common.sh, lib/config.sh, lib/formats.sh, lib/manifest.sh and lib/registry.sh first.
#
# Globals read: KDL_BUCKET KDL_PREFIX (config.sh) WORK IDENTITY; set by resolve_set: SET_ID MANIFEST.
# Layout: <prefix>/<id>/<key> objects, <prefix>/<id>/manifest.json written last.

# s3_url REL: the s3:// URL of REL, a key relative to the prefix.
s3_url() {
  kdl_s3_url "$1"
}

# s3_fail TOOL STATUS ERRFILE WHAT: dies with the helper's status (66/69/74/77), its own error line and
# the endpoint it talked to.
s3_fail() {
  local tool=$1 status=$2 errfile=$3 what=$4 reason
  reason=$(tool_error_line "$errfile")
  ((status == 127)) && die "$EX_UNAVAILABLE" "$tool not found on PATH"
  die "$status" "$what at $(kdl_s3_endpoint) failed ($tool exit $status${reason:+: $reason})"
}

# load_listing: every key under the prefix, cached as `REL<TAB>SIZE` lines in $WORK/listing.tsv.
load_listing() {
  [[ -f "$WORK/listing.tsv" ]] && return 0
  local status=0
  # Listed without the trailing slash (some S3 servers, moto with signatures on among them, refuse an encoded "/" in the
  # prefix parameter); keys of other prefixes that share the string are filtered out here.
  s3-ls --json "s3://$KDL_BUCKET/$KDL_PREFIX" >"$WORK/listing.jsonl" 2>"$WORK/s3-ls.err" || status=$?
  ((status == 0)) || s3_fail s3-ls "$status" "$WORK/s3-ls.err" "listing $(s3_url "")"
  jq -r --arg p "$KDL_PREFIX/" 'select(.key | startswith($p)) | [(.key | .[($p | length):]), (.size | tostring)] | @tsv' \
    "$WORK/listing.jsonl" >"$WORK/listing.tsv" 2>"$WORK/jq.err" ||
    die "$EX_IOERR" "s3-ls --json printed something that is not JSON lines: $(tool_error_line "$WORK/jq.err")"
}

# set_ids: ids of complete sets (those with a manifest.json), newest first (ids sort by their UTC time).
set_ids() {
  load_listing
  awk -F'\t' '$1 ~ /^[^\/]+\/manifest\.json$/ { sub(/\/manifest\.json$/, "", $1); print $1 }' "$WORK/listing.tsv" | sort -r
}

# valid_id ID: ids are one path segment of safe characters.
valid_id() {
  [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]]
}

# fetch_manifest ID: downloads ID's manifest into $WORK/manifests/ID.json and prints its path; a
# manifest that breaks backup/manifest.schema.json, or names another id, is refused (74).
fetch_manifest() {
  local id=$1 file="$WORK/manifests/$1.json" status=0 violation
  mkdir -p "$WORK/manifests"
  if [[ ! -s "$file" ]]; then
    s3-get "$(s3_url "$id/manifest.json")" - >"$file.part" 2>"$WORK/s3-get.err" || status=$?
    if ((status == EX_NOINPUT)); then die "$EX_NOINPUT" "unknown backup set: $id (no $(s3_url "$id/manifest.json"))"; fi
    ((status == 0)) || s3_fail s3-get "$status" "$WORK/s3-get.err" "download of $(s3_url "$id/manifest.json")"
    mv "$file.part" "$file"
  fi
  violation=$(manifest_violation "$file")
  [[ -z "$violation" ]] || die "$EX_IOERR" "manifest of set $id is malformed (not kdl-backup/v1: $violation)"
  [[ "$(jq -r .id "$file")" == "$id" ]] || die "$EX_IOERR" "manifest of set $id is malformed (its id is $(jq -r .id "$file"))"
  printf '%s\n' "$file"
}

# resolve_set ID|latest ALLOW_PARTIAL: sets SET_ID and MANIFEST (66 for an unknown id or no complete set).
resolve_set() {
  local want=$1 allow_partial=$2 id status
  if [[ "$want" == latest ]]; then
    SET_ID=""
    load_listing
    while IFS= read -r id; do
      valid_id "$id" || continue
      MANIFEST=$(fetch_manifest "$id")
      status=$(jq -r .status "$MANIFEST")
      if [[ "$status" == success ]] || { [[ "$allow_partial" == true ]] && [[ "$status" == partial ]]; }; then
        SET_ID=$id
        break
      fi
      log info "skipping set" id="$id" status="$status"
    done < <(set_ids)
    local accepted=success
    [[ "$allow_partial" == true ]] && accepted="success or partial"
    [[ -n "$SET_ID" ]] || die "$EX_NOINPUT" "no complete backup set with status $accepted under $(s3_url "")"
  else
    valid_id "$want" || die "$EX_USAGE" "not a backup set id: $want"
    MANIFEST=$(fetch_manifest "$want")
    SET_ID=$want
  fi
  log info "backup set" id="$SET_ID" status="$(jq -r .status "$MANIFEST")"
}

# set_encrypted: true when the set's manifest names age recipients.
set_encrypted() {
  jq -e '.encryption != null' "$MANIFEST" >/dev/null
}

# set_started_epoch: the set's startedAt in epoch seconds.
set_started_epoch() {
  date -u -d "$(jq -r .startedAt "$MANIFEST")" +%s 2>/dev/null || die "$EX_IOERR" "set $SET_ID has no readable startedAt"
}

# check_identity: with an encrypted set, the identity file exists and (when age-keygen can derive
# its recipient) is one of the set's recipients; 66 missing file, 77 wrong key.
check_identity() {
  [[ -n "$IDENTITY" ]] || return 0
  [[ -r "$IDENTITY" && -f "$IDENTITY" ]] || die "$EX_NOINPUT" "identity file not readable: $IDENTITY"
  set_encrypted || return 0
  local mine
  mine=$(age-keygen -y "$IDENTITY" 2>/dev/null) || return 0 # not a native age identity: decryption decides
  if ! jq -e --rawfile mine <(printf '%s\n' "$mine") '
        ($mine | split("\n") | map(select(length > 0))) as $m | any(.encryption.recipients[]; . as $r | $m | index($r))' \
      "$MANIFEST" >/dev/null; then
    die "$EX_NOPERM" "wrong identity: $IDENTITY matches none of the recipients of set $SET_ID"
  fi
}

# objects_tsv [COMPONENT]: `component<TAB>key<TAB>bytes<TAB>sha256<TAB>encrypted<TAB>format` per object
# (of every component, or of one).
objects_tsv() {
  jq -r --arg c "${1:-}" '.components[] | select($c == "" or .name == $c) | .name as $n | .objects[]
         | [$n, .key, (.bytes | tostring), .sha256, (.encrypted | tostring), .format] | @tsv' "$MANIFEST"
}

# object_mode ENCRYPTED: the decrypt mode for an object, given whether an identity is at hand:
# plain, age, or raw (encrypted without an identity: downloaded and checksummed only).
object_mode() {
  if [[ "$1" != true ]]; then echo plain; elif [[ -n "$IDENTITY" ]]; then echo age; else echo raw; fi
}

# check_presence TSV: every object of TSV (objects_tsv lines) is listed under the set with its recorded size.
check_presence() {
  local comp key bytes listed
  load_listing
  while IFS=$'\t' read -r comp key bytes _; do
    listed=$(awk -F'\t' -v k="$SET_ID/$key" '$1 == k { print $2; exit }' "$WORK/listing.tsv")
    [[ -n "$listed" ]] || die "$EX_NOINPUT" "missing object: $(s3_url "$SET_ID/$key") (component $comp)"
    [[ "$listed" == "$bytes" ]] ||
      die "$EX_IOERR" "size mismatch: $(s3_url "$SET_ID/$key") is $listed bytes, the manifest says $bytes"
  done <"$1"
}

# stage_digest SUMFILE: passes stdin through while hashing all of it (even if the reader stops early).
stage_digest() {
  tee -p >(sha256sum >"$1")
  local status=$?
  wait "$!" || true
  return "$status"
}

# stage_decrypt MODE: age -d with the identity (age), pass through (plain), or swallow (raw).
stage_decrypt() {
  case "$1" in
    age) age -d -i "$IDENTITY" ;;
    plain) cat ;;
    raw) cat >/dev/null ;;
  esac
}

# object_pipeline KEY SHA256 MODE FORMAT CONSUMER...: s3-get --sha256 | digest | decrypt | decode FORMAT
# | CONSUMER. MODE: age, plain, or raw (download and checksum only). Dies with one line naming the key
# and the first stage that failed: checksum 74, download as s3-get says, wrong identity 77, format 74.
object_pipeline() {
  local key=$1 sha=$2 mode=$3 format=$4 url e="$WORK/err" decode=$4
  shift 4
  url=$(s3_url "$SET_ID/$key")
  [[ "$mode" == raw ]] && decode=none
  mkdir -p "$e"
  rm -f "$e"/*
  local -a st
  set +e
  s3-get --sha256 "$sha" "$url" - 2>"$e/get" |
    stage_digest "$e/sum" |
    stage_decrypt "$mode" 2>"$e/age" |
    decode_stage "$decode" 2>"$e/zstd" |
    "$@" 2>"$e/consumer"
  st=("${PIPESTATUS[@]}")
  set -e
  local got=""
  [[ -s "$e/sum" ]] && got=$(cut -d' ' -f1 "$e/sum")
  if ((st[0] != 0 && st[0] != 141)) && [[ "$got" == "$sha" ]]; then
    s3_fail s3-get "${st[0]}" "$e/get" "download of $url"
  fi
  [[ "$got" == "$sha" ]] || die "$EX_IOERR" "checksum mismatch: $url has sha256 ${got:-(none)}, the manifest says $sha"
  ((st[1] == 0 || st[1] == 141)) || die "$EX_IOERR" "reading $url failed"
  if ((st[2] != 0 && st[2] != 141)); then
    # age exits 1 for every error; its message is all that tells a wrong key from damage.
    grep -qi 'no identity matched' "$e/age" &&
      die "$EX_NOPERM" "wrong identity: $IDENTITY cannot decrypt $url"
    die "$EX_IOERR" "decryption of $url failed: $(tool_error_line "$e/age")"
  fi
  ((st[3] == 0 || st[3] == 141)) || die "$EX_IOERR" "decompression of $url ($format) failed: $(tool_error_line "$e/zstd")"
  if ((st[4] != 0)); then
    local why
    why=$(tool_error_line "$e/consumer")
    case "${st[4]}" in
      "$EX_FAILURE" | "$EX_USAGE" | "$EX_NOINPUT" | "$EX_UNAVAILABLE" | "$EX_TEMPFAIL" | "$EX_NOPERM") die "${st[4]}" "$url: $1 failed${why:+: $why}" ;;
      *) die "$EX_IOERR" "$url: $1 failed${why:+: $why}" ;;
    esac
  fi
  return 0
}

# discard: swallows stdin (encrypted objects without an identity: checksum only).
discard() {
  cat >/dev/null
}

# verify_objects TSV_FILE: every object in TSV_FILE downloaded, checksummed and (if readable) checked
# by its format's check. Sets VERIFIED_COUNT, VERIFIED_BYTES, VERIFIED_UNREAD and VERIFIED_CHECKS (the
# checks run, in words).
verify_objects() {
  local comp key bytes sha enc format mode check count=0 total=0 unread=0
  local -A used=()
  while IFS=$'\t' read -r comp key bytes sha enc format; do
    mode=$(object_mode "$enc")
    check=${KDL_FORMAT_CHECK[$format]}
    [[ "$mode" == raw ]] && check=discard && unread=$((unread + 1))
    [[ "$check" == discard ]] || used[$(check_label "$check")]=1
    log info "verify object" component="$comp" key="$key" bytes="$bytes" check="$check"
    object_pipeline "$key" "$sha" "$mode" "$format" "$check" </dev/null >/dev/null
    count=$((count + 1))
    total=$((total + bytes))
  done <"$1"
  # shellcheck disable=SC2034  # read by restore.sh
  VERIFIED_COUNT=$count VERIFIED_BYTES=$total VERIFIED_UNREAD=$unread
  # shellcheck disable=SC2034  # read by restore.sh
  VERIFIED_CHECKS=""
  # shellcheck disable=SC2034  # read by restore.sh
  if ((${#used[@]})); then VERIFIED_CHECKS=$(printf '%s\n' "${!used[@]}" | LC_ALL=C sort | paste -sd ';' - | sed 's/;/, /g'); fi
}

# step_objects STEP ALLOW_PARTIAL: writes the step's objects (its component's objects whose key the step
# takes) to $WORK/steps/STEP.tsv; returns 1 when the step has nothing to do: its component was not
# selected for the set (skipped), or failed and --allow-partial skips it; dies 66 when a failed
# component is needed, or a required object is missing.
step_objects() {
  local step=$1 allow_partial=$2 comp status file="$WORK/steps/$1.tsv"
  comp=${KDL_STEP_COMPONENT[$step]}
  mkdir -p "$WORK/steps"
  status=$(jq -r --arg c "$comp" '[.components[] | select(.name == $c) | .status][0] // "absent"' "$MANIFEST")
  if [[ "$status" == skipped || "$status" == absent ]]; then
    log warn "skipping step: the set did not back up its component" step="$step" component="$comp" status="$status"
    return 1
  fi
  if [[ "$status" != success ]]; then
    [[ "$allow_partial" == true ]] || die "$EX_NOINPUT" "set $SET_ID has no usable $comp component (status $status); --allow-partial skips it"
    log warn "skipping step: component not in the set" step="$step" component="$comp" status="$status"
    return 1
  fi
  objects_tsv "$comp" | awk -F'\t' -v re="${KDL_STEP_INCLUDE[$step]}" -v ex="${KDL_STEP_EXCLUDE[$step]}" \
    -v only="${KDL_STEP_ONLY[$step]:-}" -v comp="$comp" '
      BEGIN { n = split(only, parts, " ") }
      function wanted(key,   i, p) {
        if (n == 0) return 1
        for (i = 1; i <= n; i++) { p = comp "/" parts[i]; if (index(key, p ".") == 1 || index(key, p "/") == 1) return 1 }
        return 0
      }
      $2 ~ re && (ex == "" || $2 !~ ex) && wanted($2)' >"$file"
  local part
  for part in ${KDL_STEP_ONLY[$step]:-}; do
    grep -qE "^[^	]*	${comp}/${part}[./]" "$file" || die "$EX_NOINPUT" "set $SET_ID has no $comp:$part (it has: $(objects_tsv "$comp" | cut -f2 | sed -E "s#^$comp/##; s#(\.age)?\$##" | paste -sd ' ' -))"
  done
  if [[ ! -s "$file" ]]; then
    kdl_step_has "$step" required && die "$EX_NOINPUT" "set $SET_ID has no object for $step"
    log warn "nothing to restore" step="$step"
    return 1
  fi
}

# member_name KEY DIR SUFFIX: NAME in the key DIR/NAME.SUFFIX[.age] (one database or volume of a set).
member_name() {
  local name=${1#"$2"/}
  name=${name%.age}
  printf '%s' "${name%."$3"}"
}

# step_objects_of STEP: the step's objects (step_objects' TSV lines) on stdout.
step_objects_of() {
  cat "$WORK/steps/$1.tsv"
}

# restore_each_object STEP CONSUMER...: every object of the step through object_pipeline into CONSUMER.
restore_each_object() {
  local step=$1 comp key bytes sha enc format
  shift
  while IFS=$'\t' read -r comp key bytes sha enc format; do
    log info "restore object" step="$step" key="$key" consumer="$1"
    object_pipeline "$key" "$sha" "$(object_mode "$enc")" "$format" "$@" </dev/null
  done < <(step_objects_of "$step")
}

# extract_tar DIR: stdin (a tar stream whose entries verify_objects' check_tar found safe before anything
# changed) extracted into DIR with GNU tar's own guards as well.
extract_tar() {
  tar -x -f - -C "$1" --no-overwrite-dir --delay-directory-restore --no-same-owner
}

# verify_note TEXT: a check that verify skipped or noted, logged and reported.
verify_note() {
  log warn "$1"
  VERIFY_CHECKED+=("$1")
}
