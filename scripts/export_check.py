"""Everything up to TensorRT, on a GPU: each model exports with `torch.export` at each precision and batch
size, and the exported program runs and matches the eager model within the precision's tolerance.

    python scripts/export_check.py                       # the study's batch sizes, fp32 and fp16
    python scripts/export_check.py --models yolo --batches 2 --precisions fp32 --smoke --device cpu

Prints one line per case: export seconds, max |diff|, relative L2 error, and pass/fail against the
tolerance (fp32 1e-3, fp16/bf16 1e-2 relative L2: the exported program runs the same ATen operators, so
anything larger means the export changed the function).
"""

from __future__ import annotations

import argparse
import sys

STUDY_BATCHES = {"densenet": [32, 256], "yolo": [32, 256], "segresnet": [1, 4]}
TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2, "bf16": 1e-2}


def check(model_name: str, batch: int, precision: str, device_name: str, smoke: bool) -> str:
    import torch
    from hydra import compose, initialize_config_dir

    from src import PROJECT_ROOT
    from src.backends.support.exporting import export_program
    from src.child.job import configure_torch, place, resolve_device
    from src.models import MODELS
    from src.parent.config import to_spec

    overrides = [f"model={model_name}", f"batch_size={batch}", f"precision={precision}", f"gpu={device_name}"]
    overrides += ["backend=tensorrt", f"smoke={smoke}"]
    with initialize_config_dir(str(PROJECT_ROOT / "conf"), version_base="1.3"):
        spec = to_spec(compose("config", overrides))
    device = resolve_device(spec.gpu)
    configure_torch(spec, device)
    model, x = place(MODELS.get(model_name).build(spec.model), spec, device)
    with torch.inference_mode():
        expected = model(x).float()
    program, seconds = export_program(model, x)
    with torch.inference_mode():
        got = program.module()(x).float()
    max_abs = (got - expected).abs().max().item()
    rel_l2 = ((got - expected).norm() / expected.norm().clamp_min(1e-12)).item()
    verdict = "pass" if rel_l2 <= TOLERANCE[precision] else "FAIL"
    del model, program, x, expected, got
    if device.type == "cuda":
        torch.cuda.empty_cache()
    shape = "x".join(map(str, spec.model.input_shape))
    return (
        f"{model_name:9s} {shape:15s} b{batch:<4d} {precision}  export {seconds:6.2f} s  "
        f"max|diff| {max_abs:.3e}  rel L2 {rel_l2:.3e}  {verdict}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="densenet,yolo,segresnet")
    ap.add_argument("--batches", default=None, help="comma-separated; default: the study's per model")
    ap.add_argument("--precisions", default="fp32,fp16")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--smoke", action="store_true", help="the models' tiny smoke input shapes")
    a = ap.parse_args()
    failures = 0
    for model_name in a.models.split(","):
        batches = [int(b) for b in a.batches.split(",")] if a.batches else STUDY_BATCHES[model_name]
        for batch in batches:
            for precision in a.precisions.split(","):
                try:
                    line = check(model_name, batch, precision, a.device, a.smoke)
                except Exception as exc:  # one case failing must not hide the others
                    line = f"{model_name:9s} b{batch:<4d} {precision}  ERROR {type(exc).__name__}: {exc}"
                failures += "pass" not in line
                print(line, flush=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
