#!/usr/bin/env python3
"""Many runs on one machine: RUNS runs of a runbook of STEPS steps (four
chains of STEPS/4 `true` steps, `concurrency 4`) started at once, either
as RUNS separate `runbook run` processes, each with a state directory of
its own, or handed to one `runbook serve` that holds one state directory
(RUNS `runbook run` commands at once, each following its run). Every run
durable in both (the journal synced before every effect). Measures,
never asserts.

  bench/served.py BINARY [RUNS] [STEPS] [ROUNDS]

Prints, per way and round: the wall time from the first start to the last
end; memory (the server's peak resident set, VmHWM, and the sum of the
followers' peaks; for separate processes the sum of their peaks); and the
time from a step becoming ready (its chain's previous step recorded as
succeeded, or the run's start for a chain's first step) to its start being
recorded, over every step of every run (p50, p99, max; the journal's
times are in milliseconds). The figures go in book/src/performance.md
("Many runs on one machine"). Defaults: 100 runs, 100 steps, 3 rounds,
the two ways taken in turns.
"""
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time

binary = os.path.abspath(sys.argv[1])
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 100
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 100
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
chains = 4
per_chain = steps // chains

env = dict(os.environ, NO_COLOR="1")
env.pop("RUNBOOK_STATE", None)


def runbook_text():
    lines = ["runbook many {", "  concurrency 4", ""]
    for c in range(chains):
        for i in range(per_chain):
            after = f" after c{c}_{i - 1}" if i else ""
            lines.append(f"  run c{c}_{i}{after} {{")
            lines.append('    command "true"')
            lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def wait_all(procs):
    """Waits for every process; the sum of their peak RSS (KiB)."""
    peak = 0
    for p in procs:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        peak += usage.ru_maxrss
        if p.returncode != 0:
            raise SystemExit(f"a run failed: exit {p.returncode}")
    return peak


def latencies(state, run_ids):
    """Ready-to-start times (ms) of every step of the runs of `state`."""
    out = []
    for run in run_ids:
        lines = subprocess.run(
            [binary, "--state", state, "history", str(run), "--json"],
            env=env, capture_output=True, text=True, check=True,
        ).stdout.splitlines()
        events = [json.loads(l)["event"] for l in lines[1:]]
        started = next(e["RunStarted"]["at"] for e in events if "RunStarted" in e)
        done = {}
        start = {}
        for e in events:
            if "StepSucceeded" in e:
                done[e["StepSucceeded"]["step"]] = e["StepSucceeded"]["at"]
            if "StepStarted" in e:
                start.setdefault(e["StepStarted"]["step"], e["StepStarted"]["at"])
        for step, at in start.items():
            # Steps are numbered in the file's order: chain by chain.
            ready = started if step % per_chain == 0 else done[step - 1]
            out.append(at - ready)
    return out


def separate(work, file):
    dirs = [os.path.join(work, f"sep-{i}") for i in range(runs)]
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    began = time.monotonic()
    procs = [
        subprocess.Popen([binary, "--state", d, "run", file], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for d in dirs
    ]
    peak = wait_all(procs)
    took = time.monotonic() - began
    lat = []
    for d in dirs:
        lat += latencies(d, [1])
    return took, peak, None, lat


def served(work, file):
    state = os.path.join(work, "served-state")
    empty = os.path.join(work, "served-runbooks")
    shutil.rmtree(state, ignore_errors=True)
    os.makedirs(empty, exist_ok=True)
    server = subprocess.Popen([binary, "--state", state, "serve", empty], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sock = os.path.join(state, "runbook.sock")
    while not os.path.exists(sock):
        time.sleep(0.005)
    hwm = [0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                for line in open(f"/proc/{server.pid}/status"):
                    if line.startswith("VmHWM:"):
                        hwm[0] = max(hwm[0], int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.05)

    t = threading.Thread(target=watch)
    t.start()
    try:
        began = time.monotonic()
        procs = [
            subprocess.Popen([binary, "--state", state, "run", file], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for _ in range(runs)
        ]
        followers = wait_all(procs)
        took = time.monotonic() - began
        lat = latencies(state, range(1, runs + 1))
    finally:
        # A failed run leaves no server behind.
        stop.set()
        t.join()
        server.terminate()
        server.wait()
    return took, followers, hwm[0], lat


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def main():
    work = tempfile.mkdtemp(prefix="runbook-served-", dir=os.environ.get("BENCH_DIR"))
    file = os.path.join(work, "many.runbook")
    with open(file, "w") as f:
        f.write(runbook_text())
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    print(f"{runs} runs of {steps} steps ({chains} chains, concurrency 4), {rounds} rounds, "
          f"{os.cpu_count()} cores, open files {limit[0]}; in {work}")
    print(f"{'way':<28} {'wall':>8} {'memory':>34} {'ready->start p50/p99/max ms':>30}")
    for r in range(rounds):
        for name, way in (("separate processes", separate), ("one server", served)):
            took, peak, server_peak, lat = way(work, file)
            if server_peak is None:
                memory = f"sum of peaks {peak / 1024:.0f} MiB"
            else:
                memory = f"server {server_peak / 1024:.0f} MiB, followers {peak / 1024:.0f} MiB"
            print(f"{name + f' (round {r + 1})':<28} {took:>7.2f}s {memory:>34} "
                  f"{pct(lat, 0.5):>10} / {pct(lat, 0.99):>4} / {max(lat):>5}")
    if not os.environ.get("BENCH_KEEP"):
        shutil.rmtree(work, ignore_errors=True)


main()
