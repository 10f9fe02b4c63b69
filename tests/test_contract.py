"""The backbone contract of DESIGN.md, checked for every registered model without special cases.

Sizes are small and deliberately not multiples of any window/stride, so padding paths are exercised;
each model is built once per module (pytest groups the tests by the module-scoped model fixture).
timm 1.0's conventions (attributes, method signatures, pretrained_cfg fields, head / pruning semantics) are read off
timm's own Swin, MaxViT and DeiT, and the checks of them run on those three models too (test_timm_references_*),
so they hold timm's meaning, not only the zoo's.
"""
import copy
import inspect
import math
import re

import pytest
import timm
import timm.optim
import torch
import torch.nn as nn
from timm.layers import get_channel_dim
from timm.models._features import FeatureGetterNet

import zoo
from zoo.profile import meta_parameters

MODELS = zoo.list_models()
# timm's own models (pretrained=False) and the layout of their forward_features (timm's ViT does not say it)
TIMM_REFERENCES = {'swin_tiny_patch4_window7_224': 'NHWC', 'maxvit_tiny_tf_224': 'NCHW', 'deit_tiny_patch16_224': 'NLC'}
# attributes all three references have that mean different things in each (Swin: first stage width, MaxViT: last,
# ViT: the width): the zoo defines it for its isotropic models only, with ViT's meaning
PER_FAMILY_MEANING = {'embed_dim'}
# timm conventions two of the three references have (Swin keeps grad_checkpointing on its stages, MaxViT and ViT
# do not say output_fmt, MaxViT cannot change its input size on the fly); every zoo model has them
CONVENTIONS = {'grad_checkpointing', 'output_fmt', 'dynamic_img_size'}
# timm's ViT token attributes, which the zoo's isotropic models (DeiT host) share
TOKEN_ATTRIBUTES = {'embed_dim', 'num_prefix_tokens', 'has_class_token', 'no_embed_class'}
# Variants too big to build whole on a 2-core, 24 GiB CI machine (a copy for features_only, another for pruning,
# gradients: several times the parameters) run the contract with fewer blocks per stage; every other argument
# (widths, heads, windows, sizes, cfg) is the variant's own, so each code path it has is still checked.
ONE_BLOCK = dict(depths=(1, 1, 1, 1))
CI_SIZED = {
    **{f'zoo_maxvit_{s}{r}': ONE_BLOCK for s in ('large', 'xlarge') for r in ('', '_384', '_512')},
    **{f'zoo_focalnet_{s}_fl{fl}': ONE_BLOCK for s in ('large', 'xlarge', 'huge') for fl in (3, 4)},
    **{f'zoo_davit_{s}': ONE_BLOCK for s in ('large', 'huge', 'giant')},
    'zoo_dinat_s_large': dict(dilations=((1, 8), (1, 4), (1, 2), (1, 1))),  # both block kinds in every stage
    'zoo_dinat_s_large_384': dict(dilations=((1, 13), (1, 6), (1, 3), (1, 1))),
    'zoo_convit_base_plus': dict(depth=3, local_up_to_layer=2),  # GPSA blocks, then the class token and MHSA
}
SOURCE_KEYS = {'url', 'hf_hub_id', 'file'}  # where the weights come from: a model without released weights has none
OPTIONAL_KEYS = {'license'}  # timm leaves it out where a release declares none


@pytest.fixture(scope='module', params=MODELS)
def model(request):
    torch.manual_seed(0)
    m = create(request.param).eval()
    m.zoo_name = request.param
    yield m


def create(name, **kwargs):
    return timm.create_model(name, **CI_SIZED.get(name, {}), **kwargs)


@pytest.fixture(scope='module')
def references():
    """timm's own Swin / MaxViT / DeiT, and a features_only Swin through timm's getter wrapper."""
    torch.manual_seed(0)
    refs = {name: timm.create_model(name).eval() for name in TIMM_REFERENCES}
    refs['features'] = timm.create_model('swin_tiny_patch4_window7_224', features_only=True, feature_cls='getter',
                                         out_indices=(1, -1))
    return refs


