#!/usr/bin/env bash
# Summary: Ceph RGW for the local stack (sourced after lib.sh, not run): one mon, one memstore OSD and
# radosgw on 127.0.0.1, all state and logs under $STACK_DIR/ceph, each daemon a stack service stopped by PID.
# Usage: source scripts/stack/rgw.sh; rgw_start; rgw_wait; rgw_user UID [TENANT] ENV_FILE; rgw_bucket ENV_FILE NAME
#
# cephx is off between the daemons and the tools (loopback only); the S3 API still checks every
# signature and payload hash with the users' keys. The mon speaks msgr2 only, with crc mode: a client
# asking a v1 address, or secure mode, hangs without an answer.

RGW_CEPH_BIN=${RGW_CEPH_BIN:-/usr/bin}
# Memstore keeps every object in RAM; this is only the size it reports (raise it for the benches).
RGW_STORE_MIB=${STACK_RGW_STORE_MIB:-8192}
RGW_TIMEOUT=${STACK_RGW_TIMEOUT:-30}

# rgw_need_packages: dies naming setup.sh when a Ceph program is missing.
rgw_need_packages() {
  local program
  for program in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool; do
    [[ -x "$RGW_CEPH_BIN/$program" ]] || die "missing $RGW_CEPH_BIN/$program (Ceph RGW): run scripts/setup.sh"
  done
}

# rgw_write_conf DIR MON_PORT RGW_PORT FSID: the cluster's ceph.conf.
rgw_write_conf() {
  local dir=$1 mon_port=$2 rgw_port=$3 fsid=$4
  cat >"$dir/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
ms bind ipv6 = false
ms bind msgr1 = false
ms bind msgr2 = true
ms mon client mode = crc
ms client mode = crc
ms service mode = crc
ms cluster mode = crc
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.1/32
cluster network = 127.0.0.1/32
admin socket =
log file = $STACK_DIR/logs/ceph-\$name.log
log to stderr = false
err to stderr = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool delete = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
mon max pg per osd = 1000
# a single mon: proposing maps at once makes radosgw's pool creation seconds faster
paxos propose interval = 0.01
paxos min wait = 0.001
mon lease = 1
[mon.a]
mon data = $dir/mon
[osd.0]
osd objectstore = memstore
osd data = $dir/osd
memstore device bytes = $((RGW_STORE_MIB * 1024 * 1024))
osd max object name len = 256
osd max object namespace len = 64
[client.rgw.a]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $dir/rgw
rgw enable usage log = false
EOF
}

# rgw_ceph ARGS...: the ceph tool against this cluster, never waiting long.
rgw_ceph() {
  timeout "$RGW_TIMEOUT" "$RGW_CEPH_BIN/ceph" -c "$RGW_CONF" --connect-timeout 10 "$@"
}

# rgw_admin ARGS...: radosgw-admin against this cluster.
rgw_admin() {
  timeout "$RGW_TIMEOUT" "$RGW_CEPH_BIN/radosgw-admin" -c "$RGW_CONF" -n client.rgw.a "$@"
}

