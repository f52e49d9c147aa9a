"""How steady is this host for a launch-bound cell? DenseNet201, eager fp32, batch 32, in fresh processes.

python scripts/host_noise.py [--processes 6] [--windows 8] [--variants plain,pinned,cudnn-off]
                             [--device cuda|cpu]

Eager DenseNet201 at batch 32 is launch-bound on a fast GPU: its speed is the speed of one CPU core
issuing kernels. Each process builds the model (random weights), warms up (one call, then 10), and times
`--windows` back-to-back windows of one second each (synchronised at both edges). Right before each
window it times a fixed pure-Python loop (200,000 additions, once: the host CPU's speed as the measuring
thread sees it; lower is faster), and it reads the thread's share of the CPU over the window (below 1:
the thread was not running). On a GPU, after the windows, the same forward replayed as a CUDA graph gives
the GPU's own time per call, without the launches. Variants, one process of each in turn: `plain`;
`pinned` to one core (`os.sched_setaffinity`); `cudnn-off` (`torch.backends.cudnn.benchmark = False`;
the others have it on, as the harness does). Printed per process: its windows (images/s, probe ms, CPU
share); then, per variant, the process means and their range, and over every window the median images/s
of the windows whose probe was fast and of those whose probe was slow. Plain PyTorch and torchvision, not
the harness: what it shows is the host, whatever measures it. A benchmark, not a test: it asserts nothing
(docs/investigations.md says what it read on the H200 host).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

VARIANTS = ("plain", "pinned", "cudnn-off")
CHILD = r"""
import json, os, sys, time
variant, device, windows = sys.argv[1], sys.argv[2], int(sys.argv[3])
if variant == "pinned":
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[len(cores) // 2]})
import torch, torchvision
dev = torch.device(device)
shape = (32, 3, 224, 224) if dev.type == "cuda" else (2, 3, 64, 64)  # the CPU: a quick look only
torch.backends.cudnn.benchmark = variant != "cudnn-off"
model = torchvision.models.densenet201(weights=None).eval().to(dev)
x = torch.randn(*shape, device=dev)
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
def probe_ms():
    start, total = time.perf_counter(), 0
    for i in range(200000):
        total += i
    return (time.perf_counter() - start) * 1e3
rows, gpu_ms = [], None
with torch.inference_mode():
    model(x)
    for _ in range(10):
        model(x)
    for _ in range(windows):
        probe = probe_ms()
        sync()
        start, cpu, n = time.perf_counter(), time.thread_time(), 0
        while time.perf_counter() - start < 1.0:
            model(x)
            n += 1
        sync()
        wall = time.perf_counter() - start
        share = (time.thread_time() - cpu) / wall
        rows.append([round(shape[0] * n / wall, 1), round(probe, 2), round(share, 3)])
    if dev.type == "cuda":  # the GPU's own time per call: the forward replayed as a CUDA graph
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                model(x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model(x)
        graph.replay()
        sync()
        start = time.perf_counter()
        for _ in range(100):
            graph.replay()
        sync()
        gpu_ms = round((time.perf_counter() - start) * 10, 2)
print(json.dumps({"windows": rows, "gpu_only_ms": gpu_ms}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=6, help="processes per variant")
    parser.add_argument("--windows", type=int, default=8, help="one-second windows per process")
    parser.add_argument("--variants", default="plain,pinned", help=f"comma-separated: {', '.join(VARIANTS)}")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}; allowed: {', '.join(VARIANTS)}")
    means: dict[str, list[float]] = {v: [] for v in variants}
    every: list[list[float]] = []  # [img/s, probe ms, CPU share] of every window
    for i in range(args.processes):
        for variant in variants:
            cmd = [sys.executable, "-c", CHILD, variant, args.device, str(args.windows)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                print(f"{variant} process {i} exited {done.returncode}: {done.stderr[-1500:]}")
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rows = result["windows"]
            rates = [r[0] for r in rows]
            mean = sum(rates) / len(rates)
            spread = 100 * (max(rates) - min(rates)) / mean
            means[variant].append(mean)
            every += rows
            gpu = f"  GPU alone {result['gpu_only_ms']} ms/call" if result["gpu_only_ms"] else ""
            print(f"{i} {variant:9s} mean {mean:8.1f} img/s  windows spread {spread:5.1f}%{gpu}", flush=True)
            print(f"    windows [img/s, probe ms, CPU share]: {rows}", flush=True)
    for variant, values in means.items():
        if values:
            span = 100 * (max(values) - min(values)) / (sum(values) / len(values))
            rounded = [round(v, 1) for v in values]
            print(f"{variant}: process means {rounded}, range {span:.1f}% of their mean")
    if every:
        fastest = min(r[1] for r in every)
        fast = [r[0] for r in every if r[1] <= 1.25 * fastest]
        slow = [r[0] for r in every if r[1] > 1.5 * fastest]
        for name, rates in (("probe within 25% of the fastest", fast), ("probe over 1.5x the fastest", slow)):
            if rates:
                print(f"windows with the {name}: {len(rates)}, median {statistics.median(rates):.1f} img/s")


if __name__ == "__main__":
    main()
