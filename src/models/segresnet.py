"""MONAI SegResNet with the BraTS tutorial settings, 3D segmentation, input 4x240x240x160."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from src.models.base import MODELS, ModelDef, load_state_dict

if TYPE_CHECKING:
    from torch import nn

    from src.shared.spec import ModelConfig


@MODELS.register("segresnet")
class SegResNet(ModelDef):
    task = "segmentation"
    imports = ("monai.networks.nets",)
    variants = ("segresnet",)
    norms = frozenset({"GroupNorm"})

    @dataclass(frozen=True)
    class Options:
        init_filters: int = 16
        in_channels: int = 4
        out_channels: int = 3
        blocks_down: tuple[int, ...] = (1, 2, 2, 4)
        blocks_up: tuple[int, ...] = (1, 1, 1)
        dropout_prob: float = 0.2  # as in the tutorial; inactive in eval mode

    @classmethod
    def check_input(cls, shape: tuple[int, ...], options: Options) -> str | None:
        if len(shape) != 4:
            return f"input_shape must be [C, D, H, W] (4 numbers), got {list(shape)}"
        if shape[0] != options.in_channels:
            return f"input_shape needs {options.in_channels} channels (in_channels), got {shape[0]}"
        factor = 2 ** (len(options.blocks_down) - 1)  # one stride-2 stage per down block after the first
        spatial = shape[1:]
        if any(s % factor for s in spatial):
            sizes = ", ".join(map(str, spatial))
            return f"each spatial size must be divisible by {factor}, got {sizes}"
        return None

    @classmethod
    def build(cls, spec: ModelConfig) -> nn.Module:
        from monai.networks.nets import SegResNet as MonaiSegResNet

        o = cls.parse_options(spec.name, spec.options)
        model = MonaiSegResNet(
            spatial_dims=3,
            init_filters=o.init_filters,
            in_channels=o.in_channels,
            out_channels=o.out_channels,
            dropout_prob=o.dropout_prob,
            blocks_down=tuple(o.blocks_down),
            blocks_up=tuple(o.blocks_up),
        )
        if spec.weights:
            load_state_dict(model, spec.weights)
        return model.eval()
