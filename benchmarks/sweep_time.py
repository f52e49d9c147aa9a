"""Where a sweep's wall time goes: the study grid run on this host as named sweeps, figures side by side.

python benchmarks/sweep_time.py [--sweeps cold,warm,old] [--store DIR] [--out FILE.md] [-- OVERRIDES...]

Each sweep runs `python -m src.bench +experiment=study hydra.sweeper.params.batch_index=0,1` (the three
models at their two study batch sizes x the four study columns: 24 jobs) into its own experiment of one
store, with one compile cache (`BENCH_CACHE_DIR`) for all of them. The sweeps, in the order given:

- `cold`: the project's defaults, the compile cache emptied first;
- `warm`: the defaults again, the cache as the sweeps before left it;
- `old`: a fixed count of timed calls in a fresh interpreter per job (`measure.stop=fixed child_start=fresh`);
- `fresh`, `template`: the defaults with `child_start=fresh` or `child_start=template`;
- `before`: the defaults of another checkout of the project (`--before DIR`), e.g. the commit before a
  change, run from there.

OVERRIDES go to every sweep (e.g. `gpu=0`, or `smoke=true` for a quick look on a CPU). `--store DIR` keeps
the store (and the cache) there, so that sweeps run by separate commands (a device's limit per command)
are tabled together: every run prints the tables of all the sweeps the store holds. Per sweep: its wall
time, the seconds before its first job's run opened, the share spent in timed windows and the statuses;
per job (read back through MLflow's client): job wall time, the child's start (the template's fork, or a
new interpreter), its setup (a new interpreter's imports, CUDA's initialisation, the device's checks),
model load, parity reference, build, first call, warm-up, timed window and the rest (energy counters,
export, the child's exit); then every `ok` figure of each sweep, with the host CPU probe read before and
after its timed loop, and the defaults beside the same job of each `old` sweep (a launch-bound cell
follows the host CPU's speed: the differences are also given over the jobs whose two runs saw the same
speed). A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from src import PROJECT_ROOT
from src.parent import tracking
from src.shared.results import JOB, LATENCY, STOP, TRACE, Stability, cpu_probes, slowdown_pct

GRID = ["+experiment=study", "hydra.sweeper.params.batch_index='0,1'"]
SWEEPS = {  # name: overrides on top of the defaults
    "cold": [],
    "warm": [],
    "old": ["measure.stop=fixed", "child_start=fresh"],
    "fresh": ["child_start=fresh"],
    "template": ["child_start=template"],
    "before": [],
}
DEFAULTS = ("cold", "warm", "fresh", "template")  # the defaults of today; compared with the references
REFERENCES = ("old", "before")
PARTS = [  # (column, metric, scale to seconds)
    ("child start", JOB.child_start_s, 1.0),
    ("setup", JOB.setup_s, 1.0),
    ("load", JOB.model_load_s, 1.0),
    ("parity ref", JOB.parity_reference_s, 1.0),
    ("build", JOB.build_time_s, 1.0),
    ("first call", JOB.first_call_ms, 1e-3),
    ("warm-up", LATENCY.warmup_s, 1.0),
    ("window", LATENCY.window_s, 1.0),
]
SAME_SPEED_PCT = 10.0  # two runs saw the same host CPU speed: all their probes within this of each other
LEDGER = "sweeps.json"  # the store's sweeps: name, experiment, overrides, start and wall time


def sweep(name: str, experiment: str, store: Path, overrides: list[str], before: Path | None = None) -> dict:
    """One sweep of the grid in its own experiment; its ledger entry."""
    cache = store / "cache"
    if name == "cold":
        shutil.rmtree(cache, ignore_errors=True)
    extra = [*overrides, *SWEEPS[name]]
    uri = f"sqlite:///{store / 'mlflow.db'}"
    args = [*GRID, f"tracking.uri={uri}", f"tracking.experiment={experiment}"]
    env = {**os.environ, "BENCH_CACHE_DIR": str(cache), "YOLO_OFFLINE": "1"}
    started = time.time()
    begin = time.perf_counter()
    where = before if name == "before" else PROJECT_ROOT
    if name == "before":  # the other checkout's own code, not this one's
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(where), env.get("PYTHONPATH")) if p)
    done = subprocess.run([sys.executable, "-m", "src.bench", *args, *extra], cwd=where, env=env)
    wall = time.perf_counter() - begin
    if done.returncode not in (0, 3):  # 3: some job failed, which the table shows
        print(f"sweep {experiment} exited {done.returncode}", file=sys.stderr)
    return {
        "name": name,
        "experiment": experiment,
        "overrides": extra,
        "started": started,
        "wall_s": wall,
        "exit": done.returncode,
    }


def jobs(store: Path, experiment: str) -> list:
    client = tracking.open_client(f"sqlite:///{store / 'mlflow.db'}")
    runs = client.search_runs(
        [tracking.experiment_id(client, experiment)], "tags.kind = 'job'", max_results=1000
    )
    return sorted(runs, key=lambda r: r.info.start_time)


def summary(entry: dict, runs: list) -> str:
    windows = sum(r.data.metrics.get(LATENCY.window_s, 0.0) for r in runs)
    statuses = Counter(r.data.tags.get(JOB.status, "?") for r in runs)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    wall = entry["wall_s"]
    first = (runs[0].info.start_time / 1000 - entry["started"]) if runs else 0.0
    share = 100 * windows / wall if wall else 0.0
    setting = " ".join(f"`{o}`" for o in SWEEPS[entry["name"]]) or "defaults"
    return (
        f"| {entry['experiment']} | {setting} | {len(runs)} | {wall:.0f} | {first:.1f} | {windows:.1f} "
        f"| {share:.0f}% | {counts} |"
    )


def breakdown(runs: list) -> list[str]:
    head = "| job | status | start | wall s | " + " | ".join(p[0] for p in PARTS) + " | rest | img/s | stop |"
    lines = [head, "|" + " --- |" * (len(PARTS) + 7)]
    for r in runs:
        m, t = r.data.metrics, r.data.tags
        parts = [m.get(metric, 0.0) * scale for _, metric, scale in PARTS]
        wall = m.get(JOB.job_wall_s, 0.0)
        rate = m.get(LATENCY.throughput_img_s)
        cells = " | ".join(f"{p:.1f}" for p in parts)
        stop = t.get(STOP.stop_reason, "").split(":")[0].split(" (")[0]
        start = t.get(JOB.child_start, "-").split(" (")[0]
        img_s = f"{rate:.1f}" if rate else "-"
        lines.append(
            f"| {r.info.run_name} | {t.get(JOB.status)} | {start} | {wall:.1f} | {cells} "
            f"| {wall - sum(parts):.1f} | {img_s} | {stop} |"
        )
    return lines


def same_host_speed(a: tuple[float, float] | None, b: tuple[float, float] | None) -> bool:
    """Both runs' probes, before and after, within SAME_SPEED_PCT of one another."""
    return bool(a and b) and slowdown_pct([*a, *b]) <= SAME_SPEED_PCT


