# shellcheck shell=bash
# Summary: restore.sh's own small helpers on top of backup/lib/common.sh (log, die, say,
#          require_cmd, kdl_tail_text) and backup/lib/config.sh: exit codes and sizes.

# Exit statuses (sysexits), the same as every helper of the project.
# shellcheck disable=SC2034  # read by the files restore.sh sources
readonly EX_OK=0 EX_FAILURE=1 EX_USAGE=64 EX_NOINPUT=66 EX_UNAVAILABLE=69 EX_IOERR=74 EX_TEMPFAIL=75 EX_NOPERM=77

# need_cmd NAME...: exits 69 naming the commands that are not on PATH.
need_cmd() {
  local missing
  missing=$(require_cmd "$@") || die "$EX_UNAVAILABLE" "required command not found: $missing"
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

# tool_error_line FILE: the last non-empty line of a tool's stderr (redacted), for a one-line error.
tool_error_line() {
  kdl_tail_text "$1" 1 | cut -c1-300
}
