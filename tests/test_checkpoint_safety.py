"""Checkpoint files are read safely (zoo/models/_load.py) through every entry point that takes one.

A malicious .pth (its `meta` unpickles to a call that creates a marker file) is refused with an error naming
the file and the refused global, and the call never runs; truncated, empty, random, image, missing and
directory paths each get one error naming the file and what is wrong. Entry points: the reader itself,
timm.create_model(pretrained_cfg_overlay=dict(file=...)), ZooBackbone(pretrained=FILE or URL), tools/validate.py
--checkpoint, tools/train.py --resume / --pretrained-file, the mm tools (train_det --resume, test_seg CHECKPOINT)
and mmengine's own checkpoint loader (load_from / resume / init_cfg). A real mmengine training checkpoint
(HistoryBuffer, NumPy values in message_hub) loads through the allowlist, and .safetensors files load wherever a
.pth does.
"""
import os
import os.path as osp
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from zoo.integrations.backbone import ZooBackbone
from zoo.models import _load
from zoo.models._load import CheckpointFileError, read_checkpoint_file, read_state_dict

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(embed_dim=16, depths=(1, 1), num_heads=(1, 2), window_size=4)
TINY_ARGS = ['--model-kwargs', 'embed_dim=16', 'depths=(1,1)', 'num_heads=(1,2)', 'window_size=4']
TINY_BACKBONE = dict(depths=(1, 1, 1, 1), embed_dim=16, num_heads=(1, 1, 2, 2))


def _mm_missing():
    try:
        import mmdet  # noqa: F401
        import mmseg  # noqa: F401
        from mmcv.ops import RoIAlign  # noqa: F401
    except Exception as e:
        return f'{type(e).__name__}: {e}'
    return None


MM_MISSING = _mm_missing()
needs_mm = pytest.mark.skipif(MM_MISSING is not None, reason=f'OpenMMLab stack not importable ({MM_MISSING})')


class CreatesMarker:
    """Unpickles to open(marker, 'w'): the file appearing means the checkpoint ran code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, 'w')


def _tiny_state():
    torch.manual_seed(0)
    return timm.create_model('zoo_swin_tiny', **TINY).state_dict()


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """kind -> path, and the marker the malicious file would create."""
    d = tmp_path_factory.mktemp('ckpt')
    marker = d / 'MARKER'
    state = _tiny_state()
    torch.save({'state_dict': state, 'meta': CreatesMarker(marker)}, d / 'malicious.pth')
    torch.save({'state_dict': state, 'meta': CreatesMarker(marker)}, d / 'malicious_legacy.pth',
               _use_new_zipfile_serialization=False)
    torch.save(state, d / 'good.pth')
    data = (d / 'good.pth').read_bytes()
    (d / 'truncated.pth').write_bytes(data[:len(data) // 2])
    import safetensors.torch
    safetensors.torch.save_file(state, str(d / 'good.safetensors'))
    data = (d / 'good.safetensors').read_bytes()
    (d / 'truncated.safetensors').write_bytes(data[:len(data) // 2])
    (d / 'empty.pth').write_bytes(b'')
    (d / 'random.pth').write_bytes(np.random.RandomState(0).bytes(4096))
    from PIL import Image
    Image.new('RGB', (16, 16), (200, 30, 30)).save(d / 'image.pth', format='JPEG')
    Image.new('RGB', (16, 16)).save(d / 'png.pth', format='PNG')
    (d / 'folder.pth').mkdir()
    paths = {k: d / f'{k}.pth' for k in ('malicious', 'malicious_legacy', 'good', 'truncated', 'empty', 'random',
                                          'image', 'png', 'folder')}
    paths.update(missing=d / 'missing.pth', good_safetensors=d / 'good.safetensors',
                 truncated_safetensors=d / 'truncated.safetensors')
    return paths, marker, state


# kind -> what the one error says (besides the file's path)
BAD = {
    'malicious': 'refused to unpickle io.open',
    'malicious_legacy': 'refused to unpickle io.open',
    'truncated': 'is truncated',
    'truncated_safetensors': 'is truncated',
    'empty': 'is empty (0 bytes): not a checkpoint',
    'random': 'is not a checkpoint: unrecognised content',
    'image': 'is not a checkpoint: unsupported format (a JPEG image',
    'png': 'is not a checkpoint: unsupported format (a PNG image',
    'folder': 'is a directory, not a file',
    'missing': 'does not exist',
}


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
    """Two classes, two 32x32 images each, in train/ and val/ (the tools check the data before the checkpoint)."""
    from PIL import Image
    root = tmp_path_factory.mktemp('images')
    for split in ('train', 'val'):
        for c in ('a', 'b'):
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                Image.new('RGB', (32, 32), (40 * i, 100, 200)).save(root / split / c / f'{i}.png')
    return root


def _tool_main(script):
    return runpy.run_path(str(ROOT / 'tools' / script))['main']


def _cli_error(capsys, rc):
    """The tools' contract for a bad file: exit status 2 and one line `error: ...` on stderr."""
    assert rc == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith('error: '), lines
    return lines[-1]


