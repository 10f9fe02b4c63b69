"""The timm backbone contract, written once for every family.

A hierarchical family builds `stem`, `stages` (an nn.Sequential of `Stage`s or modules with the same attributes),
`norm` and `head`, fills `feature_info` (the constructor's common start and end: `_setup`, `_finish`), and gets from
`Backbone`: forward/forward_features/forward_head,
forward_intermediates and prune_intermediate_layers (so `features_only=True` works through timm's
FeatureGetterNet), input checks with clear errors, grad checkpointing, no_weight_decay, group_matcher,
reset_classifier, set_input_size (recorded in timm's model traits) and timm 1.0's attributes (head_hidden_size,
global_pool, grad_checkpointing, dynamic_img_size). Isotropic models (`deit.DeiT` and its configurations) run the
same forward_features / forward_intermediates / prune loops over their `blocks` through three small hooks (_begin,
_level, _take).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple, Union

import torch
import torch.nn as nn
from timm.layers import ClassifierHead, get_device_dtype, to_2tuple
from timm.models import checkpoint_seq
from timm.models._input import update_model_input_size
from torch.fx.experimental.symbolic_shapes import guard_scalar

from ..layers._cache import capturing_graph, eager_inference

__all__ = ['Backbone', 'Stage', 'take_indices']

# parameters that are positions/tokens rather than weights: the papers train them without weight decay (`rpb`:
# neighborhood attention's bias, in NAT and in the Swin / DeiT hosts' NA configurations)
NO_WEIGHT_DECAY = ('relative_position_bias_table', 'absolute_pos_embed', 'pos_embed', 'cls_token', 'rpb')


def take_indices(num_stages: int, indices: Optional[Union[int, Sequence[int]]]) -> Tuple[List[int], int]:
    """Absolute stage indices to take and the largest one. None: all; n: the last n; a list: those (negatives
    count from the end). Out-of-range indices are an error that says what the valid range is."""
    if indices is None:
        indices = num_stages
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ValueError(f'asked for the last {indices} stages, the model has {num_stages}')
        taken = list(range(num_stages - indices, num_stages))
    else:
        taken = []
        for i in indices:
            if not -num_stages <= i < num_stages:
                raise ValueError(f'feature index {i} is out of range: the model has {num_stages} stages, '
                                 f'valid indices are 0..{num_stages - 1} or -{num_stages}..-1')
            taken.append(i % num_stages)
    return taken, max(taken)


# Inference (eval, no grad) runs the stem and each stage's blocks on batch slices of at most this many bytes of
# input each. Their intermediates (the 4x MLP hidden, qkv) then stay in cache and under glibc's 32 MiB mmap
# threshold, above which every allocation is a fresh mapping that is page-faulted in again: at batch 8 on 2 CPU
# threads Swin-T, DaViT-T, FocalNet-T and MaxViT-T run 1.1-1.25x faster. Every op is per-sample in eval, so
# the output is the same. 0 turns slicing off.
INFERENCE_SLICE_BYTES = 2 * 2 ** 20


def run_sliced(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, module: nn.Module) -> torch.Tensor:
    """fn(x), on batch slices when `module` runs inference (see INFERENCE_SLICE_BYTES); whole otherwise, and
    always while a graph is captured."""
    if not INFERENCE_SLICE_BYTES or not eager_inference(module):
        return fn(x)
    per_slice = max(1, INFERENCE_SLICE_BYTES // (x[0].numel() * x.element_size()))
    slices = -(-x.shape[0] // per_slice)  # as few as the bound allows, of equal size (8 = 4 + 4, not 6 + 2)
    return fn(x) if slices <= 1 else torch.cat([fn(part) for part in x.tensor_split(slices)])


class _GradientInLayout(torch.autograd.Function):
    """Identity whose gradient is returned in a given memory format (see `Backbone.forward_head`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
        ctx.memory_format = memory_format
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> Tuple[torch.Tensor, None]:
        return grad.contiguous(memory_format=ctx.memory_format), None


class Stage(nn.Module):
    """An optional downsample followed by a sequence of blocks (run on batch slices at inference: run_sliced)."""

    def __init__(self, blocks: Sequence[nn.Module], downsample: Optional[nn.Module] = None):
        super().__init__()
        self.downsample = downsample if downsample is not None else nn.Identity()
        self.blocks = nn.Sequential(*blocks)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.blocks, x)
        return run_sliced(self.blocks, x, self)


