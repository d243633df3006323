# shellcheck shell=bash
# Summary: the formats of stored objects, each named once: how backup.sh encodes an object of the
#          format, how restore.sh decodes it, and the one check that reads its plaintext (used by the
#          backup's in-job verification and by restore.sh's verify and restore alike).
# Usage: source lib/common.sh first, then this file.
#
# A format's name is what the manifest records in each object's `format` (backup/manifest.schema.json
# lists the same names; Tests/backup/contracts.bats checks that they agree). restore.sh chooses the
# decoding and the check from `format` and `encrypted`, never from the key's suffix.
#
# A check reads the plaintext on stdin to its end, prints a JSON object of what it counted (if anything),
# and exits non-zero (74 where it can tell) with one line on stderr when the stream is not of its format.
# Checks that need a server (mongorestore --dryRun) use KDL_MONGO_CONFIG when it is set.
# shellcheck disable=SC2034  # KDL_FORMAT_* are read by the scripts that source this file

# The compression between the plaintext and the stored (or encrypted) bytes: zstd or none.
declare -A KDL_FORMAT_CODEC=(
  [pg_dump-custom]=none              # pg_dump --format=custom compresses by itself
  [tar+zstd]=zstd
  [mongodump-archive+gzip]=none      # mongodump --archive --gzip
  [sqlite+zstd]=zstd
  [yaml+zstd]=zstd
  [minio-index+zstd]=zstd            # bucket-sync's index of a bucket (JSON lines)
  [minio-blobs]=none                 # bucket-sync's list of the blobs an index references (JSON lines)
)

# The check of each format's plaintext.
declare -A KDL_FORMAT_CHECK=(
  [pg_dump-custom]=check_pg_dump
  [tar+zstd]=check_tar
  [mongodump-archive+gzip]=check_mongo_archive
  [sqlite+zstd]=check_sqlite
  [yaml+zstd]=check_yaml
  [minio-index+zstd]=check_minio_index
  [minio-blobs]=check_minio_blobs
)

KDL_MONGO_CONFIG=${KDL_MONGO_CONFIG:-}
KDL_TAR_HOSTILE=${KDL_TAR_HOSTILE:-refuse}

# kdl_is_format NAME: true for a known format.
kdl_is_format() {
  [[ -n "$1" && -n "${KDL_FORMAT_CODEC[$1]+set}" ]]
}

# encode_stage FORMAT RECIPIENT...: stdin compressed as FORMAT says, then encrypted with age to every
# RECIPIENT (none: stored as it is); fails when either stage fails.
encode_stage() {
  local codec=${KDL_FORMAT_CODEC[$1]:-none} recipient age_args=()
  shift
  for recipient in "$@"; do age_args+=(-r "$recipient"); done
  if [[ "$codec" == zstd ]] && (($#)); then
    zstd -q -c | age -e "${age_args[@]}"
    local statuses=("${PIPESTATUS[@]}")
    ((statuses[0] == 0 && statuses[1] == 0))
    return
  fi
  if [[ "$codec" == zstd ]]; then exec zstd -q -c; fi
  if (($#)); then exec age -e "${age_args[@]}"; fi
  exec cat
}

# decode_stage FORMAT: stdin (decrypted) decompressed as FORMAT says (none: as it is).
decode_stage() {
  if [[ "${KDL_FORMAT_CODEC[$1]:-none}" == zstd ]]; then exec zstd -dcq; fi
  exec cat
}

# check_label CHECK: what a check runs, in words (restore.sh verify's report).
check_label() {
  case "$1" in
    check_pg_dump) echo "pg_restore --list" ;;
    check_tar) echo "tar -t" ;;
    check_sqlite) echo "PRAGMA integrity_check" ;;
    check_mongo_archive) if [[ -n "$KDL_MONGO_CONFIG" ]]; then echo "mongorestore --dryRun"; else echo "archive framing"; fi ;;
    check_yaml) echo "YAML documents" ;;
    check_minio_index) echo "MinIO index lines" ;;
    check_minio_blobs) echo "MinIO blob list" ;;
  esac
}

# check_pg_dump: pg_restore --list reads the archive's table of contents; counts tables and entries.
check_pg_dump() {
  local status=0 list
  list=$(pg_restore --list) || status=$?
  cat >/dev/null
  ((status == 0)) || return "$status"
  printf '{"tables":%d,"tocEntries":%d}\n' "$(grep -c ' TABLE DATA ' <<<"$list" || true)" "$(grep -vc '^;' <<<"$list" || true)"
}

