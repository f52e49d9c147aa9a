"""How steady is this host for a launch-bound cell? DenseNet201, eager fp32, batch 32, in fresh processes.

python scripts/host_noise.py [--processes 6] [--windows 8] [--device cuda|cpu]

Eager DenseNet201 at batch 32 is launch-bound on a fast GPU: its speed is the speed of one CPU core
issuing kernels. Each process builds the model (random weights), warms up (one call, then 10), and times
`--windows` back-to-back windows of one second each (synchronised at both edges). Processes run one after
another, alternately unpinned (`plain`) and pinned to one core (`pinned`, `os.sched_setaffinity`), and
print their windows' images/s; then, per variant, each process's mean and their range. Plain PyTorch and
torchvision, not the harness: what it shows is the host, whatever measures it. A benchmark, not a test:
it asserts nothing (docs/investigations.md says what it read on the H200 host).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, os, sys, time
variant, device, windows = sys.argv[1], sys.argv[2], int(sys.argv[3])
if variant == "pinned":
    cores = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cores[len(cores) // 2]})
import torch, torchvision
dev = torch.device(device)
shape = (32, 3, 224, 224) if dev.type == "cuda" else (2, 3, 64, 64)  # the CPU: a quick look only
torch.backends.cudnn.benchmark = True
model = torchvision.models.densenet201(weights=None).eval().to(dev)
x = torch.randn(*shape, device=dev)
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
out = []
with torch.inference_mode():
    model(x)
    for _ in range(10):
        model(x)
    for _ in range(windows):
        sync()
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < 1.0:
            model(x)
            n += 1
        sync()
        out.append(shape[0] * n / (time.perf_counter() - start))
print(json.dumps([round(v, 1) for v in out]))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=6, help="processes per variant")
    parser.add_argument("--windows", type=int, default=8, help="one-second windows per process")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    means: dict[str, list[float]] = {"plain": [], "pinned": []}
    for i in range(args.processes):
        for variant in means:
            cmd = [sys.executable, "-c", CHILD, variant, args.device, str(args.windows)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                print(f"{variant} process {i} exited {done.returncode}: {done.stderr[-1500:]}")
                continue
            windows = json.loads(done.stdout.strip().splitlines()[-1])
            mean = sum(windows) / len(windows)
            spread = 100 * (max(windows) - min(windows)) / mean
            means[variant].append(mean)
            line = f"{i} {variant:6s} mean {mean:8.1f} img/s  windows spread {spread:5.1f}%  {windows}"
            print(line, flush=True)
    for variant, values in means.items():
        if values:
            span = 100 * (max(values) - min(values)) / (sum(values) / len(values))
            rounded = [round(v, 1) for v in values]
            print(f"{variant}: process means {rounded}, range {span:.1f}% of their mean")


if __name__ == "__main__":
    main()
