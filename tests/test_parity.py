"""Output parity against the eager fp32 model: the comparison itself, and real jobs that pass and fail."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.child import parity
from src.parent.launch import run_in_child
from src.shared.errors import Status
from tests.conftest import QUICK, make_spec


def test_the_tolerance_follows_the_arithmetic_the_job_asked_for() -> None:
    assert parity.arithmetic("fp32", None, "cpu") == "fp32"  # no TF32 on a CPU
    assert parity.arithmetic("fp32", None, "cuda") == "tf32"  # PyTorch's default: TF32 convolutions
    assert parity.arithmetic("fp32", False, "cuda") == "fp32"
    assert parity.arithmetic("fp32", True, "cuda") == "tf32"
    assert parity.arithmetic("bf16", None, "cuda") == "bf16"
    tol = parity.TOLERANCE_REL_L2
    assert tol["fp32"] < tol["tf32"] <= tol["fp16"] < tol["bf16"]


def test_compare_measures_the_error_and_decides_pass_or_fail() -> None:
    ref = torch.randn(2, 10)
    same = parity.compare(ref.clone(), ref, "fp32")
    assert same.passed and same.rel_l2_err == 0 and same.cosine == pytest.approx(1.0)
    off = parity.compare((ref * 1.01, "extra"), ref, "fp32")  # a tuple: the leading tensor is compared
    assert not off.passed and off.rel_l2_err == pytest.approx(0.01, rel=1e-3)
    assert off.tags() == {"parity": "fail", "parity_arithmetic": "fp32"}
    assert parity.compare(ref * 1.01, ref, "fp16").passed
    broken = parity.compare(torch.full_like(ref, float("nan")), ref, "bf16")
    assert not broken.passed and broken.rel_l2_err == float("inf")
    with pytest.raises(ValueError, match="output shape"):
        parity.compare(torch.randn(2, 11), ref, "fp32")
    assert parity.compare(torch.randn(4, 10), ref, "fp32").max_abs_err > 0  # only the first 2 samples


def test_the_reference_runs_in_strict_fp32_without_autotuning_and_restores_the_job_settings() -> None:
    """TF32 would loosen the reference; cuDNN's autotuning would benchmark every convolution for a batch
    that no timed loop uses (seconds per job on a GPU). Both are off for that one call, then as before."""
    seen: list[tuple[bool, bool, bool]] = []

    class Probe(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            b = torch.backends
            seen.append((b.cudnn.benchmark, b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32))
            return x * 2

    b = torch.backends
    before = b.cudnn.benchmark, b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32
    b.cudnn.benchmark, b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32 = True, True, True
    try:
        ref = parity.reference(Probe(), torch.ones(4, 3), samples=2)
        assert seen == [(False, False, False)]
        assert (b.cudnn.benchmark, b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32) == (True, True, True)
        assert ref.shape == (2, 3) and bool((ref == 2).all())
    finally:
        b.cudnn.benchmark, b.cudnn.allow_tf32, b.cuda.matmul.allow_tf32 = before


@pytest.mark.parametrize(
    ("overrides", "arithmetic"),
    [
        (["model=densenet"], "fp32"),
        (["model=yolo", "backend=torchscript"], "fp32"),
        (["model=segresnet", "precision=bf16"], "bf16"),
    ],
)
def test_real_jobs_pass_parity_with_their_metrics(
    overrides: list[str], arithmetic: str, tmp_path: Path
) -> None:
    spec = make_spec("smoke=true", "batch_size=3", "gpu=cpu", *QUICK, *overrides)
    result = run_in_child(spec, tmp_path / "job")
    assert result.status is Status.OK, result.reason
    assert result.tags["parity"] == "pass" and result.tags["parity_arithmetic"] == arithmetic
    m = result.metrics
    assert m["parity_rel_l2_err"] <= m["parity_tolerance_rel_l2"] and m["parity_cosine"] > 0.99
    assert m["parity_max_abs_err"] >= 0


def test_a_backend_that_changes_the_function_fails_parity_but_keeps_its_timing(tmp_path: Path) -> None:
    spec = make_spec(
        "smoke=true",
        "batch_size=2",
        "gpu=cpu",
        *QUICK,
        "plugins=[tests.plugins.narrow_backend]",
        "backend.name=off_by_a_percent",
    )
    result = run_in_child(spec, tmp_path / "job")
    assert result.status is Status.OK, result.reason
    assert result.tags["parity"] == "fail" and result.metrics["parity_rel_l2_err"] == pytest.approx(
        0.01, rel=1e-2
    )
    assert result.metrics["throughput_img_s"] > 0


def test_parity_can_be_turned_off(tmp_path: Path) -> None:
    spec = make_spec(
        "smoke=true", "batch_size=2", "gpu=cpu", *QUICK, "model=segresnet", "measure.parity_samples=0"
    )
    result = run_in_child(spec, tmp_path / "job")
    assert result.status is Status.OK and result.tags["parity"] == "off"
    assert "parity_rel_l2_err" not in result.metrics
