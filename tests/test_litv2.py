"""LITv2 and HiLo attention: parity with the authors' code (stored fixture), backend agreement, DTM.

Fixture `tests/fixtures/litv2_tiny_official.pt` was produced once, outside this repository, like this:

1. ziplab/LITv2 at commit 7501c86 (`git archive HEAD classification/models
   detection/mmdet/models/backbones/litv2.py`) was unpacked in a scratch directory and run from its
   `classification/` folder. Stubs (modules put in sys.modules): `mm_modules.DCN.modules.deform_conv2d`
   with a `DeformConv2dPack(in, out, kernel_size, stride, padding)` holding the DCN extension's parameters
   (`weight`, `bias`, `conv_offset` conv) and computing `torchvision.ops.deform_conv2d(x, conv_offset(x),
   weight, bias, stride, padding)`: the authors' DCN is a CUDA-only extension that needs apex; it is DCNv1
   with the same offset layout ((dy, dx) per kernel point) and zero outside the map. For the detection
   backbone file: `mmdet.registry.MODELS` (a no-op `register_module`) and empty `mmengine.runner.checkpoint`
   / `mmengine.logging` names.
2. The authors' classification `models.litv2.LITv2(img_size=128, patch_size=4, embed_dim=8,
   depths=[1, 1, 2, 1], num_heads=[1, 2, 4, 8], mlp_ratio=4, qkv_bias=True, qk_scale=None,
   has_msa=[0, 0, 1, 1], alpha=0.9, local_ws=[0, 0, 2, 1], num_classes=10)` in eval mode (the LITv2-S recipe
   scaled down: MLP-only stages 1-2, HiLo ws 2 with 3 Lo-Fi + 1 Hi-Fi heads in stage 3, ws 1 in stage 4).
3. Every floating-point tensor of its state_dict was overwritten from torch.Generator().manual_seed(0), in
   state_dict order: BN running_var ~ U(0.5, 1.5), running_mean ~ 0.1 N(0, 1), 1-D tensors
   (biases / norm affine) ~ (1 if the name ends in 'weight' else 0) + 0.1 N(0, 1), others ~ N(0, 1/fan_in);
   then each DTM's `dconv.conv_offset.weight` was doubled (offsets of about a pixel).
4. Logits for torch.randn(1, 3, 128, 128) (manual_seed(1)) from the classification model.
5. The authors' detection backbone (`detection/mmdet/models/backbones/litv2.py`, which pads HiLo inputs to
   the window, no size asserts) built with the same config (out_indices=(0,), drop_path_rate=0), loaded with
   the same state_dict (strict=False: only norm/head unexpected), eval; for torch.randn(1, 3, 80, 112)
   (manual_seed(2)) the outputs of `layers[0..2]` (before token merging; stage 3 is a 5x7 map, so HiLo pads)
   were captured with forward hooks and saved as NCHW maps.
6. Saved: {'config', 'checkpoint': {'model': their state_dict}, 'input_128x128', 'output_128x128',
   'input_80x112', 'stage{0,1,2}_80x112'} with torch.save.
"""
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F

import zoo  # noqa: F401
from zoo.layers.attention import HiLo, force_backend
from zoo.layers.dtm import DeformableTokenMerging

FIXTURE = Path(__file__).parent / 'fixtures' / 'litv2_tiny_official.pt'
TINY = dict(embed_dim=8, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), num_classes=10)


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp('litv2') / 'litv2_official.pth'
    torch.save(torch.load(FIXTURE, weights_only=True)['checkpoint'], path)
    return timm.create_model('zoo_litv2_small', pretrained=True,
                             pretrained_cfg_overlay=dict(file=str(path), num_classes=10), **TINY).eval()


@torch.no_grad()
def test_matches_official_classification_model(model):
    fx = torch.load(FIXTURE, weights_only=True)
    assert (model(fx['input_128x128']) - fx['output_128x128']).abs().max() <= 1e-4


@torch.no_grad()
def test_matches_official_detection_backbone_with_padding(model):
    fx = torch.load(FIXTURE, weights_only=True)
    feats = model.forward_intermediates(fx['input_80x112'], indices=[0, 1, 2], intermediates_only=True)
    for i, f in enumerate(feats):
        assert (f - fx[f'stage{i}_80x112']).abs().max() <= 1e-4, i


def _grads(fn, x):
    x = x.detach().clone().requires_grad_()
    out = fn(x)
    out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
    return out.detach(), x.grad


@pytest.mark.parametrize('window_size,size', [(2, (6, 10)), (2, (5, 7)), (1, (5, 7)), (3, (7, 8))])
def test_hilo_backends_match_reference(window_size, size):
    torch.manual_seed(0)
    m = HiLo(32, num_heads=4, window_size=window_size, alpha=0.5, qkv_bias=True)
    x = torch.randn(2, *size, 32)
    with force_backend('reference'):
        ref = _grads(m, x)
    got = _grads(m, x)
    for r, o in zip(ref, got):
        torch.testing.assert_close(o, r, atol=1e-5, rtol=1e-5)


def test_hilo_window_one_is_plain_attention():
    torch.manual_seed(0)
    m = HiLo(16, num_heads=2, window_size=1, alpha=0.9)
    x = torch.randn(1, 3, 5, 16)
    q = m.l_q(x).view(1, 15, 2, 8).transpose(1, 2)
    k, v = m.l_kv(x).view(1, 15, 2, 2, 8).permute(2, 0, 3, 1, 4)
    attn = ((q @ k.transpose(-2, -1)) * 8 ** -0.5).softmax(-1)
    expect = m.l_proj((attn @ v).transpose(1, 2).reshape(1, 3, 5, 16))
    torch.testing.assert_close(m(x), expect, atol=1e-5, rtol=1e-5)


def test_dtm_zero_offsets_is_strided_conv_and_pads_odd_sizes():
    torch.manual_seed(0)
    m = DeformableTokenMerging(8, 16).eval()
    x = torch.randn(2, 7, 9, 8)
    y = m(x)
    assert y.shape == (2, 4, 5, 16)
    xp = F.pad(x.permute(0, 3, 1, 2), (0, 1, 0, 1))
    expect = m.act(m.norm(F.conv2d(xp, m.weight, m.bias, stride=2))).permute(0, 2, 3, 1)
    torch.testing.assert_close(y, expect, atol=1e-5, rtol=1e-5)
