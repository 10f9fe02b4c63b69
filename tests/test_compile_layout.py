"""How inductor lays out the (B, H, W, C) residual stream of the channels-last families (zoo.layers.residual)."""
import re

import pytest
import timm
import torch
from torch._inductor.utils import run_and_get_code

import zoo  # noqa: F401


@pytest.mark.parametrize('name', ['zoo_focalnet_tiny_srf', 'zoo_swin_tiny'])
def test_compiled_stream_keeps_channels_innermost(name, fresh_dynamo):
    """Every map buffer of a stage width (20 or 40) that inductor allocates stores its channels innermost. Before
    `residual`, inductor's convolution layout rule gave the (B, H, W, C) stream channels-last strides for that
    shape, H innermost ([2, 16, 24, 20] at strides [7680, 1, 320, 16]), and every LayerNorm over C read it at a
    stride."""
    kwargs = dict(img_size=(64, 96), window_size=4, num_heads=(2, 4)) if 'swin' in name else {}
    model = timm.create_model(name, embed_dim=20, depths=(1, 1), num_classes=5, **kwargs).eval()
    with torch.no_grad(), torch._inductor.config.patch(force_disable_caches=True):
        _, codes = run_and_get_code(torch.compile(model), torch.randn(2, 3, 64, 96))
    buffers = re.findall(r'empty_strided_cpu\(\((\d+), (\d+), (\d+), (\d+)\), \((\d+), (\d+), (\d+), (\d+)\)',
                         '\n'.join(codes))
    assert buffers, 'no 4-D buffer found in the generated code: has its format changed?'
    for numbers in buffers:
        shape, stride = [int(n) for n in numbers[:4]], [int(n) for n in numbers[4:]]
        if shape[0] != 2 or not {20, 40} & set(shape[1:]):
            continue  # not a batch-2 map with a stage width
        channel_dim = next(d for d in (1, 2, 3) if shape[d] in (20, 40))
        assert stride[channel_dim] == 1, f'{shape} stored at strides {stride}'


def _mixed_layout_ops_in_backward(loss: torch.Tensor) -> list:
    """(op, shape, strides, strides) for every op `loss.backward()` dispatches whose first two tensor arguments have
    the same 3-D+ shape but store their dims in different orders (eager CPU reads one of them at a stride). The
    forward runs before, outside the recording mode (under a dispatch mode zoo's eager shortcuts step aside)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    def order(t):
        return sorted((d for d in range(t.dim()) if t.shape[d] > 1), key=lambda d: -t.stride(d))

    found = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            a, b, *_ = [t for t in args if isinstance(t, torch.Tensor)] + [None, None]
            if (b is not None and a.dim() >= 3 and a.shape == b.shape and 0 not in a.stride() + b.stride()
                    and order(a) != order(b)):
                found.append((str(func), tuple(a.shape), a.stride(), b.stride()))
            return func(*args, **(kwargs or {}))

    with Record():
        loss.backward()
    return found


def test_focal_modulation_gradients_keep_one_layout():
    """FocalNet's levels run channels-last convolutions on (B, H, W, C) maps: the global level's mean is taken over
    that memory's own dims, so its gradient is not expanded NCHW and summed into the levels' channels-last ones
    (the first level's GELU backward then ran 6.5x slower on the mixed pair; FocalNet-T, 2 threads)."""
    from zoo.layers.focal_modulation import FocalModulation
    torch.manual_seed(0)
    module = FocalModulation(16, focal_level=2).train()
    assert _mixed_layout_ops_in_backward(module(torch.randn(2, 8, 8, 16, requires_grad=True)).sum()) == []


def test_squeeze_excite_keeps_a_channels_last_gradient():
    """MaxViT's MBConv trains on channels-last maps: its squeeze-excite mean must not send an NCHW gradient into
    them. The result is timm's SEModule's."""
    from timm.layers import SEModule
    from zoo.layers.mbconv import MBConv
    from zoo.layers.squeeze_excite import SqueezeExcite
    torch.manual_seed(0)
    block = MBConv(16, 16).train()
    x = torch.randn(2, 16, 8, 8).contiguous(memory_format=torch.channels_last).requires_grad_()
    assert _mixed_layout_ops_in_backward(block(x).sum()) == []
    se = SqueezeExcite(16, rd_channels=4)
    torch.testing.assert_close(se(x), SEModule.forward(se, x), rtol=0, atol=1e-6)


@pytest.mark.parametrize('name, kwargs', [
    ('zoo_davit_tiny', dict(embed_dim=(16, 32), depths=(1, 1), num_heads=(1, 2), window_size=4)),  # NHWC features
    ('zoo_poolformer_s12', dict(depths=(1, 1, 1, 1), embed_dim=(8, 8, 16, 16))),  # channels-last NCHW features
])
def test_pooled_head_returns_the_features_layout(name, kwargs):
    """The classifier's average pool expands its gradient NCHW; `Backbone.forward_head` hands it back in the
    features' own layout, so the last stage's backward does not run on mixed pairs."""
    model = timm.create_model(name, num_classes=3, **kwargs).train()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        last_stage = sorted(model.forward_features(x).shape)  # its NCHW or NHWC view
    mixed = _mixed_layout_ops_in_backward(model(x).sum())
    assert [op for op in mixed if sorted(op[1]) == last_stage] == [], mixed


def test_gpsa_positional_weights_run_on_a_dense_tensor():
    """ConViT's positional logits are the permuted view of a (N, N, heads) projection: GPSA makes them dense before
    the shift, clamp, softmax and mask, forward and backward (ConViT-T: inference 1.08x, training step 1.03x,
    in-process A/B, Zen 4, 2 threads)."""
    from zoo.layers.attention.gpsa import GPSA
    torch.manual_seed(0)
    attn = GPSA(16, num_heads=4).train()
    x = torch.randn(2, 6, 6, 16, requires_grad=True)
    heads_by_keys = (4, 36, 36)
    mixed = _mixed_layout_ops_in_backward(attn(x).sum())
    assert [op for op in mixed if op[1] == heads_by_keys] == [], mixed


def test_patch_embed_starts_a_dense_stream():
    """The (B, H, W, C) stream starts dense: a permuted view kept its strides through every residual add (ConViT-T:
    each LayerNorm copied it, each backward add mixed layouts)."""
    from zoo.layers.patch import PatchEmbed
    for norm in (None, torch.nn.LayerNorm):
        assert PatchEmbed(4, 3, 16, norm_layer=norm)(torch.randn(2, 3, 16, 16)).is_contiguous()
