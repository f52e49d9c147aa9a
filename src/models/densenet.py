"""torchvision DenseNet (DenseNet201 in the study), classification, input 3x224x224."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from src.models.base import MODELS, ModelDef, image_shape_problem, load_state_dict

if TYPE_CHECKING:
    from torch import nn

    from src.shared.spec import ModelConfig


@MODELS.register("densenet")
class DenseNet(ModelDef):
    task = "classification"
    imports = ("torchvision.models",)
    variants = ("densenet121", "densenet161", "densenet169", "densenet201")
    norms = frozenset({"BatchNorm2d"})

    @dataclass(frozen=True)
    class Options:
        num_classes: int = 1000

    @classmethod
    def check_input(cls, shape: tuple[int, ...], options: Options) -> str | None:
        # Five stride-2 stages: below 32 pixels the last feature map would be empty.
        return image_shape_problem(shape, channels=3, multiple=1, minimum=32)

    @classmethod
    def build(cls, spec: ModelConfig) -> nn.Module:
        import torchvision

        options = cls.parse_options(spec.name, spec.options)
        model = getattr(torchvision.models, spec.variant)(weights=None, num_classes=options.num_classes)
        if spec.weights:
            load_state_dict(model, spec.weights)
        return model.eval()
