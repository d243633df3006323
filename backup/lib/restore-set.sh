# shellcheck shell=bash
# Summary: backup sets in S3 for restore.sh: listing, manifests, and the checked object pipeline.
#
# Globals read: KDL_BUCKET KDL_PREFIX (config.sh) WORK IDENTITY; set by resolve_set: SET_ID MANIFEST.
# Layout (issue 7): <prefix>/<id>/<key> objects, <prefix>/<id>/manifest.json written last.

# s3_url REL: the s3:// URL of REL, a key relative to the prefix.
s3_url() {
  kdl_s3_url "$1"
}

# s3_fail TOOL STATUS ERRFILE WHAT: dies with the helper's status (66/69/74/77) and its own error line.
s3_fail() {
  local tool=$1 status=$2 errfile=$3 what=$4 reason
  reason=$(tool_error_line "$errfile")
  ((status == 127)) && die "$EX_UNAVAILABLE" "$tool not found on PATH"
  die "$status" "$what failed ($tool exit $status${reason:+: $reason})"
}

# load_listing: every key under the prefix, cached as `REL<TAB>SIZE` lines in $WORK/listing.tsv.
load_listing() {
  [[ -f "$WORK/listing.tsv" ]] && return 0
  local status=0
  # Listed without the trailing slash (moto with signatures on refuses an encoded "/" in the
  # prefix parameter); keys of other prefixes that share the string are filtered out here.
  s3-ls --json "s3://$KDL_BUCKET/$KDL_PREFIX" >"$WORK/listing.jsonl" 2>"$WORK/s3-ls.err" || status=$?
  ((status == 0)) || s3_fail s3-ls "$status" "$WORK/s3-ls.err" "listing $(s3_url "")"
  jq -r --arg p "$KDL_PREFIX/" '
      (.key // .Key) as $k | select($k | startswith($p)) | ($k | .[($p | length):]) as $rel
      | [$rel, ((.size // .bytes // .Size // 0) | tostring)] | @tsv' \
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

# fetch_manifest ID: downloads and checks ID's manifest into $WORK/manifests/ID.json; prints its path.
fetch_manifest() {
  local id=$1 file="$WORK/manifests/$1.json" status=0
  mkdir -p "$WORK/manifests"
  if [[ ! -s "$file" ]]; then
    s3-get "$(s3_url "$id/manifest.json")" - >"$file.part" 2>"$WORK/s3-get.err" || status=$?
    if ((status == 66)); then die "$EX_NOINPUT" "unknown backup set: $id (no $(s3_url "$id/manifest.json"))"; fi
    ((status == 0)) || s3_fail s3-get "$status" "$WORK/s3-get.err" "download of $(s3_url "$id/manifest.json")"
    mv "$file.part" "$file"
  fi
  jq -e --arg id "$id" '
      .format == "kdl-backup/v1" and .id == $id and (.status | IN("success", "partial", "failure"))
      and (.components | type == "array")
      and all(.components[]; (.name | type == "string") and ((.objects // []) | all(.[];
            (.key | type == "string") and (.key | test("^[^/.]")) and (.key | test("[\u0001-\u001f]") | not) and (.key | contains("..") | not)
            and (.bytes | type == "number") and (.sha256 | test("^[0-9a-f]{64}$")))))' \
    "$file" >/dev/null 2>&1 || die "$EX_IOERR" "manifest of set $id is malformed (not kdl-backup/v1 or bad objects)"
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
  jq -e '.encryption != null and .encryption.type == "age"' "$MANIFEST" >/dev/null
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
        ($mine | split("\n") | map(select(length > 0))) as $m | any(.encryption.recipients[]?; . as $r | $m | index($r))' \
      "$MANIFEST" >/dev/null; then
    die "$EX_NOPERM" "wrong identity: $IDENTITY matches none of the recipients of set $SET_ID"
  fi
}

# objects_tsv [JQ_FILTER_ON_COMPONENT]: `component<TAB>key<TAB>bytes<TAB>sha256<TAB>encrypted` per object.
objects_tsv() {
  local filter=${1:-true}
  jq -r ".components[] | select($filter) | .name as \$c | (.objects // [])[]
         | [\$c, .key, (.bytes | tostring), .sha256,
            ((.encrypted == true) or (.key | endswith(\".age\")) | tostring)] | @tsv" "$MANIFEST"
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

# stage_decompress KEY MODE: zstd -d for *.zst (after .age is stripped); otherwise pass through.
stage_decompress() {
  local key=${1%.age}
  if [[ "$2" == raw ]]; then cat; elif [[ "$key" == *.zst ]]; then zstd -dcq; else cat; fi
}

# object_pipeline KEY SHA256 MODE CONSUMER...: s3-get --sha256 | digest | decrypt | decompress | CONSUMER.
# MODE: age, plain, or raw (download and checksum only). Dies with one line naming the key and the
# first stage that failed: checksum 74, download as s3-get says, wrong identity 77, format 74.
object_pipeline() {
  local key=$1 sha=$2 mode=$3 url e="$WORK/err"
  shift 3
  url=$(s3_url "$SET_ID/$key")
  mkdir -p "$e"
  rm -f "$e"/*
  local -a st
  set +e
  s3-get --sha256 "$sha" "$url" - 2>"$e/get" |
    stage_digest "$e/sum" |
    stage_decrypt "$mode" 2>"$e/age" |
    stage_decompress "$key" "$mode" 2>"$e/zstd" |
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
    grep -qi 'no identity matched' "$e/age" &&
      die "$EX_NOPERM" "wrong identity: $IDENTITY cannot decrypt $url"
    die "$EX_IOERR" "decryption of $url failed: $(tool_error_line "$e/age")"
  fi
  ((st[3] == 0 || st[3] == 141)) || die "$EX_IOERR" "decompression of $url failed: $(tool_error_line "$e/zstd")"
  if ((st[4] != 0)); then
    local why
    why=$(tool_error_line "$e/consumer")
    case "${st[4]}" in
      1 | 64 | 66 | 69 | 75 | 77) die "${st[4]}" "$url: $1 failed${why:+: $why}" ;;
      *) die "$EX_IOERR" "$url: $1 failed${why:+: $why}" ;;
    esac
  fi
  return 0
}
