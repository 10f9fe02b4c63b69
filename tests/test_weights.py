"""checkpoints/manifest.csv against the registry, tools/weights.py (fetch from a local server with resume and
hash check, verify, convert to timm / safetensors / hf and load back exactly), and zoo.load_partial (a Swin
checkpoint into Agent-Swin / InLine-Swin and into Swin with another window size). Offline: every checkpoint is
written by the test in the family's authors' layout (Swin: swin.to_official_layout; NAT: the stored fixture)."""
import http.server
import importlib.util
import logging
import shutil
import threading
from pathlib import Path

import pytest
import timm
import torch
from timm.layers import resize_rel_pos_bias_table

import zoo
from zoo import weights
from zoo.models import swin
from zoo.models._convert import CheckpointMismatchError
from zoo.train import UsageError

ROOT = Path(__file__).resolve().parents[1]
SWIN = dict(img_size=64, embed_dim=8, depths=(2, 2), num_heads=(1, 2), num_classes=10)
AGENT = dict(SWIN, global_blocks=(1, 0), agent_num=(9, 16))
INLINE = dict(SWIN, global_blocks=(1, 0))


def _tool():
    spec = importlib.util.spec_from_file_location('weights_tool', ROOT / 'tools' / 'weights.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def swin_parent():
    """A tiny Swin with random weights and its checkpoint in the official release's layout."""
    torch.manual_seed(0)
    model = timm.create_model('zoo_swin_tiny', **SWIN).eval()
    return model, swin.to_official_layout(model)


# --- manifest ----------------------------------------------------------------------------------------------
def test_manifest_matches_every_pretrained_cfg():
    assert weights.manifest_problems() == []
    manifest = weights.read_manifest()
    assert set(manifest) == set(timm.list_pretrained('zoo_*'))
    assert {r['sha256'] for r in manifest.values()} == {'unverified'}  # no download was possible: no hashes
    nat = manifest['zoo_nat_tiny.in1k']
    assert nat['url'].startswith('https://shi-labs.com/') and 'uoregon.edu' in nat['mirrors']


def test_manifest_problems_found_both_ways():
    manifest = {k: dict(v) for k, v in weights.read_manifest().items()}
    manifest['zoo_swin_tiny.ms_in1k']['license'] = 'apache-2.0'
    manifest['zoo_swin_small.ms_in1k']['input_size'] = '288'
    manifest['zoo_swin_base.ms_in1k']['sha256'] = 'abc'
    del manifest['zoo_nat_mini.in1k']
    manifest['zoo_gone.in1k'] = dict(manifest['zoo_nat_tiny.in1k'], tag='zoo_gone.in1k')
    problems = '\n'.join(weights.manifest_problems(manifest))
    for text in ("zoo_swin_tiny.ms_in1k: license 'apache-2.0' in the manifest, 'mit' in its pretrained_cfg",
                 'zoo_swin_small.ms_in1k: input_size', 'zoo_swin_base.ms_in1k: sha256',
                 'zoo_nat_mini.in1k: registered, no manifest row', 'zoo_gone.in1k: manifest row of no registered tag'):
        assert text in problems


def test_regenerating_the_manifest_changes_nothing(tmp_path):
    """The committed CSV is what `tools/weights.py manifest --write` produces from it (curated columns kept)."""
    copy = tmp_path / 'manifest.csv'
    shutil.copy(weights.MANIFEST, copy)
    weights.write_manifest(copy)
    assert copy.read_text() == weights.MANIFEST.read_text()


def test_manifest_check_command(capsys):
    assert _tool().main(['manifest', '--check']) == 0 and capsys.readouterr().out == ''


def test_list_shows_present_files(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('ZOO_CHECKPOINTS', str(tmp_path))
    (tmp_path / 'swin_tiny_patch4_window7_224.pth').write_bytes(b'x')
    assert _tool().main(['list', 'zoo_swin_t*']) == 0
    line = capsys.readouterr().out.splitlines()[1].split()
    assert line == ['zoo_swin_tiny.ms_in1k', 'authors', '224', '81.2', 'mit', 'yes']


# --- fetch -------------------------------------------------------------------------------------------------
class _RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves `payload` at any path, honouring `Range: bytes=N-` (206), and records the ranges asked for."""
    payload = b''
    ranges = []

    def do_GET(self):
        start = 0
        if self.headers.get('Range'):
            start = int(self.headers['Range'].split('=')[1].rstrip('-'))
        type(self).ranges.append(start)
        body = self.payload[start:]
        self.send_response(206 if start else 200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.HTTPServer(('127.0.0.1', 0), _RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{httpd.server_port}'
    httpd.shutdown()


def _manifest_for(url, sha256='unverified', mirrors=''):
    return {'zoo_x.t': dict(tag='zoo_x.t', url=url, mirrors=mirrors, file='x.pth', layout='authors', license='mit',
                            input_size='224', top1='', sha256=sha256, notes='')}


def test_fetch_resumes_and_checks_the_hash(tmp_path, server):
    payload = bytes(range(256)) * 4096
    _RangeHandler.payload, _RangeHandler.ranges = payload, []
    (tmp_path / 'x.pth.part').write_bytes(payload[:300000])  # an interrupted download
    digest = weights.hashlib.sha256(payload).hexdigest()
    dest = weights.fetch('zoo_x.t', tmp_path, progress=False, manifest=_manifest_for(server + '/x.pth', digest))
    assert dest.read_bytes() == payload and _RangeHandler.ranges == [300000]
    assert not (tmp_path / 'x.pth.part').exists()
    # a wrong hash in the manifest: refused, the file set aside
    with pytest.raises(UsageError, match='sha256 .* is not the manifest'):
        weights.fetch('zoo_x.t', tmp_path, progress=False, manifest=_manifest_for(server + '/x.pth', '0' * 64))
    assert (tmp_path / 'x.pth.bad').exists() and not dest.exists()


def test_fetch_tries_the_mirrors(tmp_path, server):
    _RangeHandler.payload, _RangeHandler.ranges = b'weights', []
    manifest = _manifest_for('http://127.0.0.1:9/x.pth', mirrors=server + '/x.pth')
    assert weights.fetch('zoo_x.t', tmp_path, progress=False, manifest=manifest).read_bytes() == b'weights'


def test_fetch_without_network_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(weights, 'read_manifest', lambda path=None: _manifest_for('http://127.0.0.1:9/x.pth'))
    assert _tool().main(['fetch', 'zoo_x.t', '--dir', str(tmp_path), '--no-progress']) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: cannot reach 127.0.0.1: ') and err.count('\n') == 1


# --- verify ------------------------------------------------------------------------------------------------
def test_verify_finds_the_model_and_reports_the_hash(tmp_path, capsys):
    torch.manual_seed(0)
    path = tmp_path / 'shvit_s1.pth'  # the manifest's file name for zoo_shvit_s1.in1k: tried first
    torch.save(timm.create_model('zoo_shvit_s1').state_dict(), path)
    r = weights.verify(path)
    assert r['fits'] == ['zoo_shvit_s1'] and r['tags'] == ['zoo_shvit_s1.in1k'] and 'unverified' in r['status']
    manifest = {k: dict(v) for k, v in weights.read_manifest().items()}
    manifest['zoo_shvit_s1.in1k']['sha256'] = r['sha256']
    assert 'matches' in weights.verify(path, manifest)['status']
    manifest['zoo_shvit_s1.in1k']['sha256'] = '0' * 64
    assert 'differs' in weights.verify(path, manifest)['status']
    # a checkpoint of another model fits nothing among the candidates
    assert weights.verify(path, candidates=['zoo_shvit_s2'])['fits'] == []
    assert _tool().main(['verify', str(path)]) == 0
    assert 'fits: zoo_shvit_s1 (tags: zoo_shvit_s1.in1k)' in capsys.readouterr().out


# --- convert -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize('to', ['timm', 'safetensors', 'hf'])
@torch.no_grad()
def test_convert_authors_swin_loads_back_exactly(tmp_path, swin_parent, to):
    model, official = swin_parent
    src = tmp_path / 'swin_official.pth'
    torch.save(official, src)
    written = weights.convert(src, 'zoo_swin_tiny', to, tmp_path / 'out', **SWIN)
    x = torch.randn(2, 3, 64, 64)
    ref = model(x)
    weights_file = written[0]
    assert weights_file.name == {'timm': 'zoo_swin_tiny.pth', 'safetensors': 'zoo_swin_tiny.safetensors',
                                 'hf': 'model.safetensors'}[to]
    loaded = timm.create_model('zoo_swin_tiny', pretrained=True, **SWIN,
                               pretrained_cfg_overlay=dict(file=str(weights_file), num_classes=10)).eval()
    assert torch.equal(loaded(x), ref)
    if to == 'hf':  # timm's local-folder loading: config.json rebuilds the tiny model, weights from the folder
        loaded = timm.create_model(f'local-dir:{tmp_path / "out"}', pretrained=True).eval()
        assert torch.equal(loaded(x), ref)


@torch.no_grad()
def test_convert_authors_nat_fixture(tmp_path):
    """The stored NAT fixture (SHI-Labs' key names): converted, it gives the authors' outputs, bit for bit as the
    model loaded from their file."""
    fx = torch.load(ROOT / 'tests' / 'fixtures' / 'nat_authors_tiny.pt', weights_only=True)
    c = fx['config']
    kwargs = dict(embed_dim=c['embed_dim'], mlp_ratio=c['mlp_ratio'], depths=c['depths'], num_heads=c['num_heads'],
                  kernel_size=c['kernel_size'], dilations=c['dilations'], layer_scale=c['layer_scale'],
                  num_classes=c['num_classes'])
    src = tmp_path / 'nat_authors.pth'
    torch.save({'model': fx['model']}, src)
    out, = weights.convert(src, 'zoo_dinat_mini', 'safetensors', tmp_path, **kwargs)

    def load(path):
        return timm.create_model('zoo_dinat_mini', pretrained=True, **kwargs, pretrained_cfg_overlay=dict(
            file=str(path), num_classes=c['num_classes'])).eval()

    y = load(out)(fx['input'])
    torch.testing.assert_close(y, fx['output'], atol=1e-4, rtol=0)
    assert torch.equal(y, load(src)(fx['input']))


_SWIN_FX = dict(num_classes=10, embed_dim=8, depths=(2, 1, 4, 1), num_heads=(1, 2, 2, 4), global_blocks=(2, 1, 2, 0))
_PVT_FX = dict(num_classes=10, embed_dim=(16, 32, 48, 64), num_heads=(1, 2, 2, 4), depths=(1, 2, 1, 1), img_size=64)


@pytest.mark.parametrize('name, fixture, kwargs', [
    ('zoo_agent_swin_base', 'agent_swin_tiny_cfg.pth', _SWIN_FX),
    ('zoo_inline_swin_base', 'inline_swin_tiny_cfg.pth', _SWIN_FX),
    ('zoo_agent_pvt_tiny', 'agent_pvt_tiny_cfg.pth', _PVT_FX),
    ('zoo_inline_pvt_tiny', 'inline_pvt_tiny_cfg.pth', _PVT_FX),
])
@torch.no_grad()
def test_convert_authors_fixtures_to_hf(tmp_path, name, fixture, kwargs):
    """The stored authors'-code fixtures (tests/test_agent.py, test_inline.py) -> an hf folder that timm's
    local-dir loading rebuilds (tiny config from config.json) with the authors' outputs."""
    path = ROOT / 'tests' / 'fixtures' / fixture
    fx = torch.load(path, weights_only=True)
    weights.convert(path, name, 'hf', tmp_path, **kwargs)
    model = timm.create_model(f'local-dir:{tmp_path}', pretrained=True).eval()
    y = model(fx['input'].float() / 32)
    torch.testing.assert_close(y, fx['output'], atol=1e-4, rtol=0)
    direct = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path), num_classes=10),
                               **kwargs).eval()
    assert torch.equal(y, direct(fx['input'].float() / 32))


