"""Necks for zoo backbones in mmdet (registered by `zoo.integrations.mm`).

`TransConvFPN`: mmdet's FPN plus finer levels made by transposed convs, for backbones whose first map is
coarse. SHViT's stages sit at strides 16/32/64; its authors' detectors (ysj9909/SHViT downstream, the
EfficientViT `EfficientViTFPN` neck with `num_extra_trans_convs`) add 2 (Mask R-CNN: strides 4..64) or 1
(RetinaNet: strides 8..128) such levels, so the usual heads, anchors and RoI strides apply unchanged.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule
from mmdet.models.necks import FPN

__all__ = ['TransConvFPN']


class TransConvFPN(FPN):
    """FPN over `in_channels` with `num_outs - num_up` outputs (mmdet's FPN, any of its options), then
    `num_up` finer levels: the finest lateral after the top-down sum goes through 2x2 stride-2 transposed
    convs, each followed by its own 3x3 output conv. Returns the new levels (finest first), then FPN's own.
    """

    def __init__(self, in_channels: List[int], out_channels: int, num_outs: int, num_up: int = 1, **kwargs):
        if not 0 <= num_up < num_outs:
            raise ValueError(f'num_up must be in [0, num_outs), got {num_up} with num_outs={num_outs}')
        super().__init__(in_channels, out_channels, num_outs - num_up, **kwargs)
        self.num_up = num_up
        self.up_convs = nn.ModuleList(
            nn.ConvTranspose2d(out_channels, out_channels, kernel_size=2, stride=2) for _ in range(num_up))
        self.up_fpn_convs = nn.ModuleList(
            ConvModule(out_channels, out_channels, 3, padding=1, conv_cfg=kwargs.get('conv_cfg'),
                       norm_cfg=kwargs.get('norm_cfg'), act_cfg=kwargs.get('act_cfg'), inplace=False)
            for _ in range(num_up))
        self._finest: Optional[torch.Tensor] = None
        # FPN applies fpn_convs[0] to the finest lateral after the top-down sum: keep that input
        self.fpn_convs[0].register_forward_pre_hook(self._keep_finest)

    def _keep_finest(self, module: nn.Module, args: Sequence[torch.Tensor]) -> None:
        self._finest = args[0]

    def forward(self, inputs: Tuple[torch.Tensor, ...]) -> tuple:
        outs = super().forward(inputs)
        x, self._finest = self._finest, None
        ups: List[torch.Tensor] = []
        for up, conv in zip(self.up_convs, self.up_fpn_convs):
            x = up(x)
            ups.insert(0, conv(x))
        return tuple(ups) + tuple(outs)
