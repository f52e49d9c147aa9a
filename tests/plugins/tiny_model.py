"""A test-only model registered from outside `src/` (`plugins=[tests.plugins.tiny_model]`): a tiny CNN for
a task no in-tree model has, to show that the report needs no edit for a new model."""

from __future__ import annotations

import torch

from src.models.base import MODELS, ModelDef, image_shape_problem


@MODELS.register("tinynet")
class TinyNet(ModelDef):
    task = "keypoints"
    task_title = "Keypoint estimation"
    variants = ("tiny",)

    @classmethod
    def check_input(cls, shape: tuple[int, ...], options: object) -> str | None:
        return image_shape_problem(shape, channels=3, multiple=4, minimum=8)

    @classmethod
    def build(cls, spec) -> torch.nn.Module:
        torch.manual_seed(0)
        net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 17, 1)
        )
        return net.eval()