def public_attributes(m):
    """Public attribute -> value of a model, beyond what every nn.Module has (submodules and tensors excluded)."""
    plain = set(dir(nn.Module()))
    out = {}
    for name in dir(m):
        if name.startswith('_') or name in plain:
            continue
        value = getattr(m, name)
        if not isinstance(value, (nn.Module, torch.Tensor)):
            out[name] = value
    return out


def shared_conventions(references):
    """The public attributes / methods of timm 1.0's models that the zoo's must have: {name: [reference values]}."""
    attrs = [public_attributes(references[name]) for name in TIMM_REFERENCES]
    names = set.intersection(*map(set, attrs)) - PER_FAMILY_MEANING | CONVENTIONS
    return {n: [a[n] for a in attrs if n in a] for n in names}


def feature_fmt(m):
    return getattr(m, 'output_fmt', None) or TIMM_REFERENCES[m.pretrained_cfg['architecture']]


def check_head_widths(m, x):
    """forward_features is `num_features` wide, forward_head(pre_logits=True) `head_hidden_size` wide."""
    feats = m.forward_features(x)
    assert feats.shape[get_channel_dim(feature_fmt(m))] == m.num_features
    pre = m.forward_head(feats, pre_logits=True)
    assert pre.shape == (x.shape[0], m.head_hidden_size)
    return feats, pre


def check_reset_classifier(m, x):
    """timm's reset_classifier semantics: a new classifier, none (forward = pre-logits), another pooling, none
    (forward = the unpooled head input); num_features and head_hidden_size follow the head."""
    feats, pre = check_head_widths(m, x)  # forward = forward_head(forward_features) is test_forward_shapes'
    num_features, head_hidden_size, pool = m.num_features, m.head_hidden_size, m.global_pool
    assert isinstance(pool, str) and pool
    m.reset_classifier(7)
    assert m.forward_head(feats).shape == (x.shape[0], 7) and m.num_classes == m.get_classifier().out_features == 7
    assert (m.num_features, m.head_hidden_size, m.global_pool) == (num_features, head_hidden_size, pool)
    m.reset_classifier(0)
    assert m.num_classes == 0 and isinstance(m.get_classifier(), nn.Identity)
    torch.testing.assert_close(m.forward_head(feats), pre)
    m.reset_classifier(0, 'max')
    assert m.global_pool == 'max' and m.forward_head(feats).shape == (x.shape[0], m.head_hidden_size)
    m.reset_classifier(0, '')
    assert m.global_pool == '' and (m.num_features, m.head_hidden_size) == (num_features, head_hidden_size)
    unpooled = m.forward_head(feats)
    fmt = feature_fmt(m)
    assert unpooled.ndim == feats.ndim and unpooled.shape[get_channel_dim(fmt)] == m.head_hidden_size
    assert unpooled.shape[:get_channel_dim(fmt)] == feats.shape[:get_channel_dim(fmt)]


def check_pruned_features(m, x, indices=(0, -2)):
    """timm's FeatureGetterNet(norm=True) on a copy, ending before the last level: the features equal the unpruned
    model's forward_intermediates; num_features / head_hidden_size become the last kept level's width, no head
    parameters stay and forward_head passes that level's output through."""
    features = FeatureGetterNet(copy.deepcopy(m), out_indices=indices, norm=True)
    ref = m.forward_intermediates(x, indices=list(indices), norm=True, stop_early=True, intermediates_only=True)
    outs = features(x)
    assert len(outs) == len(ref)
    for o, r in zip(outs, ref):
        torch.testing.assert_close(o, r)
    pruned = features.model
    last_kept = m.feature_info[indices[-1]]['num_chs']
    assert pruned.num_features == pruned.head_hidden_size == last_kept
    assert pruned.num_classes == 0 and pruned.global_pool == '' and isinstance(pruned.get_classifier(), nn.Identity)
    assert not [n for n, _ in pruned.head.named_parameters()], 'the pruned model keeps head parameters'
    out = pruned.forward_head(pruned.forward_features(x), pre_logits=True)
    assert out.shape[get_channel_dim(feature_fmt(pruned))] == pruned.head_hidden_size
    return features


