"""The measurement loop against known work, and the statistics against known numbers."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import pytest
import torch

from src.child import measure
from src.child.measure import (
    LoopSettings,
    Timing,
    cpu_probe_ms,
    half_width_pct,
    split,
    summarize,
    t95,
    time_single_call_ms,
    timed_loop,
)
from src.parent.launch import run_in_child
from src.shared.errors import Status
from tests.conftest import make_spec

CPU = torch.device("cpu")


def sleeper(ms: float):
    calls = []

    def fn(x: object) -> None:
        calls.append(x)
        time.sleep(ms / 1e3)

    return fn, calls


def test_each_iteration_is_timed_against_known_work() -> None:
    fn, _ = sleeper(20)
    timing = timed_loop(
        fn, None, CPU, LoopSettings(stop="fixed", warmup_iters=0, repeats=1, min_iters=8, min_duration_s=0)
    )
    assert len(timing.latencies_ms) == 8
    median = sorted(timing.latencies_ms)[4]
    assert 19.5 <= median <= 30, median  # time.sleep overshoots a little, never undershoots
    stats = summarize(timing, batch_size=4)
    assert stats.throughput_img_s == pytest.approx(4e3 / stats.latency_mean_ms)
    assert stats.throughput_window_img_s == pytest.approx(4 * 8 / timing.window_s)
    assert stats.throughput_window_img_s <= stats.throughput_img_s * 1.001  # the window includes the loop


def test_warmup_calls_are_run_but_not_timed() -> None:
    fn, calls = sleeper(1)
    timing = timed_loop(
        fn, "x", CPU, LoopSettings(stop="fixed", warmup_iters=3, repeats=1, min_iters=4, min_duration_s=0)
    )
    assert len(calls) == 7 and len(timing.latencies_ms) == 4
    assert timing.warmup_calls == 3 and timing.warmup_s >= 3 * 1e-3  # their time is kept, apart


def test_the_host_cpu_probe_times_fixed_work_before_and_after_the_timed_loop(monkeypatch) -> None:
    fn, _ = sleeper(2)
    timing = timed_loop(
        fn, None, CPU, LoopSettings(stop="fixed", warmup_iters=1, repeats=1, min_iters=3, min_duration_s=0)
    )
    before, after = timing.cpu_probe_ms
    assert before > 0 and after > 0
    stats = summarize(timing, batch_size=1)
    assert (stats.cpu_probe_before_ms, stats.cpu_probe_after_ms) == (before, after)
    assert {"cpu_probe_before_ms", "cpu_probe_after_ms"} <= set(stats.metrics())
    # it times CPU work: four times the additions take about four times as long (the fastest try each)
    single = min(cpu_probe_ms() for _ in range(3))
    monkeypatch.setattr(measure, "PROBE_ADDS", 4 * measure.PROBE_ADDS)
    quadruple = min(cpu_probe_ms() for _ in range(3))
    assert 2.0 < quadruple / single < 8.0, (single, quadruple)


def test_loop_runs_until_the_minimum_duration_when_iterations_come_first() -> None:
    fn, _ = sleeper(5)
    timing = timed_loop(
        fn, None, CPU, LoopSettings(stop="fixed", warmup_iters=0, repeats=1, min_iters=2, min_duration_s=0.3)
    )
    assert timing.window_s >= 0.3
    assert len(timing.latencies_ms) >= 10  # far past min_iters=2: the duration, not the count, ended it


def test_loop_runs_until_the_minimum_count_when_duration_comes_first() -> None:
    fn, _ = sleeper(30)
    timing = timed_loop(
        fn, None, CPU, LoopSettings(stop="fixed", warmup_iters=0, repeats=1, min_iters=6, min_duration_s=0.01)
    )
    assert len(timing.latencies_ms) == 6


def test_repeated_windows_each_follow_the_rules_and_give_the_spread() -> None:
    calls = []

    def fn(x: object) -> None:  # the second window is twice as slow as the first and the third
        calls.append(x)
        time.sleep(0.004 if 6 <= len(calls) < 12 else 0.002)

    settings = LoopSettings(stop="fixed", warmup_iters=0, repeats=3, min_iters=6, min_duration_s=0)
    timing = timed_loop(fn, None, CPU, settings)
    assert timing.window_sizes == (6, 6, 6) and len(timing.latencies_ms) == 18
    stats = summarize(timing, batch_size=1)
    assert stats.repeats == 3
    # window throughputs ~500, ~250, ~500 img/s: (max - min) / median ~ 50%
    assert 30 < stats.throughput_spread_pct < 70, stats.throughput_spread_pct
    steady = summarize(Timing([2.0] * 6, 0.1, window_sizes=(3, 3)), batch_size=1)
    assert steady.repeats == 2 and steady.throughput_spread_pct == 0.0


def test_statistics_on_known_latencies() -> None:
    stats = summarize(Timing([1.0, 2.0, 3.0, 4.0], window_s=0.01), batch_size=10)
    assert stats.latency_mean_ms == 2.5
    assert stats.latency_p50_ms == 2.5
    assert stats.latency_p90_ms == pytest.approx(3.7)
    assert stats.latency_p99_ms == pytest.approx(3.97)
    assert stats.latency_std_ms == pytest.approx(1.2909944)
    assert stats.latency_cov_pct == pytest.approx(51.639778)
    assert stats.throughput_img_s == pytest.approx(4000.0)
    assert stats.iterations == 4
    assert set(stats.to_dict()) >= {"throughput_img_s", "latency_p95_ms", "window_s"}


def test_first_call_is_timed_on_its_own() -> None:
    fn, _ = sleeper(15)
    assert 14.5 <= time_single_call_ms(fn, None, CPU) <= 40


def scripted(latencies_ms: list[float]):
    """A call whose n-th run sleeps the n-th of these (the last one from then on)."""
    calls = []

    def fn(x: object) -> int:
        calls.append(x)
        time.sleep(latencies_ms[min(len(calls), len(latencies_ms)) - 1] / 1e3)
        return len(calls)

    return fn, calls


CI = dict(stop="ci", warmup_iters=5, repeats=3, min_iters=5, min_duration_s=0)


def test_warm_up_ends_once_two_successive_calls_agree() -> None:
    # long enough that 5% (2 ms) is more than a busy machine's jitter in waking from a sleep
    fn, calls = scripted([160, 80, 40, 40])  # after a first call of 240 ms
    timing = timed_loop(fn, None, CPU, LoopSettings(**CI, ci_pct=50), first_ms=240)
    assert timing.warmup_calls == 4  # 160 vs 240, 80 vs 160, 40 vs 80 disagree; 40 vs 40 agree
    assert len(calls) == 4 + len(timing.latencies_ms)
    bounded = timed_loop(
        *scripted([80, 40, 20, 10])[:1], None, CPU, LoopSettings(**{**CI, "warmup_iters": 2})
    )
    assert bounded.warmup_calls == 2  # never more than warmup_iters


def test_the_ci_rule_stops_once_the_mean_is_known_and_keeps_the_last_output() -> None:
    fn, calls = scripted([3])
    timing = timed_loop(fn, None, CPU, LoopSettings(**CI, ci_pct=5, max_duration_s=20))
    assert timing.stop_reason.startswith("ci: the mean's 95% half-width within 5%"), timing.stop_reason
    n = len(timing.latencies_ms)
    assert n >= 5 and half_width_pct(timing.latencies_ms) <= 5
    assert half_width_pct(timing.latencies_ms[:-1]) > 5 or n == 5  # it stopped at the first chance
    assert timing.output == len(calls)  # the last call's output, for the parity check
    assert sum(timing.window_sizes) == n and len(timing.window_sizes) == 3
    assert max(timing.window_sizes) - min(timing.window_sizes) <= 1


def test_a_noisy_loop_runs_longer_and_stops_at_the_maximum_duration() -> None:
    noisy = [1, 9] * 1000  # alternating: the mean is never known to 1% in half a second
    timing = timed_loop(scripted(noisy)[0], None, CPU, LoopSettings(**CI, ci_pct=1, max_duration_s=0.5))
    assert timing.stop_reason.startswith("max_duration_s (0.5 s) reached"), timing.stop_reason
    assert 0.5 <= timing.window_s < 1.0 and len(timing.latencies_ms) > 5
    steady = timed_loop(scripted([5])[0], None, CPU, LoopSettings(**CI, ci_pct=20, max_duration_s=0.5))
    assert len(steady.latencies_ms) < len(timing.latencies_ms)  # the steady loop needed fewer


def test_the_ci_rule_keeps_its_minimums() -> None:
    timing = timed_loop(
        scripted([2])[0], None, CPU, LoopSettings(**{**CI, "min_duration_s": 0.1}, ci_pct=100)
    )
    assert timing.window_s >= 0.3 and len(timing.latencies_ms) >= 5  # repeats x min_duration_s, min_iters


def test_windows_split_a_loop_evenly() -> None:
    assert split(10, 3) == [4, 3, 3] and split(2, 3) == [1, 1] and split(6, 1) == [6]
    assert t95(1) == 12.706 and 1.96 < t95(200) < t95(30) == 2.042


@pytest.mark.parametrize("model", ["densenet", "segresnet"])
def test_the_ci_rule_on_a_real_model_logs_its_rule_and_holds_to_it(model: str, tmp_path: Path) -> None:
    settings = ["measure.ci_pct=3", "measure.max_duration_s=8", "measure.min_duration_s=0.2"]
    spec = make_spec(f"model={model}", "smoke=true", "batch_size=2", "gpu=cpu", *settings)
    result = run_in_child(spec, tmp_path / "job")
    assert result.status is Status.OK, result.reason
    tags, metrics = result.tags, result.metrics
    assert tags["stop_rule"].startswith("ci: warm-up until 2 calls agree within 5% (<= 5 calls)")
    assert "half-width <= 3%" in tags["stop_rule"] and "at most 8 s" in tags["stop_rule"]
    assert 1 <= metrics["warmup_calls"] <= 5 and tags["parity"] == "pass"  # from the last timed call
    rows = list(csv.DictReader((tmp_path / "job" / "artifacts" / "latencies_ms.csv").open()))
    latencies = [float(r["latency_ms"]) for r in rows]
    assert len(latencies) == metrics["iterations"] >= 5 and metrics["window_s"] >= 0.6
    assert metrics["ci_half_width_pct"] == pytest.approx(half_width_pct(latencies))
    if tags["stop_reason"].startswith("ci:"):  # else a loaded host ran it to max_duration_s
        assert metrics["ci_half_width_pct"] <= 3
    else:
        assert tags["stop_reason"].startswith("max_duration_s (8 s)") and metrics["window_s"] >= 8
