#!/usr/bin/env bats
# backup/backup.sh with its helpers stubbed (test_helper/stubs): configuration errors, the
# streaming pipeline and its status checks, the manifest, encryption, redaction, exit codes,
# notification and retention order, SIGTERM. The real helpers and services run in Tests/e2e.

setup() {
  load 'test_helper/backup-setup'
  _backup_setup
}

teardown() {
  _backup_teardown
}

# in_script CODE: runs CODE in a bash that sourced backup.sh (main is not run).
in_script() {
  bash -c "source '$BACKUP_SH'; set +e; $1"
}

@test "--help prints the usage and --version the helpers' version" {
  run -0 "$BACKUP_SH" --help
  assert_output --partial 'Usage: backup.sh [--preflight]'
  run -0 "$BACKUP_SH" --version
  assert_output 'backup.sh 0.1.0'
}

@test "an unknown argument is a usage error (64) on one line" {
  run -64 --separate-stderr "$BACKUP_SH" --frobnicate
  assert_equal "$stderr" "backup: unknown argument '--frobnicate' (usage: backup.sh [--preflight])"
}

@test "no bucket: exit 64 with one clear line, nothing called" {
  unset BACKUP_S3_BUCKET
  run -64 --separate-stderr "$BACKUP_SH"
  assert_equal "$stderr" "backup: BACKUP_S3_BUCKET (or BUCKET_NAME) is required"
  assert_equal "$(cat "$STUB_LOG")" ""
}

@test "the original chart's BUCKET_NAME is accepted" {
  unset BACKUP_S3_BUCKET
  export BUCKET_NAME=kdl-backups
  run -0 "$BACKUP_SH"
  assert [ -f "$(manifest)" ]
}

@test "configuration errors exit 64 before anything runs" {
  local case
  for case in 'BACKUP_COMPONENTS=gitea,postgres' 'BACKUP_ID=yesterday' 'BACKUP_KEEP_LAST=-1' \
    'BACKUP_REQUIRE_ENCRYPTION=maybe' 'BACKUP_S3_PREFIX=/' 'BACKUP_S3_BUCKET=Bad_Bucket' \
    'K8S_RESOURCES=secrets.v1.example.com' 'BACKUP_COMPONENTS= ' 'BACKUP_PG_DUMP_COMPRESS=9; rm -rf /' \
    'BACKUP_PG_DUMP_COMPRESS=brotli'; do
    run -64 --separate-stderr env "$case" "$BACKUP_SH"
    assert_equal "$(wc -l <<<"$stderr")" 1
    [[ "$stderr" == backup:* ]]
  done
  assert_equal "$(cat "$STUB_LOG")" ""
}

@test "mongodb selected without MONGO_URI: 64 naming the variable" {
  unset MONGO_URI
  run -64 --separate-stderr "$BACKUP_SH"
  assert_equal "$stderr" "backup: MONGO_URI is required to back up mongodb (or leave mongodb out of BACKUP_COMPONENTS)"
}

@test "BACKUP_REQUIRE_ENCRYPTION=true without recipients refuses to run (64)" {
  export BACKUP_REQUIRE_ENCRYPTION=true
  run -64 --separate-stderr "$BACKUP_SH"
  assert_equal "$stderr" "backup: BACKUP_REQUIRE_ENCRYPTION=true but BACKUP_AGE_RECIPIENTS is empty: refusing to store Secrets in plaintext"
}

@test "an age identity given as a recipient is refused without printing it" {
  local identity
  identity=$(age-keygen 2>/dev/null | grep '^AGE-SECRET-KEY-')
  export BACKUP_AGE_RECIPIENTS="$identity"
  run -64 --separate-stderr "$BACKUP_SH"
  assert_equal "$(wc -l <<<"$stderr")" 1
  [[ "$stderr" == *"is not an age public key"* ]]
  [[ "$stderr" != *"${identity:20}"* ]]
}

@test "load_config: defaults of the environment contract" {
  run -0 in_script 'load_config; echo "$KDL_PREFIX|${SELECTED[*]}|$PGDATABASE|${MONGO_DBS[*]}|$MLFLOW_DIR|$K8S_NS|${K8S_RES[*]}|$KEEP_LAST|$KEEP_DAYS|${GITEA_EXCLUDES[*]}"'
  assert_output "kdl-backup|gitea mongodb mlflow kubernetes|gitea|kdl admin|$MLFLOW_ROOT|kdl|kdlprojects.v1.project.konstellation.io usertools.v1alpha1.kdl.konstellation.io secrets|8|0|gitea/indexers ssh lost+found"
}

