"""The largest batch that fits (`+experiment=max_batch`): the search's steps, the knee, and a real search on
the CPU ended by a real allocator out-of-memory under a memory limit."""

from __future__ import annotations

import csv

import pytest
from mlflow import MlflowClient

from src.parent.config import MaxBatchConfig
from src.report_batch import knee
from tests.conftest import run_bench, sweep_folder, user_folders


def search(capacity: int, config: MaxBatchConfig) -> tuple[list[int], str]:
    """The batches the search tries on a device where batches up to `capacity` fit."""
    fits: set[int] = set()
    oom: set[int] = set()
    tried = []
    while True:
        batch, why = config.next_batch(fits, oom)
        if batch is None:
            return tried, why
        tried.append(batch)
        (fits if batch <= capacity else oom).add(batch)


def test_the_search_doubles_then_bisects_to_the_largest_batch_that_fits() -> None:
    tried, why = search(77, MaxBatchConfig())
    assert tried[:8] == [1, 2, 4, 8, 16, 32, 64, 128] and tried[-1] in (77, 78)
    assert why == "the largest batch that fits is 77; 78 ran out of memory"
    assert search(2000, MaxBatchConfig())[1] == "batch 1024 fits: it is max_batch.limit"
    assert search(0, MaxBatchConfig())[1] == "no batch fits: batch 1 ran out of memory"
    tried, why = search(100, MaxBatchConfig(multiple=8))
    assert all(b % 8 == 0 for b in tried[4:]) and why.startswith("the largest batch that fits is 96;")
    for config in (MaxBatchConfig(), MaxBatchConfig(start=8, limit=512, multiple=8)):
        # the preset sweeps enough steps for any device
        assert max(len(search(c, config)[0]) for c in range(0, config.limit + 2)) <= config.steps()


def test_the_knee_is_the_smallest_batch_within_ten_percent_of_the_best() -> None:
    # SegResNet eager fp32 on the H200 (docs/results/study-h200): 7.9 / 19.0 / 25.1 / 29.4 / 32.2 img/s
    assert knee([(1, 7.9), (4, 19.0), (8, 25.1), (16, 29.4), (32, 32.2)]) == 16
    assert knee([(1, 10.0), (2, 10.5)]) == 1
    assert knee([]) is None


@pytest.mark.slow
def test_max_batch_on_the_cpu_stops_at_a_real_out_of_memory(store: str) -> None:
    """DenseNet201 at its smoke shape under a 0.4 GiB limit: the batch doubles until the allocator
    refuses, then bisects to a multiple of 32; each step is a run, steps after the end none."""
    before = user_folders()
    args = ["+experiment=max_batch", "model=densenet", "smoke=true", "measure.memory_limit_gib=0.4"]
    quick = ["max_batch.multiple=32", "measure.stop=fixed", "measure.warmup_iters=1", "measure.min_iters=2"]
    out = run_bench([*args, *quick, "measure.min_duration_s=0", f"tracking.uri={store}"])
    assert out.returncode == 0, out.stderr[-3000:]
    client = MlflowClient(store)
    exp = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(exp, "tags.kind = 'job'")
    status = {int(r.data.params["batch_size"]): r.data.tags["status"] for r in runs}
    fits = max(b for b, s in status.items() if s == "ok")
    oom = min(b for b, s in status.items() if s == "oom")
    assert fits < oom <= fits + 32 and {1, 2, 4, 8, 16, 32, 64}.issubset(status)
    assert set(status.values()) == {"ok", "oom"}  # every step a run, out of memory included
    reasons = [r.data.tags["reason"] for r in runs if r.data.tags["status"] == "oom"]
    assert any("can't allocate memory" in why or "could not create a primitive" in why for why in reasons)
    assert all(r.data.tags["memory_limit"].startswith("0.4 GiB beyond") for r in runs)
    assert f"the largest batch that fits is {fits}; {oom} ran out of memory" in out.stdout + out.stderr
    (sweep,) = client.search_runs(exp, "tags.kind = 'sweep'")
    assert sweep.data.metrics["jobs_total"] == sweep.data.metrics["jobs_done"] == len(runs)
    folder = sweep_folder(store)
    assert len([p for p in folder.iterdir() if p.name.isdigit()]) == len(runs)  # no folder for no step
    assert user_folders() - before == {folder}
    with (folder / "report" / "max_batch.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["largest_fitting_batch"]) == fits and float(row["smallest_oom_batch"]) == oom
    assert float(row["knee_batch"]) <= fits
    assert (folder / "report" / "max_batch.png").stat().st_size > 0
    assert "## Largest batch and the knee" in (folder / "report" / "report.md").read_text()


def test_max_batch_refuses_a_batch_size_and_a_parallel_launcher() -> None:
    before = user_folders()
    parallel = run_bench(["+experiment=max_batch", "model=densenet", "hydra/launcher=gpus"])
    assert parallel.returncode == 2 and "allowed: the basic launcher, not JoblibLauncher" in parallel.stderr
    given = run_bench(["+experiment=max_batch", "model=densenet", "batch_size=8"])
    assert given.returncode == 2 and "decides each step's batch size" in given.stderr
    alone = run_bench(["max_batch.step=0", "model=densenet"])
    assert alone.returncode == 2 and "a single run takes batch_size" in alone.stderr
    assert user_folders() == before
