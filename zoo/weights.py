"""Released weights: the checkpoints/manifest.csv of every pretrained tag, and fetch / verify / convert.

tools/weights.py is the command line over these functions.

The manifest has one row per pretrained tag of every registered zoo model. The columns the model's pretrained_cfg
also holds (url, license, input_size) are generated from the registry (`write_manifest`) and a test holds the two
to each other; the others are curated in the committed CSV and kept when it is regenerated: mirrors (other
places the same file was published, tried in order after url), file (the name on disk), layout (authors' / timm
/ mmdet: what the family's checkpoint filter reads), top1 (the authors' reported ImageNet top-1), sha256 (of a
verified download; 'unverified' until someone has downloaded the file and checked it), notes.

Files land in $ZOO_CHECKPOINTS or checkpoints/ (ignored by git).
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import torch

from .train import UsageError
from .train.checkpoint import save_atomic

__all__ = ['MANIFEST', 'COLUMNS', 'checkpoint_dir', 'registry_rows', 'read_manifest', 'write_manifest',
           'manifest_problems', 'fetch', 'sha256_of', 'verify', 'convert']

MANIFEST = Path(__file__).resolve().parents[1] / 'checkpoints' / 'manifest.csv'
COLUMNS = ('tag', 'url', 'mirrors', 'file', 'layout', 'license', 'input_size', 'top1', 'sha256', 'notes')
GENERATED = ('url', 'license', 'input_size')  # from the pretrained_cfg; the other columns are curated
UNVERIFIED = 'unverified'
_WEIGHT_SUFFIXES = ('.safetensors', '.pth.tar', '.pth', '.pt', '.bin')
_GENERIC_NAMES = ('model.safetensors', 'pytorch_model.bin', 'content')


def checkpoint_dir() -> Path:
    """Where fetched files go: $ZOO_CHECKPOINTS, else the repository's checkpoints/."""
    return Path(os.environ.get('ZOO_CHECKPOINTS') or MANIFEST.parent)


def _hf_url(hf_hub_id: str) -> str:
    return f'https://huggingface.co/{hf_hub_id}/resolve/main/model.safetensors'


def _size_text(input_size) -> str:
    h, w = input_size[-2:]
    return str(h) if h == w else f'{h}x{w}'


def registry_rows() -> Dict[str, Dict[str, str]]:
    """tag -> the manifest columns the registry knows (url, license, input_size, and defaults for the rest)."""
    import timm
    from timm.models import get_pretrained_cfg

    rows = {}
    for tag in timm.list_pretrained('zoo_*'):
        c = get_pretrained_cfg(tag)
        url = c.url or (_hf_url(c.hf_hub_id) if c.hf_hub_id else '')
        name = os.path.basename(urllib.parse.urlparse(url).path)
        suffix = next((s for s in _WEIGHT_SUFFIXES if name.endswith(s)), '')
        if not suffix or name in _GENERIC_NAMES:
            name = tag + ('.safetensors' if c.hf_hub_id else '.pth')
        rows[tag] = dict(tag=tag, url=url, mirrors='', file=name, layout='timm' if c.hf_hub_id else 'authors',
                         license=c.license or '', input_size=_size_text(c.input_size), top1=_paper_top1(tag, c),
                         sha256=UNVERIFIED, notes='' if url else 'no weights released')
    return rows


def _paper_top1(tag: str, cfg) -> str:
    """The paper table's top-1 for the tag's model at its input size (models with one tag only)."""
    import timm
    from .profile.paper import paper_table

    name = tag.split('.')[0]
    if len(timm.list_pretrained(name + '.*')) != 1:
        return ''
    row = paper_table().get(name, {})
    return row.get('top1', '') if row.get('img_size') == str(cfg.input_size[-1]) else ''


def read_manifest(path: Optional[os.PathLike] = None) -> Dict[str, Dict[str, str]]:
    path = Path(path or MANIFEST)
    if not path.is_file():
        raise UsageError(f'{path}: no manifest (tools/weights.py manifest --write creates it)')
    with open(path, newline='') as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise UsageError(f'{path}: columns {reader.fieldnames} are not {list(COLUMNS)}')
        return {row['tag']: row for row in reader}


def merged_manifest(existing: Optional[Dict[str, Dict[str, str]]] = None) -> Dict[str, Dict[str, str]]:
    """The registry's rows with the curated columns of `existing` kept (rows of unregistered tags dropped)."""
    existing = existing or {}
    rows = {}
    for tag, row in sorted(registry_rows().items()):
        if tag in existing:
            row = {**existing[tag], **{k: row[k] for k in GENERATED}}
        rows[tag] = row
    return rows


def write_manifest(path: Optional[os.PathLike] = None) -> Dict[str, Dict[str, str]]:
    path = Path(path or MANIFEST)
    rows = merged_manifest(read_manifest(path) if path.is_file() else None)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator='\n')
    writer.writeheader()
    writer.writerows(rows.values())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buf.getvalue())
    return rows


