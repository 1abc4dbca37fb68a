#!/usr/bin/env bash
# Benchmarks of the executor: `runbook run` and `resume` end to end, every
# run durable (the journal is synced before every effect, as always), against
# GNU make on the same shapes. Prints a table of medians and how each
# compares with its goal; the figures go in book/src/performance.md
# ("Executor"). Measures, never asserts: the exit status is 0 even when a
# goal is missed.
#
#   bench/executor.sh                 the full version (about three minutes)
#   BENCH_QUICK=1 bench/executor.sh   small sizes, few runs (about 25 s once built)
#
# Settings (environment):
#   BENCH_QUICK=1      small sizes and few runs, for CI
#   BENCH_ROUNDS=N     rounds of the chain, no-op and fan-out measurements
#                      [10; quick 4]: each round times every command of the
#                      measurement once, in turns first
#   BENCH_DIR=DIR      where the generated files and state directories go
#                      [default: a new directory under target/]; the disk under it is
#                      the disk measured
#   BENCH_KEEP=1       keep that directory afterwards
#   BENCH_NO_HYPERFINE=1  time with the shell loop even when hyperfine is there
#   BENCH_BASELINE=BIN another runbook binary (an earlier commit's release
#                      build) timed in the same rounds as this one on the
#                      chain and the fan-out, so that a change is measured
#                      side by side
#
# Needs bash, awk, make, du, cargo (to build the release binary when needed);
# uses hyperfine when it is installed, else a loop timed with bash's
# $EPOCHREALTIME (or `date +%s%N`).
set -euo pipefail
export LC_ALL=C
unset MAKEFLAGS MFLAGS MAKELEVEL GNUMAKEFLAGS RUNBOOK_STATE

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
gen="$here/gen.sh"

quick=${BENCH_QUICK:-0}
[ "$quick" = 0 ] || [ "$quick" = 1 ] || { echo "BENCH_QUICK is 0 or 1" >&2; exit 2; }

# Sizes. The goals are per step or relative to make, except the resume goal,
# which is for a journal of about 10,000 events: quick mode measures a smaller
# journal and says so.
if [ "$quick" = 1 ]; then
  chain_n=200 wait_ns="200 1000" fan_n=200 resume_n=1000
  rounds=${BENCH_ROUNDS:-4} short_runs=10
else
  chain_n=1000 wait_ns="1000 5000" fan_n=1000 resume_n=5000
  rounds=${BENCH_ROUNDS:-10} short_runs=30
fi

log() { printf '[%3ds] %s\n' "$SECONDS" "$*" >&2; }
die() { log "bench/executor.sh: $*"; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

have make || die "GNU make is needed (the baseline)"
have awk || die "awk is needed"

# --- the binary ---------------------------------------------------------------
log "building the release binary (cargo build --release) ..."
(cd "$root" && cargo build --release --quiet --bin runbook --example durable_floor) || die "the release build failed"
[ -x "$root/target/release/runbook" ] || die "no target/release/runbook after the build"
[ -x "$root/target/release/examples/durable_floor" ] || die "no target/release/examples/durable_floor after the build"

# --- the scratch directory ------------------------------------------------------
if [ -n "${BENCH_DIR:-}" ]; then
  mkdir -p "$BENCH_DIR"
  t=$(mktemp -d "$BENCH_DIR/executor.XXXXXX")
else
  mkdir -p "$root/target"
  t=$(mktemp -d "$root/target/bench-executor.XXXXXX")
fi
case $t in *[[:space:]]*) die "the scratch directory's path has a space: $t" ;; esac
bg_pid=
cleanup() {
  if [ -n "$bg_pid" ]; then kill -KILL "$bg_pid" 2>/dev/null || true; fi
  if [ "${BENCH_KEEP:-0}" = 1 ]; then log "kept $t"; else rm -rf "$t"; fi
}
trap cleanup EXIT
mkdir -p "$t/times"
# A copy: a build or a test elsewhere may replace target/release/runbook
# while this runs.
cp "$root/target/release/runbook" "$t/runbook"
rb="$t/runbook"
# The floor (bench/durable_floor.rs): the same shapes run by a bare loop
# that starts `true` and, before each start, appends a record to a journal
# and syncs it, with none of runbook's parsing, engine, runtime, output
# capture or view: what a design that syncs each start as it happens, as
# runbook does, cannot go below on this machine.
cp "$root/target/release/examples/durable_floor" "$t/durable_floor"
floor="$t/durable_floor"
# A baseline: another build, run on the same shapes in the same rounds.
base=()
if [ -n "${BENCH_BASELINE:-}" ]; then
  [ -x "$BENCH_BASELINE" ] || die "BENCH_BASELINE is not an executable: $BENCH_BASELINE"
  cp "$BENCH_BASELINE" "$t/baseline"