# rgw_start: makes the mon and the OSD, starts mon, OSD and radosgw as services ceph-mon, ceph-osd, rgw.
# Sets RGW_CONF and RGW_PORT (the S3 endpoint is http://127.0.0.1:$RGW_PORT).
rgw_start() {
  rgw_need_packages
  local dir="$STACK_DIR/ceph" mon_port fsid osd_uuid
  rm -rf "$dir"
  mkdir -p "$dir/mon" "$dir/osd" "$dir/rgw"
  mon_port=$(free_port)
  RGW_PORT=$(free_port)
  RGW_CONF="$dir/ceph.conf"
  fsid=$("$STACK_PY" -c 'import uuid; print(uuid.uuid4())')
  osd_uuid=$("$STACK_PY" -c 'import uuid; print(uuid.uuid4())')
  rgw_write_conf "$dir" "$mon_port" "$RGW_PORT" "$fsid"
  "$RGW_CEPH_BIN/monmaptool" --create --addv a "[v2:127.0.0.1:$mon_port]" --fsid "$fsid" "$dir/monmap" \
    >>"$STACK_DIR/logs/ceph-setup.log" 2>&1 || die "monmaptool failed (log: $STACK_DIR/logs/ceph-setup.log)"
  timeout "$RGW_TIMEOUT" "$RGW_CEPH_BIN/ceph-mon" -c "$RGW_CONF" --mkfs -i a --monmap "$dir/monmap" \
    >>"$STACK_DIR/logs/ceph-setup.log" 2>&1 || die "ceph-mon --mkfs failed (log: $STACK_DIR/logs/ceph-setup.log)"
  start_service ceph-mon "$RGW_CEPH_BIN/ceph-mon" -f -c "$RGW_CONF" -i a
  wait_port "$mon_port" "$RGW_TIMEOUT" ceph-mon
  rgw_ceph osd new "$osd_uuid" >>"$STACK_DIR/logs/ceph-setup.log" 2>&1 ||
    die "the mon did not answer 'osd new' (log: $STACK_DIR/logs/ceph-mon.log)"
  timeout "$RGW_TIMEOUT" "$RGW_CEPH_BIN/ceph-osd" -c "$RGW_CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" \
    >>"$STACK_DIR/logs/ceph-setup.log" 2>&1 || die "ceph-osd --mkfs failed (log: $STACK_DIR/logs/ceph-setup.log)"
  start_service ceph-osd "$RGW_CEPH_BIN/ceph-osd" -f -c "$RGW_CONF" -i 0
  rgw_ceph osd crush add osd.0 1.0 host=localhost root=default >>"$STACK_DIR/logs/ceph-setup.log" 2>&1 ||
    die "could not place osd.0 in the CRUSH map (log: $STACK_DIR/logs/ceph-setup.log)"
  start_service rgw "$RGW_CEPH_BIN/radosgw" -f -c "$RGW_CONF" -n client.rgw.a
}

# rgw_wait: waits until radosgw answers HTTP (it makes its pools first).
rgw_wait() {
  wait_port "$RGW_PORT" "$RGW_TIMEOUT" rgw
}

# rgw_user UID TENANT ENV_FILE: creates an S3 user (in TENANT's own bucket namespace when TENANT is not
# empty) with a random key (letters, digits, - and _ only), and writes `export K=V` lines for it to ENV_FILE (0600).
rgw_user() {
  local uid=$1 tenant=$2 env_file=$3 key_id secret full=$1
  [[ -z "$tenant" ]] || full="$tenant\$$uid"
  key_id=$("$STACK_PY" -c 'import secrets; print("KDL" + secrets.token_hex(8).upper())')
  secret=$("$STACK_PY" -c 'import secrets; print(secrets.token_urlsafe(30))')
  rgw_admin user create --uid="$full" --display-name="$uid" --access-key="$key_id" --secret-key="$secret" \
    >/dev/null 2>>"$STACK_DIR/logs/ceph-setup.log" || die "radosgw-admin could not create user $full"
  (
    umask 077
    printf 'export %s\n' "AWS_ACCESS_KEY_ID=$key_id" "AWS_SECRET_ACCESS_KEY=$secret" AWS_REGION=us-east-1 \
      "AWS_ENDPOINT_URL_S3=http://127.0.0.1:$RGW_PORT" >"$env_file.tmp"
    mv "$env_file.tmp" "$env_file"
  )
}

# rgw_bucket ENV_FILE NAME: creates bucket NAME as ENV_FILE's user.
rgw_bucket() {
  # shellcheck source=/dev/null
  (source "$1" && "$STACK_PY" - "$2" <<'PY') >>"$STACK_DIR/logs/ceph-setup.log" 2>&1 || die "could not create bucket $2 on RGW"
import os, sys
import boto3
boto3.client("s3", region_name="us-east-1", endpoint_url=os.environ["AWS_ENDPOINT_URL_S3"]).create_bucket(Bucket=sys.argv[1])
PY
}
