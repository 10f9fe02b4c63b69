"""ZooBackbone (zoo/integrations/backbone.py): plain torch, no OpenMMLab needed.

Strides/channels, output norms, freezing, the isotropic feature pyramid, no-decay/layer-decay lists, and
loading the authors' detection checkpoint layout (Swin-Transformer-Object-Detection: `backbone.layers...`,
merging at the end of a stage, persistent relative_position_index buffers, norm0..3) strictly.
"""
import re

import pytest
import torch

from zoo.integrations.backbone import ZooBackbone
from zoo.models._convert import CheckpointMismatchError

TINY_SWIN = dict(depths=(1, 1, 1, 1), embed_dim=16, num_heads=(1, 1, 2, 2))


def _tiny(**kw):
    torch.manual_seed(0)
    return ZooBackbone('zoo_swin_tiny', model_kwargs=TINY_SWIN, **kw)


def test_strides_channels_and_nchw_outputs():
    b = _tiny(out_norm='LN').eval()
    assert b.strides == [4, 8, 16, 32] and b.channels == [16, 32, 64, 128]
    feats = b(torch.randn(2, 3, 72, 100))  # not a multiple of the window or the total stride
    assert [tuple(f.shape) for f in feats] == [(2, 16, 18, 25), (2, 32, 9, 13), (2, 64, 5, 7), (2, 128, 3, 4)]
    assert b.out_norm_names == ['norm0', 'norm1', 'norm2', 'norm3']
    # the output norm is a LayerNorm over channels of the model's stage output
    raw = b.body(torch.ones(1, 3, 64, 64))[1]
    ref = torch.nn.functional.layer_norm(raw.permute(0, 2, 3, 1), (32,), b.norm1.weight, b.norm1.bias, 1e-6)
    assert torch.allclose(b.norm1(raw), ref.permute(0, 3, 1, 2), atol=1e-5)


def test_out_indices_subset_and_errors():
    b = _tiny(out_indices=(1, 3))
    assert b.strides == [8, 32] and b.channels == [32, 128]
    assert [f.shape[1] for f in b(torch.randn(1, 3, 64, 64))] == [32, 128]
    with pytest.raises(ValueError, match='out of range'):
        _tiny(out_indices=(0, 4))


def test_frozen_stages_and_norm_eval():
    b = _tiny(frozen_stages=1, out_norm='LN')
    b.train()
    frozen = {n for n, p in b.named_parameters() if not p.requires_grad}
    assert frozen and all(re.match(r'body\.model\.(stem|stages\.0)\.|norm0\.', n) for n in frozen)
    assert all(p.requires_grad for n, p in b.named_parameters() if n.startswith('body.model.stages.1'))
    assert not b.body.model.stem.training and not b.body.model.stages[0].training
    assert b.body.model.stages[1].training
    loss = sum(f.sum() for f in b(torch.randn(1, 3, 64, 64)))
    loss.backward()
    assert all(p.grad is None for n, p in b.named_parameters() if n in frozen)


def test_no_weight_decay_and_layer_scales():
    b = _tiny(out_norm='LN')
    nwd = b.no_weight_decay()
    assert 'body.model.stages.0.blocks.0.attn.rel_pos.relative_position_bias_table' in nwd
    assert 'body.model.stages.1.blocks.0.norm1.weight' in nwd and 'norm3.bias' in nwd
    assert 'body.model.stages.1.blocks.0.attn.qkv.weight' not in nwd
    scales = b.layer_scales(0.5)
    assert scales['body.model.stem.proj.weight'] < scales['body.model.stages.1.blocks.0.attn.qkv.weight'] \
        < scales['body.model.stages.3.blocks.0.mlp.fc2.weight'] <= 0.5


def test_isotropic_model_gets_a_simple_feature_pyramid():
    torch.manual_seed(0)
    b = ZooBackbone('vit_tiny_patch16_224', model_kwargs=dict(depth=2, dynamic_img_size=True))
    assert b.isotropic and b.strides == [4, 8, 16, 32] and b.channels == [48, 96, 192, 192]
    feats = b(torch.randn(2, 3, 64, 96))
    assert [tuple(f.shape[1:]) for f in feats] == [(48, 16, 24), (96, 8, 12), (192, 4, 6), (192, 2, 3)]
    sum(f.mean() for f in feats).backward()
    assert all(p.grad is not None for p in b.pyramid.parameters())


