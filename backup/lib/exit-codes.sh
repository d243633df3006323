# shellcheck shell=bash
# Summary: the exit statuses of backup.sh, restore.sh and every helper, defined once (sysexits.h,
#          plus 3 for a partial backup and 128+N for a signal). Sources/BackupKit/ExitStatus.swift
#          holds the same numbers; Tests/backup/contracts.bats checks that they agree.
# shellcheck disable=SC2034  # read by the scripts that source this file

[[ -n "${EX_OK+set}" ]] && return 0
readonly EX_OK=0          # success
readonly EX_FAILURE=1     # failure (every component failed, a check failed)
readonly EX_PARTIAL=3     # backup.sh: some components failed, the others are stored
readonly EX_USAGE=64      # bad command line or configuration
readonly EX_NOINPUT=66    # an input, object, set or bucket does not exist
readonly EX_UNAVAILABLE=69 # a service or a tool is unavailable (after retries)
readonly EX_IOERR=74      # a read or write failed, or data did not match its checksum or format
readonly EX_TEMPFAIL=75   # a temporary failure: running again may succeed
readonly EX_NOPERM=77     # permission, signature or identity refused
readonly EX_SIGINT=130    # stopped by SIGINT
readonly EX_SIGTERM=143   # stopped by SIGTERM
