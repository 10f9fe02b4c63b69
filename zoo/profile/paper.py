"""The papers' numbers (params, GFLOPs as MACs, top-1, config) per zoo model, from zoo/data/paper_table.csv.

The table is the reference table of the project with a `zoo_name` column; a `?` marks an unconfirmed figure.
"""
from __future__ import annotations

import csv
import functools
from pathlib import Path
from typing import Dict, Optional

__all__ = ['paper_table', 'paper_number']

TABLE = Path(__file__).resolve().parent.parent / 'data' / 'paper_table.csv'


@functools.lru_cache(maxsize=1)
def paper_table() -> Dict[str, Dict[str, str]]:
    """{zoo model name: row} for every row that names a zoo model."""
    with open(TABLE, newline='') as f:
        return {row['zoo_name']: row for row in csv.DictReader(f) if row['zoo_name']}


def paper_number(name: str, column: str) -> Optional[float]:
    """A numeric column ('params_m', 'gflops', 'top1') for a model; None if absent or unconfirmed ('?')."""
    value = paper_table().get(name, {}).get(column, '').strip()
    try:
        return None if not value or '?' in value else float(value)
    except ValueError:
        return None
