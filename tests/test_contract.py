"""The backbone contract of DESIGN.md, checked for every registered model without special cases.

Sizes are small and deliberately not multiples of any window/stride, so padding paths are exercised;
each model is built once per module (pytest groups the tests by the module-scoped model fixture).
"""
import math

import pytest
import timm
import timm.optim
import torch

import zoo

MODELS = zoo.list_models()


@pytest.fixture(scope='module', params=MODELS)
def model(request):
    torch.manual_seed(0)
    m = timm.create_model(request.param).eval()
    m.zoo_name = request.param
    yield m


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
    feats = model.forward_features(x)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    torch.testing.assert_close(model.forward_head(feats), logits)


@torch.no_grad()
def test_forward_intermediates(model):
    x = images(model)
    H, W = x.shape[-2:]
    final, inter = model.forward_intermediates(x)
    assert len(inter) == len(model.feature_info)
    for t, info in zip(inter, model.feature_info):
        r = info['reduction']
        assert t.shape == (2, info['num_chs'], math.ceil(H / r), math.ceil(W / r)), (t.shape, info)
    torch.testing.assert_close(final, model.forward_features(x))
    last = model.forward_intermediates(x, indices=[-1], norm=True, output_fmt=model.output_fmt,
                                       intermediates_only=True)[0]
    torch.testing.assert_close(last, model.forward_features(x))
    with pytest.raises(ValueError, match='out of range'):
        model.forward_intermediates(x, indices=[len(model.feature_info)])


@torch.no_grad()
def test_features_only_matches_intermediates(model):
    indices = (1, -1)
    feat = timm.create_model(model.zoo_name, features_only=True, out_indices=indices).eval()
    own = {k: v for k, v in model.state_dict().items() if not k.startswith('head.')}
    feat.model.load_state_dict(own, strict=False)
    x = images(model)
    outs = feat(x)
    ref = model.forward_intermediates(x, indices=indices, intermediates_only=True)
    assert len(outs) == len(ref) == 2
    for o, r, ch, red in zip(outs, ref, feat.feature_info.channels(), feat.feature_info.reduction()):
        torch.testing.assert_close(o, r)
        assert o.shape[1] == ch and o.shape[2] == math.ceil(x.shape[2] / red)
    # no parameters left that the features do not use (DDP without find_unused_parameters fails on them)
    assert not [n for n, _ in feat.model.head.named_parameters()], 'the pruned model keeps head parameters'


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
    x = images(model, batch=1)
    with torch.no_grad():
        ref = model(x)
        model.set_grad_checkpointing(True)
        try:
            torch.testing.assert_close(model(x), ref)
        finally:
            model.set_grad_checkpointing(False)


@torch.no_grad()
def test_reset_classifier(model):
    x = images(model, batch=1)
    feats = model.forward_head(model.forward_features(x), pre_logits=True)
    head = model.head
    import copy
    saved = copy.deepcopy(head)
    try:
        model.reset_classifier(7)
        assert model(x).shape == (1, 7)
        model.reset_classifier(0)
        torch.testing.assert_close(model(x), feats)
    finally:
        model.head = saved
        model.num_classes = saved.fc.out_features if hasattr(saved.fc, 'out_features') else model.num_classes


@pytest.mark.parametrize('name', MODELS)
def test_timm_create_model_arguments(name):
    """img_size, drop_path_rate (where the family has stochastic depth) and num_classes, as for any timm model."""
    kwargs = dict(img_size=256, num_classes=10)
    if 'shvit' not in name:  # SHViT has no stochastic depth (neither the paper nor timm's)
        kwargs['drop_path_rate'] = 0.1
    model = timm.create_model(name, **kwargs)
    assert model.num_classes == 10
