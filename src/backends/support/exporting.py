"""`torch.export` of a placed model at the job's exact input: the first step of the TensorRT backend (and of
any ahead-of-time backend). Static shapes: one program per batch size and input shape, as the study built
one engine per batch size."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def export_program(
    model: torch.nn.Module, example: torch.Tensor
) -> tuple[torch.export.ExportedProgram, float]:
    """The exported program and the seconds the export took."""
    import torch

    start = time.perf_counter()
    with torch.no_grad():
        model(example)  # a dry run, as Ultralytics' exporter does: lazily cached state (YOLO's anchors) is
        # computed from real tensors now, not assigned from export's fake ones (which breaks the model)
        program = torch.export.export(model, (example,), strict=False)
    return program, time.perf_counter() - start