def test_convert_errors_are_one_line(tmp_path, swin_parent, capsys):
    src = tmp_path / 'swin_official.pth'
    torch.save(swin_parent[1], src)
    tool = _tool()
    assert tool.main(['convert', str(tmp_path / 'missing.pth'), '--model', 'zoo_swin_tiny', '--to', 'timm',
                      str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith('error: ')
    assert tool.main(['convert', str(src), '--model', 'zoo_nope', '--to', 'timm', str(tmp_path)]) == 2
    assert "error: unknown model 'zoo_nope'" in capsys.readouterr().err


# --- load_partial ------------------------------------------------------------------------------------------
def _assert_loaded_equal(model, parent, report):
    own, theirs = model.state_dict(), parent.state_dict()
    for k in report.loaded:
        assert torch.equal(own[k], theirs[k]), k


@pytest.mark.parametrize('name, kwargs, new_params', [
    ('zoo_agent_swin_tiny', AGENT, {'an_bias', 'na_bias', 'ah_bias', 'aw_bias', 'ha_bias', 'wa_bias', 'dwc.weight',
                                    'dwc.bias'}),
    ('zoo_inline_swin_tiny', INLINE, {'residual.0.weight', 'residual.0.bias', 'residual.2.weight',
                                      'residual.2.bias'}),
])
def test_swin_checkpoint_into_agent_and_inline_swin(swin_parent, name, kwargs, new_params):
    parent, official = swin_parent
    torch.manual_seed(1)
    model = timm.create_model(name, **kwargs)
    report = zoo.load_partial(model, official)
    # the global mixer of stage 0 block 0 is new; its qkv / proj and every other block come from Swin
    new = {k for k, _ in report.new}
    prefix = 'stages.0.blocks.0.attn.'
    assert {k[len(prefix):] for k in new if k.startswith(prefix)} <= new_params and new
    assert all(k.startswith(prefix) for k in new)
    assert {prefix + 'qkv.weight', prefix + 'proj.weight', 'stem.proj.weight', 'head.fc.weight',
            'stages.1.blocks.1.attn.rel_pos.relative_position_bias_table'} <= set(report.loaded)
    assert report.ignored == [prefix + 'rel_pos.relative_position_bias_table'] and report.resampled == []
    assert len(report.loaded) + len(report.new) == len(model.state_dict())
    _assert_loaded_equal(model, parent, report)
    text = str(report)
    assert f'partial load into {name}' in text and 'newly initialised: ' in text and '(not in the checkpoint)' in text


def test_window_7_checkpoint_into_window_12_resamples(swin_parent, tmp_path):
    parent, official = swin_parent
    path = tmp_path / 'swin_w7.pth'
    torch.save(official, path)
    model = timm.create_model('zoo_swin_tiny', **dict(SWIN, window_size=12))
    report = zoo.load_partial(model, path)
    key = 'stages.0.blocks.0.attn.rel_pos.relative_position_bias_table'
    assert (key, (169, 1), (529, 1)) in report.resampled and report.new == [] and report.ignored == []
    assert len(report.resampled) == 4  # stage 1's 8x8 map clamps its window to 8: resampled too
    expected = resize_rel_pos_bias_table(parent.state_dict()[key], new_window_size=(12, 12), new_bias_shape=(529, 1))
    assert torch.equal(model.state_dict()[key], expected)
    _assert_loaded_equal(model, parent, report)
    assert f'{key} [169, 1] -> [529, 1]' in str(report)


def test_partial_through_timm_create_model(swin_parent, tmp_path, caplog):
    """pretrained_cfg_overlay=dict(file=..., strict=False) does the same; strict stays the default."""
    parent, official = swin_parent
    path = tmp_path / 'swin.pth'
    torch.save(official, path)
    with pytest.raises(CheckpointMismatchError):
        timm.create_model('zoo_agent_swin_tiny', pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **AGENT)
    with caplog.at_level(logging.WARNING):
        model = timm.create_model('zoo_agent_swin_tiny', pretrained=True, **AGENT,
                                  pretrained_cfg_overlay=dict(file=str(path), strict=False, num_classes=10))
    assert 'partial load into zoo_agent_swin_tiny' in caplog.text and 'an_bias' in caplog.text
    report = zoo.load_partial(timm.create_model('zoo_agent_swin_tiny', **AGENT), official)
    _assert_loaded_equal(model, parent, report)
    assert 'strict' not in model.pretrained_cfg


def test_authors_pvt_layout_into_agent_pvt_at_another_size():
    """A checkpoint in the authors' PVT layout (the InLine-PVT fixture: patch_embed{i}, pos_embed{i}, block{i}.j,
    attn.q + attn.kv) into Agent-PVT built for 96 px: renamed and fused by the PVT filter, position embeddings
    resampled, the agent terms new, InLine's own terms ignored."""
    path = ROOT / 'tests' / 'fixtures' / 'inline_pvt_tiny_cfg.pth'
    model = timm.create_model('zoo_agent_pvt_tiny', **dict(_PVT_FX, img_size=96))
    report = zoo.load_partial(model, path)
    assert [k for k, _, _ in report.resampled] == ['stem.pos_embed'] + [
        f'stages.{i}.downsample.pos_embed' for i in (1, 2, 3)]
    assert ('stem.pos_embed', (1, 256, 16), (1, 576, 16)) in report.resampled
    assert {'stages.0.blocks.0.attn.qkv.weight', 'stages.3.blocks.0.mlp.fc1.weight'} <= set(report.loaded)
    assert {k.rsplit('.', 1)[-1] for k, _ in report.new} == {'an_bias', 'na_bias', 'ah_bias', 'aw_bias', 'ha_bias',
                                                             'wa_bias', 'weight', 'bias'}
    assert all('.attn.' in k for k, _ in report.new)
    assert report.ignored and all('.attn.residual.' in k for k in report.ignored)
