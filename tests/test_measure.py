"""The measurement loop against known work, and the statistics against known numbers."""

from __future__ import annotations

import time

import pytest
import torch

from src.child.measure import LoopSettings, Timing, summarize, time_single_call_ms, timed_loop

CPU = torch.device("cpu")


def sleeper(ms: float):
    calls = []

    def fn(x: object) -> None:
        calls.append(x)
        time.sleep(ms / 1e3)

    return fn, calls


def test_each_iteration_is_timed_against_known_work() -> None:
    fn, _ = sleeper(20)
    timing = timed_loop(fn, None, CPU, LoopSettings(warmup_iters=0, repeats=1, min_iters=8, min_duration_s=0))
    assert len(timing.latencies_ms) == 8
    median = sorted(timing.latencies_ms)[4]
    assert 19.5 <= median <= 30, median  # time.sleep overshoots a little, never undershoots
    stats = summarize(timing, batch_size=4)
    assert stats.throughput_img_s == pytest.approx(4e3 / stats.latency_mean_ms)
    assert stats.throughput_window_img_s == pytest.approx(4 * 8 / timing.window_s)
    assert stats.throughput_window_img_s <= stats.throughput_img_s * 1.001  # the window includes the loop


def test_warmup_calls_are_run_but_not_timed() -> None:
    fn, calls = sleeper(1)
    timing = timed_loop(fn, "x", CPU, LoopSettings(warmup_iters=3, repeats=1, min_iters=4, min_duration_s=0))
    assert len(calls) == 7 and len(timing.latencies_ms) == 4


def test_loop_runs_until_the_minimum_duration_when_iterations_come_first() -> None:
    fn, _ = sleeper(5)
    timing = timed_loop(
        fn, None, CPU, LoopSettings(warmup_iters=0, repeats=1, min_iters=2, min_duration_s=0.3)
    )
    assert timing.window_s >= 0.3
    assert len(timing.latencies_ms) >= 10  # far past min_iters=2: the duration, not the count, ended it


def test_loop_runs_until_the_minimum_count_when_duration_comes_first() -> None:
    fn, _ = sleeper(30)
    timing = timed_loop(
        fn, None, CPU, LoopSettings(warmup_iters=0, repeats=1, min_iters=6, min_duration_s=0.01)
    )
    assert len(timing.latencies_ms) == 6


def test_repeated_windows_each_follow_the_rules_and_give_the_spread() -> None:
    calls = []

    def fn(x: object) -> None:  # the second window is twice as slow as the first and the third
        calls.append(x)
        time.sleep(0.004 if 6 <= len(calls) < 12 else 0.002)

    settings = LoopSettings(warmup_iters=0, repeats=3, min_iters=6, min_duration_s=0)
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
