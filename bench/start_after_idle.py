#!/usr/bin/env python3
"""A ten-step chain of `run true`, start to exit, the way an operator starts a
run: after the machine was idle for a moment (GAP seconds), not back to back
as bench/executor.sh's rounds run them. Linux makes the first process moved
into a cgroup after a quiet spell wait for an RCU grace period (5-20 ms);
back-to-back runs hide that. Times each binary and make in turns, a new state
directory each time; prints medians.

  bench/start_after_idle.py [GAP [ROUNDS [BASELINE_BINARY]]]

The binary measured is target/release/runbook (build it first); BASELINE is
another build timed in the same rounds.
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
gap = float(sys.argv[1]) if len(sys.argv) > 1 else 0.5
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 15
binaries = {"runbook": os.path.join(here, "..", "target", "release", "runbook")}
if len(sys.argv) > 3:
    binaries["baseline"] = sys.argv[3]
work = tempfile.mkdtemp(prefix="runbook-idle-start-", dir=os.path.join(here, "..", "target"))
os.chdir(work)
steps = "".join(
    f"  run s{i}{' after s' + str(i - 1) if i else ''} {{\n    command \"true\"\n  }}\n" for i in range(10)
)
open("ten.runbook", "w").write("runbook ten {\n" + steps + "}\n")
open("Makefile", "w").write(
    "all: s9\n"
    + "".join(f"s{i}:{' s' + str(i - 1) if i else ''}\n\t@true\n" for i in range(10))
    + ".PHONY: all " + " ".join(f"s{i}" for i in range(10)) + "\n"
)
commands = {name: [path, "--state", "state", "run", "ten.runbook"] for name, path in binaries.items()}
commands["make"] = ["make", "-s", "-f", "Makefile"]
times = {name: [] for name in commands}
for _ in range(rounds):
    for name, command in commands.items():
        shutil.rmtree("state", ignore_errors=True)
        os.sync()
        time.sleep(gap)
        began = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times[name].append((time.perf_counter() - began) * 1000)
make = statistics.median(times["make"])
for name, t in times.items():
    m = statistics.median(t)
    print(f"{name:9} median {m:6.1f} ms  min {min(t):6.1f} ms  {m / make:4.2f} x make  ({rounds} rounds, {gap} s idle before each)")
shutil.rmtree(work, ignore_errors=True)