@test "load_config: lists split on commas and spaces; the namespace falls back to the service account's" {
  mkdir -p "$BATS_TEST_TMPDIR/sa"
  echo kdl-prod >"$BATS_TEST_TMPDIR/sa/namespace"
  export KDL_SERVICE_ACCOUNT_DIR="$BATS_TEST_TMPDIR/sa" BACKUP_COMPONENTS='mlflow, gitea' MONGO_DATABASES='kdl,admin,extra'
  export BACKUP_S3_PREFIX=/backups/kdl/ K8S_SECRET_NAME_REGEX=''
  run -0 in_script 'load_config; echo "${SELECTED[*]}|${MONGO_DBS[*]}|$K8S_NS|${K8S_RES[*]}|$KDL_PREFIX"'
  assert_output 'mlflow gitea|kdl admin extra|kdl-prod|kdlprojects.v1.project.konstellation.io usertools.v1alpha1.kdl.konstellation.io|backups/kdl'
}

@test "a full run: exit 0, every object in the manifest with the stored bytes' size and sha256, manifest last" {
  run -0 --separate-stderr "$BACKUP_SH"
  local m key
  m=$(manifest)
  assert_equal "$(jq -r '.format, .id, .status, (.encryption | tostring)' "$m" | paste -sd' ')" "kdl-backup/v1 $BACKUP_ID success null"
  assert_equal "$(jq -r '[.components[].name] | join(" ")' "$m")" "gitea mongodb mlflow kubernetes"
  assert_equal "$(jq -r '[.components[].objects[].key] | join(" ")' "$m")" \
    "gitea/postgres.dump gitea/data.tar.zst mongodb/kdl.archive.gz mongodb/admin.archive.gz mlflow/churn/mlflow.db.zst mlflow/demo/mlflow.db.zst mlflow/demo/artifacts.tar.zst kubernetes/kdlprojects.yaml.zst kubernetes/usertools.yaml.zst kubernetes/secrets.yaml.zst"
  while IFS=$'\t' read -r key bytes sha; do
    assert_equal "$(stat -c %s "$(set_dir)/$key")" "$bytes"
    assert_equal "$(sha256sum <"$(set_dir)/$key" | cut -d' ' -f1)" "$sha"
  done < <(jq -r '.components[].objects[] | [.key, .bytes, .sha256] | @tsv' "$m")
  assert_equal "$(jq '[.components[].objects[] | select(.verified != true or .encrypted != false)] | length' "$m")" 0
  assert_equal "$(jq -r '.components | map(.error) | unique | tostring' "$m")" '[null]'
  # manifest.json is the last upload; notify start came first, finish after it; retention after that
  assert_equal "$(grep '^s3-put' "$STUB_LOG" | tail -n1 | awk '{print $NF}')" "s3://kdl-backups/kdl-backup/$BACKUP_ID/manifest.json"
  assert_equal "$(head -n1 "$STUB_LOG")" "notify --event start"
  run grep -nE '^(notify --event finish|s3-prune --keep-last 8)' "$STUB_LOG"
  assert_line --index 0 --regexp '^[0-9]+:notify --event finish --status success --manifest .* --log-tail '
  assert_line --index 1 --regexp '^[0-9]+:s3-prune --keep-last 8 --keep-days 0 s3://kdl-backups/kdl-backup$'
}

@test "the data tar leaves out the excluded folders and the details count what was stored" {
  run -0 "$BACKUP_SH"
  run -0 bash -c "zstd -dc '$(set_dir)/gitea/data.tar.zst' | tar -tf -"
  assert_line './git/repositories/alice/demo.git/HEAD'
  assert_line './gitea/conf/app.ini'
  refute_line --partial 'indexers'
  refute_line --partial './ssh'
  refute_line --partial 'lost+found'
  assert_equal "$(jq -c '.components[0].details.tar | {files, repositories}' "$(manifest)")" '{"files":2,"repositories":1}'
  assert_equal "$(jq -c '.components[1].details.databases.kdl.collections' "$(manifest)")" '{"projects":3,"users":2}'
  assert_equal "$(jq -c '[.components[2].details.projects[] | {project, folder}]' "$(manifest)")" \
    '[{"project":"churn","folder":"kdl-churn-mlflow-claim-pvc-3c4d"},{"project":"demo","folder":"kdl-demo-mlflow-claim-pvc-1a2b"}]'
  assert_equal "$(jq -c '.components[3].details.objects' "$(manifest)")" '{"kdlprojects":2,"usertools":2,"secrets":2}'
}