def figures(ledger: list[dict], runs: dict[str, list]) -> list[str]:
    """Every ok figure of each sweep with its host CPU probe, and each defaults sweep against each `old`
    sweep: the largest difference over all jobs, and over the jobs whose two runs saw the same host speed."""
    rates = {
        e["experiment"]: {
            r.info.run_name: (r.data.metrics.get(LATENCY.throughput_img_s), cpu_probes(r.data.metrics))
            for r in runs[e["experiment"]]
        }
        for e in ledger
    }
    launch_bound = {
        (e["experiment"], r.info.run_name)
        for e in ledger
        for r in runs[e["experiment"]]
        if r.data.metrics.get(TRACE.gpu_util_mean_pct, 100.0) < Stability.GPU_BUSY_PCT
    }
    names = [e["experiment"] for e in ledger]
    pairs = [
        (new["experiment"], old["experiment"])
        for new in ledger
        if new["name"] in DEFAULTS
        for old in ledger
        if old["name"] in REFERENCES
    ]
    head = (
        "| job | "
        + " | ".join(f"img/s {n} (CPU probe ms)" for n in names)
        + "".join(f" | {a} vs {b}" for a, b in pairs)
        + " |"
    )
    lines = [head, "|" + " --- |" * (1 + len(names) + len(pairs))]
    worst: dict[tuple[str, str, bool], tuple[float, str]] = {}
    jobs_in_order = list(dict.fromkeys(j for n in names for j in rates[n]))
    for job in jobs_in_order:
        values = [rates[n].get(job, (None, None)) for n in names]
        if not any(v for v, _ in values):
            continue
        cells = [
            (
                f"{v:.1f}"
                + (f" ({p[0]:.2f}/{p[1]:.2f})" if p else "")
                + (" L" if (n, job) in launch_bound else "")
            )
            if v
            else "-"
            for n, (v, p) in zip(names, values, strict=True)
        ]
        for a, b in pairs:
            (now, now_probe), (then, then_probe) = (rates[x].get(job, (None, None)) for x in (a, b))
            if now and then:
                diff = 100 * (now - then) / then
                same = same_host_speed(now_probe, then_probe)
                cells.append(f"{diff:+.2f}%" + ("" if same else " *"))
                for key in {(a, b, False), (a, b, same)}:
                    if abs(diff) > abs(worst.get(key, (0.0, ""))[0]):
                        worst[key] = (diff, job)
            else:
                cells.append("-")
        lines.append(f"| {job} | " + " | ".join(cells) + " |")
    lines.append(
        f"\n`*`: the two runs did not see the same host CPU speed (their probes, before and after the timed "
        f"loop, differ by more than {SAME_SPEED_PCT:g}%)."
    )
    for (a, b, same), (diff, job) in sorted(worst.items()):
        which = "jobs at the same host CPU speed" if same else "all jobs"
        lines.append(f"\nLargest difference, {a} against {b}, {which}: {diff:+.2f}% ({job}).")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sweeps", default="cold,warm", help=f"comma-separated, in order: {', '.join(SWEEPS)}"
    )
    parser.add_argument(
        "--store", type=Path, help="keep the store and cache here (default: a new temp folder)"
    )
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    parser.add_argument("--before", type=Path, help="the other checkout the `before` sweep runs")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every sweep (after --)")
    args = parser.parse_args()
    plan = [s for s in args.sweeps.split(",") if s]
    unknown = [s for s in plan if s not in SWEEPS]
    if unknown:
        parser.error(f"unknown sweep(s) {', '.join(unknown)}; allowed: {', '.join(SWEEPS)}")
    if "before" in plan and not (args.before and (args.before / "src" / "bench.py").is_file()):
        parser.error("the `before` sweep needs --before DIR, a checkout of this project")
    known = args.store / LEDGER if args.store else None
    ledger = json.loads(known.read_text()) if known and known.is_file() else []
    if not plan and not ledger:
        where = f"--store {args.store} records none" if args.store else "no --store to print them from"
        parser.error(f"--sweeps names none of {', '.join(SWEEPS)} and {where}: nothing to run or print")
    store = args.store or Path(tempfile.mkdtemp(prefix="sweep-time-"))
    store.mkdir(parents=True, exist_ok=True)
    ledger_file = store / LEDGER
    for name in plan:
        n = 1 + sum(e["name"] == name for e in ledger)
        ledger.append(sweep(name, f"{name}-{n}", store, args.overrides, args.before))
        ledger_file.write_text(json.dumps(ledger, indent=1))
    runs = {e["experiment"]: jobs(store, e["experiment"]) for e in ledger}
    out = [
        f"Command: `python benchmarks/sweep_time.py {shlex.join(sys.argv[1:])}`",
        "",
        "| sweep | settings | jobs | wall s | before the first job s | timed windows s | windows / wall "
        "| statuses |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    out += [summary(e, runs[e["experiment"]]) for e in ledger]
    for e in ledger:
        out += ["", f"Per job, {e['experiment']} (seconds; rest = wall - the others):", ""]
        out += breakdown(runs[e["experiment"]])
    out += [
        "",
        "Throughput of every ok job, and the defaults against each reference sweep (`old`: fixed counts in "
        "fresh interpreters; `before`: another checkout). `L`: launch-bound, "
        "the GPU busy under 80% of the window (its figure follows the host CPU):",
        "",
    ]
    out += figures(ledger, runs)
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    print(f"store: {store}", file=sys.stderr)


if __name__ == "__main__":
    main()
