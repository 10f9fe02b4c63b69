"""`build_model`: timm's build_model_with_cfg with the zoo's defaults, shared by every family."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, register_model

from ._convert import check_fit, unwrap

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
    that names missing/unexpected/misshaped keys before torch's strict load.
    """
    def filter_fn(state_dict, model):
        state_dict = unwrap(state_dict)
        if checkpoint_filter is not None:
            state_dict = checkpoint_filter(state_dict, model)
        return check_fit(state_dict, model)

    model = build_model_with_cfg(
        model_cls, variant, pretrained,
        pretrained_filter_fn=filter_fn,
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
