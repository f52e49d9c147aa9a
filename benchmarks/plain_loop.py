"""Time a model the plain way, without the harness, to check the harness's figures.

Same model builder, same inputs, same precision/layout placement as a benchmark job; the backend is built
here in a few lines of plain PyTorch, not by the harness's backend classes; then a bare loop: warm-up,
synchronise, N calls, synchronise, images/s = batch * N / elapsed. No child process, no events, no MLflow.

    python benchmarks/plain_loop.py --model densenet --batch 32 --iters 200 --warmup 20
    python benchmarks/plain_loop.py --backend compile --precision fp16 --channels-last --batch 256

Compiled backends use Inductor's cache in $TORCHINDUCTOR_CACHE_DIR (point it at the sweep's,
~/.cache/gpu-inference-bench/inductor, to skip recompiling what a sweep compiled).
"""

from __future__ import annotations

import argparse
import time

BACKENDS = ("eager", "torchscript", "compile", "cudagraphs", "aotinductor")


def build(backend: str, model, x, mode: str):
    """The backend, the plain way (what each library's documentation shows)."""
    import tempfile

    import torch

    if backend == "eager":
        return model
    if backend == "torchscript":
        with torch.no_grad():
            return torch.jit.freeze(torch.jit.trace(model, x, check_trace=False).eval())
    if backend == "compile":
        with torch.inference_mode():
            model(x)  # lazily cached state (YOLO's anchors) from an eager call, so it is not traced
        return torch.compile(model, mode=None if mode == "default" else mode)
    if backend == "aotinductor":
        with torch.no_grad():
            model(x)  # lazily cached state (YOLO's anchors) from real tensors, as the exporter's dry run
            program = torch.export.export(model, (x,), strict=False)
        path = torch._inductor.aoti_compile_and_package(program, package_path=tempfile.mktemp(suffix=".pt2"))
        return torch._inductor.aoti_load_package(path)
    # cudagraphs: warm up on a side stream, capture once, replay
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.inference_mode():
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        model(x)
    return lambda _: graph.replay()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="densenet")
    ap.add_argument("--backend", default="eager", choices=BACKENDS)
    ap.add_argument("--mode", default="default", help="torch.compile mode (--backend compile)")
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
    from src.child.job import configure_torch, place, resolve_device
    from src.child.measure import synchronize
    from src.models import MODELS
    from src.parent.config import to_spec

    overrides = [f"model={a.model}", f"batch_size={a.batch}", f"precision={a.precision}", f"gpu={a.device}"]
    overrides += [f"channels_last={a.channels_last}", f"smoke={a.smoke}"]
    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        spec = to_spec(compose("config", overrides))
    device = resolve_device(spec.gpu)
    configure_torch(spec, device)
    model, x = place(MODELS.get(spec.model.name).build(spec.model), spec, device)
    start = time.perf_counter()
    fn = build(a.backend, model, x, a.mode)
    mode = torch.inference_mode if a.grad_mode == "inference_mode" else torch.no_grad
    with mode():
        fn(x)
        synchronize(device)
        build_s = time.perf_counter() - start
        for _ in range(a.warmup):
            fn(x)
        synchronize(device)
        start = time.perf_counter()
        for _ in range(a.iters):
            fn(x)
        synchronize(device)
        elapsed = time.perf_counter() - start
    print(
        f"plain loop: {spec.label.replace('-eager-', f'-{a.backend}-')} "
        f"{'x'.join(map(str, spec.model.input_shape))} on {device} ({a.grad_mode}): "
        f"{a.batch * a.iters / elapsed:.1f} img/s, {elapsed / a.iters * 1e3:.2f} ms/iter over {a.iters} "
        f"iters, build + first call {build_s:.1f} s"
    )


if __name__ == "__main__":
    main()
