#!/usr/bin/env bats
# Values written in one place and read in others agree: exit codes (backup/lib/exit-codes.sh and
# Sources/BackupKit/ExitStatus.swift), the version (backup/VERSION and every reader of it), object formats
# (backup/lib/formats.sh and backup/manifest.schema.json), the registry (every component file implements the
# interface), and every manifest the bats tests produce or fake matches the schema.

setup() {
  bats_require_minimum_version 1.5.0
  load '/usr/lib/bats/bats-support/load'
  load '/usr/lib/bats/bats-assert/load'
  REPO_ROOT=$(cd "$BATS_TEST_DIRNAME/../.." && pwd)
}

# swift_exit_codes: `name=value` for each ExitStatus constant, sorted by value.
swift_exit_codes() {
  sed -nE 's/^ *public static let ([A-Za-z]+): Int32 = ([0-9]+)$/\2/p' "$REPO_ROOT/Sources/BackupKit/ExitStatus.swift" | sort -n
}

@test "the shell's exit codes and Swift's ExitStatus are the same numbers" {
  local shell_codes swift_codes
  swift_codes=$(swift_exit_codes | paste -sd' ')
  [[ -n "$swift_codes" ]]
  # The shell has two more: 3 (partial backup) and the signals (128 + N), which no helper returns.
  shell_codes=$(bash -c "source '$REPO_ROOT/backup/lib/exit-codes.sh'; for v in \${!EX_@}; do echo \${!v}; done" |
    grep -vxE '3|130|143' | sort -n | paste -sd' ')
  assert_equal "$shell_codes" "$swift_codes"
  assert_equal "$swift_codes" "0 1 64 66 69 74 75 77"
}