def check_set_input_size(m, x):
    """set_input_size to x's size: recorded where timm reports the input config, and the model runs at it."""
    m.set_input_size(img_size=tuple(x.shape[-2:]))
    assert timm.models.get_model_input_config(m)['input_size'] == tuple(x.shape[1:])
    assert m.forward_features(x).shape[0] == x.shape[0]


def check_pretrained_cfg(m, references):
    """The pretrained_cfg fields timm's models carry, with their types, and values that name real modules / sizes."""
    cfg, ref_cfgs = m.pretrained_cfg, [r.pretrained_cfg for name, r in references.items() if name in TIMM_REFERENCES]
    assert m.default_cfg is cfg
    for key in set.intersection(*(set(c) for c in ref_cfgs)) - SOURCE_KEYS:
        if key in OPTIONAL_KEYS and key not in cfg:
            continue
        assert key in cfg, f'pretrained_cfg lacks {key!r}'
        ref_types = {type(c[key]) for c in ref_cfgs if c[key] is not None}
        assert cfg[key] is None or type(cfg[key]) in ref_types, (key, cfg[key], ref_types)
    assert cfg['architecture'] == m.zoo_name
    assert re.fullmatch(r'[a-z0-9_]+', cfg['tag']), cfg['tag']
    assert f"{cfg['architecture']}.{cfg['tag']}" in timm.models.get_arch_pretrained_cfgs(cfg['architecture'])
    assert cfg['crop_mode'] in ('center', 'squash', 'border') and 0 < cfg['crop_pct'] <= 1
    assert re.fullmatch(r'[a-z0-9.-]+', cfg['license']), cfg['license']  # an id (mit, apache-2.0), not 'see url'
    assert len(cfg['mean']) == len(cfg['std']) == m.in_chans == cfg['input_size'][0]
    first_conv = m.get_submodule(cfg['first_conv'])  # what timm adapts for in_chans != 3
    assert isinstance(first_conv, nn.Conv2d) and first_conv.in_channels == m.in_chans, cfg['first_conv']
    classifier = m.get_submodule(cfg['classifier'])  # what timm drops for num_classes != the checkpoint's
    assert isinstance(classifier, nn.Linear) and classifier.out_features == cfg['num_classes'] == m.num_classes
    H, W = cfg['input_size'][1:]
    if feature_fmt(m) == 'NLC':  # tokens: no final map (timm's ViT: pool_size None)
        assert cfg['pool_size'] is None
    else:  # the final map at input_size (its stride is checked against real maps by test_forward_intermediates)
        reduction = m.feature_info[-1]['reduction']
        assert tuple(cfg['pool_size']) == (math.ceil(H / reduction), math.ceil(W / reduction)), cfg['pool_size']


def odd_size(m):
    """A small (H, W), non-square and not a multiple of the network's stride or windows."""
    min_h, min_w = m.min_input_size
    return 2 * min_h + min_h // 4 + 1, 3 * min_w - min_w // 4 + 3


def images(m, batch=2, size=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, m.in_chans, *(size or odd_size(m)), generator=g)


@torch.no_grad()
def test_forward_shapes(model):
    x = images(model)
    logits = model(x)
    assert logits.shape == (2, model.num_classes) and torch.isfinite(logits).all()
    feats, _ = check_head_widths(model, x)
    torch.testing.assert_close(model.forward_head(feats), logits)


def test_timm_attributes_and_methods(model, references):
    """Every public attribute / method timm 1.0's Swin, MaxViT and DeiT share, with the same types, and methods
    taking the parameters (and defaults) all three take."""
    own = public_attributes(model)
    wanted = shared_conventions(references)
    if model.feature_levels == 'blocks':  # isotropic: timm ViT's token attributes too
        deit = public_attributes(references['deit_tiny_patch16_224'])
        wanted.update({n: [deit[n]] for n in TOKEN_ATTRIBUTES})
    missing = sorted(set(wanted) - set(own))
    assert not missing, f'{model.zoo_name} lacks timm attributes {missing}'
    for name, ref_values in wanted.items():
        value = own[name]
        if not callable(ref_values[0]):
            assert type(value) in {type(v) for v in ref_values}, (name, value, ref_values)
            continue
        assert callable(value), name
        ref_params = [inspect.signature(v).parameters for v in ref_values]
        params = inspect.signature(value).parameters
        for p in set.intersection(*(set(r) for r in ref_params)) - {'device', 'dtype'}:
            assert p in params, f'{name} lacks parameter {p!r}'
            defaults = {r[p].default for r in ref_params}
            assert len(defaults) > 1 or params[p].default in defaults, (name, p, params[p].default, defaults)
    assert model.feature_info and all(model.get_submodule(info['module']) is not None for info in model.feature_info)


