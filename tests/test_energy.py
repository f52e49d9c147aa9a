"""Energy arithmetic with recorded counter readings: wrap-around, missing counters, RAPL files, nameplate."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.child.energy import (
    NVML_COUNTER_WRAP_MJ,
    Edge,
    RaplMeter,
    counter_delta,
    nameplate_efficiency,
    open_meter,
    window_metrics,
)
from src.shared.spec import GpuConfig


class Recorded:
    """Counter readings as an NVML meter would have returned them (millijoules)."""

    source = "nvml_total_energy"

    def joules(self, start: int, end: int) -> float:
        return counter_delta(start, end, NVML_COUNTER_WRAP_MJ) / 1e3


def test_counter_delta_handles_the_wrap() -> None:
    assert counter_delta(100, 350, 2**32) == 250
    assert counter_delta(2**32 - 50, 25, 2**32) == 75


def test_energy_over_the_window_from_two_counter_readings() -> None:
    # 700 W for 2.5 s = 1750 J over 100 iterations of 32 images.
    edges = (Edge(1000.0, 5_000_000), Edge(1002.5, 6_750_000))
    metrics, tags = window_metrics(Recorded(), edges, window_s=2.5, images=3200, why_none="")
    assert metrics["energy_j"] == pytest.approx(1750)
    assert metrics["power_mean_w"] == pytest.approx(700)
    assert metrics["energy_j_per_img"] == pytest.approx(1750 / 3200)
    assert metrics["img_per_j"] == pytest.approx(3200 / 1750)
    # images per joule = images per second per measured watt
    assert metrics["img_per_j"] == pytest.approx((3200 / 2.5) / metrics["power_mean_w"])
    assert tags == {"energy_status": "measured", "energy_source": "nvml_total_energy"}


def test_energy_across_the_counters_wrap() -> None:
    edges = (Edge(0.0, NVML_COUNTER_WRAP_MJ - 400), Edge(1.0, 600))
    metrics, _ = window_metrics(Recorded(), edges, window_s=1.0, images=10, why_none="")
    assert metrics["energy_j"] == pytest.approx(1.0)


def test_a_counter_that_did_not_advance_gives_no_energy_and_says_why() -> None:
    edges = (Edge(0.0, 42), Edge(0.05, 42))
    metrics, tags = window_metrics(Recorded(), edges, window_s=0.05, images=10, why_none="")
    assert metrics == {}
    assert "did not advance over the 0.050 s window" in tags["energy_status"]


def test_no_meter_gives_no_energy_metrics_only_the_reason() -> None:
    metrics, tags = window_metrics(None, (Edge(0.0), Edge(1.0)), 1.0, 10, why_none="unavailable: no RAPL")
    assert metrics == {} and tags == {"energy_status": "unavailable: no RAPL"}


def rapl_tree(root: Path, domains: dict[str, tuple[int, int]]) -> Path:
    """A powercap folder laid out as Linux lays it out: package domains and a sub-zone to ignore."""
    for name, (energy, max_range) in domains.items():
        d = root / name
        d.mkdir(parents=True)
        (d / "name").write_text(f"package-{name[-1]}\n")
        (d / "energy_uj").write_text(f"{energy}\n")
        (d / "max_energy_range_uj").write_text(f"{max_range}\n")
    (root / "intel-rapl:0:0").mkdir()  # a core sub-zone: not a package, not summed
    return root


def test_rapl_sums_the_package_domains_across_their_wraps(tmp_path: Path) -> None:
    root = rapl_tree(tmp_path, {"intel-rapl:0": (1_000_000, 262_143_328_850), "intel-rapl:1": (10, 99)})
    meter = RaplMeter(root)
    assert meter.source == "rapl:package-0+package-1"
    start = meter.read()
    (root / "intel-rapl:0" / "energy_uj").write_text("3500000\n")  # +2.5 J
    (root / "intel-rapl:1" / "energy_uj").write_text("5\n")  # wrapped: 90 + 5 = +95 uJ
    assert meter.joules(start, meter.read()) == pytest.approx(2.5 + 95e-6)


def test_rapl_absent_or_unreadable_is_a_reason_not_a_zero(tmp_path: Path) -> None:
    meter, why = open_meter("cpu", None, rapl_root=tmp_path / "none")
    assert meter is None and "no RAPL package domains" in why
    root = rapl_tree(tmp_path / "broken", {"intel-rapl:0": (5, 100)})
    (root / "intel-rapl:0" / "energy_uj").unlink()
    (root / "intel-rapl:0" / "energy_uj").mkdir()  # unreadable whoever reads it, root included
    meter, why = open_meter("cpu", None, rapl_root=root)
    assert meter is None
    assert why.startswith("unavailable: CPU package energy (RAPL) cannot be read (IsADirectoryError")


def test_open_meter_on_this_machines_cpu_says_what_it_found() -> None:
    meter, why = open_meter("cpu", None)
    if meter is None:
        assert why.startswith("unavailable: CPU package energy (RAPL) cannot be read")
    else:
        assert why == "" and meter.source.startswith("rapl:")


def test_nameplate_efficiency_from_a_preset_or_nothing() -> None:
    l4 = GpuConfig(name="NVIDIA L4", match=r"\bL4\b", memory_gib=24, nameplate_w=72)
    metrics, tags = nameplate_efficiency(l4, None, throughput_img_s=720.0)
    assert metrics == {"nameplate_w": 72, "img_per_s_per_nameplate_w": 10.0}
    assert tags == {"nameplate_source": "preset NVIDIA L4"}
    metrics, tags = nameplate_efficiency(GpuConfig(), None, 720.0)
    assert metrics == {} and tags["nameplate_source"].startswith("none")