@test "no secret in any log line, argument list or the manifest; the MongoDB URI goes through --config" {
  run -0 --separate-stderr "$BACKUP_SH"
  local secret
  for secret in "$PGPASSWORD" "$MONGO_URI" m0ngo-pass-123 token-abc-789; do
    [[ "$stderr" != *"$secret"* ]]
    refute grep -qF -- "$secret" "$STUB_LOG"
    refute grep -qF -- "$secret" "$(manifest)"
  done
  grep -q '^mongodump --config .* --db kdl --archive --gzip$' "$STUB_LOG"
  refute grep -q -- '--uri' "$STUB_LOG"
  [[ "$stderr" != *"set -x"* ]]
  # one logfmt line per step, and a summary table at the end
  [[ "$stderr" == *"level=info tool=backup component=gitea step=pg_dump key=gitea/postgres.dump bytes="* ]]
  [[ "$stderr" == *"component   status   objects"* ]]
}

@test "secrets are warned about when stored unencrypted" {
  run -0 --separate-stderr "$BACKUP_SH"
  [[ "$stderr" == *'level=warn tool=backup component=kubernetes step=secrets encrypted=false'* ]]
}

@test "with recipients every object but the manifest is age-encrypted and decrypts to the export" {
  local identity recipient
  age-keygen -o "$BATS_TEST_TMPDIR/key.txt" 2>/dev/null
  recipient=$(age-keygen -y "$BATS_TEST_TMPDIR/key.txt")
  age-keygen -o "$BATS_TEST_TMPDIR/key2.txt" 2>/dev/null
  export BACKUP_AGE_RECIPIENTS="$recipient, $(age-keygen -y "$BATS_TEST_TMPDIR/key2.txt")" BACKUP_REQUIRE_ENCRYPTION=true
  run -0 "$BACKUP_SH"
  local m
  m=$(manifest)
  assert_equal "$(jq -r '.encryption.type, (.encryption.recipients | length)' "$m" | paste -sd' ')" "age 2"
  assert_equal "$(jq '[.components[].objects[] | select(.encrypted != true or (.key | endswith(".age") | not))] | length' "$m")" 0
  refute grep -rqF "$STUB_SECRET_VALUE" "$FAKE_S3"
  # Compressed plaintext hides a secret from grep: every stored object but the manifest must be an age file.
  local object
  while IFS= read -r object; do
    assert_equal "$(head -c 21 "$object")" "age-encryption.org/v1"
  done < <(find "$(set_dir)" -type f ! -name manifest.json)
  run -0 bash -c "age -d -i '$BATS_TEST_TMPDIR/key2.txt' '$(set_dir)/kubernetes/secrets.yaml.zst.age' | zstd -dc"
  assert_line "  KEY: $STUB_SECRET_VALUE"
}

@test "Postgres down: gitea fails (data still stored), the rest succeed: partial, exit 3, no retention" {
  export STUB_PG_DOWN=1
  run -3 --separate-stderr "$BACKUP_SH"
  local m
  m=$(manifest)
  assert_equal "$(jq -r '.status' "$m")" partial
  assert_equal "$(jq -r '[.components[] | .name + "=" + .status] | join(" ")' "$m")" \
    "gitea=failure mongodb=success mlflow=success kubernetes=success"
  [[ "$(jq -r '.components[0].error' "$m")" == *"PostgreSQL 127.0.0.1:5432/gitea unreachable"*"Connection refused"* ]]
  assert_equal "$(jq -r '[.components[0].objects[].key] | join(" ")' "$m")" "gitea/data.tar.zst"
  grep -q '^notify --event finish --status partial --manifest' "$STUB_LOG"
  refute grep -qE '^s3-prune --keep-last [0-9]+ --keep-days' "$STUB_LOG"
}

