#!/usr/bin/env bash
# Summary: measure the performance targets of every issue and print one table per target.
# Usage: scripts/bench.sh [NAME...]     (NAME: a file of scripts/bench/, e.g. s3 k8s-export; default all)
#
# Each scripts/bench/NAME.sh is sourced-free and self-contained: it may use $KDL_BIN_DIR (release
# helpers) and $KDL_STACK_ENV (a running local stack) and prints its own markdown table.
set -Eeuo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH="/opt/swift/usr/bin:$ROOT/.venv/bin:$PATH"

main() {
  scripts/setup.sh
  KDL_BIN_DIR=$(scripts/build.sh --quiet)
  export KDL_BIN_DIR
  local names=("$@") name
  if ((${#names[@]} == 0)); then
    for name in scripts/bench/*.sh; do names+=("$(basename "$name" .sh)"); done
  fi
  for name in "${names[@]}"; do
    printf '\n## %s\n\n' "$name"
    bash "scripts/bench/$name.sh"
  done
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
