"""Where a sweep's wall time goes: the study grid run twice on this host, compile caches cold then warm.

python scripts/sweep_time.py [--fixed] [--template] [--out FILE.md] [-- OVERRIDES...]

Runs `python -m src.bench +experiment=study hydra.sweeper.params.batch_index=0,1` (the three models at
their two study batch sizes x the four study columns: 24 jobs) in a fresh store with a fresh compile
cache (`BENCH_CACHE_DIR`), then again with that cache warm; with `--fixed` once more under the
measurement rule before `measure.stop=ci` (`measure.stop=fixed`), and with `--template` once more with
the children forked by the template (`child_start=template`), to compare the figures. OVERRIDES go to
every sweep (e.g. `gpu=0`, or `smoke=true` for a quick look on a CPU). Prints, per sweep, its wall time,
the share of it spent in timed windows and the statuses, then the per-job breakdown (read back through
MLflow's client): job wall time, model load, parity reference, build, first call, timed window and the
rest (process start, imports, warm-up, idle power). A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from src import PROJECT_ROOT
from src.parent import tracking
from src.shared.results import JOB, LATENCY

GRID = ["+experiment=study", "hydra.sweeper.params.batch_index='0,1'"]
PARTS = [  # (column, metric, scale to seconds)
    ("load", JOB.model_load_s, 1.0),
    ("parity ref", JOB.parity_reference_s, 1.0),
    ("build", JOB.build_time_s, 1.0),
    ("first call", JOB.first_call_ms, 1e-3),
    ("window", LATENCY.window_s, 1.0),
]


def sweep(name: str, store: str, cache: Path, overrides: list[str]) -> float:
    """One sweep of the grid in its own experiment; its wall time in seconds."""
    args = [*GRID, f"tracking.uri={store}", f"tracking.experiment={name}", "tracking.log_engine=false"]
    env = {**os.environ, "BENCH_CACHE_DIR": str(cache), "YOLO_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "src.bench", *args, *overrides], cwd=PROJECT_ROOT, env=env)
    wall = time.perf_counter() - start
    if done.returncode not in (0, 3):  # 3: some job failed, which the table shows
        sys.exit(f"sweep {name} exited {done.returncode}")
    return wall


def jobs(store: str, name: str) -> list:
    client = tracking.open_client(store)
    runs = client.search_runs([tracking.experiment_id(client, name)], "tags.kind = 'job'", max_results=1000)
    return sorted(runs, key=lambda r: r.info.start_time)


def summary(name: str, wall: float, runs: list) -> list[str]:
    windows = sum(r.data.metrics.get(LATENCY.window_s, 0.0) for r in runs)
    statuses: dict[str, int] = {}
    for r in runs:
        statuses[r.data.tags.get(JOB.status, "?")] = statuses.get(r.data.tags.get(JOB.status, "?"), 0) + 1
    counts = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
    share = 100 * windows / wall if wall else 0.0
    return [f"| {name} | {len(runs)} | {wall:.0f} | {windows:.1f} | {share:.0f}% | {counts} |"]


def breakdown(runs: list) -> list[str]:
    head = "| job | status | wall s | " + " | ".join(p[0] for p in PARTS) + " | rest | img/s | stop |"
    lines = [head, "|" + " --- |" * (len(PARTS) + 6)]
    for r in runs:
        m, t = r.data.metrics, r.data.tags
        parts = [m.get(metric, 0.0) * scale for _, metric, scale in PARTS]
        wall = m.get(JOB.job_wall_s, 0.0)
        rate = m.get(LATENCY.throughput_img_s)
        cells = " | ".join(f"{p:.1f}" for p in parts)
        stop = t.get("stop_reason", "").split(":")[0].split(" (")[0]
        img_s = f"{rate:.1f}" if rate else "-"
        lines.append(
            f"| {r.info.run_name} | {t.get(JOB.status)} | {wall:.1f} | {cells} | {wall - sum(parts):.1f} "
            f"| {img_s} | {stop} |"
        )
    return lines


def compare(new: list, old: list, names: tuple[str, str] = ("ci", "fixed")) -> list[str]:
    """The ok figures of one sweep beside the same jobs of another."""
    before = {r.info.run_name: r.data.metrics.get(LATENCY.throughput_img_s) for r in old}
    lines = [f"| job | img/s ({names[0]}) | img/s ({names[1]}) | difference |", "| --- | --- | --- | --- |"]
    for r in new:
        now, then = r.data.metrics.get(LATENCY.throughput_img_s), before.get(r.info.run_name)
        if now and then:
            lines.append(
                f"| {r.info.run_name} | {now:.1f} | {then:.1f} | {100 * (now - then) / then:+.2f}% |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixed", action="store_true", help="a sweep under measure.stop=fixed")
    parser.add_argument("--template", action="store_true", help="a sweep with child_start=template")
    parser.add_argument("--out", type=Path, help="also write the tables to this markdown file")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every sweep (after --)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="sweep-time-"))
    store, cache = f"sqlite:///{scratch / 'mlflow.db'}", scratch / "cache"
    plan = [("cold", []), ("warm", [])] + ([("fixed", ["measure.stop=fixed"])] if args.fixed else [])
    plan += [("template", ["child_start=template"])] if args.template else []
    walls = {name: sweep(name, store, cache, [*args.overrides, *extra]) for name, extra in plan}
    runs = {name: jobs(store, name) for name in walls}
    out = [
        f"Command: `python scripts/sweep_time.py {' '.join(sys.argv[1:])}`",
        "",
        "| sweep | jobs | wall s | timed windows s | windows / wall | statuses |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, wall in walls.items():
        out += summary(name, wall, runs[name])
    for name in walls:
        out += ["", f"Per job, {name} (seconds; first call in seconds too; rest = wall - the others):", ""]
        out += breakdown(runs[name])
    if args.fixed:
        out += ["", "The warm sweep's ok figures beside the same jobs under `measure.stop=fixed`:", ""]
        out += compare(runs["warm"], runs["fixed"])
    if args.template:
        out += ["", "The template sweep's ok figures (caches warm) beside the warm sweep's:", ""]
        out += compare(runs["template"], runs["warm"], ("template", "fresh"))
    text = "\n".join(out) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    print(f"store: {store}", file=sys.stderr)


if __name__ == "__main__":
    main()