@test "every component failing is a failure: exit 1, manifest still written" {
  export STUB_PG_DOWN=1 STUB_MONGO_DOWN=1 STUB_K8S_EXIT=69 GITEA_DATA_DIR=/nonexistent MLFLOW_ROOT=/nonexistent
  run -1 "$BACKUP_SH"
  assert_equal "$(jq -r '.status, ([.components[].status] | unique | join(","))' "$(manifest)" | paste -sd' ')" "failure failure"
}

@test "a producer failing mid-stream fails its component and is not listed; the run goes on" {
  export STUB_PG_DUMP_FAIL=1
  run -3 --separate-stderr "$BACKUP_SH"
  local error
  error=$(jq -r '.components[0].error' "$(manifest)")
  [[ "$error" == "pg_dump: producer exited 1: pg_dump: error: connection to server lost"* ]]
  assert_equal "$(jq -r '[.components[0].objects[].key] | join(" ")' "$(manifest)")" "gitea/data.tar.zst"
}

@test "an upload failure names s3-put and the key; other objects still upload" {
  export STUB_S3_PUT_FAIL=mongodb/kdl.archive.gz
  run -3 "$BACKUP_SH"
  local error
  error=$(jq -r '.components[1].error' "$(manifest)")
  [[ "$error" == "mongodump-kdl: s3-put exited 69: s3-put: UploadPart s3://kdl-backups/kdl-backup/$BACKUP_ID/mongodb/kdl.archive.gz: InternalError"* ]]
  assert_equal "$(jq -r '[.components[1].objects[].key] | join(" ")' "$(manifest)")" "mongodb/admin.archive.gz"
}

@test "a verification failure is recorded as verified=false and fails the component" {
  mkdir -p "$BATS_TEST_TMPDIR/more"
  printf '#!/usr/bin/env bash\ncat >/dev/null; echo "pg_restore: error: corrupt" >&2; exit 1\n' >"$BATS_TEST_TMPDIR/more/pg_restore"
  chmod +x "$BATS_TEST_TMPDIR/more/pg_restore"
  PATH="$BATS_TEST_TMPDIR/more:$PATH" run -3 "$BACKUP_SH"
  assert_equal "$(jq -c '.components[0].objects[0] | {key, verified}' "$(manifest)")" '{"key":"gitea/postgres.dump","verified":false}'
  [[ "$(jq -r '.components[0].error' "$(manifest)")" == *"verification of gitea/postgres.dump failed: pg_restore: error: corrupt"* ]]
}

@test "a Kubernetes export whose document count differs from k8s-export's summary is unverified" {
  STUB_K8S_SUMMARY=3 run -3 "$BACKUP_SH"
  assert_equal "$(jq -c '[.components[3].objects[] | .verified] | unique' "$(manifest)")" '[false]'
  [[ "$(jq -r '.components[3].error' "$(manifest)")" == "kdlprojects: k8s-export reported 3 objects but 2 YAML documents were stored"* ]]
}

@test "Gitea's dump and data tar stream at the same time; the manifest keeps their order" {
  mkdir -p "$BATS_TEST_TMPDIR/waiting"
  # This pg_dump only finishes once the data tar's upload has started: run one after the
  # other, the dump would fail.
  printf '%s\n' '#!/usr/bin/env bash' \
    '[[ "$1" == --version ]] && { echo "pg_dump (PostgreSQL) 15.4"; exit 0; }' \
    'for i in $(seq 100); do grep -q "gitea/data.tar.zst" "$STUB_LOG" && { printf "PGDMP concurrent"; exit 0; }; sleep 0.05; done' \
    'echo "pg_dump: the tar never started" >&2; exit 1' >"$BATS_TEST_TMPDIR/waiting/pg_dump"
  chmod +x "$BATS_TEST_TMPDIR/waiting/pg_dump"
  PATH="$BATS_TEST_TMPDIR/waiting:$PATH" run -0 "$BACKUP_SH"
  assert_equal "$(jq -r '.components[0] | [.status, (.objects | map(.key) | join(" "))] | join(" ")' "$(manifest)")" \
    "success gitea/postgres.dump gitea/data.tar.zst"
}

@test "pg_dump compresses at gzip level 1 unless BACKUP_PG_DUMP_COMPRESS says otherwise" {
  run -0 "$BACKUP_SH"
  grep -qx 'pg_dump --format=custom --no-password --compress=1' "$STUB_LOG"
  assert_equal "$(jq -r '.components[0].details.compress' "$(manifest)")" 1
  : >"$STUB_LOG"
  BACKUP_ID=20240102T030406Z BACKUP_PG_DUMP_COMPRESS=zstd:3 run -0 "$BACKUP_SH"
  grep -qx 'pg_dump --format=custom --no-password --compress=zstd:3' "$STUB_LOG"
}

