"""L2ViT: the linear global attention against its plain definition, bf16 stability, local window attention against
dense attention, and the model against the authors' code through a stored fixture.

Fixture tests/fixtures/l2vit_tiny_cfg.pth was produced once, outside this repo, by a throwaway script:
  1. `git show` ChuanyangZheng/L2ViT@fad0341cf0c31464482d0550fb3127001b4b921b classification/models/l2vit.py into a
     temporary folder and import it with timm's register_model replaced by a no-op (timm 1.0.31, torch 2.14.1);
  2. torch.manual_seed(0); L2ViT(depths=[2, 2, 2, 2], mlp_ratio=[4., 4., 4., 4.], dims=[16, 32, 32, 48],
     num_heads=[1, 2, 2, 3], block_type='mix_local_enhanced_vit', conv_stem=True, num_classes=10, window_size=7);
  3. with g = torch.Generator().manual_seed(60), in named_parameters() order every parameter p += N(0, s^2)
     (s = 0.5 for parameters named '*_bias' outside norms - none here - and 0.1 otherwise); BatchNorm running
     means ~ N(0, 0.1^2) and running variances ~ U(0.5, 1.5) (torch's global RNG); then model.eval();
  4. x = torch.randint(-96, 97, (1, 3, 224, 224), generator=torch.Generator().manual_seed(61), dtype=torch.int8);
     the image is x / 32 (exact in fp32); 224 keeps every stage a multiple of the 7x7 window (see
     LocalWindowAttention on padding);
  5. torch.save({'model': model.state_dict(), 'input': x, 'output': model(x / 32)}) under torch.no_grad().
"""
from pathlib import Path

import pytest
import timm
import torch

import zoo  # noqa: F401
from zoo.layers.attention import LinearGlobalAttention, LocalWindowAttention, relu_linear_attention

FIXTURES = Path(__file__).parent / 'fixtures'


@torch.no_grad()
def test_l2vit_matches_authors_fixture():
    fx = torch.load(FIXTURES / 'l2vit_tiny_cfg.pth', weights_only=True)
    path = str(FIXTURES / 'l2vit_tiny_cfg.pth')
    model = timm.create_model('zoo_l2vit_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=path, num_classes=10),
                              num_classes=10, embed_dim=(16, 32, 32, 48), num_heads=(1, 2, 2, 3), depths=(2, 2, 2, 2)).eval()
    diff = (model(fx['input'].float() / 32) - fx['output']).abs().max().item()
    assert diff <= 1e-4, diff


def test_linear_attention_matches_plain_definition():
    """out_i = t * sum_j (q_i . k_j) v_j / max(sum_j q_i . k_j, 100), with ReLU on q and k."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 50, 8, generator=g) * 4 for _ in range(3))
    t = torch.rand(3, 1, 1, generator=g)
    a = q.relu() @ k.relu().transpose(-2, -1)
    ref = t * (a @ v) / a.sum(dim=-1, keepdim=True).clamp(min=100.)
    torch.testing.assert_close(relu_linear_attention(q, k, v, t), ref, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_mixers_bf16_autocast_stable():
    torch.manual_seed(0)
    x = torch.randn(2, 14, 20, 64)
    for m in (LinearGlobalAttention(64, 4).eval(), LocalWindowAttention(64, 4, (7, 7)).eval()):
        ref = m(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            y = m(x).float()
        assert torch.isfinite(y).all()
        rel = ((y - ref).norm() / ref.norm()).item()
        assert rel < 1e-2, (type(m).__name__, rel)


@pytest.mark.slow  # seconds of CPU time, minutes of wall time on a shared 2-core machine
@torch.no_grad()
def test_detection_size_input():
    """800x1216, batch 1, on CPU."""
    model = timm.create_model('zoo_l2vit_tiny', features_only=True).eval()
    feats = model(torch.randn(1, 3, 800, 1216))
    assert [f.shape[-2:] for f in feats] == [(200, 304), (100, 152), (50, 76), (25, 38)]
    assert all(torch.isfinite(f).all() for f in feats)
