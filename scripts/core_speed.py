"""Does each CPU core of this host change speed on its own, does choosing a fast one steady a
launch-bound cell, and where did the harness's launching threads run? Three probes, plain Python and
plain PyTorch (not the harness), and a watch over the harness's own runs.

python scripts/core_speed.py sidecar [--cores 3,9,15] [-- COMMAND ...]
python scripts/core_speed.py fastest-core [--processes 5] [--rounds 5] [--device cuda|cpu]
python scripts/core_speed.py placement [--watch-core 15] -- COMMAND ...

`sidecar`: one process pinned to each of `--cores` times 100,000 additions every 0.1 s (ms; lower is
faster) while COMMAND runs (e.g. a sweep; without one, for `--seconds`). Printed per core: readings, the
range of its per-second medians and the share of seconds slower than the midpoint between the fastest and
slowest second of all cores; then the correlation of every two cores' per-second medians (near 1: the host
slows as a whole; near 0: each core on its own).

`fastest-core`: fresh processes of DenseNet201, eager fp32, batch 32 (torchvision, random weights, cuDNN
autotuning on, 20 warm-up calls), each timing `--rounds` pairs of 3 s windows: one with the thread free,
one pinned to the core a probe of every allowed core finds fastest (the fastest of three 50,000-addition
loops per core). The same probe, in the thread, before and after each window. Printed: every window, then
per way the median, range and the windows whose two probes both read fast, and how often the probe after a
window was over 25% slower than the one before it.

`placement`: while COMMAND runs (harness runs logging to MLFLOW_TRACKING_URI), every thread of the
project's processes (`src.` in the command line) is read from /proc every 0.1 s: its core and its CPU
ticks. Then per run that COMMAND logged, in order: its figure, its host CPU probes, and its launching
thread (the thread with the most ticks inside the run's timed window): the cores it ran on there (ticks
on each), how often it changed core, and the ticks other threads of ours spent on that core meanwhile. The
reading thread is pinned to `--watch-core` (the command is not).

A benchmark, not a test: it asserts nothing (docs/investigations.md says what it read on the H200 host).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SIDECAR = r"""
import json, os, sys, time
os.sched_setaffinity(0, {int(sys.argv[1])})
with open(sys.argv[2], "w") as f:
    while True:
        t, a, s = time.time(), time.perf_counter(), 0
        for i in range(100000):
            s += i
        f.write(json.dumps([round(t, 3), round((time.perf_counter() - a) * 1e3, 3)]) + "\n")
        f.flush()
        time.sleep(0.1)
"""

FASTEST_CORE = r"""
import json, os, sys, time
import torch, torchvision
rounds, dev = int(sys.argv[1]), torch.device(sys.argv[2])
shape = (32, 3, 224, 224) if dev.type == "cuda" else (2, 3, 64, 64)  # the CPU: a quick look only
def probe():
    best = 1e9
    for _ in range(3):
        a, s = time.perf_counter(), 0
        for i in range(50000):
            s += i
        best = min(best, time.perf_counter() - a)
    return best * 1e3
allowed = sorted(os.sched_getaffinity(0))
def fastest():
    found = {}
    for core in allowed:
        os.sched_setaffinity(0, {core})
        found[core] = probe()
    best = min(found, key=found.get)
    os.sched_setaffinity(0, {best})
    return best, found[best]
torch.backends.cudnn.benchmark = True
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
model = torchvision.models.densenet201(weights=None).eval().to(dev)
x = torch.randn(*shape, device=dev)
with torch.inference_mode():
    for _ in range(20):
        model(x)
    sync()
    for r in range(rounds):
        for way in ("free", "fastest core"):
            chose = time.perf_counter()
            if way == "free":
                os.sched_setaffinity(0, set(allowed))
                core, before = None, probe()
            else:
                core, before = fastest()
            choose_ms = (time.perf_counter() - chose) * 1e3
            for _ in range(3):
                model(x)
            sync()
            start, n = time.perf_counter(), 0
            while time.perf_counter() - start < 3.0:
                model(x)
                n += 1
            sync()
            wall = time.perf_counter() - start
            row = {"way": way, "img_s": round(shape[0] * n / wall, 1), "core": core,
                   "probe_before_ms": round(before, 2), "probe_after_ms": round(probe(), 2),
                   "choose_ms": round(choose_ms, 1)}
            print(json.dumps(row), flush=True)
