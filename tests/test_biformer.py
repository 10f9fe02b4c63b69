"""BiFormer and bi-level routing attention: parity with the authors' code (stored fixture) and backend agreement.

Fixture `tests/fixtures/biformer_tiny_official.pt` was produced once, outside this repository, like this:

1. rayleizhu/BiFormer at commit 1697bbb (`git archive HEAD models ops` of the authors' repo) was unpacked in a
   scratch directory; einops 0.8.2 was pip-installed into a scratch --target directory; the only stub was
   `fairscale.nn.checkpoint.checkpoint_wrapper = lambda m: m` (used only for activation checkpointing).
2. The authors' `models.biformer.BiFormer` (with their `ops.bra_legacy.BiLevelRoutingAttention` and
   `models._common.AttentionLePE`) was built with the BiFormer-T recipe scaled down:
   depth=[1, 1, 2, 1], embed_dim=[16, 32, 48, 64], qk_dims=embed_dim, head_dim=16, mlp_ratios=[3]*4, n_win=7,
   topks=[1, 4, 16, -2], kv_downsample_mode='identity', kv_per_wins=[-1]*4, side_dwconv=5,
   before_attn_dwconv=3, layer_scale_init_value=-1, pre_norm=True, pe=None, param/diff/soft_routing=False,
   num_classes=10, in eval mode.
3. Every floating-point tensor of its state_dict was overwritten from torch.Generator().manual_seed(0), in
   state_dict order: BN running_var ~ U(0.5, 1.5), running_mean ~ 0.1 N(0, 1), 1-D tensors
   (biases / norm affine) ~ (1 if the name ends in 'weight' else 0) + 0.1 N(0, 1), others ~ N(0, 1/fan_in).
4. Inputs: torch.randn(1, 3, 112, 112) and torch.randn(1, 3, 45, 61), each from manual_seed(1). The 112x112
   logits come from the model with auto_pad=False (the classification setting, every map a multiple of 7);
   the 45x61 logits from the same weights with auto_pad=True (the authors' detection/segmentation setting:
   zero padding to the region grid, unmasked).
5. Saved: {'config', 'checkpoint': {'model': their state_dict}, 'input_<HxW>', 'output_<HxW>'} with torch.save.
"""
from pathlib import Path

import pytest
import timm
import torch

import zoo  # noqa: F401
from zoo.layers.attention import BiLevelRoutingAttention, force_backend, routing_attention
from zoo.models._convert import CheckpointMismatchError

FIXTURE = Path(__file__).parent / 'fixtures' / 'biformer_tiny_official.pt'
TINY = dict(embed_dim=(16, 32, 48, 64), depths=(1, 1, 2, 1), head_dim=16, num_classes=10)


@pytest.fixture(scope='module')
def official():
    return torch.load(FIXTURE, weights_only=True)


def _load(tmp_path, checkpoint):
    path = tmp_path / 'biformer_official.pth'
    torch.save(checkpoint, path)
    return timm.create_model('zoo_biformer_tiny', pretrained=True,
                             pretrained_cfg_overlay=dict(file=str(path), num_classes=10), **TINY).eval()


@torch.no_grad()
@pytest.mark.parametrize('size', ['112x112', '45x61'])
def test_matches_official_code(official, tmp_path, size):
    model = _load(tmp_path, official['checkpoint'])
    out = model(official[f'input_{size}'])
    assert (out - official[f'output_{size}']).abs().max() <= 1e-4


def test_official_checkpoint_of_other_variant_is_a_clear_error(official, tmp_path):
    sd = dict(official['checkpoint']['model'])
    sd.pop('stages.2.1.attn.lepe.weight')
    with pytest.raises(CheckpointMismatchError, match='missing'):
        _load(tmp_path, {'model': sd})


def _grads(fn, *inputs):
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(*inputs)
    out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
    return [out.detach()] + [t.grad for t in inputs]


@pytest.mark.parametrize('routing,dense', [('gather', 'sdpa'), ('gather', 'reference'), ('reference', 'sdpa')])
def test_routing_backends_match_reference(routing, dense):
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 2, 14, 21, 24, generator=g).unbind(0)  # 7x7 regions of 2x3 tokens
    v = torch.randn(2, 14, 21, 16, generator=g)

    def run(q, k, v):
        return routing_attention(q, k, v, n_win=7, topk=5, num_heads=4, scale=24 ** -0.5)

    with force_backend('reference'):
        ref = _grads(run, q, k, v)
    with force_backend(routing, op='routing'), force_backend(dense, op='dense'):
        got = _grads(run, q, k, v)
    for r, o in zip(ref, got):
        torch.testing.assert_close(o, r, atol=1e-5, rtol=1e-5)


def test_routing_reference_is_attention_over_routed_regions():
    """One query token by hand: softmax over exactly the tokens of its top-k regions."""
    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(3, 1, 4, 4, 8, generator=g).unbind(0)  # 2x2 regions of 2x2 tokens, 1 head
    out = routing_attention(q, k, v, n_win=2, topk=2, num_heads=1, scale=1.0)
    region = lambda t, r: t[0, 2 * (r // 2):2 * (r // 2) + 2, 2 * (r % 2):2 * (r % 2) + 2].reshape(4, -1)
    affinity = torch.stack([region(q, r).mean(0) for r in range(4)]) @ torch.stack([region(k, r).mean(0) for r in range(4)]).T
    routes = affinity[3].topk(2).indices  # query token (3, 3) lies in region 3
    keys = torch.cat([region(k, r) for r in routes.tolist()])
    vals = torch.cat([region(v, r) for r in routes.tolist()])
    expect = (q[0, 3, 3] @ keys.T).softmax(-1) @ vals
    torch.testing.assert_close(out[0, 3, 3], expect, atol=1e-5, rtol=1e-5)


def test_module_backends_agree_with_padding():
    torch.manual_seed(0)
    m = BiLevelRoutingAttention(32, num_heads=2, n_win=7, topk=4)
    x = torch.randn(2, 10, 17, 32)  # padded to 14 x 21 inside
    ref = _grads(m, x)
    with force_backend('reference'):
        got = _grads(m, x)
    for r, o in zip(ref, got):
        torch.testing.assert_close(o, r, atol=1e-5, rtol=1e-5)
    assert ref[0].shape == x.shape
