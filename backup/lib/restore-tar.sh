# shellcheck shell=bash
# Summary: refuse hostile tar streams before anything is extracted.
#
# tar_check_listing reads a tar stream on stdin, lists it with GNU tar (`--quoting-style=c`, so
# every name and link target is a quoted C string and " -> " inside a name cannot confuse the
# parser) and refuses: absolute member names, any `..` component, symlinks whose target is
# absolute or leaves the extraction root, hard links to such names, members below a symlink
# member (a link followed by a later entry is how "safe-looking" paths escape), and device or
# FIFO nodes. On success it prints `entries=N` on stdout. GNU tar's own protections still apply
# at extraction; this check does not rely on them.

# tar_path_escapes PATH: true when the relative PATH, resolved lexically, leaves its root.
tar_path_escapes() {
  local path=$1 part depth=0
  local -a parts
  [[ "$path" == /* ]] && return 0
  IFS=/ read -r -a parts <<<"$path"
  for part in "${parts[@]}"; do
    case "$part" in
      '' | .) ;;
      ..) depth=$((depth - 1)); ((depth < 0)) && return 0 ;;
      *) depth=$((depth + 1)) ;;
    esac
  done
  return 1
}

# tar_has_dotdot PATH: true when PATH has a `..` component.
tar_has_dotdot() {
  [[ "/$1/" == */../* ]]
}

# tar_refuse MESSAGE: one line saying why the archive is refused; exits 74 from the check.
tar_refuse() {
  printf 'hostile tar entry refused: %s\n' "$1" >&2
  exit 74
}

# tar_check_listing: reads a tar stream on stdin; exit 0 and `entries=N` when every entry is safe.
tar_check_listing() {
  local line mode rest name target kind count=0 prefix parent
  local -A symlinks=()
  local re_link='^"((\\.|[^"\\])*)" (->|link to) "((\\.|[^"\\])*)"$'
  local re_plain='^"((\\.|[^"\\])*)"$'
  # Verbose listing: MODE OWNER/GROUP SIZE DATE TIME "NAME" [-> "TARGET" | link to "TARGET"]
  while IFS= read -r line; do
    mode=${line%% *}
    kind=${mode:0:1}
    rest=${line#*\"}
    rest="\"$rest"
    target=""
    if [[ "$rest" =~ $re_link ]]; then
      name=${BASH_REMATCH[1]}
      target=${BASH_REMATCH[4]}
    elif [[ "$rest" =~ $re_plain ]]; then
      name=${BASH_REMATCH[1]}
    else
      tar_refuse "unparsable listing line: ${line:0:200}"
    fi
    count=$((count + 1))
    [[ "$name" == /* ]] && tar_refuse "absolute path: $name"
    tar_has_dotdot "$name" && tar_refuse "'..' in path: $name"
    # A member below a symlink member would be written through the link.
    prefix=${name%/}
    while [[ "$prefix" == */* ]]; do
      prefix=${prefix%/*}
      [[ -n "${symlinks[$prefix]+set}" ]] && tar_refuse "path through symlink $prefix: $name"
    done
    case "$kind" in
      l)
        [[ "$target" == /* ]] && tar_refuse "symlink to absolute path: $name -> $target"
        parent=""
        [[ "${name%/}" == */* ]] && parent=${name%/*}
        tar_path_escapes "${parent:+$parent/}$target" && tar_refuse "symlink leaving the root: $name -> $target"
        symlinks[${name%/}]=1
        ;;
      h)
        [[ "$target" == /* ]] && tar_refuse "hard link to absolute path: $name -> $target"
        tar_has_dotdot "$target" && tar_refuse "hard link with '..': $name -> $target"
        ;;
      - | d) ;;
      *) tar_refuse "special file (type $kind): $name" ;;
    esac
  done < <(tar -tv --quoting-style=c --numeric-owner -f -)
  local tar_status=0
  wait "$!" || tar_status=$?
  ((tar_status == 0)) || { printf 'not a readable tar stream (tar exit %d)\n' "$tar_status" >&2; exit 74; }
  printf 'entries=%d\n' "$count"
}