"""


def correlation(a: list[float], b: list[float]) -> float:
    """Pearson's r (nan where a core's readings did not vary)."""
    try:
        return statistics.correlation(a, b)
    except statistics.StatisticsError:
        return float("nan")


def per_second_medians(path: Path) -> dict[int, float]:
    """One core's readings (ms), the median of each second."""
    readings: dict[int, list[float]] = {}
    for line in path.read_text().splitlines():
        t, ms = json.loads(line)
        readings.setdefault(int(t), []).append(ms)
    return {t: statistics.median(v) for t, v in readings.items()}


def sidecar(cores: list[int], seconds: float, command: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="core-speed-") as name:  # the readings, removed once read
        folder = Path(name)
        probes = [
            subprocess.Popen([sys.executable, "-c", SIDECAR, str(c), str(folder / f"{c}.jsonl")])
            for c in cores
        ]
        try:
            if command:
                print(f"{' '.join(command)} exited {subprocess.run(command).returncode}", flush=True)
            else:
                time.sleep(seconds)
        finally:
            for p in probes:
                p.terminate()
                p.wait()
        per_second = {c: per_second_medians(folder / f"{c}.jsonl") for c in cores}
    seconds_all = [m for s in per_second.values() for m in s.values()]
    if not seconds_all:
        print("no readings")
        return
    middle = (min(seconds_all) + max(seconds_all)) / 2
    for c, s in per_second.items():
        slow = 100 * sum(m > middle for m in s.values()) / len(s)
        print(
            f"core {c}: {len(s)} s, per-second medians {min(s.values()):.1f}-{max(s.values()):.1f} ms, "
            f"{slow:.0f}% of seconds over {middle:.1f} ms"
        )
    for i, a in enumerate(cores):
        for b in cores[i + 1 :]:
            both = sorted(set(per_second[a]) & set(per_second[b]))
            if len(both) > 2:
                r = correlation([per_second[a][t] for t in both], [per_second[b][t] for t in both])
                print(f"cores {a} and {b}: correlation of per-second medians {r:.2f} over {len(both)} s")


def fastest_core(processes: int, rounds: int, device: str) -> None:
    rows = []
    for i in range(processes):
        cmd = [sys.executable, "-c", FASTEST_CORE, str(rounds), device]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            print(f"process {i} exited {done.returncode}: {done.stderr[-1500:]}")
            continue
        for line in done.stdout.strip().splitlines():
            rows.append(json.loads(line))
            print(f"{i} {line}", flush=True)
    if not rows:
        return
    fast = 1.1 * min(min(r["probe_before_ms"], r["probe_after_ms"]) for r in rows)
    for way in ("free", "fastest core"):
        mine = [r for r in rows if r["way"] == way]
        rates = [r["img_s"] for r in mine]
        median = statistics.median(rates)
        spread = 100 * (max(rates) - min(rates)) / median
        steady = [r["img_s"] for r in mine if max(r["probe_before_ms"], r["probe_after_ms"]) <= fast]
        slower = sum(r["probe_after_ms"] > 1.25 * r["probe_before_ms"] for r in mine)
        print(
            f"{way}: {len(rates)} windows, median {median:.1f} img/s, {min(rates):.1f}-{max(rates):.1f} "
            f"({spread:.0f}% of the median); slower after than before by over 25%: {slower}"
        )
        if steady:
            print(
                f"    both probes within 10% of the fastest reading ({fast:.2f} ms): {len(steady)} windows, "
                f"{min(steady):.1f}-{max(steady):.1f} img/s"
            )


