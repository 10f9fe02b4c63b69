"""Weight init shared by the families: truncated-normal linear/conv weights, zero biases."""
from __future__ import annotations

import torch.nn as nn
from timm.layers import trunc_normal_

__all__ = ['trunc_normal_init_']


def trunc_normal_init_(module: nn.Module, std: float = .02) -> None:
    """For `model.apply(...)`: nn.Linear and nn.Conv2d weights ~ trunc_normal(std), biases 0 (the ViT / Swin /
    MetaFormer init)."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        trunc_normal_(module.weight, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
