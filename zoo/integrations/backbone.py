"""`ZooBackbone`: a registered zoo (or timm) model as a multi-scale NCHW backbone for dense prediction.

Plain torch + timm (no OpenMMLab import); `zoo.integrations.mm` registers it in mmdet's and mmseg's MODELS.

    backbone = ZooBackbone('zoo_swin_tiny', out_indices=(0, 1, 2, 3), drop_path_rate=0.2, out_norm='LN')
    feats = backbone(images)            # [B, C_i, H / s_i, W / s_i] for s_i in backbone.strides

Hierarchical models (feature_info reductions differ) return their stage outputs at `out_indices`, built as
timm's `features_only=True` does for zoo models (timm's FeatureGetterNet over forward_intermediates).
Isotropic models (every reduction equal, e.g. ConViT / DeiT hosts) get a simple feature pyramid from one
map (`iso_index`, default the last block): transposed convs up to stride 4 and 8, the map itself at
stride 16, max-pool to stride 32 (channels C/4, C/2, C, C for a stride-16 model).

Optional per-stage output norms (`out_norm='LN'` or `'GN'`), as in the authors' dense backbones
(Swin/NAT/FocalNet/... use LayerNorm, PoolFormer GroupNorm(1, C)), are modules named `norm{i}` for each i in
out_indices, so the authors' detection/segmentation checkpoints (`backbone.norm{i}.weight/bias`) load as is.

Checkpoints (`pretrained=`): True loads the model's default pretrained cfg through timm (family filter +
strict fit); a path or URL may be an ImageNet checkpoint (classifier and final norm are dropped) or a
detection/segmentation checkpoint whose `backbone.` part is taken (strict on every backbone key: the
family's checkpoint filter, then the output norms, then an exact key/shape match). Files (.pth or
.safetensors) and URLs are read by `zoo.models._load` (weights_only, no unsafe unpickling, one clear error for a
bad file).
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple, Union

import timm
import torch
import torch.nn as nn
from timm.layers import LayerNorm2d
from timm.models import group_parameters
from timm.models._features import FeatureGetterNet

from ..models._builder import family_filter
from ..models._convert import CheckpointMismatchError, check_fit
from ..models._load import read_state_dict

__all__ = ['ZooBackbone', 'SimpleFeaturePyramid', 'load_backbone_state']

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
_OUT_NORM_KEY = re.compile(r'^norm(\d+)\.')


def _out_norm(kind: Optional[str], channels: int) -> nn.Module:
    if kind in ('LN', 'ln'):
        return LayerNorm2d(channels)
    if kind in ('GN', 'gn'):
        return nn.GroupNorm(1, channels)
    raise ValueError(f"out_norm must be None, 'LN' or 'GN', got {kind!r}")


class SimpleFeaturePyramid(nn.Module):
    """Multi-scale maps from one single-scale map (isotropic models): for each target stride s of a map at
    stride r, log2(r/s) transposed 2x2 convs (halving channels each time, LayerNorm2d + GELU between) when
    s < r, identity when s == r, log2(s/r) 2x2 max-pools when s > r."""

    def __init__(self, channels: int, in_stride: int, strides: Sequence[int] = (4, 8, 16, 32)):
        super().__init__()
        self.strides = tuple(strides)
        self.channels = []
        self.levels = nn.ModuleList()
        for s in self.strides:
            layers, c = [], channels
            if s < in_stride:
                n = int(round(math.log2(in_stride / s)))
                for j in range(n):
                    if j:
                        layers += [LayerNorm2d(c), nn.GELU()]
                    layers.append(nn.ConvTranspose2d(c, c // 2, kernel_size=2, stride=2))
                    c //= 2
            elif s > in_stride:
                layers += [nn.MaxPool2d(kernel_size=2, stride=2)] * int(round(math.log2(s / in_stride)))
            self.levels.append(nn.Sequential(*layers))
            self.channels.append(c)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        return [level(x) for level in self.levels]


def load_backbone_state(backbone: 'ZooBackbone', state_dict: Dict[str, torch.Tensor]) -> None:
    """Load a classification or detection/segmentation state dict into `backbone`, strict on backbone keys."""
    if any(k.startswith('backbone.') for k in state_dict):
        dense = True
        state_dict = {k[len('backbone.'):]: v for k, v in state_dict.items() if k.startswith('backbone.')}
    else:
        dense = False
    norms = {k: v for k, v in state_dict.items() if _OUT_NORM_KEY.match(k)}
    state_dict = {k: v for k, v in state_dict.items() if k not in norms}
    own_norms = {f'{name}.{k}': v for name in backbone.out_norm_names
                 for k, v in getattr(backbone, name).state_dict().items()}
    if norms and not own_norms:
        raise CheckpointMismatchError(
            f'the checkpoint has per-stage output norms ({", ".join(sorted(norms)[:4])}, ...) but the backbone '
            f"was built without them: set out_norm='LN' (or 'GN' for GroupNorm output norms)")
    if dense and own_norms:
        check_fit(norms, _Keys(own_norms), ignore=())
    if norms:
        for name in backbone.out_norm_names:
            prefix = name + '.'
            getattr(backbone, name).load_state_dict(
                {k[len(prefix):]: v for k, v in norms.items() if k.startswith(prefix)}, strict=True)

    model = backbone.body.model
    fn = family_filter(backbone.model_name)  # recorded by the builder; None for timm's own models (their layout)
    if fn is not None:
        state_dict = fn(state_dict, model)
    # keys of the parts pruned away for feature extraction (classifier, final norm, later stages) are not used
    state_dict = {k: v for k, v in state_dict.items() if k not in backbone.pruned_keys}
    check_fit(state_dict, model, ignore=())
    model.load_state_dict(state_dict, strict=True)


class _Keys(nn.Module):
    """Adapter so check_fit can compare against a plain dict of tensors."""

    def __init__(self, tensors: Dict[str, torch.Tensor]):
        super().__init__()
        self._tensors = tensors

    def state_dict(self, *args, **kwargs):  # noqa: D102
        return dict(self._tensors)


class ZooBackbone(nn.Module):
    """A zoo/timm model as a dense-prediction backbone: a list of NCHW maps at `self.strides`.

    Args:
        model_name: a registered model, e.g. 'zoo_swin_tiny'.
        out_indices: stages to return (hierarchical), or pyramid levels of strides 4/8/16/32 (isotropic).
        pretrained: None/False, True (the model's default pretrained cfg via timm), or a path/URL of an
            ImageNet or a detection/segmentation checkpoint (see module doc).
        drop_path_rate: stochastic depth of the model (None: the model's default).
        frozen_stages: -1 none; 0 the stem; k the stem and the first k stages (and their output norms).
        norm_eval: keep BatchNorm layers of the backbone in eval mode while training.
        with_cp: gradient checkpointing (`set_grad_checkpointing`).
        img_size: the model's img_size (position tables / windows are built for it).
        out_norm: None, 'LN' (LayerNorm over channels) or 'GN' (GroupNorm(1, C)) per output, named norm{i}.
        iso_index: which block of an isotropic model feeds its feature pyramid.
        model_kwargs: any other timm.create_model keyword (e.g. depths=..., embed_dim=... for tiny tests).
        init_cfg: mm-style dict(type='Pretrained', checkpoint=...) is accepted as `pretrained`.
    """

    def __init__(
            self,
            model_name: str,
            out_indices: Sequence[int] = (0, 1, 2, 3),
            pretrained: Union[None, bool, str] = None,
            drop_path_rate: Optional[float] = None,
            frozen_stages: int = -1,
            norm_eval: bool = False,
            with_cp: bool = False,
            img_size: Optional[Union[int, Tuple[int, int]]] = None,
            out_norm: Optional[str] = None,
            iso_index: int = -1,
            model_kwargs: Optional[Dict[str, Any]] = None,
            init_cfg: Optional[Dict[str, Any]] = None,
    ):
        super().__init__()
        import zoo  # noqa: F401  (registers the zoo models)

        if init_cfg is not None:
            if init_cfg.get('type') != 'Pretrained' or pretrained:
                raise ValueError("ZooBackbone takes `pretrained=`; init_cfg may only be "
                                 "dict(type='Pretrained', checkpoint=...) when pretrained is unset")
            pretrained = init_cfg['checkpoint']
        # a bad checkpoint file fails here, before the model is built
        state_dict = read_state_dict(pretrained) if pretrained and pretrained is not True else None
        self.model_name = model_name
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        kwargs = dict(model_kwargs or {})
        if drop_path_rate is not None:
            kwargs['drop_path_rate'] = drop_path_rate
        if img_size is not None:
            kwargs['img_size'] = img_size
        model = timm.create_model(model_name, pretrained=pretrained is True, **kwargs)
        info = [dict(i) for i in model.feature_info]
        reductions = [i['reduction'] for i in info]
        self.isotropic = len(info) > 1 and len(set(reductions)) == 1
        full_keys = set(model.state_dict())
        if self.isotropic:
            iso = iso_index % len(info)
            self.body = FeatureGetterNet(model, out_indices=[iso], output_fmt='NCHW')
            self.pyramid = SimpleFeaturePyramid(info[iso]['num_chs'], reductions[iso])
            levels = self._check_indices(out_indices, len(self.pyramid.strides))
            self.strides = [self.pyramid.strides[i] for i in levels]
            self.channels = [self.pyramid.channels[i] for i in levels]
            self.stage_modules = [info[i]['module'] for i in range(iso + 1)]
        else:
            levels = self._check_indices(out_indices, len(info))
            self.body = FeatureGetterNet(model, out_indices=list(levels), output_fmt='NCHW')
            self.pyramid = None
            self.strides = [reductions[i] for i in levels]
            self.channels = [info[i]['num_chs'] for i in levels]
            self.stage_modules = [info[i]['module'] for i in range(max(levels) + 1)]
        self.out_indices = tuple(levels)
        self.pruned_keys = full_keys - set(self.body.model.state_dict())
        self.out_norm_names = []
        if out_norm:
            for i, c in zip(self.out_indices, self.channels):
                self.add_module(f'norm{i}', _out_norm(out_norm, c))
                self.out_norm_names.append(f'norm{i}')
        if with_cp:
            self.body.model.set_grad_checkpointing(True)
        if state_dict is not None:
            load_backbone_state(self, state_dict)
        self._freeze()

    @staticmethod
    def _check_indices(indices: Sequence[int], n: int) -> List[int]:
        out = []
        for i in indices:
            if not -n <= i < n:
                raise ValueError(f'out_indices {tuple(indices)}: {i} is out of range for {n} feature levels')
            out.append(i % n)
        return out

    # -- freezing ------------------------------------------------------------------------------------
    def _freeze(self) -> None:
        """Freeze the stem (frozen_stages >= 0) and stages 0..frozen_stages-1 with their output norms."""
        self._frozen_modules: List[nn.Module] = []
        if self.frozen_stages < 0:
            return
        model = self.body.model
        k = self.frozen_stages
        names = [n for n, _ in model.named_parameters()]
        if k < len(self.stage_modules):
            first = self.stage_modules[k] + '.'
            stop = next((j for j, n in enumerate(names) if n.startswith(first)), len(names))
        else:
            stop = len(names)
        frozen = set(names[:stop])
        for n, p in model.named_parameters():
            if n in frozen:
                p.requires_grad_(False)
        for i in range(min(k, len(self.stage_modules))):
            if f'norm{i}' in self.out_norm_names:
                norm = getattr(self, f'norm{i}')
                norm.requires_grad_(False)
                self._frozen_modules.append(norm)
        # the largest modules whose parameters are all frozen run in eval mode (dropout, drop path, BN)
        taken: List[str] = []
        for name, m in model.named_modules():
            params = [n for n, _ in m.named_parameters(prefix=name)] if name else []
            if params and all(p in frozen for p in params) and not any(name.startswith(t + '.') for t in taken):
                taken.append(name)
                self._frozen_modules.append(m)

    def train(self, mode: bool = True) -> 'ZooBackbone':
        super().train(mode)
        if mode:
            for m in self._frozen_modules:
                m.eval()
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
        return self

    def init_weights(self) -> None:
        """mm calls this after building: the weights are already set (timm init or `pretrained`)."""

    # -- forward -------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        feats = self.body(x)
        if self.pyramid is not None:
            feats = self.pyramid(feats[-1])
            feats = [feats[i] for i in self.out_indices]
        if self.out_norm_names:
            feats = [getattr(self, n)(f) for n, f in zip(self.out_norm_names, feats)]
        return feats

    # -- optimizer settings --------------------------------------------------------------------------
    def no_weight_decay(self) -> Set[str]:
        """Parameter names (relative to this module) trained without weight decay: every norm layer's
        parameters and the model's own `no_weight_decay()` (position tables, tokens, ...)."""
        model = self.body.model
        listed = set(model.no_weight_decay()) if hasattr(model, 'no_weight_decay') else set()
        out = set()
        for n, _ in model.named_parameters():
            if n in listed or n.rsplit('.', 1)[-1] in listed:
                out.add('body.model.' + n)
        for mname, m in self.named_modules():
            if isinstance(m, _NORMS):
                out.update(f'{mname}.{n}' for n, _ in m.named_parameters(recurse=False))
        return out

    def layer_scales(self, decay_rate: float) -> Dict[str, float]:
        """Layer-wise lr decay: lr multiplier per parameter from the model's `group_matcher` (stem smallest,
        the last group decay_rate**1; output norms and the isotropic pyramid 1)."""
        model = self.body.model
        layer = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
        top = max(layer.values()) + 1
        return {'body.model.' + n: decay_rate ** (top - layer.get(n, top - 1)) for n, _ in model.named_parameters()}