def watch_threads(out: dict[str, list[tuple[float, int, int]]], stop: threading.Event, core: int) -> None:
    """Per thread of the project's processes, (time, CPU ticks, core) every 0.1 s."""
    with contextlib.suppress(OSError, ValueError):
        os.sched_setaffinity(0, {core})  # this thread alone
    pids: list[str] = []
    scanned = 0.0
    while not stop.is_set():
        now = time.time()
        if now - scanned > 0.5:
            pids, scanned = [p for p in os.listdir("/proc") if p.isdigit() and ours(p)], now
        for pid in pids:
            with contextlib.suppress(OSError):
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with contextlib.suppress(OSError):
                        stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                        f = stat[stat.rindex(")") + 2 :].split()  # fields from the 3rd (state) on
                        out.setdefault(tid, []).append((now, int(f[11]) + int(f[12]), int(f[36])))
        stop.wait(0.1)


def ours(pid: str) -> bool:
    try:
        return b"src." in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def placement(command: list[str], watch_core: int) -> None:
    import mlflow  # the harness's store, read back as the report does

    by_thread: dict[str, list[tuple[float, int, int]]] = {}
    stop, started = threading.Event(), time.time()
    watcher = threading.Thread(target=watch_threads, args=(by_thread, stop, watch_core), daemon=True)
    watcher.start()
    try:
        print(f"{shlex.join(command)} exited {subprocess.run(command).returncode}", flush=True)
    finally:
        stop.set()
        watcher.join()
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    for run in sorted(runs, key=lambda r: r.info.start_time):
        m, tags = run.data.metrics, run.data.tags
        if run.info.start_time < started * 1e3 or "window_start_unix" not in m:
            continue
        a, b = m["window_start_unix"], m["window_end_unix"]
        inside = {tid: [s for s in ss if a <= s[0] <= b] for tid, ss in by_thread.items()}
        busy = {tid: ss[-1][1] - ss[0][1] for tid, ss in inside.items() if len(ss) > 1}
        line = (
            f"{run.info.run_name} start={tags.get('child_start', '?').split()[0]} "
            f"{m.get('throughput_img_s', 0.0):.1f} img/s, window {b - a:.1f} s, probes "
            f"{m.get('cpu_probe_before_ms', 0.0):.2f}/{m.get('cpu_probe_after_ms', 0.0):.2f} ms"
        )
        if not busy:
            print(f"{line}; no thread read inside its window")
            continue
        launching = max(busy, key=busy.get)
        steps = list(itertools.pairwise(inside[launching]))
        cores: dict[int, int] = {}
        for s0, s1 in steps:
            cores[s1[2]] = cores.get(s1[2], 0) + s1[1] - s0[1]
        moves = sum(s0[2] != s1[2] for s0, s1 in steps)
        main_core = max(cores, key=cores.get)
        others = sum(
            s1[1] - s0[1]
            for tid, ss in inside.items()
            if tid != launching
            for s0, s1 in itertools.pairwise(ss)
            if s1[2] == main_core
        )
        on = ", ".join(f"{c}: {n}" for c, n in sorted(cores.items(), key=lambda x: -x[1]))
        print(
            f"{line}; launching thread {launching}: ticks on core {on}; core changes {moves}; "
            f"other threads' ticks on core {main_core}: {others}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="probe", required=True)
    side = sub.add_parser("sidecar", help="pinned probes on some cores while a command runs")
    side.add_argument("--cores", default="3,9,15")
    side.add_argument("--seconds", type=float, default=60.0, help="without a command: how long")
    side.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ... to run meanwhile")
    pin = sub.add_parser("fastest-core", help="3 s windows, free and pinned to the fastest core")
    pin.add_argument("--processes", type=int, default=5)
    pin.add_argument("--rounds", type=int, default=5)
    pin.add_argument("--device", default="cuda")
    place = sub.add_parser("placement", help="the cores of the harness's launching threads")
    place.add_argument("--watch-core", type=int, default=(os.cpu_count() or 1) - 1)
    place.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ... (harness runs)")
    args = parser.parse_args()
    command = getattr(args, "command", [])
    command = command[1:] if command[:1] == ["--"] else command
    if args.probe == "sidecar":
        sidecar([int(c) for c in args.cores.split(",") if c], args.seconds, command)
    elif args.probe == "placement":
        if not command:
            parser.error("placement needs -- COMMAND ...: harness runs to watch")
        placement(command, args.watch_core)
    else:
        fastest_core(args.processes, args.rounds, args.device)


if __name__ == "__main__":
    main()
