"""Where a measuring child's seconds before its first timed call go, outside the harness (a benchmark).

python scripts/startup_probe.py load [segresnet densenet yolo]   # per model, each in a fresh process
python scripts/startup_probe.py rebuild                          # torch.compile of YOLO fp16 CL b256:
                                                                 # cold, then twice warm (same cache)
`load` prints, per step, the seconds of: importing torch, the CUDA context, importing the model's library,
building it on the CPU and on the GPU, making the input on each, and the first calls (cuDNN autotuning).
`rebuild` prints the same steps around the first compiled call, Dynamo's and Inductor's cache counters and
`torch._dynamo.utils.compile_times()`, in a fresh process each time, with `TORCHINDUCTOR_CACHE_DIR` shared.
Needs a CUDA GPU. The figures measured on an H200 are in docs/investigations.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

PRELUDE = r"""
import sys, time
t = time.perf_counter(); marks = []
def mark(what):
    global t
    now = time.perf_counter(); marks.append(f"{what} {now - t:.2f}s"); t = now
import torch; mark("import torch")
torch.cuda.set_device(0); torch.zeros(1, device="cuda"); torch.cuda.synchronize(); mark("cuda context")
"""

LOAD = (
    PRELUDE
    + r"""
which = sys.argv[1]
if which == "segresnet":
    from monai.networks.nets import SegResNet; mark("import monai")
    build = lambda: SegResNet(spatial_dims=3, init_filters=16, in_channels=4, out_channels=3,
                              dropout_prob=0.2, blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1)).eval()
    shape = (4, 4, 240, 240, 160)
elif which == "densenet":
    import torchvision; mark("import torchvision")
    build = lambda: torchvision.models.densenet201().eval(); shape = (256, 3, 224, 224)
else:
    from ultralytics.nn.tasks import DetectionModel; mark("import ultralytics")
    build = lambda: DetectionModel("yolov5s.yaml", verbose=False).eval(); shape = (256, 3, 640, 640)
m = build(); mark("build on cpu")
m = m.to("cuda"); torch.cuda.synchronize(); mark("to cuda")
with torch.device("cuda"):
    build()
torch.cuda.synchronize(); mark("build on cuda")
x = torch.randn(shape); mark("randn on cpu"); x = x.cuda(); torch.cuda.synchronize(); mark("to cuda")
x = torch.randn(shape, device="cuda"); torch.cuda.synchronize(); mark("randn on cuda")
torch.backends.cudnn.benchmark = True
with torch.inference_mode():
    m(x[:1]); torch.cuda.synchronize(); mark("first call b1 fp32")
    m(x); torch.cuda.synchronize(); mark("first call full fp32")
    m(x); torch.cuda.synchronize(); mark("second call full fp32")
print(which, " | ".join(marks), flush=True)
"""
)

REBUILD = (
    PRELUDE
    + r"""
from ultralytics.nn.tasks import DetectionModel; mark("import ultralytics")
import torch._functorch.config as fc, torch._inductor.config as ic
ic.fx_graph_cache = True; ic.autotune_local_cache = True; fc.enable_autograd_cache = True
m = DetectionModel("yolov5s.yaml", verbose=False).eval().requires_grad_(False)
m = m.to("cuda", torch.float16).to(memory_format=torch.channels_last)
x = torch.randn(256, 3, 640, 640, device="cuda", dtype=torch.float16)
x = x.contiguous(memory_format=torch.channels_last)
torch.backends.cudnn.benchmark = True; torch.cuda.synchronize(); mark("model+input")
with torch.inference_mode():
    m(x); torch.cuda.synchronize(); mark("eager dry run")
    fn = torch.compile(m, dynamic=False)
    fn(x); torch.cuda.synchronize(); mark("first compiled call")
    fn(x); fn(x); torch.cuda.synchronize(); mark("2 more calls")
from torch._dynamo.utils import compile_times, counters
print(sys.argv[1], " | ".join(marks))
print({g: dict(counters[g]) for g in ("inductor", "aot_autograd", "stats", "frames")})
print(compile_times(repr="str", aggregate=True), flush=True)
"""
)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("load", "rebuild"):
        sys.exit(__doc__)
    env = {**os.environ, "YOLO_OFFLINE": "1"}
    if argv[0] == "load":
        runs = [(LOAD, which) for which in argv[1:] or ("segresnet", "densenet", "yolo")]
    else:
        env["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-probe-")
        runs = [(REBUILD, which) for which in ("cold", "warm", "warm-again")]
    for code, which in runs:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, which], env=env, check=False)
        print(f"{which}: process {time.perf_counter() - start:.2f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
