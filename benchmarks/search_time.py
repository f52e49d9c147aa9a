"""A search on a cold compile cache against the same search on the warm one.

python benchmarks/search_time.py [--store DIR] [-- OVERRIDES...]

Runs the search preset (`python -m src.bench +experiment=best OVERRIDES`) twice into one store, with one
compile cache (`BENCH_CACHE_DIR` under the store's folder): `cold`, the cache emptied first; then `warm`,
with `force=true` so that every job is built and measured again (a resumed search would link them
instead), now from the caches the first one filled (Inductor's FX graphs, autotuning results and Triton
kernels, the precompiled modules). Prints each sweep's wall time and, per job, its status, build time,
figure and what the caches gave, the jobs' time by phase (`time_in_<phase>_s`), then the warm/cold
ratios; what each sweep printed is kept beside the store (`cold.log`, `warm.log`).
OVERRIDES go to both, e.g. a quick look on a CPU:

    python benchmarks/search_time.py -- hydra.sweeper.params.model=segresnet \\
        hydra.sweeper.params.batch_index=0 smoke=true gpu=cpu \\
        +candidate=eager_fp32,compile_fp16_cl,compile_fp16_cl_ro_freezing

A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from src import PROJECT_ROOT
from src.parent import tracking
from src.shared.progress import phase_times
from src.shared.results import JOB, LATENCY


def run_sweep(name: str, store: Path, overrides: list[str]) -> float:
    env = {**os.environ, "BENCH_CACHE_DIR": str(store / "cache"), "YOLO_OFFLINE": "1"}
    uri = f"sqlite:///{store / 'mlflow.db'}"
    extra = ["force=true"] if name == "warm" else []
    cmd = [sys.executable, "-m", "src.bench", "+experiment=best", *overrides, *extra]
    cmd += [f"tracking.uri={uri}", f"tracking.experiment=search-time-{name}"]
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    (store / f"{name}.log").write_text(out.stdout + out.stderr)  # what the sweep printed
    if out.returncode not in (0, 3):
        print(out.stderr[-3000:], file=sys.stderr)
    return wall


def jobs(store: Path, name: str) -> dict[str, dict]:
    client = tracking.open_client(f"sqlite:///{store / 'mlflow.db'}")
    exp = client.get_experiment_by_name(f"search-time-{name}")
    runs = client.search_runs([exp.experiment_id], f"tags.{JOB.kind} = 'job'") if exp else []
    return {
        r.info.run_name: {
            "status": r.data.tags.get(JOB.status, "?"),
            "build": r.data.metrics.get(JOB.build_time_s),
            "wall": r.data.metrics.get(JOB.job_wall_s, 0.0),
            "img_s": r.data.metrics.get(LATENCY.throughput_img_s),
            "cache": "/".join(
                r.data.tags.get(t, "-")[:4] for t in ("inductor_cache", "precompile", "aoti_package_cache")
            ),
            "phases": phase_times(r.data.metrics),
        }
        for r in runs
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", default=None, help="folder for the store and the cache (default: temporary)")
    ap.add_argument("overrides", nargs="*", help="after --: Hydra overrides for both sweeps")
    a = ap.parse_args()
    store = Path(a.store or tempfile.mkdtemp(prefix="search-time-"))
    store.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(store / "cache", ignore_errors=True)
    walls = {}
    for name in ("cold", "warm"):
        walls[name] = run_sweep(name, store, a.overrides)
        print(f"{name} sweep: {walls[name]:.0f} s", flush=True)  # a run cut short still says this much
    cold, warm = jobs(store, "cold"), jobs(store, "warm")
    print(f"store: {store}")
    head = "| job | status (cold / warm) | build s cold | build s warm | img/s cold / warm |"
    print(f"\n{head} warm caches (Inductor/precompile/package) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for label in sorted(cold):
        c, w = cold[label], warm.get(label, {})
        fmt = lambda v: f"{v:.1f}" if isinstance(v, float) else "-"  # noqa: E731
        status = f"{c['status']} / {w.get('status', '-')}"
        builds = f"{fmt(c['build'])} | {fmt(w.get('build'))}"
        speed = f"{fmt(c['img_s'])} / {fmt(w.get('img_s'))}"
        print(f"| {label} | {status} | {builds} | {speed} | {w.get('cache', '-')} |")
    print("\n| phase (all jobs) | s cold | s warm | warm / cold |")  # where the jobs' time went
    print("| --- | --- | --- | --- |")
    names = dict.fromkeys(p for j in [*cold.values(), *warm.values()] for p in j["phases"])
    for phase in names:
        c = sum(j["phases"].get(phase, 0.0) for j in cold.values())
        w = sum(j["phases"].get(phase, 0.0) for j in warm.values())
        print(f"| {phase} | {c:.1f} | {w:.1f} | {w / c if c else float('nan'):.2f} |")
    job_cold = sum(j["wall"] for j in cold.values())
    job_warm = sum(j["wall"] for j in warm.values())
    print(
        f"\nsweep wall time: cold {walls['cold']:.0f} s, warm {walls['warm']:.0f} s "
        f"({walls['warm'] / walls['cold']:.2f} of cold)"
    )
    print(
        f"jobs' time: cold {job_cold:.0f} s, warm {job_warm:.0f} s "
        f"({job_warm / max(job_cold, 1e-9):.2f} of cold)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
