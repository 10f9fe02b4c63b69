"""Reading checkpoint files, once, safely: every zoo entry point that takes a checkpoint file or URL comes here.

- Nothing is unpickled freely: torch checkpoints (.pth / .pt / .bin / .ckpt, zip or legacy format) load with
  `torch.load(weights_only=True)`; `.safetensors` files with safetensors. The only globals allowed beyond
  torch's own are those mmengine (mmdet / mmseg) training checkpoints carry in `meta` / `message_hub`
  (`MM_CHECKPOINT_GLOBALS`) and timm's `argparse.Namespace`, scoped to the one load; anything else is refused
  with an error naming the file and the refused globals.
- URLs are downloaded into torch hub's cache (timm's helper) and then read like a local file.
- A missing, empty, truncated, random or foreign file (an image, an archive) gets one `CheckpointFileError`
  that names the file and what is wrong, found from its first bytes before torch or safetensors sees it.

    read_checkpoint_file(path_or_url)   the loaded object (a training checkpoint dict, a state dict, ...)
    read_state_dict(path_or_url)        its state dict (`_convert.unwrap`: {'model'|'state_dict': ...}, 'module.')
    check_checkpoint_file(path)         the cheap checks alone (no tensor is read), for loaders that are not ours
"""
from __future__ import annotations

import importlib
import json
import os
import pickle
import re
import struct
import zipfile
from typing import Any, Callable, Dict, List

import numpy as np
import torch

from ._convert import unwrap

__all__ = ['CheckpointFileError', 'MM_CHECKPOINT_GLOBALS', 'is_url', 'read_checkpoint_file', 'read_state_dict',
           'check_checkpoint_file']

_EXPECTED = 'expected a torch checkpoint (.pth / .pt / .bin / .ckpt) or a .safetensors file'
# first bytes of files people pass by mistake, for the error message
_FOREIGN = [
    (b'\xff\xd8\xff', 'a JPEG image'), (b'\x89PNG\r\n\x1a\n', 'a PNG image'), (b'GIF8', 'a GIF image'),
    (b'BM', 'a BMP image'), (b'\x1f\x8b', 'a gzip archive'), (b'\x89HDF', 'an HDF5 file (Keras?)'),
    (b'\x93NUMPY', 'a NumPy .npy array'), (b'%PDF', 'a PDF document'), (b'<', 'an HTML / XML page'),
    (b'{', 'a JSON file'),
]
_ZIP_MAGIC = b'PK\x03\x04'
_PICKLE_PROTO = 0x80
_SAFETENSORS_MAX_HEADER = 100_000_000   # safetensors refuses larger headers too


class CheckpointFileError(ValueError):
    """A checkpoint file that cannot be read: missing, not a checkpoint, truncated, or refused as unsafe."""


def _history_buffer_method(obj: Any, name: str) -> Any:
    """`getattr` as mmengine checkpoints use it: HistoryBuffer pickles its statistics methods (min, max, current,
    mean) as getattr(HistoryBuffer, name). Anything else is refused: builtins.getattr is not allowed in general."""
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
    except ImportError:
        raise pickle.UnpicklingError('the checkpoint needs mmengine installed (HistoryBuffer)') from None
    if obj is HistoryBuffer and name in ('min', 'max', 'current', 'mean'):
        return getattr(obj, name)
    raise pickle.UnpicklingError(f'refused getattr({obj!r}, {name!r}): only HistoryBuffer statistics methods')


def _imported(module: str, attr: str) -> Callable[[], Any]:
    return lambda: getattr(importlib.import_module(module), attr)


def _numpy_dtypes() -> List[type]:
    """np.dtype and the classes of the numeric dtypes: unpickling np.dtype('f8') builds a Float64DType."""
    return [np.dtype] + list({type(np.dtype(c)) for c in '?bhilqpBHILQPefdgFDG'} - {np.dtype})


_MULTIARRAY = 'numpy._core.multiarray' if int(np.__version__.split('.')[0]) >= 2 else 'numpy.core.multiarray'
# global named in the pickle -> what it may load as (a function returning the object, or a list of objects the
# load needs). Exactly the globals of an mmengine 0.10 training checkpoint (tools/train_det.py / train_seg.py
# iter_N.pth, as torch.serialization.get_unsafe_globals_in_checkpoint lists them), NumPy 1.x's module names for
# older files, and timm's training-checkpoint `args` (argparse.Namespace, which timm's own loader allows too).
MM_CHECKPOINT_GLOBALS: Dict[str, Callable[[], Any]] = {
    'mmengine.logging.history_buffer.HistoryBuffer': _imported('mmengine.logging.history_buffer', 'HistoryBuffer'),
    'numpy._core.multiarray._reconstruct': _imported(_MULTIARRAY, '_reconstruct'),
    'numpy.core.multiarray._reconstruct': _imported(_MULTIARRAY, '_reconstruct'),
    'numpy._core.multiarray.scalar': _imported(_MULTIARRAY, 'scalar'),
    'numpy.core.multiarray.scalar': _imported(_MULTIARRAY, 'scalar'),
    'numpy.ndarray': lambda: np.ndarray,
    'numpy.dtype': _numpy_dtypes,
    'builtins.getattr': lambda: _history_buffer_method,
    'argparse.Namespace': _imported('argparse', 'Namespace'),
}