def _authors_detection_checkpoint(backbone: ZooBackbone) -> dict:
    """The backbone's weights (randomised) under the Swin detection release's key names, mmdet 2.x wrapper."""
    sd = {}
    for k, v in backbone.body.model.state_dict().items():
        k = re.sub(r'^stem\.', 'patch_embed.', k)
        k = re.sub(r'^stages\.(\d+)\.downsample', lambda m: f'layers.{int(m.group(1)) - 1}.downsample', k)
        k = re.sub(r'^stages\.', 'layers.', k)
        k = k.replace('attn.rel_pos.relative_position_bias_table', 'attn.relative_position_bias_table')
        sd['backbone.' + k] = torch.randn_like(v)
        if k.endswith('attn.relative_position_bias_table'):
            sd['backbone.' + k.replace('bias_table', 'index')] = torch.zeros(49, 49, dtype=torch.long)
    for i in range(4):
        c = backbone.channels[i]
        sd[f'backbone.norm{i}.weight'], sd[f'backbone.norm{i}.bias'] = torch.randn(c), torch.randn(c)
    sd['neck.lateral_convs.0.conv.weight'] = torch.randn(256, 16, 1, 1)
    sd['roi_head.bbox_head.fc_cls.weight'] = torch.randn(81, 1024)
    return {'meta': {'epoch': 12}, 'state_dict': sd}


def test_load_authors_detection_checkpoint_strict(tmp_path):
    ckpt = _authors_detection_checkpoint(_tiny(out_norm='LN'))
    path = tmp_path / 'mask_rcnn_swin_tiny.pth'
    torch.save(ckpt, path)
    b = _tiny(out_norm='LN', pretrained=str(path))
    sd = ckpt['state_dict']
    own = b.body.model.state_dict()
    assert torch.equal(own['stem.proj.weight'], sd['backbone.patch_embed.proj.weight'])
    assert torch.equal(own['stages.1.downsample.reduction.weight'], sd['backbone.layers.0.downsample.reduction.weight'])
    assert torch.equal(own['stages.3.blocks.0.attn.rel_pos.relative_position_bias_table'],
                       sd['backbone.layers.3.blocks.0.attn.relative_position_bias_table'])
    assert torch.equal(b.norm2.weight, sd['backbone.norm2.weight'])
    n_backbone = sum(1 for k in sd if k.startswith('backbone.') and 'relative_position_index' not in k)
    assert n_backbone == len(own) + 8

    # strict on backbone keys: a missing block, or output norms the backbone lacks, are errors
    broken = dict(ckpt['state_dict'])
    broken.pop('backbone.layers.2.blocks.0.mlp.fc1.weight')
    torch.save({'state_dict': broken}, path)
    with pytest.raises(CheckpointMismatchError, match='stages.2.blocks.0.mlp.fc1.weight'):
        _tiny(out_norm='LN', pretrained=str(path))
    torch.save(ckpt, path)
    with pytest.raises(CheckpointMismatchError, match="out_norm='LN'"):
        _tiny(pretrained=str(path))
    no_norm = {k: v for k, v in ckpt['state_dict'].items() if not k.startswith('backbone.norm3')}
    torch.save({'state_dict': no_norm}, path)
    with pytest.raises(CheckpointMismatchError, match='norm3'):
        _tiny(out_norm='LN', pretrained=str(path))


def test_load_imagenet_checkpoint_drops_classifier(tmp_path):
    import timm
    torch.manual_seed(1)
    full = timm.create_model('zoo_swin_tiny', **TINY_SWIN)
    path = tmp_path / 'in1k.pth'
    torch.save({'model': full.state_dict()}, path)
    b = _tiny(out_norm='LN', pretrained=str(path))
    for k, v in b.body.model.state_dict().items():
        assert torch.equal(v, full.state_dict()[k]), k


def test_authors_agent_swin_checkpoint_goes_through_its_family_filter():
    """Agent-Swin's filter is registered under another name than `checkpoint_filter_fn`: ZooBackbone must still
    apply it (the builder records every zoo model's filter), so the authors' layout loads strictly."""
    from pathlib import Path
    fixture = Path(__file__).parent / 'fixtures' / 'agent_swin_tiny_cfg.pth'
    theirs = torch.load(fixture, weights_only=True)['model']
    tiny = dict(embed_dim=8, depths=(2, 1, 4, 1), num_heads=(1, 2, 2, 4), global_blocks=(2, 1, 2, 0))
    b = ZooBackbone('zoo_agent_swin_base', model_kwargs=tiny, pretrained=str(fixture))
    ours = b.body.model.stages[0].blocks[0].attn.ah_bias
    assert torch.equal(ours, theirs['layers.0.blocks.0.attn.ah_bias'])