@test "no script writes an exit status as a bare number where exit-codes.sh names it" {
  run grep -nE '(return|die) +"?(3|64|66|69|74|75|77|130|143)\b' "$REPO_ROOT"/backup/*.sh "$REPO_ROOT"/backup/lib/*.sh \
    "$REPO_ROOT"/backup/components/*.sh
  assert_output ""
}

@test "one version: backup/VERSION, both scripts, Chart.yaml's appVersion, the Dockerfile" {
  local version
  version=$(tr -d ' \n' <"$REPO_ROOT/backup/VERSION")
  [[ "$version" =~ ^[0-9]+\.[0-9]+\.[0-9]+ ]]
  run -0 "$REPO_ROOT/backup/backup.sh" --version
  assert_output "backup.sh $version"
  run -0 "$REPO_ROOT/backup/restore.sh" --version
  assert_output "restore.sh $version"
  assert_equal "$(sed -nE 's/^appVersion: "?([^"]+)"?$/\1/p' "$REPO_ROOT/helm/kdl-server/Chart.yaml")" "$version"
  # The Dockerfile takes VERSION as a build argument and refuses one that differs from backup/VERSION.
  run grep -nE '^ARG VERSION=' "$REPO_ROOT/backup/Dockerfile"
  assert_failure
  grep -q 'backup/VERSION' "$REPO_ROOT/backup/Dockerfile"
  run grep -rnE '"[0-9]+\.[0-9]+\.[0-9]+"' "$REPO_ROOT/Sources" --include=*.swift
  refute_output --partial "$version"
}

@test "one version: every helper built from these sources reports backup/VERSION" {
  [[ -n "${KDL_BIN_DIR:-}" ]] || skip "KDL_BIN_DIR is not set (scripts/test.sh sets it after its build)"
  local version tool
  version=$(tr -d ' \n' <"$REPO_ROOT/backup/VERSION")
  for tool in s3-put s3-get s3-ls s3-prune k8s-export mlflow-scan notify bucket-sync; do
    run -0 "$KDL_BIN_DIR/$tool" --version
    assert_output "$version"
  done
}

@test "formats.sh and the manifest schema name the same formats" {
  local shell_formats schema_formats
  shell_formats=$(bash -c "source '$REPO_ROOT/backup/lib/common.sh'; source '$REPO_ROOT/backup/lib/formats.sh'; printf '%s\n' \"\${!KDL_FORMAT_CODEC[@]}\"" | sort | paste -sd' ')
  schema_formats=$(jq -r '."$defs".object.properties.format.enum[]' "$REPO_ROOT/backup/manifest.schema.json" | sort | paste -sd' ')
  assert_equal "$shell_formats" "$schema_formats"
  assert_equal "$(bash -c "source '$REPO_ROOT/backup/lib/common.sh'; source '$REPO_ROOT/backup/lib/formats.sh'; printf '%s\n' \"\${!KDL_FORMAT_CHECK[@]}\"" | sort | paste -sd' ')" "$shell_formats"
}

@test "every component file registers itself and implements the interface; the orders are unique" {
  run -0 bash -c "source '$REPO_ROOT/backup/lib/common.sh'; source '$REPO_ROOT/backup/lib/registry.sh'; kdl_load_components '$REPO_ROOT/backup/components'
    echo \"\${KDL_COMPONENTS[*]}|\${KDL_RESTORE_STEPS[*]}\"; printf '%s\n' \"\${KDL_COMPONENT_ORDER[@]}\" | sort | uniq -d; printf '%s\n' \"\${KDL_STEP_ORDER[@]}\" | sort | uniq -d"
  assert_output 'gitea postgres mongodb mlflow volumes kubernetes minio|k8s-secrets gitea-db postgres gitea-data volumes mongodb minio mlflow k8s-resources'
}

@test "a component file without one of the interface's functions is refused by name" {
  mkdir -p "$BATS_TEST_TMPDIR/components"
  printf 'kdl_component broken 99\nbroken_config() { :; }\nbroken_backup() { :; }\n' >"$BATS_TEST_TMPDIR/components/broken.sh"
  run -1 --separate-stderr bash -c "source '$REPO_ROOT/backup/lib/common.sh'; source '$REPO_ROOT/backup/lib/registry.sh'; kdl_load_components '$BATS_TEST_TMPDIR/components'"
  assert_equal "$stderr" "kdl-backup: component broken has no broken_preflight"
}

@test "schema.jq accepts the sets written by 0.1.0 and names the first violation of a broken manifest" {
  local m violation
  for m in "$REPO_ROOT"/Tests/fixtures/sets/*/manifest.json "$REPO_ROOT"/Tests/fixtures/manifests/*.json; do
    violation=$(bash -c "source '$REPO_ROOT/backup/lib/common.sh'; source '$REPO_ROOT/backup/lib/manifest.sh'; manifest_violation '$m'")
    assert_equal "$violation" ""
  done
  m="$REPO_ROOT/Tests/fixtures/sets/20250101T020000Z/manifest.json"
  jq '.leak = "x"' "$m" >"$BATS_TEST_TMPDIR/bad.json"
  run -0 bash -c "source '$REPO_ROOT/backup/lib/common.sh'; source '$REPO_ROOT/backup/lib/manifest.sh'; manifest_violation '$BATS_TEST_TMPDIR/bad.json'"
  assert_output 'manifest: unexpected field leak'
  jq '.components[1].objects[0].sha256 = "abc"' "$m" >"$BATS_TEST_TMPDIR/bad2.json"
  run -0 bash -c "source '$REPO_ROOT/backup/lib/common.sh'; source '$REPO_ROOT/backup/lib/manifest.sh'; manifest_violation '$BATS_TEST_TMPDIR/bad2.json'"
  assert_output 'manifest.components[1].objects[0].sha256: "abc" does not match ^[0-9a-f]{64}$'
  printf 'not json' >"$BATS_TEST_TMPDIR/bad3.json"
  run -0 bash -c "source '$REPO_ROOT/backup/lib/common.sh'; source '$REPO_ROOT/backup/lib/manifest.sh'; manifest_violation '$BATS_TEST_TMPDIR/bad3.json'"
  assert_output --regexp '^not JSON: '
}