def is_url(path: str) -> bool:
    return bool(re.match(r'^https?://', str(path)))


def _download(url: str) -> str:
    """The local copy of `url` in torch hub's cache (downloaded on first use)."""
    from timm.models._hub import download_cached_file
    return download_cached_file(url, check_hash=False, progress=True)


def _refused(path: str, names: List[str]) -> CheckpointFileError:
    plural = 's' if len(names) > 1 else ''
    return CheckpointFileError(
        f'checkpoint {path}: refused to unpickle {", ".join(sorted(names))} (not allowed global{plural}): '
        f'zoo reads checkpoints with torch.load(weights_only=True), allowing only the globals of mmengine training '
        f'checkpoints; re-save the weights alone (torch.save(model.state_dict(), ...)) or as .safetensors')


def _sniff(path: str) -> str:
    """'zip' (torch's format), 'pickle' (torch's legacy format) or 'safetensors', from the file's first bytes;
    CheckpointFileError for a missing, empty, truncated or foreign file."""
    if not os.path.exists(path):
        raise CheckpointFileError(f'checkpoint {path} does not exist')
    if os.path.isdir(path):
        raise CheckpointFileError(f'checkpoint {path} is a directory, not a file ({_EXPECTED})')
    size = os.path.getsize(path)
    if size == 0:
        raise CheckpointFileError(f'checkpoint {path} is empty (0 bytes): not a checkpoint')
    with open(path, 'rb') as f:
        head = f.read(16)
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            raise CheckpointFileError(f'checkpoint {path} is truncated or damaged: a zip archive ({size} bytes) '
                                      f'without its end (central directory); download or save it again') from None
        if not any(n == 'data.pkl' or n.endswith('/data.pkl') for n in names):
            what = 'a NumPy .npz archive' if names and all(n.endswith('.npy') for n in names) else 'a zip archive'
            raise CheckpointFileError(f'checkpoint {path} is not a checkpoint: unsupported format ({what} without '
                                      f"torch's data.pkl; {_EXPECTED})")
        return 'zip'
    header_len = struct.unpack('<Q', head[:8])[0] if len(head) >= 9 else 0
    if head[8:9] == b'{' and header_len < _SAFETENSORS_MAX_HEADER:
        if header_len + 8 > size:
            raise CheckpointFileError(f'checkpoint {path} is truncated: its safetensors header needs '
                                      f'{header_len + 8} bytes, the file has {size}')
        with open(path, 'rb') as f:
            f.seek(8)
            try:
                header = json.loads(f.read(header_len))
            except ValueError:
                raise CheckpointFileError(f'checkpoint {path} is damaged: its safetensors header is not '
                                          f'valid JSON') from None
        end = max((v['data_offsets'][1] for k, v in header.items() if k != '__metadata__'), default=0)
        if 8 + header_len + end > size:
            raise CheckpointFileError(f'checkpoint {path} is truncated: its safetensors tensors need '
                                      f'{8 + header_len + end} bytes, the file has {size}')
        return 'safetensors'
    if head[0] == _PICKLE_PROTO:
        return 'pickle'
    for magic, what in _FOREIGN:
        if head.startswith(magic):
            raise CheckpointFileError(f'checkpoint {path} is not a checkpoint: unsupported format ({what}; '
                                      f'{_EXPECTED})')
    raise CheckpointFileError(f'checkpoint {path} is not a checkpoint: unrecognised content (first bytes '
                              f'{head[:8].hex(" ")}; {_EXPECTED})')


