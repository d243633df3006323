#!/usr/bin/env bash
# Summary: set up, build and run every test suite; non-zero on any failure.
# Usage: scripts/test.sh [--reliability] [--skip-setup] [SUITE...]
#
# Suites, in order: shellcheck bats-lint swift bats pytest image-smoke
# (default: all; --reliability adds the reliability suite, Tests/reliability).
# One local stack (scripts/stack/up.sh) is started for bats and pytest and stopped at the end.
set -Eeuo pipefail
umask 022

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export PATH="/opt/swift/usr/bin:$ROOT/.venv/bin:$PATH"

ALL_SUITES=(shellcheck bats-lint swift bats pytest image-smoke)
RELIABILITY=false
SKIP_SETUP=false
SUITES=()
FAILED=()
STACK_DIR=""

say() { printf '\n=== %s\n' "$*" >&2; }

parse_args() {
  local arg
  for arg in "$@"; do
    case "$arg" in
      --reliability) RELIABILITY=true ;;
      --skip-setup) SKIP_SETUP=true ;;
      -h | --help) sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
      -*) echo "test.sh: unknown option $arg" >&2; exit 64 ;;
      *) SUITES+=("$arg") ;;
    esac
  done
  ((${#SUITES[@]})) || SUITES=("${ALL_SUITES[@]}")
  if $RELIABILITY; then SUITES+=(reliability); fi
}

wants() {
  local suite
  for suite in "${SUITES[@]}"; do [[ "$suite" == "$1" ]] && return 0; done
  return 1
}

# build: the release helpers as the image ships them (scripts/build.sh), used by every suite after swift.
build() {
  say "build: scripts/build.sh (swift build -c release --static-swift-stdlib --force-resolved-versions)"
  KDL_BIN_DIR=$(scripts/build.sh)
  export KDL_BIN_DIR
}

stack_up() {
  [[ -n "$STACK_DIR" ]] && return
  say "stack: starting the local KDL stack"
  STACK_DIR=$(mktemp -d /tmp/kdl-test-stack.XXXXXX)
  scripts/stack/up.sh --dir "$STACK_DIR" --seed tiny >&2
  export KDL_STACK_ENV="$STACK_DIR/stack.env"
}

cleanup() {
  if [[ -n "$STACK_DIR" ]]; then
    scripts/stack/down.sh --dir "$STACK_DIR" >&2 || true
    rm -rf "$STACK_DIR"
  fi
}

run_suite() {
  local name=$1
  shift
  say "$name"
  if "$@"; then
    echo "suite $name: ok" >&2
  else
    echo "suite $name: FAILED" >&2
    FAILED+=("$name")
  fi
}

suite_shellcheck() {
  local files=()
  mapfile -t files < <(git ls-files -co --exclude-standard -- '*.sh' '*.bash' 'backup/*' 'scripts/*' | while read -r f; do
    [[ -f "$f" ]] && head -n1 "$f" | grep -qE '^#!.*\b(ba)?sh\b|^# shellcheck shell=bash' && echo "$f"
  done | sort -u)
  shellcheck -x "${files[@]}"
}

# suite_bats_lint: a negated command (`! cmd`) asserts nothing in bats unless it is the last command of
# its test or function (errexit ignores it); every such line elsewhere is reported. Use `run !`, `refute`
# or an explicit `[[ ]]` instead.
suite_bats_lint() {
  local files=()
  mapfile -t files < <(git ls-files -co --exclude-standard -- 'Tests/*.bats' 'Tests/*.bash' | sort -u)
  ((${#files[@]})) || { echo "no bats files" >&2; return 1; }
  bats_lint "${files[@]}"
}

# bats_lint FILE...: the check of suite_bats_lint.
bats_lint() {
  awk '
    function report() { if (pending != "") { print pending ": a negated command that asserts nothing (use run ! or refute)"; bad++ } pending = "" }
    FNR == 1 { report() }
    /^[[:space:]]*(#.*)?$/ { next }
    /^}[[:space:]]*$/ { pending = ""; next }
    { report() }
    /^[[:space:]]*![[:space:]]/ { pending = FILENAME ":" FNR }
    END { report(); if (bad) exit 1; print "bats-lint: no ignored negation in " ARGC - 1 " files" }' "$@"
}

suite_swift() {
  swift build --build-tests --force-resolved-versions 2>&1 | grep -E 'warning:|error:' | grep -v '^warning: .*Source files for target' || true
  swift test --force-resolved-versions
}

suite_bats() {
  stack_up
  local files=()
  mapfile -t files < <(find Tests/backup -name '*.bats' 2>/dev/null | sort)
  ((${#files[@]})) || { echo "no bats files" >&2; return 1; }
  bats --print-output-on-failure "${files[@]}"
}

suite_pytest() {
  stack_up
  "$ROOT/.venv/bin/python" -m pytest -c Tests/pytest.ini Tests -m "not reliability" -q
}

suite_reliability() {
  stack_up
  "$ROOT/.venv/bin/python" -m pytest -c Tests/pytest.ini Tests/reliability -m reliability -q
}

suite_image_smoke() {
  if [[ -x scripts/image-smoke.sh ]]; then scripts/image-smoke.sh; else echo "image smoke test not written yet" >&2; return 1; fi
}

main() {
  parse_args "$@"
  trap cleanup EXIT
  $SKIP_SETUP || scripts/setup.sh
  # shellcheck source=/dev/null
  build
  local suite
  for suite in "${SUITES[@]}"; do
    run_suite "$suite" "suite_${suite//-/_}"
  done
  if ((${#FAILED[@]})); then
    echo "test.sh: failed suites: ${FAILED[*]}" >&2
    exit 1
  fi
  echo "test.sh: all suites passed (${SUITES[*]})" >&2
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