class Backbone(nn.Module):
    """Base of every zoo model (isotropic ones: see `deit.DeiT`). Hierarchical subclasses set, in __init__:

    stem, stages, norm, head (a timm ClassifierHead-like module: `num_features` (its pre-logits width), `reset(
    num_classes, pool_type, reset_other, in_features)`, its pooling in `global_pool.pool_type` or `pool_type`),
    feature_info, num_classes, num_features (width of forward_features), in_chans, img_size, output_fmt (layout of
    stage outputs: 'NHWC' or 'NCHW'), min_input_size (smallest (H, W) the network accepts).
    """
    output_fmt: str = 'NCHW'
    feature_levels: str = 'stages'  # the nn.Sequential whose outputs are the feature levels (isotropic: 'blocks')
    # the final norm (and the head) take the last level's output only: pruning the last level drops them
    # (hierarchical widths differ per stage); isotropic models keep both
    norm_fits_every_level: bool = False
    dynamic_img_size: bool = True  # any input size runs (padded inside, position terms resampled on the fly)
    grad_checkpointing: bool = False
    img_size: Optional[Tuple[int, int]] = None  # the resolution built for (fully convolutional families: none)
    intermediate_fmts: Tuple[str, ...] = ('NCHW', 'NHWC')  # what forward_intermediates can return
    no_weight_decay_names: Tuple[str, ...] = NO_WEIGHT_DECAY
    # conv-dominated NCHW families run in channels-last memory, oneDNN's native conv layout (values unchanged to
    # float32 rounding; PoolFormer-S12 1.4x on 2 CPU threads); `channels_last_training`: only while training with
    # autograd, for a family whose inference stays NCHW to keep its logits within timm's parity bar
    channels_last: bool = False
    channels_last_training: bool = False

    # -- construction ----------------------------------------------------------------------------
    # A hierarchical constructor: `dpr = self._setup(...)`, the stem, the stages, `self._finish(...)`.
    def _setup(self, in_chans: int, num_classes: int, widths: Sequence[int], depths: Sequence[int],
               drop_path_rate: float = 0., stride: int = 4,
               img_size: Optional[Union[int, Tuple[int, int]]] = None) -> List[List[float]]:
        """The contract's attributes for a stem of `stride` followed by stages of `widths` that each (after the
        first) halve the map: min_input_size (one pixel at the last stage), num_features, feature_info, and img_size
        where the family is built for one (None: fully convolutional). Returns each stage's drop-path rates, linear
        from 0 to drop_path_rate over all blocks."""
        self.in_chans = in_chans
        self.num_classes = num_classes
        if img_size is not None:
            self.img_size = to_2tuple(img_size)
        self.min_input_size = (stride * 2 ** (len(widths) - 1),) * 2
        self.num_features = widths[-1]
        self.feature_info = [dict(num_chs=w, reduction=stride * 2 ** i, module=f'stages.{i}')
                             for i, w in enumerate(widths)]
        return [rates.tolist() for rates in torch.linspace(0, drop_path_rate, sum(depths)).split(list(depths))]

    def _finish(self, stages: Sequence[nn.Module], norm: nn.Module, head: nn.Module,
                init: Optional[Callable[[nn.Module], None]] = None) -> None:
        """The stages, the final norm and the head (registered after the stem, so state_dict keys keep that order);
        then the family's weight init applied to every module."""
        self.stages = nn.Sequential(*stages)
        self.norm = norm
        self.head = head
        if init is not None:
            self.apply(init)

    def _classifier_head(self, global_pool: str, drop_rate: float) -> ClassifierHead:
        """timm's ClassifierHead (pool -> dropout -> fc) on maps in the stages' layout."""
        return ClassifierHead(self.num_features, self.num_classes, pool_type=global_pool, drop_rate=drop_rate,
                              input_fmt=self.output_fmt)

    # -- input -----------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> None:
        if torch.compiler.is_dynamo_compiling():
            # At a second input size dynamo retraces with symbolic sizes ("automatic dynamic"); the reshapes of a
            # map padded to whole windows then need sympy proofs that take minutes per model, where a recompile
            # for the new size is as quick as the first compile. guard_scalar specializes both: one static graph
            # per input size (the batch stays dynamic).
            guard_scalar(x.shape[2]), guard_scalar(x.shape[3])
            return
        if torch.jit.is_scripting() or torch.compiler.is_compiling():
            return
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f'{type(self).__name__} expects (B, {self.in_chans}, H, W) images, '
                             f'got shape {tuple(x.shape)}')
        min_h, min_w = self.min_input_size
        if x.shape[2] < min_h or x.shape[3] < min_w:
            raise ValueError(f'{type(self).__name__} needs images of at least {min_h}x{min_w}, '
                             f'got {x.shape[2]}x{x.shape[3]}')

    def set_input_size(self, img_size: Optional[Union[int, Tuple[int, int]]] = None, **kwargs: Any) -> None:
        """Set the resolution (and window sizes, where the family has them: `_resize`'s arguments) the model is
        built for: position-dependent state is rebuilt, and the new size is recorded where timm keeps it
        (`timm.models.get_model_input_config`, the construction arguments of an exported model)."""
        if img_size is not None:
            self.img_size = to_2tuple(img_size)
        self._resize(**kwargs)
        constructor_args = inspect.signature(type(self)).parameters
        update_model_input_size(self, self.img_size, **{k: v for k, v in kwargs.items() if k in constructor_args})

    def _resize(self) -> None:
        """Rebuild what depends on `self.img_size` (nothing here: the family is fully convolutional or adapts per
        call); a family with windows takes them as keyword arguments."""

    # -- forward ---------------------------------------------------------------------------------
    # The feature levels are `self.stages` (hierarchical) or `self.blocks` (isotropic, `feature_levels = 'blocks'`).
    # forward_features and forward_intermediates are written once over three hooks that a family overrides
    # where it differs: _begin (image -> input of the first level), _level (run level i) and _take (how level
    # i's output is returned by forward_intermediates).
    def _begin(self, x: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        """Image -> input of the first level, and what the levels need besides it (nothing here)."""
        self.check_input(x)
        if self.channels_last or (self.channels_last_training and self.training and torch.is_grad_enabled()):
            x = x.contiguous(memory_format=torch.channels_last)
        return run_sliced(self.stem, x, self), None

    def _level(self, i: int, level: nn.Module, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        return level(x)

    def _take(self, i: int, x: torch.Tensor, ctx: Any, norm: bool, output_fmt: str) -> torch.Tensor:
        """Level i's output for forward_intermediates; the final norm is sized for (and applied to) the last stage's."""
        return self._format(self.norm(x) if norm and i == len(self.stages) - 1 else x, output_fmt)

    def _format(self, x: torch.Tensor, output_fmt: str, fmt: Optional[str] = None) -> torch.Tensor:
        """A map in layout `fmt` (default: the stages' `output_fmt`) as `output_fmt`, contiguous."""
        if output_fmt == (fmt or self.output_fmt):
            return x.contiguous()
        return x.permute(0, 3, 1, 2).contiguous() if output_fmt == 'NCHW' else x.permute(0, 2, 3, 1).contiguous()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, ctx = self._begin(x)
        for i, level in enumerate(getattr(self, self.feature_levels)):
            x = self._level(i, level, x, ctx)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if x.dim() == 4 and x.requires_grad and torch.is_grad_enabled() and not capturing_graph():
            # global average pooling over the NCHW view expands its gradient NCHW; on a channels-last map (or an NHWC
            # one pooled through that view) every residual add of the last stage would keep that layout and run
            # the stage's backward on mixed pairs (eager training)
            for memory_format in (torch.contiguous_format, torch.channels_last):
                if x.is_contiguous(memory_format=memory_format):
                    x = _GradientInLayout.apply(x, memory_format)
                    break
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
            self,
            x: torch.Tensor,
            indices: Optional[Union[int, List[int]]] = None,
            norm: bool = False,
            stop_early: bool = False,
            output_fmt: str = 'NCHW',
            intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Level outputs at `indices` (timm semantics) in `output_fmt` (one of `intermediate_fmts`); `norm`: see
        `_take`. The returned final features get the norm when every level ran."""
        if output_fmt not in self.intermediate_fmts:
            *first, last = map(repr, self.intermediate_fmts)
            raise ValueError(f"output_fmt must be {', '.join(first)} or {last}, got {output_fmt!r}")
        levels = getattr(self, self.feature_levels)
        taken, max_index = take_indices(len(levels), indices)
        x, ctx = self._begin(x)
        run = levels if torch.jit.is_scripting() or not stop_early else levels[:max_index + 1]
        intermediates = []
        for i, level in enumerate(run):
            x = self._level(i, level, x, ctx)
            if i in taken:
                intermediates.append(self._take(i, x, ctx, norm, output_fmt))
        if intermediates_only:
            return intermediates
        if len(run) == len(levels):
            x = self.norm(x)
        return x, intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Drop the levels after the last of `indices` (and the final norm / head) for feature extraction, as
        timm does: when levels go, the features end at the last kept one (`num_features` = its width) and a
        norm / head sized for the dropped last level goes too (see `norm_fits_every_level`)."""
        levels = getattr(self, self.feature_levels)
        taken, max_index = take_indices(len(levels), indices)
        prune_end = max_index < len(levels) - 1 and not self.norm_fits_every_level
        setattr(self, self.feature_levels, levels[:max_index + 1])
        if prune_norm or prune_end:
            self.norm = nn.Identity()
        if prune_end:
            self.num_features = self.feature_info[max_index]['num_chs']
        if prune_head or prune_end:
            # nothing of the head may stay (reset_other drops its norm and pre-logits too): a layer left in a
            # feature extractor gets no gradient, and DDP (mmdet/mmseg default find_unused_parameters=False) fails
            # on unused parameters. What is left pools nothing: forward_head returns the features.
            self.reset_classifier(0, '', reset_other=True)
        return taken

    # -- classifier ------------------------------------------------------------------------------
    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None, reset_other: bool = False) -> None:
        """A new classifier for `num_classes` (0: none, forward returns the pooled pre-logits) and, if given, a new
        pooling ('' : none, forward returns the unpooled head input); `reset_other` also drops the head's norm and
        pre-logits layer (timm's NormMlpClassifierHead)."""
        self.num_classes = num_classes
        self.head.reset(num_classes, pool_type=global_pool, reset_other=reset_other, in_features=self.num_features,
                        **get_device_dtype(self))

    @property
    def head_hidden_size(self) -> int:
        """Width of forward_head(x, pre_logits=True): the head's pre-logits layer where it has one (timm 1.0)."""
        return self.head.num_features

    @property
    def global_pool(self) -> str:
        """The head's pooling ('' when it pools nothing), read from the head so it follows reset_classifier."""
        pool = getattr(self.head, 'global_pool', None)
        return pool.pool_type if pool is not None else self.head.pool_type

    # -- training helpers ------------------------------------------------------------------------
    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable
        for stage in getattr(self, 'stages', ()):
            stage.grad_checkpointing = enable

    @torch.jit.ignore
    def no_weight_decay(self) -> Set[str]:
        return {n for n, _ in self.named_parameters() if n.rsplit('.', 1)[-1] in self.no_weight_decay_names}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for layer-wise lr decay: the stem, then each block (or stage when coarse)."""
        return dict(
            stem=r'^stem',
            blocks=r'^stages\.(\d+)' if coarse else [
                (r'^stages\.(\d+)\.downsample', (0,)),
                (r'^stages\.(\d+)\.blocks\.(\d+)', None),
                (r'^norm', (99999,)),
            ],
        )