def _allowed_globals(path: str, kind: str) -> List[Any]:
    """The allowlist entries this file needs (torch's safe_globals form: (object, name in the pickle)); refuse
    the file if it names any global outside torch's defaults and MM_CHECKPOINT_GLOBALS. The scan reads only the
    pickle, statically; torch's weights_only unpickler still enforces the list while loading."""
    if kind != 'zip':   # the legacy format cannot be scanned up front: allow the list, torch refuses the rest
        names = list(MM_CHECKPOINT_GLOBALS)
    else:
        try:
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except (ValueError, RuntimeError, pickle.UnpicklingError) as e:
            raise CheckpointFileError(f'checkpoint {path} is not a checkpoint: {_first_line(e)}') from None
        refused = [n for n in names if n not in MM_CHECKPOINT_GLOBALS]
        if refused:
            raise _refused(path, refused)
    out: List[Any] = []
    for name in names:
        try:
            obj = MM_CHECKPOINT_GLOBALS[name]()
        except ImportError:
            if kind == 'zip':
                raise CheckpointFileError(f'checkpoint {path} holds {name}, which needs '
                                          f'{name.split(".")[0]} installed to be read') from None
            continue
        # the pickle's name for the object (NumPy 1.x names, the getattr stand-in), then the objects it builds
        out += [(obj[0], name)] + obj[1:] if isinstance(obj, list) else [(obj, name)]
    return out


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f'{type(e).__name__}: {text.splitlines()[0] if text else ""}'.rstrip(': ')


def _torch_load(path: str, kind: str, map_location: Any) -> Any:
    allowed = _allowed_globals(path, kind)
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        names = re.findall(r'GLOBAL (\S+)', str(e))
        if names:
            raise _refused(path, names) from None
        detail = _unpickler_detail(e)
        if 'truncated' in detail:
            raise CheckpointFileError(f'checkpoint {path} is truncated ({detail})') from None
        if kind == 'pickle':
            raise CheckpointFileError(f'checkpoint {path} is not a checkpoint: a pickle that torch.save did not '
                                      f'write ({detail})') from None
        raise CheckpointFileError(f'checkpoint {path} cannot be read safely: {detail}') from None
    except EOFError:
        raise CheckpointFileError(f'checkpoint {path} is truncated (the data ends early)') from None
    except RuntimeError as e:
        if 'magic number' in str(e):
            raise CheckpointFileError(f'checkpoint {path} is not a checkpoint: a pickle that torch.save did not '
                                      f'write ({_EXPECTED})') from None
        if 'unexpected EOF' in str(e):
            raise CheckpointFileError(f'checkpoint {path} is truncated ({_first_line(e)})') from None
        if 'PytorchStreamReader' in str(e):
            raise CheckpointFileError(f'checkpoint {path} is truncated or damaged: {_first_line(e)}') from None
        raise CheckpointFileError(f'checkpoint {path} cannot be read: {_first_line(e)}') from None


def _unpickler_detail(e: pickle.UnpicklingError) -> str:
    """The reason in torch's weights_only error (its first lines are a general note about weights_only)."""
    text = str(e)
    if 'WeightsUnpickler error:' in text:
        text = text.split('WeightsUnpickler error:', 1)[1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def check_checkpoint_file(path: str) -> str:
    """Raise CheckpointFileError if `path` is missing, not a checkpoint, truncated (by its own size records) or
    names a global torch's safe load would refuse; reads no tensor data of a zip or safetensors file (a legacy
    torch file, which cannot be scanned, is loaded). Returns the format."""
    path = os.path.expanduser(str(path))
    kind = _sniff(path)
    if kind == 'zip':
        _allowed_globals(path, kind)
    elif kind == 'pickle':
        _torch_load(path, kind, 'cpu')
    return kind


def read_checkpoint_file(path_or_url: str, map_location: Any = 'cpu') -> Any:
    """The object in a checkpoint file or URL, read without unpickling anything but tensors, plain containers
    and the mmengine checkpoint globals (see module doc)."""
    path = _download(path_or_url) if is_url(path_or_url) else os.path.expanduser(str(path_or_url))
    kind = _sniff(path)
    if kind == 'safetensors':
        import safetensors.torch
        device = map_location if isinstance(map_location, str) else 'cpu'
        try:
            return safetensors.torch.load_file(path, device=device)
        except Exception as e:  # safetensors raises its own SafetensorError for damaged files
            raise CheckpointFileError(f'checkpoint {path} is damaged: {_first_line(e)}') from None
    return _torch_load(path, kind, map_location)


def read_state_dict(path_or_url: str) -> Dict[str, torch.Tensor]:
    """The state dict in a checkpoint file or URL: unwrapped from {'model'|'state_dict': ...}, 'module.' dropped."""
    ckpt = read_checkpoint_file(path_or_url)
    if not isinstance(ckpt, dict):
        raise CheckpointFileError(f'checkpoint {path_or_url} holds a {type(ckpt).__name__}, not a state dict')
    return unwrap(ckpt)
