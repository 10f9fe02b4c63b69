"""Host arguments for hybrids that put a global mixer in some blocks and the host's own mixer in the rest.

Agent-Swin and InLine-Swin are the Swin host with a global (agent / InLine) mixer in the first
`global_blocks[i]` blocks of stage i and Swin window attention elsewhere (the authors' ATTN_TYPE strings:
'AAAB' = (all, all, all, 0), 'AAMB2' = (all, all, 2, 0)).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Union

from timm.layers import to_2tuple

__all__ = ['hybrid_swin_args']


def hybrid_swin_args(depths: Sequence[int], global_blocks: Sequence[int], global_layer: Callable,
                     global_args: Optional[Sequence[Dict[str, Any]]] = None, img_size: Union[int, Sequence[int]] = 224,
                     patch_size: int = 4, window_size: Optional[int] = None) -> Dict[str, Any]:
    """Swin kwargs (`window_size`, `mixer_args`) for a global/window hybrid built for `img_size`.

    Global blocks get the stage-1 map size as their window, which the host clamps to each stage's map, so
    they see the whole map (and size their position terms for it), as the authors' WINDOW_SIZE = img / 4.
    Window blocks use `window_size`, by default the authors' max(7, (img / 4) // 8).
    """
    feat = tuple(s // patch_size for s in to_2tuple(img_size))
    window = window_size or max(7, min(feat) // 8)
    global_args = global_args or [{}] * len(depths)
    mixer_args = [
        [dict(mixer_layer=global_layer, window_size=feat, **global_args[i]) if j < global_blocks[i] else {}
         for j in range(depth)]
        for i, depth in enumerate(depths)
    ]
    return dict(img_size=img_size, patch_size=patch_size, depths=tuple(depths), window_size=window,
                mixer_args=mixer_args)
