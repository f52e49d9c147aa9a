"""Why does TorchScript DenseNet201 stall for minutes on a GPU? Time each step of each variant.

Each variant runs alone in its own process with a time limit and prints each step as it finishes, so a
stall shows which step it is in; where `py-spy` is installed, a stalled variant's native stack is dumped.

    python scripts/torchscript_probe.py --device cuda --batch 32 --timeout 45
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time

# name: (trace checker, freeze, TensorExpr (NNC) fuser on, optimize_for_inference)
VARIANTS = {
    "trace_check": (True, False, True, False),
    "traced": (False, False, True, False),
    "traced_nofuser": (False, False, False, False),
    "frozen": (False, True, True, False),
    "frozen_nofuser": (False, True, False, False),
    "frozen_nofuser_ofi": (False, True, False, True),
}


def one(variant: str, model_name: str, device: str, batch: int, calls: int) -> None:
    import torch
    import torchvision

    check, freeze, fuser, ofi = VARIANTS[variant]
    torch._C._jit_set_texpr_fuser_enabled(fuser)
    torch.backends.cudnn.benchmark = True
    model = getattr(torchvision.models, model_name)().eval().to(device).requires_grad_(False)
    x = torch.randn(batch, 3, 224, 224, device=device)

    def step(label: str, fn):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        print(f"  {variant}: {label} {time.perf_counter() - t:.3f} s", flush=True)
        return out

    with torch.no_grad():
        step("eager first call", lambda: model(x))
        step("eager second call", lambda: model(x))
        module = step("trace", lambda: torch.jit.trace(model, x, check_trace=check))
        if freeze:
            module = step("freeze", lambda: torch.jit.freeze(module))
        if ofi:
            module = step("optimize_for_inference", lambda: torch.jit.optimize_for_inference(module))
        for i in range(calls):
            step(f"call {i + 1}", lambda: module(x))
    graph = torch.jit.last_executed_optimized_graph()
    kinds = [n.kind() for n in graph.nodes()]
    fused = sum(k in ("prim::TensorExprGroup", "prim::FusionGroup", "prim::CudaFusionGroup") for k in kinds)
    print(f"  {variant}: optimized graph has {len(kinds)} nodes, {fused} fusion groups", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=45, help="seconds per variant")
    ap.add_argument("--model", default="densenet201")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        one(a.one, a.model, a.device, a.batch, a.calls)
        return
    for variant in a.variants.split(","):
        cmd = [sys.executable, __file__, "--one", variant, "--model", a.model, "--device", a.device]
        cmd += ["--batch", str(a.batch), "--calls", str(a.calls)]
        print(f"{a.model} {variant}:", flush=True)
        proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=a.timeout)
        except subprocess.TimeoutExpired:
            print(f"  {variant}: STALLED past {a.timeout:g} s", flush=True)
            if shutil.which("py-spy"):
                dump = subprocess.run(
                    ["py-spy", "dump", "--native", "--pid", str(proc.pid)],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                print("\n".join(dump.stdout.splitlines()[:45]), flush=True)
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    main()