# --- entry points: each takes a checkpoint path and returns the error text it produced ---------------------------
def via_reader(path, **_):
    with pytest.raises(CheckpointFileError) as e:
        read_state_dict(str(path))
    return str(e.value)


def via_timm(path, **_):
    with pytest.raises(CheckpointFileError) as e:
        timm.create_model('zoo_swin_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **TINY)
    return str(e.value)


def via_backbone(path, **_):
    with pytest.raises(CheckpointFileError) as e:
        ZooBackbone('zoo_swin_tiny', pretrained=str(path), model_kwargs=TINY_BACKBONE)
    return str(e.value)


def via_validate(path, capsys, image_folder, **_):
    rc = _tool_main('validate.py')(['--model', 'zoo_swin_tiny', '--checkpoint', str(path), '--data-dir',
                                    str(image_folder), '--workers', '0', *TINY_ARGS])
    return _cli_error(capsys, rc)


def _train(args, capsys, image_folder, tmp_path):
    rc = _tool_main('train.py')(['--data-dir', str(image_folder), '--model', 'zoo_swin_tiny', '--img-size', '32',
                                 '--workers', '0', '--no-progress', '-b', '2', '--epochs', '1', *TINY_ARGS,
                                 '--output', str(tmp_path / 'out'), *args])
    return _cli_error(capsys, rc)


def via_train_resume(path, capsys, image_folder, tmp_path, **_):
    return _train(['--resume', str(path)], capsys, image_folder, tmp_path)


def via_train_pretrained_file(path, capsys, image_folder, tmp_path, **_):
    return _train(['--pretrained-file', str(path)], capsys, image_folder, tmp_path)


DET_CONFIG = str(ROOT / 'configs/det/swin/mask_rcnn_zoo_swin_tiny_fpn_ms_1x_coco.py')
SEG_CONFIG = str(ROOT / 'configs/seg/swin/upernet_zoo_swin_tiny_160k_ade20k_512.py')


def via_train_det_resume(path, capsys, tmp_path, **_):
    from zoo.integrations.mm_runner import main
    rc = main('train', 'det', [DET_CONFIG, '--resume', str(path), '--cpu', '--work-dir', str(tmp_path / 'wd')])
    return _cli_error(capsys, rc)


def via_test_seg(path, capsys, tmp_path, **_):
    from zoo.integrations.mm_runner import main
    rc = main('test', 'seg', [SEG_CONFIG, str(path), '--cpu', '--work-dir', str(tmp_path / 'wd')])
    return _cli_error(capsys, rc)


def via_mmengine_loader(path, **_):
    """mmengine's _load_checkpoint: what Runner.load_checkpoint / resume and init_cfg 'Pretrained' call."""
    import zoo.integrations.mm  # noqa: F401  (registers zoo's reader for mmengine's schemes)
    from mmengine.runner.checkpoint import _load_checkpoint
    with pytest.raises(CheckpointFileError) as e:
        _load_checkpoint(str(path), map_location='cpu')
    return str(e.value)


ENTRY_POINTS = [via_reader, via_timm, via_backbone, via_validate, via_train_resume, via_train_pretrained_file,
                pytest.param(via_train_det_resume, marks=needs_mm), pytest.param(via_test_seg, marks=needs_mm),
                pytest.param(via_mmengine_loader, marks=needs_mm)]


@pytest.mark.parametrize('kind', list(BAD))
@pytest.mark.parametrize('entry', ENTRY_POINTS, ids=lambda f: f.__name__[4:])
def test_bad_file_gets_one_clear_error(entry, kind, files, capsys, image_folder, tmp_path):
    paths, marker, _ = files
    path = paths[kind]
    message = entry(path, capsys=capsys, image_folder=image_folder, tmp_path=tmp_path)
    assert str(path) in message and BAD[kind] in message, message
    assert len(message.splitlines()) == 1, message
    assert not marker.exists(), 'the checkpoint ran code'


def test_refusal_names_every_refused_global(tmp_path):
    class Many:
        def __reduce__(self):
            return os.system, (f'touch {tmp_path / "MARKER"}',)
    torch.save({'a': CreatesMarker(tmp_path / 'MARKER'), 'b': Many(), 'w': torch.ones(1)}, tmp_path / 'two.pth')
    message = via_reader(tmp_path / 'two.pth')
    assert 'io.open, posix.system' in message and 'not allowed globals' in message
    assert not (tmp_path / 'MARKER').exists()


def test_url_is_downloaded_then_read_safely(files, monkeypatch, tmp_path):
    """URLs land in torch hub's cache and are read like a local file (ZooBackbone's pretrained=URL, mmengine's
    http scheme): the malicious one is refused after the download, a good one loads."""
    paths, marker, state = files
    downloads = []

    def fake_download(url):
        downloads.append(url)
        return str(paths[url.rsplit('/', 1)[1].split('.')[0]])
    monkeypatch.setattr(_load, '_download', fake_download)
    with pytest.raises(CheckpointFileError, match='refused to unpickle io.open'):
        ZooBackbone('zoo_swin_tiny', pretrained='https://example.com/malicious.pth', model_kwargs=TINY_BACKBONE)
    sd = read_state_dict('https://example.com/good.pth')
    assert downloads == ['https://example.com/malicious.pth', 'https://example.com/good.pth']
    assert all(torch.equal(sd[k], v) for k, v in state.items())
    assert not marker.exists()


def test_getattr_is_allowed_only_for_history_buffer_methods(tmp_path):
    """mmengine checkpoints need builtins.getattr (HistoryBuffer's statistics methods); zoo allows only that use."""
    pytest.importorskip('mmengine')
    from mmengine.logging.history_buffer import HistoryBuffer

    class Other:
        def __reduce__(self):
            return getattr, (HistoryBuffer, '__init__')
    torch.save({'meta': Other()}, tmp_path / 'getattr.pth')
    with pytest.raises(CheckpointFileError, match=r"refused getattr\(.*HistoryBuffer.*'__init__'\)"):
        read_checkpoint_file(str(tmp_path / 'getattr.pth'))


# --- what must still load ----------------------------------------------------------------------------------------
def test_safetensors_loads_wherever_a_pth_does(files, capsys, image_folder, tmp_path):
    paths, _, state = files
    st, pth = str(paths['good_safetensors']), str(paths['good'])
    for path in (st, pth):
        sd = read_state_dict(path)
        assert sd.keys() == state.keys() and all(torch.equal(sd[k], v) for k, v in state.items())
        model = timm.create_model('zoo_swin_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=path), **TINY)
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    # ZooBackbone takes a classification checkpoint in either format (classifier and final norm dropped)
    two_stage = dict(TINY_BACKBONE, depths=(1, 1), num_heads=(1, 2), window_size=4)
    b = ZooBackbone('zoo_swin_tiny', out_indices=(0, 1), pretrained=st, model_kwargs=two_stage)
    assert torch.equal(b.body.model.stem.proj.weight, state['stem.proj.weight'])
    # tools/validate.py evaluates a .safetensors checkpoint (1000-class head: build it with 2 classes instead)
    head = {k: v for k, v in state.items() if not k.startswith('head.')}
    head.update({'head.fc.weight': torch.zeros(2, 32), 'head.fc.bias': torch.tensor([0., 1.])})
    import safetensors.torch
    safetensors.torch.save_file(head, str(tmp_path / 'two.safetensors'))
    rc = _tool_main('validate.py')(['--model', 'zoo_swin_tiny', '--checkpoint', str(tmp_path / 'two.safetensors'),
                                    '--data-dir', str(image_folder), '--workers', '0', '--img-size', '32',
                                    '--model-kwargs', 'embed_dim=16', 'depths=(1,1)', 'num_heads=(1,2)',
                                    'window_size=4', 'num_classes=2'])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert 'top-1 50.00' in out.out    # the bias predicts class 'b' everywhere: 2 of the 4 images


def _mmengine_checkpoint(work_dir):
    """A real mmengine training checkpoint: 2 iterations of mmengine's Runner on a linear toy model (its
    message_hub holds HistoryBuffers of NumPy arrays and scalars, as mmdet's and mmseg's do)."""
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 1)

        def forward(self, inputs, targets=None, mode='tensor'):
            out = self.fc(inputs)    # default_collate stacked the batch
            return dict(loss=((out - targets) ** 2).mean()) if mode == 'loss' else out

    data = [dict(inputs=torch.randn(2), targets=torch.randn(1)) for _ in range(4)]
    runner = Runner(model=Toy(), work_dir=str(work_dir), train_dataloader=dict(
        dataset=data, sampler=dict(type='DefaultSampler', shuffle=False), batch_size=2, collate_fn=dict(
            type='default_collate')), optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=False, max_iters=2), default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False)), default_scope='mmengine')
    runner.train()
    return Runner, runner, Toy, data, osp.join(str(work_dir), 'iter_2.pth')


