"""Ultralytics YOLO detection (yolov5s by default), input 3x640x640, network forward pass only.

Ultralytics' `yolov5s.yaml` is its anchor-free "u" re-implementation (YOLOv5u), not the original
anchor-based YOLOv5s of the study. Ultralytics never reaches the network here (`YOLO_OFFLINE=1`) and
writes its settings file into a per-user folder under the temporary directory unless `YOLO_CONFIG_DIR` is set.
"""

from __future__ import annotations

import importlib.util
import os
import re
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from src.models.base import MODELS, ModelDef, image_shape_problem

if TYPE_CHECKING:
    from torch import nn

    from src.shared.spec import ModelConfig

_OTHER_TASKS = ("-cls", "-seg", "-pose", "-obb", "-world", "yoloe", "rtdetr", "-sem", "-depth")


def ultralytics_offline() -> None:
    """Set before the first `import ultralytics`: no network, settings in a temporary folder."""
    os.environ["YOLO_OFFLINE"] = "1"
    if not os.environ.get("YOLO_CONFIG_DIR"):  # one folder per user, reused: no folder left per job
        folder = Path(tempfile.gettempdir()) / f"bench-ultralytics-{os.getuid()}"
        folder.mkdir(mode=0o700, exist_ok=True)
        os.environ["YOLO_CONFIG_DIR"] = str(folder)
    os.environ.setdefault("YOLO_VERBOSE", "False")


@cache
def detection_configs() -> frozenset[str] | None:
    """Stems of Ultralytics' packaged detection YAMLs (without importing it); None if not installed."""
    found = importlib.util.find_spec("ultralytics")
    if found is None or not found.submodule_search_locations:
        return None
    root = Path(next(iter(found.submodule_search_locations))) / "cfg" / "models"
    stems = {p.stem for p in root.rglob("*.yaml")}
    return frozenset(s for s in stems if not any(t in s for t in _OTHER_TASKS))


def _unscaled(variant: str) -> str:
    return re.sub(r"(\d+)([nslmx])(.+)?$", r"\1\3", variant)  # yolov8s -> yolov8, as Ultralytics does


@MODELS.register("yolo")
class Yolo(ModelDef):
    task = "detection"
    imports = ("ultralytics.nn.tasks",)
    task_title = "Object detection"
    norms = frozenset({"BatchNorm2d"})  # folded into the convolutions with `fuse` (the default)

    @dataclass(frozen=True)
    class Options:
        num_classes: int = 80
        fuse: bool = True  # fuse Conv+BatchNorm, as Ultralytics' own predictor does
        postprocess: bool = False  # append non-maximum suppression to the timed forward pass
        conf_threshold: float = 0.25
        iou_threshold: float = 0.45
        max_det: int = 300

    @classmethod
    def check_variant(cls, variant: str) -> str | None:
        configs = detection_configs()
        if configs is None:  # not installed: the job itself will end as `unavailable`
            return None
        name = variant.removesuffix(".yaml")
        if name in configs or _unscaled(name) in configs:
            return None
        families = ", ".join(sorted(configs))
        scales = "with a scale n/s/m/l/x (e.g. yolov8s)"
        return f"unknown YOLO variant '{variant}'; allowed: one of {families}, {scales}"

    @classmethod
    def check_input(cls, shape: tuple[int, ...], options: Options) -> str | None:
        return image_shape_problem(shape, channels=3, multiple=32, minimum=32)  # stride 32

    @classmethod
    def check_weights(cls, spec: ModelConfig) -> str | None:
        """Ultralytics `.pt` checkpoints are pickled models that only Ultralytics' loader reads (it runs
        their code), so only their container is checked here: a PyTorch zip archive."""
        import zipfile

        if not zipfile.is_zipfile(spec.weights):
            return (
                f"weights file {spec.weights} is not a PyTorch checkpoint (not a zip archive); give an "
                "Ultralytics .pt file, or null for random weights"
            )
        return None

    @classmethod
    def build(cls, spec: ModelConfig) -> nn.Module:
        ultralytics_offline()
        from ultralytics.nn.tasks import DetectionModel, load_checkpoint

        options = cls.parse_options(spec.name, spec.options)
        if spec.weights:
            model, _ = load_checkpoint(spec.weights)
        else:
            cfg = spec.variant if spec.variant.endswith(".yaml") else f"{spec.variant}.yaml"
            model = DetectionModel(cfg, nc=options.num_classes, verbose=False)
        model = model.eval()
        if options.fuse:
            model = model.fuse(verbose=False)
        model.model[-1].export = True  # the head returns the raw prediction tensor (B, 4 + classes, anchors)
        if options.postprocess:
            return _with_nms(model, options)
        return model


def _with_nms(net: nn.Module, options: Yolo.Options) -> nn.Module:
    """The network followed by Ultralytics' non-maximum suppression (torch imported here, not at load)."""
    import torch
    from ultralytics.utils.nms import non_max_suppression

    class WithNms(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
            o = options
            return non_max_suppression(self.net(x), o.conf_threshold, o.iou_threshold, max_det=o.max_det)

    return WithNms().eval()
