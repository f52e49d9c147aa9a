"""Floating-point operations per image, counted once per model and input shape and kept on disk.

`torch.utils.flop_counter.FlopCounterMode` counts the operations of one eager call on a single image of
the job's input (a multiply-add counts 2; convolutions, matrix products and attention are counted, cheap
pointwise work is not). The count depends on the network and its input shape only, so it is cached in
`<cache root>/flops/` (the engine cache's root) and a later job of the same model and shape reads it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from src.backends.support.engine_cache import cache_key, cache_root

if TYPE_CHECKING:
    import torch

    from src.shared.spec import JobSpec


def gflop_per_image(model: torch.nn.Module, x: torch.Tensor, spec: JobSpec) -> tuple[float, bool]:
    """GFLOP per image of `model` (the eager network, placed) on the first image of `x`; and whether it
    was cached. Called after the timed loop (a model's first call is the job's own), under
    `torch.inference_mode()`."""
    from torch.utils.flop_counter import FlopCounterMode

    identity = {**spec.model.identity(), "input_shape": list(spec.model.input_shape)}
    identity.pop("weights")  # the count does not depend on the weights' values
    path = cache_root(None) / "flops" / f"{cache_key(identity)}.json"
    try:
        return float(json.loads(path.read_text())["gflop_per_image"]), True
    except (OSError, ValueError, KeyError):
        pass
    with FlopCounterMode(display=False) as counter:
        model(x[:1])
    gflop = counter.get_total_flops() / 1e9
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part")
    part.write_text(json.dumps({"gflop_per_image": gflop, "model": identity}, default=str))
    part.replace(path)
    return gflop, False
