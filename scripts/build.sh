#!/usr/bin/env bash
# Summary: build the release helpers as the image ships them and print the folder that holds them.
# Usage: scripts/build.sh [--quiet]
#
# swift build -c release --static-swift-stdlib --force-resolved-versions: the Swift runtime linked in, and
# exactly the dependency versions of the committed Package.resolved (a build never resolves anew). Built
# under umask 022 and made readable, so tests that run a helper as another user (nobody) can, whatever the
# caller's umask (demo.sh runs under 077). Errors and the build's last line go to stderr.
set -Eeuo pipefail
umask 022

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH="/opt/swift/usr/bin:$PATH"
readonly SWIFT_FLAGS=(-c release --static-swift-stdlib --force-resolved-versions)

main() {
  local quiet=false bin dir
  [[ "${1:-}" == --quiet ]] && quiet=true
  cd "$ROOT"
  if ! swift build "${SWIFT_FLAGS[@]}" >"${TMPDIR:-/tmp}/kdl-build.$$.log" 2>&1; then
    grep -E 'error:' "${TMPDIR:-/tmp}/kdl-build.$$.log" >&2 || tail -n 20 "${TMPDIR:-/tmp}/kdl-build.$$.log" >&2
    rm -f "${TMPDIR:-/tmp}/kdl-build.$$.log"
    echo "build.sh: swift build failed" >&2
    exit 1
  fi
  $quiet || grep -E 'warning:|Build complete' "${TMPDIR:-/tmp}/kdl-build.$$.log" | grep -v 'Source files for target' | tail -n 5 >&2
  rm -f "${TMPDIR:-/tmp}/kdl-build.$$.log"
  bin=$(swift build "${SWIFT_FLAGS[@]}" --show-bin-path)
  # Every folder from the checkout down to the helpers readable, whatever umask an earlier build ran under.
  dir=$bin
  while [[ "$dir" == "$ROOT"/* ]]; do
    chmod a+rX "$dir"
    dir=$(dirname "$dir")
  done
  chmod a+rX "$bin"/*
  printf '%s\n' "$bin"
}

main "$@"