def manifest_problems(manifest: Optional[Dict[str, Dict[str, str]]] = None) -> List[str]:
    """Where the manifest and the registry's pretrained_cfgs disagree (empty when they agree)."""
    manifest = read_manifest() if manifest is None else manifest
    registry = registry_rows()
    problems = [f'{t}: registered, no manifest row' for t in registry if t not in manifest]
    problems += [f'{t}: manifest row of no registered tag' for t in manifest if t not in registry]
    for tag in sorted(set(registry) & set(manifest)):
        for col in GENERATED:
            if manifest[tag][col] != registry[tag][col]:
                problems.append(f'{tag}: {col} {manifest[tag][col]!r} in the manifest, '
                                f'{registry[tag][col]!r} in its pretrained_cfg')
        sha = manifest[tag]['sha256']
        if sha != UNVERIFIED and (len(sha) != 64 or any(ch not in '0123456789abcdef' for ch in sha)):
            problems.append(f'{tag}: sha256 {sha!r} is neither 64 hex digits nor {UNVERIFIED!r}')
    return problems


def manifest_row(tag: str, manifest: Optional[Dict[str, Dict[str, str]]] = None) -> Dict[str, str]:
    manifest = read_manifest() if manifest is None else manifest
    if tag not in manifest:
        close = [t for t in manifest if t.split('.')[0] == tag]
        if len(close) == 1:
            return manifest[close[0]]
        raise UsageError(f'unknown tag {tag!r}' + (f' (tags: {", ".join(close)})' if close else
                                                   ' (tools/weights.py list shows them)'))
    return manifest[tag]


# --- fetch -------------------------------------------------------------------------------------------------
def sha256_of(path: os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            h.update(block)
    return h.hexdigest()


def _download(url: str, dest: Path, progress: bool = True, timeout: float = 30.) -> None:
    """url -> dest, resuming a partial dest.part with an HTTP Range request; dest appears only when complete."""
    from tqdm.auto import tqdm

    part = dest.with_name(dest.name + '.part')
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={'User-Agent': 'zoo-weights', **(
        {'Range': f'bytes={have}-'} if have else {})})
    host = urllib.parse.urlparse(url).hostname or url
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part file already holds the whole file
            os.replace(part, dest)
            return
        raise UsageError(f'{host}: HTTP {e.code} {e.reason} for {url}') from None
    except (urllib.error.URLError, OSError) as e:
        raise UsageError(f'cannot reach {host}: {getattr(e, "reason", e)}') from None
    with response:
        resumed = have and response.status == 206
        length = int(response.headers.get('Content-Length') or 0)
        total = (have if resumed else 0) + length or None
        with open(part, 'ab' if resumed else 'wb') as f, tqdm(
                total=total, initial=have if resumed else 0, unit='B', unit_scale=True, unit_divisor=1024,
                desc=dest.name, disable=not progress) as bar:
            try:
                for block in iter(lambda: response.read(1 << 20), b''):
                    f.write(block)
                    bar.update(len(block))
            except OSError as e:
                raise UsageError(f'cannot reach {host}: {e} (interrupted; run fetch again to resume)') from None
    if total is not None and part.stat().st_size != total:
        raise UsageError(f'{host}: got {part.stat().st_size} of {total} bytes of {dest.name} (run fetch again)')
    os.replace(part, dest)


def fetch(tag: str, dest_dir: Optional[os.PathLike] = None, progress: bool = True,
          manifest: Optional[Dict[str, Dict[str, str]]] = None) -> Path:
    """Download a tag's file (url, then each mirror) into dest_dir, checking the manifest's sha256 when known."""
    row = manifest_row(tag, manifest)
    urls = [u for u in [row['url'], *row['mirrors'].split()] if u]
    if not urls:
        raise UsageError(f'{row["tag"]}: no weights released ({row["notes"] or "no url"})')
    dest = Path(dest_dir or checkpoint_dir()) / row['file']
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    if not dest.exists():
        for url in urls:
            try:
                _download(url, dest, progress)
                break
            except UsageError as e:
                errors.append(str(e))
        else:
            raise UsageError('; '.join(errors))
    if row['sha256'] != UNVERIFIED:
        digest = sha256_of(dest)
        if digest != row['sha256']:
            bad = dest.with_name(dest.name + '.bad')
            os.replace(dest, bad)
            raise UsageError(f'{dest.name}: sha256 {digest} is not the manifest\'s {row["sha256"]} (kept as {bad})')
    return dest


# --- verify ------------------------------------------------------------------------------------------------
def _meta_model(name: str, **kwargs):
    """The model with its parameters on the meta device (shapes only, no memory, no init), for matching."""
    import timm
    from torch.overrides import TorchFunctionMode
    from torch.utils._device import _device_constructors  # the factory functions torch.device('meta') redirects

    class MetaTensors(TorchFunctionMode):
        # index / schedule helpers (arange, linspace) stay real: models call .item() / .tolist() on them
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = getattr(func, '__name__', '')
            if name.endswith('_') and not name.startswith('_') and args and \
                    isinstance(args[0], torch.Tensor) and args[0].is_meta:
                return args[0]  # in-place init on a meta tensor (trunc_normal_, zero_, ...): nothing to do
            if func in _device_constructors() and kwargs.get('device') is None and \
                    func not in (torch.arange, torch.linspace):
                kwargs['device'] = 'meta'
            return func(*args, **kwargs)

    with MetaTensors():
        return timm.create_model(name, **kwargs)