@needs_mm
def test_mmengine_training_checkpoint_loads_through_the_allowlist(tmp_path):
    import zoo.integrations.mm  # noqa: F401
    from mmengine.logging.history_buffer import HistoryBuffer
    Runner, runner, Toy, data, path = _mmengine_checkpoint(tmp_path / 'run')
    extra = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in extra and extra <= set(_load.MM_CHECKPOINT_GLOBALS)
    ckpt = read_checkpoint_file(path)
    assert ckpt['meta']['iter'] == 2
    loss = ckpt['message_hub']['log_scalars']['train/loss']
    assert isinstance(loss, HistoryBuffer) and loss.current() == runner.message_hub.get_scalar('train/loss').current()
    assert torch.equal(ckpt['state_dict']['fc.weight'], runner.model.fc.weight.detach())
    # mmengine's own resume goes through zoo's reader (mmengine's bare torch.load refuses HistoryBuffer on
    # torch >= 2.6) and restores the run
    from mmengine.runner import CheckpointLoader
    assert CheckpointLoader._get_checkpoint_loader(path) is zoo.integrations.mm.load_from_local_safely
    resumed = Runner(model=Toy(), work_dir=str(tmp_path / 'resumed'), train_dataloader=dict(
        dataset=data, sampler=dict(type='DefaultSampler', shuffle=False), batch_size=2, collate_fn=dict(
            type='default_collate')), optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
        train_cfg=dict(by_epoch=False, max_iters=2), default_scope='mmengine', resume=True, load_from=path)
    resumed.train()
    assert resumed.iter == 2 and torch.equal(resumed.model.fc.weight, runner.model.fc.weight)


