"""Swin: exact against timm for every variant, both checkpoint layouts load strictly, clear errors otherwise."""
import pytest
import timm
import torch

import zoo  # noqa: F401
from zoo.layers.attention import WindowAttention, force_backend, window_mask
from zoo.models._convert import CheckpointMismatchError

# zoo name -> timm model of the same config, and the native resolution
TIMM_TWINS = {
    'zoo_swin_tiny': ('swin_tiny_patch4_window7_224', 224),
    'zoo_swin_small': ('swin_small_patch4_window7_224', 224),
    'zoo_swin_base': ('swin_base_patch4_window7_224', 224),
    'zoo_swin_large': ('swin_large_patch4_window7_224', 224),
    'zoo_swin_base_384': ('swin_base_patch4_window12_384', 384),
    'zoo_swin_large_384': ('swin_large_patch4_window12_384', 384),
}


def official_layout(timm_state_dict, window_size, img_size, depths):
    """timm's swin_* state dict rewritten as the official release stores it ({'model': ...}):
    downsample at the end of a stage, a plain `head`, and the persistent index/mask buffers."""
    n = window_size * window_size
    out = {}
    for k, v in timm_state_dict.items():
        if k.startswith('layers.') and '.downsample.' in k:
            i = int(k.split('.')[1])
            k = k.replace(f'layers.{i}.', f'layers.{i - 1}.', 1)
        out[k.replace('head.fc.', 'head.')] = v
    for i, depth in enumerate(depths):
        res = img_size // 4 // 2 ** i
        for j in range(depth):
            out[f'layers.{i}.blocks.{j}.attn.relative_position_index'] = torch.zeros(n, n, dtype=torch.long)
            if j % 2 and res > window_size:
                nw = (res // window_size) ** 2
                out[f'layers.{i}.blocks.{j}.attn_mask'] = torch.zeros(nw, n, n)
    return {'model': out}


def twins(name, tmp_path, layout='timm'):
    """A timm Swin with random weights, and the zoo model loaded from its checkpoint file in `layout`."""
    timm_name, size = TIMM_TWINS[name]
    torch.manual_seed(0)
    ref = timm.create_model(timm_name).eval()
    sd = ref.state_dict()
    if layout == 'official':
        sd = official_layout(sd, ref.layers[0].blocks[0].attn.window_size[0], size, [len(s.blocks) for s in ref.layers])
    path = tmp_path / f'{name}_{layout}.pth'
    torch.save(sd, path)
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    return ref, model, size, path


@pytest.mark.parametrize('name', list(TIMM_TWINS))
@torch.no_grad()
def test_matches_timm(name, tmp_path):
    ref, model, size, _ = twins(name, tmp_path)
    x = torch.randn(1, 3, size, size)
    diff = (model(x) - ref(x)).abs().max().item()
    assert diff <= 1e-4, diff


@pytest.mark.parametrize('name', ['zoo_swin_tiny', 'zoo_swin_base_384'])
@torch.no_grad()
def test_official_release_layout_loads_strict(name, tmp_path):
    ref, model, size, _ = twins(name, tmp_path, layout='official')
    x = torch.randn(1, 3, size, size)
    assert (model(x) - ref(x)).abs().max().item() <= 1e-4
    with force_backend('reference'):
        assert (model(x) - ref(x)).abs().max().item() <= 1e-4


@pytest.mark.parametrize('tag', ['zoo_swin_tiny.ms_in22k', 'zoo_swin_tiny.ms_in22k_ft_in1k'])
@torch.no_grad()
def test_in22k_tags_load_the_authors_checkpoints(tag, tmp_path):
    """The 22K tags build timm's 21841-class head (the 22K -> 1K ones 1000 classes) and load the authors'
    layout of such a checkpoint strictly, equal to timm's model on the same weights."""
    classes = 21841 if tag.endswith('in22k') else 1000
    torch.manual_seed(0)
    ref = timm.create_model('swin_tiny_patch4_window7_224', num_classes=classes).eval()
    path = tmp_path / 'in22k.pth'
    torch.save(official_layout(ref.state_dict(), 7, 224, (2, 2, 6, 2)), path)
    model = timm.create_model(tag, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    assert model.num_classes == classes == model.pretrained_cfg['num_classes']
    assert timm.models.get_pretrained_cfg(tag).url.endswith(
        '_22k.pth' if classes == 21841 else '_22kto1k_finetune.pth')
    x = torch.randn(1, 3, 224, 224)
    assert (model(x) - ref(x)).abs().max().item() <= 1e-4


def test_checkpoint_of_another_variant_names_keys(tmp_path):
    _, _, _, path = twins('zoo_swin_tiny', tmp_path)
    with pytest.raises(CheckpointMismatchError, match=r'missing: stages\.2\.blocks\.6\..*\[') as err:
        timm.create_model('zoo_swin_small', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert 'another variant' in str(err.value)
    with pytest.raises(CheckpointMismatchError, match=r'checkpoint \[96\] vs model \[128\]'):
        timm.create_model('zoo_swin_base', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def test_missing_and_unexpected_keys_are_named(tmp_path):
    sd = timm.create_model('zoo_swin_tiny').state_dict()
    del sd['stages.1.blocks.0.mlp.fc1.weight']
    sd['stages.1.blocks.0.extra.weight'] = torch.zeros(3)
    path = tmp_path / 'broken.pth'
    torch.save(sd, path)
    with pytest.raises(CheckpointMismatchError) as err:
        timm.create_model('zoo_swin_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    assert 'stages.1.blocks.0.mlp.fc1.weight [768, 192]' in str(err.value)
    assert 'stages.1.blocks.0.extra.weight [3]' in str(err.value)


@torch.no_grad()
def test_new_window_size_resamples_tables_on_load_and_set_input_size(tmp_path):
    _, _, _, path = twins('zoo_swin_tiny', tmp_path)
    built = timm.create_model('zoo_swin_tiny', pretrained=True, img_size=384, window_size=12,
                              pretrained_cfg_overlay=dict(file=str(path))).eval()
    table = built.stages[0].blocks[0].attn.rel_pos.relative_position_bias_table
    assert table.shape == (23 * 23, 3)
    resized = timm.create_model('zoo_swin_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    resized.set_input_size(img_size=384, window_size=12)
    assert resized.stages[3].blocks[1].attn.window_size == (12, 12)
    assert resized.stages[3].blocks[1].attn.shift_size == (0, 0)  # 12x12 map: one window, no shift
    assert resized.stages[0].blocks[1].attn.shift_size == (6, 6)
    x = torch.randn(1, 3, 384, 384)
    torch.testing.assert_close(resized(x), built(x))


def test_grad_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = timm.create_model('zoo_swin_tiny', embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4,
                              img_size=32, num_classes=5)
    x = torch.randn(2, 3, 40, 36)
    grads = []
    for enable in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(enable)
        torch.manual_seed(1)  # same drop-path draws in both runs
        model(x).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_out_indices_are_validated():
    with pytest.raises(ValueError, match='out of range'):
        timm.create_model('zoo_swin_tiny', features_only=True, out_indices=(4,))
    m = timm.create_model('zoo_swin_tiny', features_only=True, out_indices=(-2, -1))
    assert m.feature_info.reduction() == [16, 32] and m.feature_info.channels() == [384, 768]


@pytest.mark.parametrize('shift', [(0, 0), (3, 2)])
@pytest.mark.parametrize('size', [(14, 14), (11, 17)])
def test_window_attention_backends_match_reference(shift, size):
    torch.manual_seed(0)
    attn = WindowAttention(32, num_heads=4, window_size=(7, 7), shift_size=shift)
    x = torch.randn(2, *size, 32, requires_grad=True)
    outs, grads = [], []
    for backend in ('reference', 'sdpa', 'bmm'):
        with force_backend(backend, op='dense'):
            y = attn(x)
        g, = torch.autograd.grad(y.square().sum(), x)
        outs.append(y)
        grads.append(g)
    for y, g in zip(outs[1:], grads[1:]):
        torch.testing.assert_close(y, outs[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(g, grads[0], atol=1e-5, rtol=1e-5)


def test_window_mask_hides_padding_and_shift_regions():
    assert window_mask(14, 14, (7, 7), (0, 0)) is None
    mask = window_mask(10, 7, (7, 7), (0, 0))  # padded to 14 x 7: the second window has 3 real rows
    assert mask.shape == (2, 49, 49)
    assert (mask[0] == 0).all()
    real = torch.arange(49) < 21
    assert (mask[1][real][:, real] == 0).all() and (mask[1][real][:, ~real] == float('-inf')).all()
    shifted = window_mask(14, 14, (7, 7), (3, 3))
    assert (shifted[0] == 0).all() and (shifted[-1] != 0).any()


@pytest.mark.slow
@torch.no_grad()
def test_detection_size_input():
    model = timm.create_model('zoo_swin_tiny', features_only=True).eval()
    feats = model(torch.randn(1, 3, 800, 1216))
    assert [f.shape[-2:] for f in feats] == [(200, 304), (100, 152), (50, 76), (25, 38)]


@torch.no_grad()
def test_official_layout_round_trip(tmp_path):
    from zoo.models.swin import to_official_layout
    torch.manual_seed(0)
    source = timm.create_model('zoo_swin_tiny', img_size=(64, 96), window_size=4).eval()
    checkpoint = to_official_layout(source)
    assert 'layers.0.downsample.reduction.weight' in checkpoint['model']
    assert 'layers.0.blocks.1.attn_mask' in checkpoint['model'] and 'head.weight' in checkpoint['model']
    path = tmp_path / 'official.pth'
    torch.save(checkpoint, path)
    loaded = timm.create_model('zoo_swin_tiny', img_size=(64, 96), window_size=4, pretrained=True,
                               pretrained_cfg_overlay=dict(file=str(path))).eval()
    x = torch.randn(1, 3, 64, 96)
    torch.testing.assert_close(loaded(x), source(x))


def test_window_mask_with_one_side_unshifted_matches_timm():
    """A map one window tall is shifted along its width only: rows must not be split into regions."""
    from timm.models.swin_transformer import SwinTransformerBlock
    ref = SwinTransformerBlock(8, input_resolution=(7, 21), num_heads=1, window_size=7, shift_size=3)
    assert ref.shift_size == (0, 3)
    def same_regions(ours, timms):  # the zoo masks with -inf where timm adds -100
        torch.testing.assert_close(ours.isinf(), timms == -100)
        assert (ours[~ours.isinf()] == 0).all()
    same_regions(window_mask(7, 21, (7, 7), (0, 3)), ref.attn_mask)
    same_regions(window_mask(14, 21, (7, 7), (3, 3)),
                 SwinTransformerBlock(8, (14, 21), 1, window_size=7, shift_size=3).attn_mask)


def test_one_width_spelling():
    """embed_dim is every family's width: Swin takes stage 1's (doubled per stage) or one per stage, and the
    other spellings are one clear error, not an unexpected-keyword TypeError from deep inside timm."""
    tiny = dict(depths=(1, 1, 1, 1), num_heads=(1, 1, 2, 2), num_classes=3)
    torch.manual_seed(0)
    doubled = timm.create_model('zoo_swin_tiny', embed_dim=8, **tiny)
    torch.manual_seed(0)
    listed = timm.create_model('zoo_swin_tiny', embed_dim=(8, 16, 32, 64), **tiny)
    assert [i['num_chs'] for i in listed.feature_info] == [8, 16, 32, 64]
    for (k, v), (k2, v2) in zip(doubled.state_dict().items(), listed.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    with pytest.raises(ValueError, match='3 stage widths'):
        timm.create_model('zoo_swin_tiny', embed_dim=(8, 16, 32), **tiny)
    for name, old in (('zoo_agent_pvt_tiny', 'embed_dims'), ('zoo_l2vit_tiny', 'dims')):
        with pytest.raises(TypeError, match=f'spelled embed_dim .* not {old}'):
            timm.create_model(name, **{old: (8, 16, 32, 64)})


def test_compiled_model_is_static_at_each_input_size(captured_graphs):
    """torch.compile at a second input size retraces with symbolic sizes ('automatic dynamic'); padding to whole
    windows then made inductor spend minutes in sympy (zoo Swin-T: ~9 CPU-minutes against 70 s for the first
    compile). check_input specializes the image's H and W under dynamo: each size is one static graph, and the
    traced path (roll and window views, the shift mask computed in the graph) matches eager's gathers at both."""
    record, graphs = captured_graphs
    torch.manual_seed(0)
    model = timm.create_model('zoo_swin_tiny', embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=4).eval()
    compiled = torch.compile(model, backend=record)
    with torch.no_grad():
        for size in (32, 44):  # shifted blocks in both stages; at 44 the 11x11 and 6x6 maps are padded
            x = torch.randn(2, 3, size, size)
            torch.testing.assert_close(compiled(x), model(x), rtol=1e-5, atol=1e-5)
    assert len(graphs) == 2
    symbolic = [a for a in graphs[1][1] if isinstance(a, torch.SymInt)
                or isinstance(a, torch.Tensor) and any(isinstance(s, torch.SymInt) for s in a.shape)]
    assert not symbolic, f'the second size compiled with symbolic sizes: {symbolic}'