def test_pretrained_cfg(model, references):
    check_pretrained_cfg(model, references)
    cfg = model.pretrained_cfg
    min_h, min_w = model.min_input_size  # the zoo's own field: the smallest input (timm's (C, H, W) form)
    assert cfg['min_input_size'] == (model.in_chans, min_h, min_w)
    assert cfg['input_size'][1] >= min_h and cfg['input_size'][2] >= min_w
    assert not cfg['fixed_input_size'] and not timm.models.get_model_input_config(model)['fixed_input_size']


@torch.no_grad()
def test_forward_intermediates(model):
    x = images(model)
    H, W = x.shape[-2:]
    final, inter = model.forward_intermediates(x)
    assert len(inter) == len(model.feature_info)
    for t, info in zip(inter, model.feature_info):
        r = info['reduction']
        assert t.shape == (2, info['num_chs'], math.ceil(H / r), math.ceil(W / r)), (t.shape, info)
    feats = model.forward_features(x)  # one forward, compared twice
    torch.testing.assert_close(final, feats)
    last = model.forward_intermediates(x, indices=[-1], norm=True, output_fmt=model.output_fmt,
                                       intermediates_only=True)[0]
    torch.testing.assert_close(last, feats)
    with pytest.raises(ValueError, match='out of range'):
        model.forward_intermediates(x, indices=[len(model.feature_info)])


@torch.no_grad()
def test_features_only_matches_intermediates(model, references):
    indices = (1, -1)
    with meta_parameters():  # no init: every parameter is taken from `model` (a meta one left would not run)
        feat = create(model.zoo_name, features_only=True, out_indices=indices).eval()
    own = {k: v for k, v in model.state_dict().items() if not k.startswith('head.')}
    feat.model.load_state_dict(own, strict=False, assign=True)
    assert not [n for n, p in feat.named_parameters() if p.is_meta]
    x = images(model)
    outs = feat(x)
    ref = model.forward_intermediates(x, indices=indices, intermediates_only=True)
    assert len(outs) == len(ref) == 2
    for o, r, ch, red in zip(outs, ref, feat.feature_info.channels(), feat.feature_info.reduction()):
        torch.testing.assert_close(o, r)
        assert o.shape[1] == ch and o.shape[2] == math.ceil(x.shape[2] / red)
    # no parameters left that the features do not use (DDP without find_unused_parameters fails on them)
    assert not [n for n, _ in feat.model.head.named_parameters()], 'the pruned model keeps head parameters'
    assert feat.model.num_features == feat.model.head_hidden_size == feat.feature_info.channels()[-1]
    assert feat.pretrained_cfg['min_input_size'] == (model.in_chans, *model.min_input_size)
    wrapper = references['features']  # timm's own features_only model: the same wrapper attributes
    assert set(vars(wrapper)) <= set(vars(feat)) and type(feat) is type(wrapper)


@torch.no_grad()
def test_pruned_features_and_set_input_size(model):
    """Features ending before the last level (the final norm and head go, widths follow), then a resize."""
    x = images(model)
    features = check_pruned_features(model, x)
    check_set_input_size(features.model, x)


@torch.no_grad()
def test_any_size_and_batch_invariance(model):
    x = images(model, batch=3)
    y = model(x)
    torch.testing.assert_close(model(x[1:2]), y[1:2], atol=1e-4, rtol=1e-4)
    big = model(images(model, batch=1, size=(200, 264)))  # the detection-style non-square size of the issue
    assert big.shape == (1, model.num_classes) and torch.isfinite(big).all()


