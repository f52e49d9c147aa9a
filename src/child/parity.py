"""Output parity: does the backend still compute the eager fp32 model's function?

Each job runs the eager model at fp32 (TF32 off) on the first `measure.parity_samples` samples of its
input, before the job's own model is placed, then compares the backend's output for those samples with it:
the relative L2 error of the whole output (for YOLO the raw prediction tensor) against a tolerance that
follows the arithmetic the job asked for (`Precision.arithmetic`; the table and its reasons:
docs/metrics.md). A job over its tolerance keeps its timing and is tagged `parity=fail`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from src.shared.results import Parity
from src.shared.spec import TOLERANCE_REL_L2, Precision

__all__ = ["TOLERANCE_REL_L2", "Parity", "arithmetic", "compare", "first_tensor", "reference"]

if TYPE_CHECKING:
    import torch


def arithmetic(precision: str, tf32: bool | None, device_type: str) -> str:
    """The tolerance class: fp32, tf32, fp16 or bf16 (TF32 only exists on a GPU)."""
    return Precision(precision, tf32).arithmetic(device_type)


def first_tensor(output: Any) -> torch.Tensor:
    """The tensor a model's output leads with (a tensor, or the first tensor of a tuple/list/dict)."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    for item in output:
        try:
            return first_tensor(item)
        except TypeError:
            continue
    raise TypeError(f"no tensor in the model's output ({type(output).__name__})")


def reference(model: torch.nn.Module, x: torch.Tensor, samples: int) -> torch.Tensor:
    """The eager fp32 output for the first `samples` samples of x, on the CPU (TF32 off). cuDNN's
    autotuning is off for it: one call at a batch no timed loop uses would pay for benchmarking every
    convolution's algorithms (seconds for a 3D model) and keep nothing of it."""
    import torch

    saved = (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.benchmark,
    )
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    try:
        with torch.inference_mode():
            ref = model.float().to(x.device)(x[:samples].float().contiguous())
            return first_tensor(ref).detach().float().cpu()
    finally:
        (
            torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.benchmark,
        ) = saved


def compare(got: Any, ref: torch.Tensor, kind: str) -> Parity:
    import torch

    out = first_tensor(got)[: ref.shape[0]].detach().float().cpu()
    if out.shape != ref.shape:
        raise ValueError(f"parity: output shape {tuple(out.shape)} differs from eager's {tuple(ref.shape)}")
    diff = out - ref
    finite = bool(torch.isfinite(out).all())
    rel = (diff.norm() / ref.norm().clamp_min(1e-12)).item() if finite else float("inf")
    cos = torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0).item() if finite else 0.0
    max_abs = diff.abs().max().item() if finite else float("inf")
    return Parity(max_abs, rel, cos, TOLERANCE_REL_L2[kind], kind)
