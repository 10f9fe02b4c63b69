"""`build_model`: timm's build_model_with_cfg with the zoo's defaults, shared by every family."""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, register_model, resolve_pretrained_cfg

from ._convert import check_fit, unwrap
from ._load import check_checkpoint_file
from ._partial import partial_state_dict

__all__ = ['build_model', 'cfg', 'licensed', 'register_variants', 'family_filter']

_logger = logging.getLogger(__name__)

# model name -> its family's checkpoint filter (recorded when a model is built; zoo.load_partial and
# tools/weights.py find a model's filter here)
_FAMILY_FILTERS: Dict[str, Optional[Callable]] = {}


def cfg(url: str = '', **kwargs: Any) -> Dict[str, Any]:
    """A pretrained_cfg with ImageNet defaults; `url` is the authors' official release."""
    return {
        'url': url, 'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7), 'crop_pct': .9,
        'interpolation': 'bicubic', 'fixed_input_size': False, 'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD, 'first_conv': 'stem.proj', 'classifier': 'head.fc', 'license': 'see url',
        **kwargs,
    }


def licensed(license: str, cfgs: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """`cfgs` with the license of the authors' release (the repository's LICENSE) where a cfg names none."""
    return {tag: dict(c, license=license) if c.get('license', 'see url') == 'see url' else c
            for tag, c in cfgs.items()}


def family_filter(model_or_name) -> Optional[Callable]:
    """The checkpoint filter of a zoo model's family (authors' / timm layouts -> zoo layout), None for others."""
    name = model_or_name if isinstance(model_or_name, str) else \
        getattr(model_or_name, 'pretrained_cfg', {}).get('architecture', '')
    return _FAMILY_FILTERS.get(name)


def build_model(model_cls: type, variant: str, pretrained: bool = False, num_stages: int = 4,
                checkpoint_filter: Optional[Callable] = None, **kwargs: Any):
    """Build `model_cls` for `variant`; `features_only` goes through forward_intermediates (timm's getter).

    Checkpoints pass through the family's `checkpoint_filter(state_dict, model)` and then a fit check
    that names missing/unexpected/misshaped keys before torch's strict load. `pretrained_cfg_overlay=dict(file=...,
    strict=False)` loads what fits instead (zoo.load_partial's matching) and logs its report. A local file is
    checked first (`_load.check_checkpoint_file`: one clear error for a missing, broken or foreign file, or one with
    globals a weights_only load refuses) before the model is built; timm then reads it with weights_only=True (.pth)
    or safetensors.
    """
    _FAMILY_FILTERS[variant] = checkpoint_filter
    for other_spelling in ('embed_dims', 'dims'):  # the authors' / older zoo names of the widths
        if other_spelling in kwargs:
            raise TypeError(f'{variant}: the widths are spelled embed_dim (one int, or one per stage), '
                            f'not {other_spelling}')
    overlay = dict(kwargs.get('pretrained_cfg_overlay') or {})
    strict = overlay.pop('strict', True)  # not a timm pretrained_cfg field: zoo's, taken out here
    if 'pretrained_cfg_overlay' in kwargs:
        kwargs['pretrained_cfg_overlay'] = overlay
    if pretrained:
        resolved = resolve_pretrained_cfg(variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay'))
        if resolved.file and resolved.state_dict is None and resolved.source not in ('hf-hub', 'local-dir'):
            check_checkpoint_file(resolved.file)

    def filter_fn(state_dict, model):
        state_dict = unwrap(state_dict)
        if checkpoint_filter is not None:
            state_dict = checkpoint_filter(state_dict, model)
        return check_fit(state_dict, model)

    def partial_filter_fn(state_dict, model):
        fits, report = partial_state_dict(state_dict, model, checkpoint_filter)
        _logger.warning(str(report))
        return fits

    model = build_model_with_cfg(
        model_cls, variant, pretrained,
        pretrained_filter_fn=filter_fn if strict else partial_filter_fn,
        pretrained_strict=bool(strict),
        feature_cfg=dict(feature_cls='getter', out_indices=kwargs.pop('out_indices', num_stages)),
        **kwargs,
    )
    # the smallest input the built network takes (timm's (C, H, W) field), on the model and a features wrapper
    backbone = model if hasattr(model, 'min_input_size') else model.model  # features_only: timm's getter wrapper
    for m in (model, backbone):
        m.pretrained_cfg['min_input_size'] = (backbone.in_chans, *backbone.min_input_size)
    return model


def register_variants(create: Callable, variants: Dict[str, Dict[str, Any]], module: str) -> None:
    """Register one timm entrypoint per variant: `name(pretrained=False, **kwargs)` builds
    `create(name, pretrained, **variant_args, **kwargs)` (user kwargs win)."""
    for name, args in variants.items():
        def entry(pretrained: bool = False, _name=name, _args=args, **kwargs):
            return create(_name, pretrained=pretrained, **dict(_args, **kwargs))
        entry.__name__ = entry.__qualname__ = name
        entry.__doc__ = f'{name}: {args}'
        entry.__module__ = module
        register_model(entry)
