"""Classifier heads beyond timm's ClassifierHead / NormMlpClassifierHead."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
from timm.layers import ClassifierHead

__all__ = ['BnLinearClassifierHead']


class BnLinearClassifierHead(ClassifierHead):
    """global pool -> dropout -> BatchNorm1d -> linear (LeViT / EfficientViT / SHViT heads).

    pre_logits stops before the BatchNorm; reset(0) removes both BatchNorm and linear. Keys: norm, fc."""

    def __init__(self, in_features: int, num_classes: int, pool_type: str = 'avg', drop_rate: float = 0.):
        super().__init__(in_features, num_classes, pool_type=pool_type, drop_rate=drop_rate)
        self.norm = nn.BatchNorm1d(self.num_features) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes: int, pool_type: Optional[str] = None, **kwargs) -> None:
        super().reset(num_classes, pool_type, **kwargs)
        self.norm = nn.BatchNorm1d(self.num_features) if num_classes > 0 else nn.Identity()
        self.norm.to(self.fc.weight if num_classes > 0 else torch.empty(0)).train(self.training)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.global_pool(x))
        return x if pre_logits else self.fc(self.norm(x))
