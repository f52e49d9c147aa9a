"""Time a model the plain way, without the harness, to check the harness's figures.

Same model builder, same inputs, same precision/layout placement as a benchmark job; then a bare loop:
warm-up, synchronise, N calls, synchronise, images/s = batch * N / elapsed. No child process, no events,
no MLflow.

    python scripts/plain_loop.py --model densenet --batch 32 --iters 200 --warmup 20
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="densenet")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--grad-mode", default="inference_mode", choices=["inference_mode", "no_grad"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--smoke", action="store_true", help="use the model's smoke input shape")
    a = ap.parse_args()

    import torch
    from hydra import compose, initialize_config_dir

    from src import PROJECT_ROOT
    from src.config import to_spec
    from src.job import configure_torch, place, resolve_device
    from src.measure import synchronize
    from src.models import MODELS

    overrides = [f"model={a.model}", f"batch_size={a.batch}", f"precision={a.precision}", f"gpu={a.device}"]
    overrides += [f"channels_last={a.channels_last}", f"smoke={a.smoke}"]
    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        spec = to_spec(compose("config", overrides))
    device = resolve_device(spec.gpu.index)
    configure_torch(spec, device)
    model, x = place(MODELS.get(spec.model.name).build(spec.model), spec, device)
    mode = torch.inference_mode if a.grad_mode == "inference_mode" else torch.no_grad
    with mode():
        for _ in range(a.warmup):
            model(x)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(a.iters):
            model(x)
        synchronize(device)
        elapsed = time.perf_counter() - start
    print(
        f"plain loop: {spec.label} {'x'.join(map(str, spec.model.input_shape))} on {device} ({a.grad_mode}): "
        f"{a.batch * a.iters / elapsed:.1f} img/s, {elapsed / a.iters * 1e3:.2f} ms/iter over {a.iters} iters"
    )


if __name__ == "__main__":
    main()
