"""OpenMMLab registration: import this module (configs: `custom_imports=dict(imports=['zoo.integrations.mm'])`).

Registers
- `ZooBackbone` in mmdet's and mmseg's MODELS (whichever of the two is installed);
- `TransConvFPN` (zoo.integrations.mm_necks: FPN + transposed-conv finer levels, SHViT) in mmdet's MODELS;
- `ZooOptimWrapperConstructor` in mmengine's OPTIM_WRAPPER_CONSTRUCTORS (found from mmdet and mmseg scopes);
- `ZooCheckpointHook` in mmengine's HOOKS and the `zoo_atomic_local` file backend (zoo.integrations.mm_checkpoint:
  crash-safe checkpoints and exact resume).

ZooOptimWrapperConstructor is mmengine's default constructor plus two `paramwise_cfg` keys, so a config needs
no per-model key lists:
- `zoo_no_decay=True` (default): every ZooBackbone's `no_weight_decay()` parameters (all norm layers, the
  model's own no_weight_decay: relative position tables, position embeddings, tokens, agent biases, ...)
  get weight_decay 0, as the papers train them.
- `layer_decay_rate=None`: a float applies layer-wise lr decay inside each ZooBackbone from the model's
  `group_matcher` (the neck and heads keep lr_mult 1).
Explicit `custom_keys` still apply first; the zoo rules are applied on top of the groups they produce.

It also makes mmengine read checkpoints through `zoo.models._load` (`load_from`, `resume`, init_cfg
'Pretrained'): mmengine 0.10.7 calls a bare `torch.load` for local files (safe only by torch's default, which
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD turns off, and then unable to read mmengine's own checkpoints) and
`torch.hub.load_state_dict_from_url`, which unpickles anything by default, for URLs, torchvision:// and
open-mmlab:// names. zoo's reader allows exactly the globals mmengine's own training checkpoints hold and gives
one clear error for a bad file.
"""
from __future__ import annotations

from typing import Dict, List

import mmengine.runner.checkpoint as mm_checkpoint
import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.runner import CheckpointLoader

from ..models._load import read_checkpoint_file
from .backbone import ZooBackbone
from .mm_checkpoint import ZooCheckpointHook

__all__ = ['ZooBackbone', 'ZooOptimWrapperConstructor', 'ZooCheckpointHook', 'REGISTERED_IN']

REGISTERED_IN: List[str] = []

try:
    from mmdet.registry import MODELS as DET_MODELS
    DET_MODELS.register_module('ZooBackbone', module=ZooBackbone, force=True)
    from .mm_necks import TransConvFPN
    DET_MODELS.register_module('TransConvFPN', module=TransConvFPN, force=True)
    REGISTERED_IN.append('mmdet')
except ImportError:
    pass

try:
    from mmseg.registry import MODELS as SEG_MODELS
    SEG_MODELS.register_module('ZooBackbone', module=ZooBackbone, force=True)
    REGISTERED_IN.append('mmseg')
except ImportError:
    pass

if not REGISTERED_IN:
    raise ImportError('zoo.integrations.mm needs mmdet or mmsegmentation (make mm)')


def load_from_local_safely(filename: str, map_location=None):
    """mmengine's local-file scheme through zoo's safe reader."""
    return read_checkpoint_file(filename, map_location=map_location or 'cpu')


def load_from_http_safely(filename: str, map_location=None, model_dir=None, progress=True):
    """mmengine's http(s) scheme through zoo's safe reader (torch hub's cache; `model_dir` is not used)."""
    return read_checkpoint_file(filename, map_location=map_location or 'cpu')


CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_safely, force=True)
CheckpointLoader.register_scheme(prefixes=('http://', 'https://'), loader=load_from_http_safely, force=True)
# mmengine's torchvision:// open-mmlab:// mmcls:// schemes call the module's load_from_http directly
mm_checkpoint.load_from_http = load_from_http_safely


@OPTIM_WRAPPER_CONSTRUCTORS.register_module(force=True)
class ZooOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """mmengine's default constructor + the zoo backbones' own no-decay parameters and layer-wise lr decay."""

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: dict = None):
        paramwise_cfg = dict(paramwise_cfg or {})
        self.zoo_no_decay = paramwise_cfg.pop('zoo_no_decay', True)
        self.layer_decay_rate = paramwise_cfg.pop('layer_decay_rate', None)
        if self.zoo_no_decay or self.layer_decay_rate is not None:
            # a non-empty paramwise_cfg makes mmengine build per-parameter groups (add_params) at all
            paramwise_cfg.setdefault('bypass_duplicate', False)
        super().__init__(optim_wrapper_cfg, paramwise_cfg)

    def zoo_rules(self, model: nn.Module) -> Dict[str, Dict[str, float]]:
        """{full parameter name: {'decay_mult': 0.} and/or {'lr_mult': s}} for every ZooBackbone in `model`."""
        rules: Dict[str, Dict[str, float]] = {}
        for path, module in model.named_modules():
            if not isinstance(module, ZooBackbone):
                continue
            prefix = path + '.' if path else ''
            if self.zoo_no_decay:
                for n in module.no_weight_decay():
                    rules.setdefault(prefix + n, {})['decay_mult'] = 0.
            if self.layer_decay_rate is not None:
                for n, s in module.layer_scales(self.layer_decay_rate).items():
                    rules.setdefault(prefix + n, {})['lr_mult'] = s
        return rules

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '', is_dcn_module=None) -> None:
        super().add_params(params, module, prefix, is_dcn_module)
        if prefix:  # recursive calls: the rules are applied once, at the top
            return
        rules = self.zoo_rules(module)
        names = {id(p): n for n, p in module.named_parameters()}
        for group in params:
            rule = rules.get(names.get(id(group['params'][0]), ''))
            if not rule:
                continue
            if 'decay_mult' in rule and self.base_wd is not None:
                group['weight_decay'] = self.base_wd * rule['decay_mult']
            if 'lr_mult' in rule:
                group['lr'] = group.get('lr', self.base_lr) * rule['lr_mult']