# check_tar: lists the tar stream (names C-quoted, so no name can fake a link arrow) and counts
# entries, regular files, their bytes and git repositories. Hostile entries (absolute names, `..`,
# symlinks leaving the root, members below a symlink, hard links out, devices and FIFOs) are refused
# with 74 when KDL_TAR_HOSTILE=refuse (restore.sh), counted as `unsafe` when it is `count` (backup.sh:
# a volume is stored as it is; restoring it is what would be dangerous).
check_tar() {
  local stages
  # `if` keeps errexit out of the way (with or without pipefail); both branches read the pipeline's statuses.
  if tar -tv --quoting-style=c --numeric-owner -f - | awk -v mode="$KDL_TAR_HOSTILE" "$KDL_TAR_AWK"; then
    stages=("${PIPESTATUS[@]}")
  else
    stages=("${PIPESTATUS[@]}")
  fi
  cat >/dev/null
  ((stages[1] == 0)) || return "${stages[1]}"
  if ((stages[0] != 0)); then
    printf 'not a readable tar stream (tar exit %d)\n' "${stages[0]}" >&2
    return "$EX_IOERR"
  fi
}

# tar_check_listing: check_tar in refuse mode, printing `entries=N` (restore's pre-extraction guard).
tar_check_listing() {
  local summary status=0
  summary=$(KDL_TAR_HOSTILE=refuse check_tar) || status=$?
  ((status == 0)) || exit "$status"
  [[ "$summary" =~ \"entries\":([0-9]+) ]] && printf 'entries=%s\n' "${BASH_REMATCH[1]}"
}

# The listing's reader. Lines: MODE OWNER SIZE DATE TIME "NAME" [-> "TARGET" | link to "TARGET"];
# names stay C-quoted (escapes never hide a / or a .).
# shellcheck disable=SC2016  # awk's program, not the shell's
KDL_TAR_AWK='
function quoted_end(s,    i, c) {   # index of the closing quote of the string opening s
  for (i = 2; i <= length(s); i++) { c = substr(s, i, 1); if (c == "\\") i++; else if (c == "\"") return i }
  return 0
}
function escapes(path,    n, parts, i, depth) {
  if (path ~ /^\//) return 1
  n = split(path, parts, "/"); depth = 0
  for (i = 1; i <= n; i++) {
    if (parts[i] == "" || parts[i] == ".") continue
    if (parts[i] == "..") { if (--depth < 0) return 1 } else depth++
  }
  return 0
}
function hostile(why) {
  unsafe++
  if (mode == "refuse") { print "hostile tar entry refused: " why > "/dev/stderr"; refused = 1; exit 74 }
  if (unsafe == 1) print "unsafe tar entry (restore would refuse it): " why > "/dev/stderr"
}
{
  kind = substr($0, 1, 1); rest = substr($0, index($0, "\""))
  end = quoted_end(rest)
  if (end == 0) { hostile("unparsable listing line: " substr($0, 1, 200)); next }
  name = substr(rest, 2, end - 2); tail = substr(rest, end + 1); target = ""
  if (tail ~ /^ (->|link to) "/) { tail = substr(tail, index(tail, "\"")); target = substr(tail, 2, quoted_end(tail) - 2) }
  else if (tail != "") { hostile("unparsable listing line: " substr($0, 1, 200)); next }
  entries++
  if (name ~ /^\//) { hostile("absolute path: " name); next }
  if (("/" name "/") ~ /\/\.\.\//) { hostile("'"'"'..'"'"' in path: " name); next }
  p = name; sub(/\/$/, "", p)
  while (match(p, /\/[^\/]*$/)) { p = substr(p, 1, RSTART - 1); if (p in links) { hostile("path through symlink " p ": " name); next } }
  if (kind == "l") {
    if (target ~ /^\//) { hostile("symlink to absolute path: " name " -> " target); next }
    p = name; sub(/\/$/, "", p); parent = p; if (!sub(/\/[^\/]*$/, "", parent)) parent = ""
    if (escapes((parent == "" ? "" : parent "/") target)) { hostile("symlink leaving the root: " name " -> " target); next }
    links[p] = 1
  } else if (kind == "h") {
    if (target ~ /^\//) { hostile("hard link to absolute path: " name " -> " target); next }
    if (("/" target "/") ~ /\/\.\.\//) { hostile("hard link with '"'"'..'"'"': " name " -> " target); next }
  } else if (kind == "-") { files++; bytes += $3 }
  else if (kind == "d") { if (name ~ /\.git\/?$/ && name ~ /(^|\/)git\/repositories\//) repos++ }
  else { hostile("special file (type " kind "): " name); next }
}
END {
  if (refused) exit 74
  printf "{\"entries\":%d,\"files\":%d,\"bytes\":%d,\"repositories\":%d%s}\n", entries, files, bytes, repos, (unsafe ? ",\"unsafe\":" unsafe : "")
}'

# check_sqlite: the database passes PRAGMA integrity_check (staged in a private temporary file,
# removed at once: SQLite cannot read a stream).
check_sqlite() {
  local db
  db=$(mktemp "${TMPDIR:-/tmp}/kdl-check.XXXXXX") || return "$EX_IOERR"
  cat >"$db"
  sqlite_file_ok "$db" || { rm -f "$db"; return "$EX_IOERR"; }
  rm -f "$db"
}

# sqlite_file_ok FILE: FILE passes PRAGMA integrity_check; otherwise its first findings on stderr, 74.
sqlite_file_ok() {
  local result
  result=$(sqlite3 -readonly "$1" 'PRAGMA integrity_check;' 2>&1 | head -n 3) || true
  [[ "$result" == ok ]] || { printf 'integrity_check: %s\n' "${result//$'\n'/; }" >&2; return "$EX_IOERR"; }
}

# check_yaml: multi-document YAML where every document names its apiVersion and kind; counts them.
check_yaml() {
  awk '
    function end_doc() { if (lines > 0) { docs++; if (!(api && kind)) bad++ } lines = 0; api = 0; kind = 0 }
    /^---/ { end_doc(); next }
    /^[[:space:]]*(#.*)?$/ { next }
    { lines++ }
    /^apiVersion:/ { api = 1 }
    /^kind:/ { kind = 1 }
    END { end_doc(); if (bad) { print bad " document(s) without apiVersion/kind" > "/dev/stderr"; exit 74 }
          printf "{\"objects\":%d}\n", docs }'
}

# check_mongo_archive: a mongodump --archive --gzip stream. With KDL_MONGO_CONFIG, mongorestore reads it
# back with --dryRun against that server (it writes nothing); otherwise the gzip framing and the
# archive's magic number (0x8199e26d) are checked here.
check_mongo_archive() {
  if [[ -n "$KDL_MONGO_CONFIG" ]]; then
    local status=0 err
    err=$(mktemp "${TMPDIR:-/tmp}/kdl-mongorestore.XXXXXX") || return "$EX_IOERR"
    mongorestore --config="$KDL_MONGO_CONFIG" --archive --gzip --dryRun --quiet >/dev/null 2>"$err" || status=$?
    cat >/dev/null
    if ((status != 0)); then
      kdl_tail_text "$err" 1 >&2
      printf '\n' >&2
      mongo_error_status "$err" || status=$?
    fi
    rm -f "$err"
    return "$status"
  fi
  local magic
  magic=$(gzip -dc | { head -c 4 | od -An -tx1 | tr -d ' \n'; cat >/dev/null; })
  ((PIPESTATUS[0] == 0)) || { echo "not a gzip stream" >&2; return "$EX_IOERR"; }
  [[ "$magic" == 6de29981 ]] || { echo "not a mongodump archive (magic $magic)" >&2; return "$EX_IOERR"; }
}

# mongo_error_status ERRFILE: the status a MongoDB tool's failure deserves: 69 unreachable, 77 refused, 74 else.
# MongoDB's tools exit 1 for every error, so their message is all there is to go on.
mongo_error_status() {
  if grep -qiE 'no reachable servers|server selection|connection refused|connect: |timed out|no such host' "$1"; then
    return "$EX_UNAVAILABLE"
  elif grep -qiE 'auth|unauthorized|not authorized' "$1"; then return "$EX_NOPERM"; else return "$EX_IOERR"; fi
}

# check_minio_index: JSON lines, each an object with its key, size, blob, offset, length and sha256; counts them.
check_minio_index() {
  jq -cn 'reduce inputs as $o ({objects: 0, bytes: 0};
    if ($o | type) == "object" and ($o.key | type) == "string" and ($o.size | type) == "number" and ($o.blob | type) == "string"
       and ($o.offset | type) == "number" and ($o.length | type) == "number" and ($o.sha256 | type) == "string"
    then .objects += 1 | .bytes += $o.size else error("not a bucket-sync index line") end)' 2>/dev/null ||
    { echo "not a bucket-sync index" >&2; return "$EX_IOERR"; }
}

# check_minio_blobs: JSON lines, each a blob's key under blobs/, its stored bytes and sha256; counts them.
check_minio_blobs() {
  jq -cn 'reduce inputs as $b ({blobs: 0};
    if ($b | type) == "object" and ($b.key | type) == "string" and ($b.key | startswith("blobs/")) and ($b.bytes | type) == "number"
       and ($b.sha256 | type) == "string"
    then .blobs += 1 else error("not a blob list line") end)' 2>/dev/null ||
    { echo "not a bucket-sync blob list" >&2; return "$EX_IOERR"; }
}