def _fit(state_dict, name: str, **kwargs):
    """(fits, exact) of a checkpoint for the model `name`: fits = every model tensor found (a classifier of another
    size aside) and none left over; exact = fits with nothing resampled."""
    from .models._builder import family_filter
    from .models._partial import partial_state_dict

    model = _meta_model(name, **kwargs)
    _, report = partial_state_dict(dict(state_dict), model, family_filter(model))
    fits = not report.ignored and all(k.startswith('head.') for k, _ in report.new)
    return fits, fits and not report.resampled


def verify(path: os.PathLike, manifest: Optional[Dict[str, Dict[str, str]]] = None,
           candidates: Optional[Iterable[str]] = None) -> Dict[str, object]:
    """Which zoo models a checkpoint file fits (by key names and shapes after each family's filter), its sha256,
    and whether that matches the manifest. Candidates named by the manifest (same file name or sha256) are tried
    first; an exact fit among them ends the search."""
    import zoo
    from .models._load import read_state_dict

    path = Path(path)
    manifest = read_manifest() if manifest is None else manifest
    digest = sha256_of(path)
    state_dict = read_state_dict(str(path))
    named = [r['tag'] for r in manifest.values() if r['file'] == path.name or r['sha256'] == digest]
    models = list(candidates) if candidates is not None else zoo.list_models()
    hinted = [m for m in dict.fromkeys(t.split('.')[0] for t in named) if m in models]
    exact, resampled = [], []
    for name in hinted + [m for m in models if m not in hinted]:
        try:
            fits, is_exact = _fit(state_dict, name)
        except Exception:  # a filter that cannot read this layout: not a fit
            continue
        if fits:
            (exact if is_exact else resampled).append(name)
        if exact and name == (hinted or [None])[-1]:
            break
    tags = [t for t in manifest if t.split('.')[0] in exact]
    verified = [t for t in tags if manifest[t]['sha256'] == digest]
    if not tags:
        status = 'fits no model with a manifest row' + (' exactly (only with resampling)' if resampled else '')
    elif verified:
        status = f'sha256 matches the manifest row of {", ".join(verified)}'
    elif any(manifest[t]['sha256'] not in (UNVERIFIED, digest) for t in tags):
        status = 'sha256 differs from the manifest (another file, or a corrupt download)'
    else:
        status = 'no verified sha256 in the manifest for these tags (unverified)'
    return dict(file=str(path), sha256=digest, tensors=len(state_dict), fits=exact, fits_resampled=resampled,
                tags=tags, status=status)


# --- convert -----------------------------------------------------------------------------------------------
FORMATS = ('timm', 'safetensors', 'hf')


def convert(path: os.PathLike, model_name: str, to: str, out_dir: os.PathLike, **model_kwargs) -> List[Path]:
    """Read a checkpoint in any layout the family's filter reads, load it strictly into `model_name` (with
    `model_kwargs`) and write the model's own (timm-layout) weights: `timm` -> OUT/<model>.pth, `safetensors` ->
    OUT/<model>.safetensors, `hf` -> OUT/model.safetensors + OUT/config.json (timm's hub config: loads with
    timm.create_model('local-dir:OUT') or pretrained_cfg_overlay=dict(file='OUT/model.safetensors'))."""
    import timm
    from timm.models import is_model

    if to not in FORMATS:
        raise UsageError(f'--to {to!r}: one of {", ".join(FORMATS)}')
    if not is_model(model_name):
        raise UsageError(f'unknown model {model_name!r}')
    if not os.path.isfile(path):
        raise UsageError(f'{path}: no such checkpoint file')
    overlay = dict(file=os.fspath(path))
    if 'num_classes' in model_kwargs:
        overlay['num_classes'] = model_kwargs['num_classes']
    model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=overlay, **model_kwargs)
    # independent, contiguous tensors: safetensors refuses views that share storage
    state_dict = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if to == 'timm':
        written = [out / f'{model_name}.pth']
        save_atomic(state_dict, str(written[0]))
        return written
    from safetensors.torch import save_file

    if to == 'safetensors':
        written = [out / f'{model_name}.safetensors']
        save_file(state_dict, written[0])
        return written
    from timm.models._hub import save_config_for_hf

    save_file(state_dict, out / 'model.safetensors', metadata={'format': 'pt'})
    save_config_for_hf(model, out / 'config.json')
    return [out / 'model.safetensors', out / 'config.json']


def list_rows(manifest: Optional[Dict[str, Dict[str, str]]] = None,
              dest_dir: Optional[os.PathLike] = None) -> List[Tuple[str, ...]]:
    """(tag, layout, input size, top-1, license, present locally) for `tools/weights.py list`."""
    manifest = read_manifest() if manifest is None else manifest
    where = Path(dest_dir or checkpoint_dir())
    return [(r['tag'], r['layout'], r['input_size'], r['top1'] or '-', r['license'],
             'yes' if (where / r['file']).is_file() else '-') for r in manifest.values()]

