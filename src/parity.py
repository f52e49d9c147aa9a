"""Output parity: does the backend still compute the eager fp32 model's function?

Each job runs the eager model at fp32 on the first `measure.parity_samples` samples of its input (before
the job's own model is placed, so its memory is freed before anything is measured), then compares the
backend's output for those samples with it. TF32 is off for the reference, so it is true fp32.

Tolerances, on the relative L2 error ||got - ref|| / ||ref|| of the whole output (for YOLO the raw
prediction tensor: boxes in pixels and class scores), by the arithmetic the job asked for:

- fp32 with TF32 off (and every fp32 job on the CPU): 1e-4. Same function, same precision; only the order
  of floating-point operations may differ (fused or reordered kernels), which costs ~1e-6 per layer.
- fp32 with TF32 (PyTorch's default for convolutions on a GPU; `precision=tf32`): 1e-2. TF32 keeps a 10-bit
  mantissa (unit round-off ~5e-4); errors of independent layers add roughly in quadrature, so two hundred
  layers give a few 1e-3.
- fp16: 2e-2. Same 10-bit mantissa plus fp16 storage of every activation.
- bf16: 8e-2. A 7-bit mantissa (unit round-off ~4e-3): about 8x fp16's error.

A job over its tolerance keeps its timing and is tagged `parity=fail`; the report flags it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

TOLERANCE_REL_L2 = {"fp32": 1e-4, "tf32": 1e-2, "fp16": 2e-2, "bf16": 8e-2}


def arithmetic(precision: str, tf32: bool | None, device_type: str) -> str:
    """The tolerance class: fp32, tf32, fp16 or bf16 (TF32 only exists on a GPU)."""
    if precision != "fp32":
        return precision
    if device_type != "cuda" or tf32 is False:
        return "fp32"
    return "tf32"  # tf32=None keeps PyTorch's default: TF32 convolutions


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
    """The eager fp32 output for the first `samples` samples of x, on the CPU (TF32 off)."""
    import torch

    allow = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.inference_mode():
            ref = model.float().to(x.device)(x[:samples].float().contiguous())
            return first_tensor(ref).detach().float().cpu()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = allow


@dataclass(frozen=True)
class Parity:
    max_abs_err: float
    rel_l2_err: float
    cosine: float
    tolerance_rel_l2: float
    arithmetic: str

    @property
    def passed(self) -> bool:
        return self.rel_l2_err <= self.tolerance_rel_l2

    def metrics(self) -> dict[str, float]:
        return {
            "parity_max_abs_err": self.max_abs_err,
            "parity_rel_l2_err": self.rel_l2_err,
            "parity_cosine": self.cosine,
            "parity_tolerance_rel_l2": self.tolerance_rel_l2,
        }

    def tags(self) -> dict[str, str]:
        return {"parity": "pass" if self.passed else "fail", "parity_arithmetic": self.arithmetic}


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
