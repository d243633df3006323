# shellcheck shell=bash
# Summary: the component registry: every file of backup/components/ registers itself here, and
#          backup.sh and restore.sh take the backup order, the restore order and each component's
#          functions from it. Nothing else names a component.
# Usage: source lib/common.sh first, then this file; kdl_load_components [DIR].
#
# A component file calls, at its top level:
#   kdl_component NAME ORDER                      backed up in ascending ORDER (and listed so in the manifest)
#   kdl_restore_step STEP NAME ORDER INCLUDE [EXCLUDE] [FLAG...]
#                                                 a restore step of NAME, run in ascending ORDER by `restore all`
#                                                 and by `restore NAME`; it takes the component's objects whose key
#                                                 matches the ERE INCLUDE and not EXCLUDE. FLAGs: `required` (a set
#                                                 without such an object cannot be restored for this step: 66),
#                                                 `alone` (`restore STEP` restores just this step)
# and defines the functions of the interface (docs/architecture.md, "Writing a component"):
#   NAME_config SELECTED   NAME_preflight   NAME_backup            (backup.sh)
#   NAME_plan STEP         NAME_apply STEP                         (restore.sh)
#   NAME_describe DETAILS_JSON (optional: `restore.sh show`)   NAME_verify (optional: `restore.sh verify`)
#   NAME_is_live STEP (optional: false when the step only writes files)
#   NAME_configured (optional: false when the environment does not configure the component, e.g. no
#                    database listed, or another platform's; such a component is neither in the default
#                    selection nor in the manifest, unless BACKUP_COMPONENTS names it)
#   NAME_unconfigured_note (optional: one line backup.sh logs when the environment leaves the component out)
# shellcheck disable=SC2034  # KDL_* globals are read by the scripts that source this file

KDL_COMPONENTS=()
KDL_RESTORE_STEPS=()
declare -A KDL_COMPONENT_ORDER=()
declare -A KDL_STEP_COMPONENT=() KDL_STEP_ORDER=() KDL_STEP_INCLUDE=() KDL_STEP_EXCLUDE=() KDL_STEP_FLAGS=()

# kdl_component NAME ORDER: registers a component (NAME: lower case letters, digits and _).
kdl_component() {
  [[ "$1" =~ ^[a-z][a-z0-9_]*$ && "$2" =~ ^[0-9]+$ ]] || die "$EX_FAILURE" "kdl_component: bad registration '$*'"
  KDL_COMPONENT_ORDER[$1]=$2
}

# kdl_restore_step STEP NAME ORDER INCLUDE [EXCLUDE] [FLAG...]: registers a restore step of component NAME.
kdl_restore_step() {
  local step=$1 name=$2 order=$3 include=$4 exclude=${5:-}
  shift 5 2>/dev/null || shift $#
  [[ "$step" =~ ^[a-z][a-z0-9-]*$ && "$order" =~ ^[0-9]+$ && -n "$include" ]] ||
    die "$EX_FAILURE" "kdl_restore_step: bad registration '$step $name $order'"
  KDL_STEP_COMPONENT[$step]=$name
  KDL_STEP_ORDER[$step]=$order
  KDL_STEP_INCLUDE[$step]=$include
  KDL_STEP_EXCLUDE[$step]=$exclude
  KDL_STEP_FLAGS[$step]=" $* "
}

# kdl_step_has STEP FLAG: true when STEP was registered with FLAG.
kdl_step_has() {
  [[ "${KDL_STEP_FLAGS[$1]}" == *" $2 "* ]]
}

# kdl_sorted_by ASSOC_NAME: the keys of an associative array of orders, ascending (ties by name).
kdl_sorted_by() {
  local -n orders=$1
  local key
  for key in "${!orders[@]}"; do printf '%s\t%s\n' "${orders[$key]}" "$key"; done | LC_ALL=C sort -t $'\t' -k1,1n -k2,2 | cut -f2
}

# kdl_load_components [DIR]: sources every DIR/*.sh (default: components/ beside lib/) and orders them;
# a component that misses a function of the interface is a programming error (1).
kdl_load_components() {
  local dir=${1:-$(dirname "${BASH_SOURCE[0]}")/../components} file name fn
  for file in "$dir"/*.sh; do
    # shellcheck source=/dev/null
    source "$file"
  done
  mapfile -t KDL_COMPONENTS < <(kdl_sorted_by KDL_COMPONENT_ORDER)
  mapfile -t KDL_RESTORE_STEPS < <(kdl_sorted_by KDL_STEP_ORDER)
  for name in "${KDL_COMPONENTS[@]}"; do
    for fn in config preflight backup plan apply; do
      declare -F "${name}_$fn" >/dev/null || die "$EX_FAILURE" "component $name has no ${name}_$fn"
    done
  done
}

# kdl_component_steps NAME: the restore steps of a component, in restore order.
kdl_component_steps() {
  local step
  for step in "${KDL_RESTORE_STEPS[@]}"; do
    [[ "${KDL_STEP_COMPONENT[$step]}" == "$1" ]] && printf '%s\n' "$step"
  done
  return 0
}

# kdl_is_component NAME: true when NAME is a registered component.
kdl_is_component() {
  [[ -n "${KDL_COMPONENT_ORDER[$1]+set}" ]]
}

# kdl_has_fn NAME: true when the function NAME is defined (the interface's optional parts).
kdl_has_fn() {
  declare -F "$1" >/dev/null
}

# kdl_component_configured NAME: true unless the component says the environment leaves it out.
kdl_component_configured() {
  if kdl_has_fn "$1_configured"; then "$1_configured"; else return 0; fi
}
