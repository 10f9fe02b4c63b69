"""Weight init shared by the families: truncated-normal linear/conv weights, zero biases."""
from __future__ import annotations

import torch.nn as nn
from timm.layers import trunc_normal_

__all__ = ['trunc_normal_init_']


def trunc_normal_init_(module: nn.Module, std: float = .02, convs: bool = True) -> None:
    """For `model.apply(...)`: nn.Linear (and, with `convs`, nn.Conv2d) weights ~ trunc_normal(std), biases 0 (the
    ViT / Swin / MetaFormer init; the Swin-style hosts leave convs at torch's default: convs=False)."""
    if isinstance(module, (nn.Linear, nn.Conv2d) if convs else nn.Linear):
        trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