fi

# Prepare commands run without a shell under hyperfine -N: small scripts.
cat >"$t/fresh.sh" <<'EOF'
#!/bin/sh
# A fresh (absent) state directory.
rm -rf "$1"
EOF
cat >"$t/restore.sh" <<'EOF'
#!/bin/sh
# $2 becomes an exact copy of $1.
rm -rf "$2" && cp -a "$1" "$2"
EOF
chmod +x "$t/fresh.sh" "$t/restore.sh"

use_hyperfine=0
if [ "${BENCH_NO_HYPERFINE:-0}" != 1 ] && have hyperfine; then use_hyperfine=1; fi

# --- timing -----------------------------------------------------------------------
# stamp: the wall clock in microseconds, in $now; bash 5's $EPOCHREALTIME
# needs no process, else date(1).
stamp() {
  if [ -n "${EPOCHREALTIME:-}" ]; then now=${EPOCHREALTIME/[.,]/}; else now=$(($(date +%s%N) / 1000)); fi
}

# measure LABEL PREPARE RUNS_PER_ROUND CMD...
# Times every CMD (a command line without shell syntax; its output is thrown
# away) RUNS_PER_ROUND times in each of $rounds rounds, the order of the
# commands reversed every other round so that a machine slowing down or
# speeding up weighs on all alike. PREPARE runs before every timed run. The
# wall times (seconds) land in $t/times/LABEL.I, one per line in the order
# run, for CMD number I. The first round starts with one untimed run of each.
measure() {
  local label=$1 prep=$2 per=$3
  shift 3
  local cmds=("$@") n=$# r i j
  for ((i = 0; i < n; i++)); do : >"$t/times/$label.$i"; done
  for ((r = 0; r < rounds; r++)); do
    local order=()
    for ((i = 0; i < n; i++)); do
      if ((r % 2)); then order+=($((n - 1 - i))); else order+=("$i"); fi
    done
    if [ "$use_hyperfine" = 1 ]; then
      local args=(-N --style none --runs "$per" --prepare "$prep" --export-json "$t/h.json")
      if ((r == 0)); then args+=(--warmup 1); fi
      for i in "${order[@]}"; do args+=("${cmds[$i]}"); done
      hyperfine "${args[@]}" >/dev/null || die "hyperfine failed on: ${cmds[*]}"
      # hyperfine's JSON lists the runs of each command under "times", in order.
      for ((j = 0; j < n; j++)); do
        awk -v want="$j" '
          /"times": \[/ { inside = 1; k++; next }
          inside && /\]/ { inside = 0; next }
          inside && k - 1 == want { gsub(/[ ,]/, ""); print }
        ' "$t/h.json" >>"$t/times/$label.${order[$j]}"
      done
    else
      for i in "${order[@]}"; do
        local k s e
        for ((k = 0; k < per + (r == 0 ? 1 : 0); k++)); do
          $prep
          stamp
          s=$now
          # Word splitting is wanted: the command has no shell syntax.
          ${cmds[$i]} >/dev/null 2>&1 || die "failed: ${cmds[$i]}"
          stamp
          e=$now
          # The first run of the first round warms up, as with hyperfine.
          if ((r > 0 || k > 0)); then
            awk -v d=$((e - s)) 'BEGIN { printf "%.6f\n", d / 1e6 }' >>"$t/times/$label.$i"
          fi
        done
      done
    fi
  done
}

