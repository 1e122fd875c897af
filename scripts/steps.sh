# Sourced by scripts/test and scripts/lint: `step NAME CMD...` runs CMD
# under a heading and records its wall and CPU time; the outermost script
# prints the table when it exits, also on failure (the failing step is
# marked), e.g.
#   == steps (wall, cpu) ==
#      105.3s    160.2s  cargo test
# CPU above wall means the step kept both cores busy. CPU is counted when
# bash reaps a child, so a background job's CPU shows in the foreground
# step during which it ended.

# The outermost script owns the record; nested ones (scripts/lint run by
# scripts/test) append to it.
steps_owner=""
if [ -z "${STEP_TIMES:-}" ]; then
  STEP_TIMES=$(mktemp)
  export STEP_TIMES STEP_START=$EPOCHREALTIME
  steps_owner=1
fi
step_name=""

# CPU seconds (user + system) used so far by this shell's finished
# children, into $steps_cpu_now (`times` must run in this shell, not in a
# command substitution's subshell).
steps_cpu() {
  times >"$STEP_TIMES.cpu.$$"
  steps_cpu_now=$(awk 'NR == 2 {
    n = 0
    for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); n += a[1] * 60 + a[2] }
    printf "%.1f", n
  }' "$STEP_TIMES.cpu.$$")
}

steps_record() {
  steps_cpu
  awk -v s="$step_t0" -v e="$EPOCHREALTIME" -v c0="$step_c0" -v c1="$steps_cpu_now" \
    -v n="$step_name$1" 'BEGIN { printf "%8.1fs %8.1fs  %s\n", e - s, c1 - c0, n }' >>"$STEP_TIMES"
  step_name=""
}

# The EXIT trap; a script with its own trap calls it with the exit status.
steps_exit() {
  local rc=${1:-$?}
  [ -z "$step_name" ] || steps_record " (FAILED)"
  rm -f "$STEP_TIMES.cpu.$$"
  if [ -n "$steps_owner" ]; then
    echo "== steps (wall, cpu) =="
    cat "$STEP_TIMES"
    awk -v s="$STEP_START" -v e="$EPOCHREALTIME" 'BEGIN { printf "%8.1fs %9s  total\n", e - s, "" }'
    rm -f "$STEP_TIMES"
  fi
  return $rc
}
trap steps_exit EXIT

# Not `CMD || ...`: that would turn off `set -e` inside CMD when it is a
# shell function. A failure exits the script; the EXIT trap records it.
step() {
  step_name=$1
  shift
  echo "== $step_name =="
  step_t0=$EPOCHREALTIME
  steps_cpu
  step_c0=$steps_cpu_now
  "$@"
  steps_record ""
}