def test_inference_fast_paths_match_the_plain_forward(model, monkeypatch):
    """Eval without grad folds BatchNorms into convs and runs the stem and stages on batch slices; with grad
    enabled the model runs its plain ops. Both must give the same logits (slices of one sample here)."""
    from zoo.models import _base
    x = images(model, batch=3)
    with torch.enable_grad():
        plain = model(x).detach()
    monkeypatch.setattr(_base, 'INFERENCE_SLICE_BYTES', 1)
    with torch.no_grad():
        fast = model(x)
    torch.testing.assert_close(fast, plain, atol=1e-4, rtol=1e-4)


def test_backward_finite_grads(model):
    model.zero_grad(set_to_none=True)
    x = images(model, batch=2).requires_grad_()
    model(x).logsumexp(-1).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f'no gradient reaches {missing[:5]}'
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert torch.isfinite(x.grad).all()
    model.zero_grad(set_to_none=True)


@torch.no_grad()
def test_bf16_autocast(model):
    x = images(model)
    ref = model(x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = model(x).float()
    assert torch.isfinite(y).all()
    assert torch.nn.functional.cosine_similarity(y.flatten(), ref.flatten(), dim=0) > 0.95


def test_bad_input_is_a_clear_error(model):
    with pytest.raises(ValueError, match='expects'):
        model(torch.randn(1, model.in_chans + 1, 64, 64))
    min_h, min_w = model.min_input_size
    with pytest.raises(ValueError, match='at least'):
        model(torch.randn(1, model.in_chans, min_h - 1, min_w))


def test_training_helpers(model):
    names = {n for n, _ in model.named_parameters()}
    assert model.no_weight_decay() <= names
    opt = timm.optim.create_optimizer_v2(model, 'adamw', lr=1e-3, weight_decay=0.05, layer_decay=0.8)
    grouped = sum(len(g['params']) for g in opt.param_groups)
    assert grouped == len(names)
    no_decay = {id(p) for n, p in model.named_parameters() if n in model.no_weight_decay() or p.ndim <= 1}
    for g in opt.param_groups:
        if any(id(p) in no_decay for p in g['params']):
            assert g['weight_decay'] == 0.
    fine, coarse = (timm.models.group_parameters(model, model.group_matcher(coarse=c)) for c in (False, True))
    assert sum(map(len, fine.values())) == sum(map(len, coarse.values())) == len(names)
    assert 1 < len(coarse) <= len(fine)
    x = images(model, batch=1)
    with torch.no_grad():
        ref = model(x)
        model.set_grad_checkpointing(True)
        try:
            assert model.grad_checkpointing is True
            torch.testing.assert_close(model(x), ref)
        finally:
            model.set_grad_checkpointing(False)
    assert model.grad_checkpointing is False


@torch.no_grad()
def test_reset_classifier(model):
    saved, num_classes = copy.deepcopy(model.head), model.num_classes
    try:
        check_reset_classifier(model, images(model, batch=1))
    finally:
        model.head, model.num_classes = saved, num_classes


@pytest.mark.parametrize('name', TIMM_REFERENCES)
@torch.no_grad()
def test_timm_references_keep_the_checked_conventions(name, references):
    """The checks above, run on timm's own models (at their fixed 224 input): they encode timm's semantics."""
    ref = references[name]
    x = torch.randn(1, 3, 224, 224)
    check_head_widths(ref, x)
    check_reset_classifier(copy.deepcopy(ref), x)
    check_set_input_size(check_pruned_features(ref, x).model, torch.randn(1, 3, 256, 256))
    ref.zoo_name = name
    try:
        check_pretrained_cfg(ref, references)
    finally:
        del ref.zoo_name


@pytest.mark.parametrize('name', MODELS)
def test_timm_create_model_arguments(name):
    """img_size, drop_path_rate (where the family has stochastic depth) and num_classes, as for any timm model."""
    kwargs = dict(img_size=256, num_classes=10)
    if 'shvit' not in name:  # SHViT has no stochastic depth (neither the paper nor timm's)
        kwargs['drop_path_rate'] = 0.1
    with meta_parameters():  # the arguments are what is checked here, not the weight init (the fixture's build runs it)
        model = create(name, **kwargs)
    assert model.num_classes == 10
