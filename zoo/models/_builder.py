"""`build_model`: timm's build_model_with_cfg with the zoo's defaults, shared by every family."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, register_model, resolve_pretrained_cfg

from ._convert import check_fit, unwrap
from ._load import check_checkpoint_file

__all__ = ['build_model', 'cfg', 'register_variants']


def cfg(url: str = '', **kwargs: Any) -> Dict[str, Any]:
    """A pretrained_cfg with ImageNet defaults; `url` is the authors' official release."""
    return {
        'url': url, 'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': (7, 7), 'crop_pct': .9,
        'interpolation': 'bicubic', 'fixed_input_size': False, 'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD, 'first_conv': 'stem.proj', 'classifier': 'head.fc', 'license': 'see url',
        **kwargs,
    }


def build_model(model_cls: type, variant: str, pretrained: bool = False, num_stages: int = 4,
                checkpoint_filter: Optional[Callable] = None, **kwargs: Any):
    """Build `model_cls` for `variant`; `features_only` goes through forward_intermediates (timm's getter).

    Checkpoints pass through the family's `checkpoint_filter(state_dict, model)` and then a fit check
    that names missing/unexpected/misshaped keys before torch's strict load. A local file
    (`pretrained_cfg_overlay=dict(file=...)`) is checked first (`_load.check_checkpoint_file`: one clear error for a
    missing, broken or foreign file, or one with globals a weights_only load refuses) before the model is built;
    timm then reads it with weights_only=True (.pth) or safetensors.
    """
    if pretrained:
        resolved = resolve_pretrained_cfg(variant, kwargs.get('pretrained_cfg'), kwargs.get('pretrained_cfg_overlay'))
        if resolved.file and resolved.state_dict is None and resolved.source not in ('hf-hub', 'local-dir'):
            check_checkpoint_file(resolved.file)

    def filter_fn(state_dict, model):
        state_dict = unwrap(state_dict)
        if checkpoint_filter is not None:
            state_dict = checkpoint_filter(state_dict, model)
        return check_fit(state_dict, model)

    return build_model_with_cfg(
        model_cls, variant, pretrained,
        pretrained_filter_fn=filter_fn,
        feature_cfg=dict(feature_cls='getter', out_indices=kwargs.pop('out_indices', num_stages)),
        **kwargs,
    )


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