# median LABEL I: the median of those times, in seconds.
median() {
  sort -g "$t/times/$1.$2" | awk '
    { a[NR] = $1 }
    END {
      if (NR == 0) { print "nan"; exit }
      if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2
    }'
}
count() { wc -l <"$t/times/$1.$2" | tr -d ' '; }

# ratio LABEL I J: the median over rounds of (time of I) / (time of J), each
# pair timed one after the other in the same round: on a shared machine whose
# load comes and goes, this is steadier than the ratio of the two medians.
ratio() {
  paste "$t/times/$1.$2" "$t/times/$1.$3" | awk '$2 > 0 { print $1 / $2 }' | sort -g | awk '
    { a[NR] = $1 }
    END {
      if (NR == 0) { print "nan"; exit }
      if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2
    }'
}

# calc EXPR: floating-point arithmetic with awk.
calc() { awk "BEGIN { printf \"%.6g\", $1 }"; }
# num EXPR: the same, for reading: 3 significant digits or so.
num() { awk "BEGIN { v = $1; a = v < 0 ? -v : v; printf (a >= 100 ? \"%.0f\" : (a >= 10 ? \"%.1f\" : \"%.2f\")), v }"; }

# --- the results table ---------------------------------------------------------------
rows=()
# row WHAT RESULT UNIT GOAL_OP GOAL NOTE: GOAL_OP is <= or >= (or - for no goal).
row() {
  local what=$1 result=$2 unit=$3 op=$4 goal=$5 note=${6:-}
  local vs verdict
  if [ "$op" = - ]; then
    vs="" verdict=""
  else
    vs=$(calc "$result / $goal")
    if awk -v r="$result" -v g="$goal" -v op="$op" 'BEGIN { exit !((op == "<=") ? r <= g : r >= g) }'; then
      verdict="meets"
    else
      verdict="MISSES"
    fi
    vs=$(awk -v v="$vs" 'BEGIN { printf "%.2f", v }')
  fi
  local shown goal_shown=""
  shown=$(num "$result")
  [ "$op" = - ] || goal_shown="$op $goal"
  rows+=("$what|$shown $unit|$goal_shown|$vs|$verdict|$note")
}

