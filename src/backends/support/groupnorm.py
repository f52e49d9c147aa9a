"""GroupNorm from per-channel statistics, for Inductor backends (`gn_channel_stats`, docs/backends.md).

Inductor lowers `GroupNorm` to a reduction over each group's channels and voxels. On a channels-last tensor
a group's channels are a few adjacent values in every voxel's row of channels (2 of 16 in SegResNet's first
stage), so each group's reduction reads a few values out of every row, and the memory holding a row is
fetched once per group unless a cache still holds it. Computed from per-channel statistics instead (a
reduction over the voxels with the channels innermost: whole rows), the tensor is read once; the group's
mean and variance then follow from its channels' (the law of total variance, every channel having the
same count), and the normalisation is one pointwise pass that Inductor fuses with what follows. The
arithmetic is that of `GroupNorm` in float32; the job's parity check compares the result with the eager
fp32 model as for any other run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from torch import Tensor


class ChannelStatsGroupNorm(nn.Module):
    """The same function as the `nn.GroupNorm` it replaces (its parameters, shared)."""

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.num_groups, self.eps = norm.num_groups, norm.eps
        self.weight, self.bias = norm.weight, norm.bias

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        per_group = (n, self.num_groups, c // self.num_groups)
        spatial = tuple(range(2, x.dim()))
        wide = x.float()
        var_c, mean_c = torch.var_mean(wide, dim=spatial, correction=0)  # (n, c) each
        mean_g = mean_c.view(per_group).mean(-1, keepdim=True)
        spread = (mean_c.view(per_group) - mean_g).pow(2)
        var_g = (var_c.view(per_group) + spread).mean(-1, keepdim=True)
        scale = torch.rsqrt(var_g + self.eps).expand(per_group).reshape(n, c)
        shift = -mean_g.expand(per_group).reshape(n, c) * scale
        if self.weight is not None:
            weight = self.weight.float()
            scale, shift = scale * weight, shift * weight
        if self.bias is not None:
            shift = shift + self.bias.float()
        shape = (n, c) + (1,) * len(spatial)
        return (wide * scale.view(shape) + shift.view(shape)).to(x.dtype)


def use_channel_stats(model: nn.Module) -> int:
    """Replace every `nn.GroupNorm` of `model` in place; return how many were replaced."""
    replaced = 0
    for name, child in model.named_children():
        if isinstance(child, nn.GroupNorm):
            setattr(model, name, ChannelStatsGroupNorm(child))
            replaced += 1
        else:
            replaced += use_channel_stats(child)
    return replaced