@test "a pg_dump that cannot compress as BACKUP_PG_DUMP_COMPRESS says fails gitea's database at preflight, naming it" {
  export STUB_PG_DUMP_NO_COMPRESS=zstd BACKUP_PG_DUMP_COMPRESS=zstd:3
  run -3 "$BACKUP_SH"
  assert_equal "$(jq -r '.components[0].error' "$(manifest)")" "pg_dump: skipped: pg_dump 15 cannot compress with BACKUP_PG_DUMP_COMPRESS=zstd:3: pg_dump: error: invalid compression specification: this build does not support compression with ZSTD"
  refute grep -q '^pg_dump --format=custom' "$STUB_LOG"
  BACKUP_ID=20240102T030406Z run -69 "$BACKUP_SH" --preflight
  BACKUP_ID=20240102T030406Z BACKUP_PG_DUMP_COMPRESS=lz4 run -0 "$BACKUP_SH" --preflight
}

@test "pg_dump older than the server: gitea's database fails naming both majors" {
  export STUB_PG_SERVER_NUM=170002 STUB_PG_DUMP_MAJOR=15
  run -3 "$BACKUP_SH"
  [[ "$(jq -r '.components[0].error' "$(manifest)")" == *"pg_dump 15 is older than the PostgreSQL 17 server"* ]]
  refute grep -q '^pg_dump --format=custom' "$STUB_LOG"
}

@test "an unreadable MLflow store fails mlflow but the other stores are stored" {
  mkdir -p "$MLFLOW_ROOT/unreadable-x"
  echo db >"$MLFLOW_ROOT/unreadable-x/mlflow.db"
  run -3 "$BACKUP_SH"
  local m
  m=$(manifest)
  assert_equal "$(jq -r '.components[2].status' "$m")" failure
  [[ "$(jq -r '.components[2].error' "$m")" == *"unreadable-x/mlflow.db: unreadable: permission denied"* ]]
  assert_equal "$(jq -r '[.components[2].objects[].key] | join(" ")' "$m")" \
    "mlflow/churn/mlflow.db.zst mlflow/demo/mlflow.db.zst mlflow/demo/artifacts.tar.zst"
}

@test "an MLflow snapshot failing integrity_check is not stored; the other stores are" {
  local broken="$MLFLOW_ROOT/kdl-broken-mlflow-claim-pvc-5e6f"
  mkdir -p "$broken"
  { printf 'SQLite format 3\0'; head -c 8192 /dev/urandom; } >"$broken/mlflow.db"
  BACKUP_COMPONENTS=mlflow run -1 --separate-stderr "$BACKUP_SH"
  local m
  m=$(manifest)
  assert_equal "$(jq -r '.components[] | select(.name == "mlflow") | .status' "$m")" failure
  [[ "$(jq -r '.components[] | select(.name == "mlflow") | .error' "$m")" == *"mlflow-broken: producer exited 1: integrity_check of the snapshot failed, nothing stored"* ]]
  assert_equal "$(jq -r '[.components[] | select(.name == "mlflow") | .objects[] | "\(.key) \(.verified)"] | join(",")' "$m")" \
    "mlflow/churn/mlflow.db.zst true,mlflow/demo/mlflow.db.zst true,mlflow/demo/artifacts.tar.zst true"
  [ ! -e "$(set_dir)/mlflow/broken" ] || [ -z "$(find "$(set_dir)/mlflow/broken" -type f)" ]
}

@test "unselected components are recorded as skipped and are not run" {
  export BACKUP_COMPONENTS=kubernetes
  run -0 "$BACKUP_SH"
  assert_equal "$(jq -r '[.components[] | .name + "=" + .status] | join(" ")' "$(manifest)")" \
    "gitea=skipped mongodb=skipped mlflow=skipped kubernetes=success"
  assert_equal "$(grep -E '^(pg_dump|psql|mongodump|mlflow-scan) ' "$STUB_LOG" | grep -v -- '--version$' || true)" ""
}