# --- generated files ------------------------------------------------------------------
log "generating runbooks and Makefiles in $t ..."
"$gen" chain "$chain_n" >"$t/chain.runbook"
"$gen" make-chain "$chain_n" >"$t/chain.mk"
"$gen" chain 1 >"$t/one.runbook"
"$gen" chain 10 >"$t/chain-10.runbook"
"$gen" make-chain 10 >"$t/chain-10.mk"
"$gen" waits 1 >"$t/waits-1.runbook"
for n in $wait_ns; do "$gen" waits "$n" >"$t/waits-$n.runbook"; done
"$gen" fan "$fan_n" >"$t/fan.runbook"
"$gen" make-fan "$fan_n" >"$t/fan.mk"
"$gen" waits-gate "$resume_n" >"$t/resume.runbook"
"$gen" chain-gate "$chain_n" >"$t/chain-gate.runbook"
for f in "$t"/*.runbook; do
  "$rb" check "$f" >/dev/null 2>"$t/check.err" || { cat "$t/check.err" >&2; die "$f does not check"; }
done

# --- the machine -------------------------------------------------------------------------
# What one durable write costs here: 500 writes of 4 KiB, each with O_DSYNC
# (the data reaches the disk before the write returns).
dsync_ms=$(
  { dd if=/dev/zero of="$t/dsync.probe" bs=4k count=500 oflag=dsync 2>&1 || true; } |
    awk '/copied/ { for (i = 1; i <= NF; i++) if ($i ~ /^s,?$/) s = $(i - 1) } END { if (s != "") printf "%.3f", s * 1000 / 500; else print "unknown" }'
)
rm -f "$t/dsync.probe"
load_before=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)

# --- 1. a chain of run steps against make ----------------------------------------------
log "1/6 chain of $chain_n run steps against make ($rounds rounds) ..."
[ -z "${BENCH_BASELINE:-}" ] || base=("$t/baseline --state $t/st-chain run $t/chain.runbook")
measure chain "$t/fresh.sh $t/st-chain" 1 \
  "$rb --state $t/st-chain run $t/chain.runbook" \
  "make -s -f $t/chain.mk" \
  "$floor chain $chain_n 1 sled $t/st-chain" \
  "$floor chain $chain_n 1 none $t/st-chain" \
  "${base[@]}"
chain_rb=$(median chain 0)
chain_make=$(median chain 1)
chain_ratio=$(ratio chain 0 1)
row "chain of $chain_n \`run true\`: runbook / make" "$chain_ratio" "x" "<=" 1.5 \
  "median of $(count chain 0) paired runs; runbook $(num "$chain_rb * 1000") ms, make $(num "$chain_make * 1000") ms (medians: $(num "$chain_rb * 1e6 / $chain_n") vs $(num "$chain_make * 1e6 / $chain_n") us/step)"
row "  floor: a bare loop, sled flush before each start / make" "$(ratio chain 2 1)" "x" "-" "-" \
  "durable_floor chain $chain_n 1 sled: $(num "$(median chain 2) * 1000") ms; with no journal (none): $(num "$(median chain 3) * 1000") ms, $(num "$(ratio chain 3 1)") x make"
if [ -n "${BENCH_BASELINE:-}" ]; then
  row "  baseline ($BENCH_BASELINE) / make" "$(ratio chain 4 1)" "x" "-" "-" \
    "the same chain, the other build, in the same rounds: $(num "$(median chain 4) * 1000") ms; this build / the baseline: $(num "$(ratio chain 0 4)") x"
fi

# --- 2. no-op steps ------------------------------------------------------------------------
log "2/6 chains of wait-0s steps: 1, $wait_ns ..."
wait_cmds=("$rb --state $t/st-wait run $t/waits-1.runbook")
for n in $wait_ns; do wait_cmds+=("$rb --state $t/st-wait run $t/waits-$n.runbook"); done
measure wait "$t/fresh.sh $t/st-wait" 1 "${wait_cmds[@]}"
wait_one=$(median wait 0)
i=1
for n in $wait_ns; do
  tn=$(median wait $i)
  per=$(calc "($tn - $wait_one) * 1000 / ($n - 1)")
  row "no-op step (\`wait\` 0s), $n-step chain" "$per" "ms/step" "<=" 0.3 \
    "$(num "$tn * 1000") ms in all, minus the 1-step run ($(num "$wait_one * 1000") ms), over $((n - 1)) steps; $(count wait $i) runs"
  i=$((i + 1))
done

# --- 3. fan-out against make -j2 -------------------------------------------------------------
log "3/6 fan-out 1 -> $fan_n -> 1 at concurrency 2 against make -j2 ($rounds rounds) ..."
base=()
[ -z "${BENCH_BASELINE:-}" ] || base=("$t/baseline --state $t/st-fan run $t/fan.runbook")
measure fan "$t/fresh.sh $t/st-fan" 1 \
  "$rb --state $t/st-fan run $t/fan.runbook" \
  "make -s -j2 -f $t/fan.mk" \
  "$floor fan $fan_n 2 sled $t/st-fan" \
  "$floor fan $fan_n 2 none $t/st-fan" \
  "$floor fan $fan_n 2 sled-ahead $t/st-fan" \
  "$floor fan $fan_n 2 fdatasync $t/st-fan" \
  "$floor fan $fan_n 2 sled-batched $t/st-fan" \
  "${base[@]}"
fan_rb=$(median fan 0)
fan_make=$(median fan 1)
fan_steps=$((fan_n + 2))
fan_ratio=$(ratio fan 1 0)
row "fan-out 1 -> $fan_n -> 1, concurrency 2: throughput / make -j2's" "$fan_ratio" "x" ">=" 0.85 \
  "median of $(count fan 0) paired runs; runbook $(num "$fan_steps / $fan_rb") steps/s ($(num "$fan_rb * 1000") ms), make $(num "$fan_steps / $fan_make") steps/s ($(num "$fan_make * 1000") ms) (medians)"
row "  floor: a bare loop, sled flush before each start: / make -j2's" "$(ratio fan 1 2)" "x" "-" "-" \
  "durable_floor fan $fan_n 2 sled: $(num "$(median fan 2) * 1000") ms; none (no journal): $(num "$(median fan 3) * 1000") ms, $(num "$(ratio fan 1 3)") x; sled-ahead (starts recorded early, off the critical path): $(num "$(median fan 4) * 1000") ms, $(num "$(ratio fan 1 4)") x; fdatasync of a plain file instead of sled: $(num "$(median fan 5) * 1000") ms, $(num "$(ratio fan 1 5)") x; sled-batched (starts early, and up to 1 ms of records gathered per flush): $(num "$(median fan 6) * 1000") ms, $(num "$(ratio fan 1 6)") x"
if [ -n "${BENCH_BASELINE:-}" ]; then
  row "  baseline ($BENCH_BASELINE): / make -j2's" "$(ratio fan 1 7)" "x" "-" "-" \
    "the same fan-out, the other build, in the same rounds: $(num "$(median fan 7) * 1000") ms; this build's throughput / the baseline's: $(num "$(ratio fan 7 0)") x"
fi
# What a sled flush costs in CPU time, the floor's and its programs' (bash's
# \`time\`: user + system of the loop and its children), with and without
# the journal: on two CPUs, CPU time is what the fan-out is short of.
cpu_of() {
  local TIMEFORMAT='%U %S' out
  out=$({ time "$@" >/dev/null 2>&1; } 2>&1) || die "failed: $*"
  awk '{ print $1 + $2 }' <<<"$out"
}
cpu_sled=0 cpu_none=0
for ((r = 0; r < 5; r++)); do
  rm -rf "$t/st-cpu"
  cpu_sled=$(calc "$cpu_sled + $(cpu_of "$floor" fan "$fan_n" 2 sled "$t/st-cpu")")
  rm -rf "$t/st-cpu"
  cpu_none=$(calc "$cpu_none + $(cpu_of "$floor" fan "$fan_n" 2 none "$t/st-cpu")")
done
row "  CPU time of one sled insert and flush (floor with sled - without, per start)" "$(calc "($cpu_sled - $cpu_none) / 5 * 1000 / ($fan_n + 2)")" "ms" "-" "-" \
  "user + system, the loop and its programs, sum of 5 runs each: $(num "$cpu_sled * 1000") ms with sled, $(num "$cpu_none * 1000") ms without"
# A bound no design with a sled flush per step can pass here: the floor's
# CPU time (its programs' included) spread perfectly over every CPU.
cpus=$(nproc)
row "  ceiling with a sled flush per step: make -j2's time / (floor's CPU time / $cpus CPUs)" \
  "$(calc "$fan_make / ($cpu_sled / 5 / $cpus)")" "x" "-" "-" \
  "make $(num "$fan_make * 1000") ms; the floor with sled uses $(num "$cpu_sled / 5 * 1000") ms of CPU per run, $(num "$cpu_sled / 5 / $cpus * 1000") ms over $cpus CPUs if nothing ever waited"

# --- 4. a one-step run, process start to exit ------------------------------------------------
log "4/6 one-step runs ..."
saved_rounds=$rounds
rounds=1
measure one "$t/fresh.sh $t/st-one" "$short_runs" \
  "$rb --state $t/st-one run $t/one.runbook" \
  "$rb --state $t/st-one run $t/waits-1.runbook" \
  "$rb check $t/one.runbook"
# A ten-step chain from process start to exit, paired with make on the same
# chain: what a short procedure costs beyond its programs (the process, the
# store's opening, the checks of the state directory, the first syncs). In a
# new state directory (the first run), and in one that holds a run already.
# Three rounds of a third of the runs each, in turns, so that the disk's
# slow spells weigh on both; the baseline build, when given, in the same
# rounds.
rounds=3
ten_runs=$(((short_runs + 2) / 3))
base=()
[ -z "${BENCH_BASELINE:-}" ] || base=("$t/baseline --state $t/st-ten run $t/chain-10.runbook")
measure ten "$t/fresh.sh $t/st-ten" "$ten_runs" \
  "$rb --state $t/st-ten run $t/chain-10.runbook" \
  "make -s -f $t/chain-10.mk" "${base[@]}"
"$rb" --state "$t/st-ten-base" run "$t/chain-10.runbook" >/dev/null || die "the ten-step chain failed"
measure ten-again "$t/restore.sh $t/st-ten-base $t/st-ten" "$ten_runs" \
  "$rb --state $t/st-ten run $t/chain-10.runbook" \
  "make -s -f $t/chain-10.mk" "${base[@]}"
rounds=$saved_rounds
row "chain of 10 \`run true\`, start to exit, new state dir: runbook / make" "$(ratio ten 0 1)" "x" "<=" 1.5 \
  "medians: runbook $(num "$(median ten 0) * 1000") ms, make $(num "$(median ten 1) * 1000") ms; $(count ten 0) paired runs"
row "  the same in a state dir that holds a run: runbook / make" "$(ratio ten-again 0 1)" "x" "-" "-" \
  "medians: runbook $(num "$(median ten-again 0) * 1000") ms, make $(num "$(median ten-again 1) * 1000") ms"
if [ -n "${BENCH_BASELINE:-}" ]; then
  row "  baseline ($BENCH_BASELINE), new state dir / make" "$(ratio ten 2 1)" "x" "-" "-" \
    "the same, the other build, in the same rounds: $(num "$(median ten 2) * 1000") ms; this build / the baseline: $(num "$(ratio ten 0 2)") x"
  row "  baseline, in a state dir that holds a run / make" "$(ratio ten-again 2 1)" "x" "-" "-" \
    "$(num "$(median ten-again 2) * 1000") ms; this build / the baseline: $(num "$(ratio ten-again 0 2)") x"
fi
one_run=$(median one 0)
row "one-step run (\`run true\`), start to exit, new state dir" "$(calc "$one_run * 1000")" "ms" "<=" 20 \
  "\`wait 0s\` instead: $(num "$(median one 1) * 1000") ms; \`runbook check\` of the file: $(num "$(median one 2) * 1000") ms; $(count one 0) runs"

# --- 5. resume of a long journal -----------------------------------------------------------------
# to_gate OUT CMD...: runs CMD (a `run --json` or `retry --json` of a runbook
# whose last step is the approval `gate`) in the background until the
# approval is reached, then stops it with Ctrl-C (SIGINT): exit 130, the run
# resumable. Its JSON lines land in OUT.
to_gate() {
  local out=$1 waited=0 rc=0
  shift
  "$@" >"$out" 2>"$out.err" &
  bg_pid=$!
  until grep -q '"step":"gate"' "$out" 2>/dev/null; do
    kill -0 "$bg_pid" 2>/dev/null || die "ended before its approval: $* ($(cat "$out.err"))"
    sleep 0.02
    waited=$((waited + 1))
    [ "$waited" -lt 30000 ] || die "did not reach its approval in 10 minutes: $*"
  done
  kill -INT "$bg_pid"
  wait "$bg_pid" || rc=$?
  bg_pid=
  [ "$rc" = 130 ] || die "stopped with exit $rc, not 130: $* ($(cat "$out.err"))"
}

# (a) A run of $resume_n wait-0s steps, then the approval. `runbook approve`
# records the approval straight in the journal (no process holds it). What is
# timed is `runbook resume`, from its start to its exit: it compiles the
# recorded source, reads the journal, replays every event, sees the last step
# done and records the end of the run. Every timed run starts from a fresh
# copy of that state directory.
log "5/6 resume: preparing a run of $resume_n steps ..."
base="$t/st-resume-base"
rm -rf "$base"
to_gate "$t/resume.out" "$rb" --state "$base" run --json "$t/resume.runbook"
"$rb" --state "$base" approve 1 gate >/dev/null
resume_events=$(($(grep -c '"event"' "$t/resume.out") + 1)) # + the approval

# (b) About as many events from a runbook of 100 steps: the run is taken to
# its approval, approved, resumed to its end, then `runbook retry --from s1`
# runs it again, again to the approval; and so on, each cycle adding about
# 205 events. What is left to time is the journal, not the compiling.
log "5/6 resume: preparing a run of 100 steps retried until its journal is as long ..."
cycles=$(((resume_events + 204) / 205))
small="$t/st-resume-small"
rm -rf "$small"
"$gen" waits-gate 100 >"$t/resume-small.runbook"
to_gate "$t/small.out" "$rb" --state "$small" run --json "$t/resume-small.runbook"
small_events=$(grep -c '"event"' "$t/small.out")
for ((c = 1; c < cycles; c++)); do
  "$rb" --state "$small" approve 1 gate >/dev/null
  "$rb" --state "$small" resume 1 --json >"$t/small.out"
  small_events=$((small_events + 1 + $(grep -c '"event"' "$t/small.out")))
  to_gate "$t/small.out" "$rb" --state "$small" retry 1 --from s1 --json
  small_events=$((small_events + $(grep -c '"event"' "$t/small.out")))
done
"$rb" --state "$small" approve 1 gate >/dev/null
small_events=$((small_events + 1))

log "5/6 resume: timing ..."
rounds_saved=$rounds
rounds=1
# The baseline, when given, resumes the same copy: it compiles the source
# (an earlier build reads no plan this one kept, as a rebuilt one would not).
base_resume=()
[ -z "${BENCH_BASELINE:-}" ] || base_resume=("$t/baseline --state $t/st-resume resume 1")
measure resume "$t/restore.sh $base $t/st-resume" "$short_runs" \
  "$rb --state $t/st-resume resume 1" \
  "$rb --state $t/st-resume status 1" \
  "$rb check $t/resume.runbook" "${base_resume[@]}"
measure resume-small "$t/restore.sh $small $t/st-resume" "$short_runs" \
  "$rb --state $t/st-resume resume 1" \
  "$rb --state $t/st-resume status 1"
rounds=$rounds_saved
resume_t=$(median resume 0)
small_t=$(median resume-small 0)
resume_note="\`status 1\` (the same reading and replay, no run): $(num "$(median resume 1) * 1000") ms; \`check\` of the runbook alone: $(num "$(median resume 2) * 1000") ms"
[ -z "${BENCH_BASELINE:-}" ] || resume_note="$resume_note; the baseline's resume: $(num "$(median resume 3) * 1000") ms"
small_note="\`status 1\`: $(num "$(median resume-small 1) * 1000") ms"
if [ "$quick" = 1 ]; then
  row "resume, $resume_events events of a $((resume_n + 1))-step run" "$(calc "$resume_t * 1000")" "ms" "-" "-" \
    "QUICK: the goal (<= 50 ms) is for ~10,000 events; $resume_note"
  row "resume, $small_events events of a 101-step run" "$(calc "$small_t * 1000")" "ms" "-" "-" "QUICK; $small_note"
else
  row "resume, $resume_events events of a $((resume_n + 1))-step run" "$(calc "$resume_t * 1000")" "ms" "<=" 50 "$resume_note"
  row "resume, $small_events events of a 101-step run" "$(calc "$small_t * 1000")" "ms" "<=" 50 "$small_note"
fi

# --- 6. the size of the store ----------------------------------------------------------------
# The sled directory is STATE/journal; STATE also holds, while a run is
# driven, live.json (the view `runbook status` reads from another terminal).
log "6/6 store size after a $chain_n-step chain ..."
apparent() { du -sb "$1" | cut -f1; }                 # bytes in the files
allocated() { du -s --block-size=1 "$1" | cut -f1; } # blocks on disk
st="$t/st-size"
rm -rf "$st"
"$rb" --state "$st" run --json "$t/chain.runbook" >"$t/size.out"
size_events=$(grep -c '"event"' "$t/size.out")
size_app=$(apparent "$st/journal")
size_alloc=$(allocated "$st/journal")
# What the events say, as the JSON lines `run --json` prints for them.
size_json=$(awk '/"event"/ { n += length($0) + 1 } END { print n + 0 }' "$t/size.out")
row "sled directory after a $chain_n-step chain, per event (after exit)" "$(calc "$size_app / $size_events")" "B" "<=" 1024 \
  "du -b: $size_app B for $size_events events ($size_alloc B allocated); the events as JSON lines: $(num "$size_json / $size_events") B each"
# The same chain with an approval at the end: measured while the process
# holds the store (waiting at the approval), then after it exits on SIGINT.
st="$t/st-size-live"
rm -rf "$st"
"$rb" --state "$st" run --json "$t/chain-gate.runbook" >"$t/size-live.out" 2>"$t/size-live.err" &
bg_pid=$!
waited=0
until grep -q '"step":"gate"' "$t/size-live.out" 2>/dev/null; do
  kill -0 "$bg_pid" 2>/dev/null || die "the run for the size benchmark ended early: $(cat "$t/size-live.err")"
  sleep 0.1
  waited=$((waited + 1))
  [ "$waited" -lt 6000 ] || die "the run for the size benchmark did not reach its approval in 10 minutes"
done
sleep 0.5 # the live view (live.json) is written five times a second
live_app=$(apparent "$st/journal")
live_alloc=$(allocated "$st/journal")
live_state=$(apparent "$st")
live_events=$(grep -c '"event"' "$t/size-live.out")
# sled's background thread (it flushes every 500 ms) may still write.
sleep 3
idle_app=$(apparent "$st/journal")
kill -INT "$bg_pid"
rc=0
wait "$bg_pid" || rc=$?
bg_pid=
[ "$rc" = 130 ] || die "the size run stopped with exit $rc, not 130"
exit_app=$(apparent "$st/journal")
exit_alloc=$(allocated "$st/journal")
exit_state=$(apparent "$st")
row "the same + an approval, live (process holding it), per event" "$(calc "$live_app / $live_events")" "B" "-" "-" \
  "du -b: $live_app B ($live_alloc allocated) for $live_events events, the state dir $live_state B with live.json; 3 s later $idle_app B; after exit (SIGINT): $exit_app B ($exit_alloc allocated), state dir $exit_state B"

# --- the report ------------------------------------------------------------------------------
load_after=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo unknown)
commit=$(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(cd "$root" && git status --porcelain --untracked-files=no 2>/dev/null | head -1)
if [ "$use_hyperfine" = 1 ]; then
  timer="hyperfine $(hyperfine --version 2>/dev/null | awk '{ print $2 }') (-N, medians)"
else
  timer="shell loop timed with $([ -n "${EPOCHREALTIME:-}" ] && echo "\$EPOCHREALTIME" || echo "date +%s%N") (medians)"
fi

echo
echo "runbook executor benchmarks ($([ "$quick" = 1 ] && echo QUICK || echo full)), $(date -u +%Y-%m-%dT%H:%MZ)"
echo "  commit $commit${dirty:+ (with uncommitted changes)}; $("$rb" --version)"
echo "  $(nproc) CPUs ($cpu), $(awk '/^MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo 2>/dev/null)"
echo "  disk under the state directories: $(df -hP "$t" | awk 'NR == 2 { print $1, $2, "(" $5 " used), mounted on", $6 }')"
echo "  one 4 KiB write with O_DSYNC (dd): $dsync_ms ms"
echo "  load average before: $load_before; after: $load_after"
echo "  timing: $timer; comparisons with make: the median over $rounds rounds of the ratio within a round"
echo
{
  echo "measurement|result|goal|result/goal|verdict|details"
  echo "---|---|---|---|---|---"
  printf '%s\n' "${rows[@]}"
} | awk -F'|' '
  { for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (i < 6 && length($i) > w[i]) w[i] = length($i) } ; nf[NR] = NF }
  END {
    for (r = 1; r <= NR; r++) {
      line = ""
      for (i = 1; i <= nf[r]; i++) {
        c = cell[r, i]
        if (r == 2) { c = ""; for (k = 0; k < (i < 6 ? w[i] : 7); k++) c = c "-" }
        line = line (i > 1 ? "  " : "") (i < 6 ? sprintf("%-" w[i] "s", c) : c)
      }
      print line
    }
  }'
echo
echo "result/goal: at most 1 meets a \"<=\" goal, at least 1 meets a \">=\" goal."
