"""The learner's candidate buffer: scored candidates waiting for an update, first in, first out.

Candidates arrive as column dicts (one per scored chunk) and leave as pools of exactly the size an update reads,
oldest first, which is what the staleness bound of `ol_ray.driver.admission` relies on. Plain Python and numpy.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ol_ray.data.validation import COLUMN_DEFAULTS

Columns = dict[str, np.ndarray]


def concat_columns(parts: list[Columns]) -> Columns:
    """Join candidate column dicts end to end (object columns such as token ids stay 1-d object arrays)."""
    if len(parts) == 1:
        return parts[0]
    out = {}
    for key in parts[0]:
        if key in COLUMN_DEFAULTS:  # candidates restored from an older checkpoint may lack it
            values = [part[key] if key in part else np.full(len(part["sample_id"]), COLUMN_DEFAULTS[key],
                                                             dtype=parts[0][key].dtype) for part in parts]
        else:
            values = [part[key] for part in parts]
        if values[0].dtype == object:
            joined = np.empty(sum(len(v) for v in values), dtype=object)
            joined[:] = [item for v in values for item in v]
            out[key] = joined
        else:
            out[key] = np.concatenate(values)
    return out


def take(columns: Columns, indices: np.ndarray) -> Columns:
    """The rows at `indices` of every column."""
    return {key: value[indices] for key, value in columns.items()}


def split_at(columns: Columns, size: int) -> tuple[Columns, Columns]:
    """The first `size` rows of every column, and the rest."""
    return ({key: value[:size] for key, value in columns.items()},
            {key: value[size:] for key, value in columns.items()})


class CandidateBuffer:
    """Candidates in arrival order; `len()` is how many."""

    def __init__(self, columns: Optional[Columns] = None):
        self.parts: list[Columns] = []
        self.size = 0
        if columns and len(columns.get("sample_id", [])):
            self.add(columns)

    def __len__(self) -> int:
        return self.size

    def add(self, columns: Columns) -> None:
        size = len(columns["sample_id"])
        if size:
            self.parts.append(columns)
            self.size += size

    def take(self, size: int) -> Columns:
        """The oldest `size` candidates, removed."""
        pool, rest = split_at(self.columns(), size)
        remaining = len(rest["sample_id"])
        self.parts, self.size = ([rest] if remaining else []), remaining
        return pool

    def take_all(self) -> Columns:
        """Every candidate, removed."""
        pool = self.columns()
        self.parts, self.size = [], 0
        return pool

    def columns(self) -> Columns:
        """Every candidate as one column dict, left in place ({} when empty): what a checkpoint saves."""
        return concat_columns(self.parts) if self.parts else {}

    def column(self, name: str) -> Optional[np.ndarray]:
        """One column over every candidate, None when empty or absent (unscored candidates have no entropy)."""
        if not self.parts or name not in self.parts[0]:
            return None
        return np.concatenate([part[name] for part in self.parts])