@test "--preflight: checks only; the probe is put then deleted; nothing else uploaded" {
  run -0 --separate-stderr "$BACKUP_SH" --preflight
  assert_equal "$(grep -c '^s3-put' "$STUB_LOG")" 1
  grep -q "^s3-put --content-type text/plain .* s3://kdl-backups/kdl-backup/.preflight/19700101T000000Z/probe-$BACKUP_ID-" "$STUB_LOG"
  grep -q '^s3-prune --keep-last 1 --incomplete-grace 0s s3://kdl-backups/kdl-backup/.preflight$' "$STUB_LOG"
  assert_equal "$(find "$FAKE_S3" -type f | wc -l)" 0
  refute grep -qE '^(notify|pg_dump --format)' "$STUB_LOG"
  [[ "$stderr" == *"step=preflight result=ok"* ]]
}

@test "without MINIO_ENDPOINT the run leaves minio out and says so; BACKUP_COMPONENTS=minio without it is 64" {
  run -0 --separate-stderr "$BACKUP_SH" --preflight
  assert_equal "$(grep -c 'component=minio result=skipped msg="MINIO_ENDPOINT is not set' <<<"$stderr")" 1
  [[ "$stderr" != *"check=minio"* ]]
  BACKUP_COMPONENTS=minio run -64 --separate-stderr "$BACKUP_SH" --preflight
  assert_equal "$stderr" "backup: BACKUP_COMPONENTS selects minio but MINIO_ENDPOINT is not set (the platform's MinIO, http(s)://host:port)"
}

@test "--preflight: S3 refusing the credentials is 77, a missing bucket 64, S3 down 69" {
  STUB_S3_PUT_EXIT=77 run -77 --separate-stderr "$BACKUP_SH" --preflight
  [[ "$stderr" == *"check=s3 result=failed code=77"*"AccessDenied"* ]]
  STUB_S3_PUT_EXIT=66 run -64 "$BACKUP_SH" --preflight
  STUB_S3_PUT_EXIT=69 run -69 "$BACKUP_SH" --preflight
  refute grep -qE '^(psql|mongodump|k8s-export) ' "$STUB_LOG"
}

@test "a run stops before uploading anything when S3 refuses: 77, failure notified, no manifest" {
  STUB_S3_PUT_EXIT=77 run -77 "$BACKUP_SH"
  assert_equal "$(find "$FAKE_S3" -type f 2>/dev/null | wc -l)" 0
  grep -q '^notify --event finish --status failure --log-tail' "$STUB_LOG"
  refute grep -q '^pg_dump --format' "$STUB_LOG"
}

@test "BACKUP_PLATFORM=auto asks k8s-export --served which KDLProject is served, and says what it chose" {
  unset BACKUP_PLATFORM
  run -0 --separate-stderr "$BACKUP_SH" --preflight
  assert_equal "$(grep -c -- '--served kdlprojects.v1.kdl.konstellation.io kdlprojects.v1.project.konstellation.io$' "$STUB_LOG")" 1
  # The stub prints YAML, not "RESOURCE served": neither generation is found, KDL 5's defaults apply.
  assert_regex "$stderr" 'platform=kdl5 reason="BACKUP_PLATFORM=auto: the API server serves neither kdlprojects.v1.kdl.konstellation.io nor kdlprojects.v1.project.konstellation.io; KDL 5.s defaults"'
  STUB_K8S_EXIT=77 run -77 --separate-stderr "$BACKUP_SH" --preflight
  assert_regex "$stderr" 'platform=kdl5 reason="BACKUP_PLATFORM=auto: the API server could not be asked \(k8s-export exit 77'
  BACKUP_PLATFORM=kdl6 run -0 --separate-stderr "$BACKUP_SH" --preflight
  assert_regex "$stderr" 'components="mongodb mlflow kubernetes"'
  assert_regex "$stderr" 'platform=kdl6 reason="BACKUP_PLATFORM=kdl6"'
  assert_regex "$stderr" 'check=kubernetes result=ok namespace=kdl resources="kdlprojects.v1.kdl.konstellation.io kdlusertools.v1.kdl.konstellation.io secrets"'
}

@test "--preflight: a source down is 69, a forbidden API server 77" {
  STUB_PG_DOWN=1 run -69 "$BACKUP_SH" --preflight
  STUB_K8S_EXIT=77 run -77 --separate-stderr "$BACKUP_SH" --preflight
  [[ "$stderr" == *"check=kubernetes result=failed code=77"* ]]
}