@needs_mm
@pytest.mark.slow
def test_mm_tool_prints_one_line_for_a_malicious_checkpoint(files):
    """tools/test_det.py as a user runs it: one line, exit status 2, nothing executed (a subprocess importing
    mmdet: 12-25 s on 2 shared cores; the in-process mm_runner.main cases above check the same message)."""
    paths, marker, _ = files
    r = subprocess.run([sys.executable, str(ROOT / 'tools/test_det.py'), DET_CONFIG, str(paths['malicious']),
                        '--cpu'], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore'))
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1] == f'error: {via_reader(paths["malicious"])}'
    assert not marker.exists()


@needs_mm
@pytest.mark.slow
def test_toy_segmentation_run_resumes_through_the_tools(tmp_path):
    """tools/train_seg.py's path: 2 toy UPerNet iterations, then `--resume` of the iter_2.pth mmengine wrote
    (meta, message_hub with HistoryBuffers of NumPy values) continues to 3 (about 20 s on 2 cores)."""
    sys.path.insert(0, str(ROOT / 'tools'))
    from make_toy_data import make_toy_data
    from zoo.integrations.mm_runner import main
    toy = make_toy_data(str(tmp_path / 'toy'), n_train=4, n_val=2, size=64)
    small = ['model.backbone.pretrained=None', 'randomness.seed=0', 'model.backbone.model_kwargs.embed_dim=16',
             'model.backbone.model_kwargs.depths=(1,1,1,1)', 'model.backbone.model_kwargs.num_heads=(1,1,2,2)',
             'model.decode_head.in_channels=[16,32,64,128]', 'model.decode_head.channels=16',
             'model.auxiliary_head.in_channels=64', 'model.auxiliary_head.channels=16', 'train_cfg.val_interval=9']

    def train(iters, *extra):
        return main('train', 'seg', [SEG_CONFIG, '--toy', toy, '--toy-size', '64', '--iters', str(iters), '--cpu',
                                     '--work-dir', str(tmp_path / 'wd'), *extra, '--cfg-options', *small])
    assert train(2) == 0
    first = tmp_path / 'wd' / 'iter_2.pth'
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in torch.serialization.get_unsafe_globals_in_checkpoint(
        str(first))
    assert train(3, '--resume', str(first)) == 0
    assert read_checkpoint_file(str(tmp_path / 'wd' / 'iter_3.pth'))['meta']['iter'] == 3
