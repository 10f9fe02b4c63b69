"""Host arguments for hybrids that put a global mixer in some blocks and the host's own mixer in the rest.

Agent-Swin and InLine-Swin are the Swin host with a global (agent / InLine) mixer in the first
`global_blocks[i]` blocks of stage i and Swin window attention elsewhere (the authors' ATTN_TYPE strings:
'AAAB' = (all, all, all, 0), 'AAMB2' = (all, all, 2, 0)).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Union

from timm.layers import to_2tuple

from .cswin import CSWIN_WIDTHS
from .swin import SWIN_SIZES

__all__ = ['hybrid_swin_args', 'HYBRID_SWIN_SIZES', 'HYBRID_CSWIN_SIZES']


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


# the sizes both LeapLab releases (Agent-, InLine-Swin: cfgs/*_swin_*.yaml) train: Swin's widths, global_blocks[i]
# leading global blocks in stage i (ATTN_TYPE, agent / InLine: AAAB / IIIS, AABB / IISS, AAMB2 / IIMS2)
HYBRID_SWIN_SIZES = {
    'tiny': dict(**SWIN_SIZES['tiny'], global_blocks=(2, 2, 6, 0), drop_path_rate=0.2),
    'small': dict(**SWIN_SIZES['small'], global_blocks=(2, 2, 0, 0), drop_path_rate=0.3),
    'base': dict(**SWIN_SIZES['base'], global_blocks=(2, 2, 2, 0), drop_path_rate=0.5),
}

# Agent- and InLine-CSWin (models/*_cswin.py, cfgs/*_cswin_*.yaml): their own depths (deeper than CSWin-T/S/B),
# CSWin's widths and heads
HYBRID_CSWIN_SIZES = {
    'tiny': dict(**CSWIN_WIDTHS['tiny'], depths=(2, 4, 18, 1), drop_path_rate=0.2),
    'small': dict(**CSWIN_WIDTHS['small'], depths=(3, 6, 29, 2), drop_path_rate=0.4),
    'base': dict(**CSWIN_WIDTHS['base'], depths=(3, 6, 29, 2), drop_path_rate=0.5),
}