@test "an existing complete set with the same id is not overwritten (64)" {
  run -0 "$BACKUP_SH"
  run -64 --separate-stderr "$BACKUP_SH"
  [[ "$stderr" == *"a complete set with id $BACKUP_ID already exists"* ]]
}

@test "a notification or retention failure never changes the outcome" {
  STUB_NOTIFY_EXIT=69 STUB_S3_PRUNE_EXIT=69 run -0 --separate-stderr "$BACKUP_SH"
  [[ "$stderr" == *"level=warn tool=backup step=notify event=start exit=69"* ]]
  [[ "$stderr" == *"level=warn tool=backup step=prune exit=69"* ]]
}

@test "BACKUP_KEEP_LAST=0 and BACKUP_KEEP_DAYS=0 keep everything: s3-prune is not run" {
  BACKUP_KEEP_LAST=0 BACKUP_KEEP_DAYS=0 run -0 "$BACKUP_SH"
  refute grep -qE '^s3-prune --keep-last [0-9]+ --keep-days' "$STUB_LOG"
}

@test "SIGTERM mid-upload stops every child, writes no manifest, removes the temp dir, exits 143" {
  mkdir -p "$BATS_TEST_TMPDIR/slow"
  # Both Gitea objects hang mid-stream: the dump and the data tar run at the same time.
  printf '#!/usr/bin/env bash\n[[ "$1" == --version ]] && { echo "pg_dump (PostgreSQL) 15.4"; exit 0; }\nprintf PGDMP; exec sleep 300\n' \
    >"$BATS_TEST_TMPDIR/slow/pg_dump"
  printf '#!/usr/bin/env bash\n[[ " $* " == *" --create "* ]] && exec sleep 301\nexec /usr/bin/tar "$@"\n' >"$BATS_TEST_TMPDIR/slow/tar"
  chmod +x "$BATS_TEST_TMPDIR/slow/pg_dump" "$BATS_TEST_TMPDIR/slow/tar"
  PATH="$BATS_TEST_TMPDIR/slow:$PATH" "$BACKUP_SH" 2>"$BATS_TEST_TMPDIR/stderr" &
  local pid=$! i status=0
  for i in $(seq 100); do
    pgrep -f 'sleep 300' >/dev/null && pgrep -f 'sleep 301' >/dev/null && break
    sleep 0.1
  done
  pgrep -f 'sleep 300' >/dev/null
  pgrep -f 'sleep 301' >/dev/null
  kill -TERM "$pid"
  wait "$pid" || status=$?
  assert_equal "$status" 143
  [ ! -f "$(manifest)" ]
  sleep 0.3
  refute pgrep -f 'sleep 300'
  refute pgrep -f 'sleep 301'
  assert_equal "$(find "$TMPDIR" -mindepth 1 | wc -l)" 0
  grep -q 'level=warn tool=backup step=terminate signal=TERM' "$BATS_TEST_TMPDIR/stderr"
}

@test "pipeline_error names the failing stage, not the ones killed by SIGPIPE after it" {
  local dir="$BATS_TEST_TMPDIR/obj"
  mkdir -p "$dir"
  echo '141 141 0 74' >"$dir/statuses"
  echo 's3-put: PutObject s3://b/k: I/O error' >"$dir/put.err"
  run -0 in_script "pipeline_error '$dir'"
  assert_output 's3-put exited 74: s3-put: PutObject s3://b/k: I/O error'
  echo '0 0 0 0' >"$dir/statuses"
  run -0 in_script "pipeline_error '$dir'"
  assert_output ''
}

@test "log: logfmt quoting and redaction of registered secrets and URI passwords" {
  run -0 --separate-stderr bash -c "source '$REPO_ROOT/backup/lib/common.sh'; KDL_TOOL=t; kdl_register_env_secrets;
    log info step=x 'two words' path='a \"b\"' url='https://user:hunter2hunter@example.com/x' pw=\"\$PGPASSWORD\""
  [[ "$stderr" =~ ^ts=[0-9T:Z-]+\ level=info\ tool=t\ step=x\ msg=\"two\ words\"\ path=\"a\ \\\"b\\\"\"\ url=https://user:\[REDACTED\]@example.com/x\ pw=\[REDACTED\]$ ]]
}
