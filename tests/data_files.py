"""Small SST-2 files for tests: rows of the real data set, written the way SST-2 is laid out."""

from __future__ import annotations

import os


def write_sst2_tsv(path: os.PathLike, rows: list[list[str]], tail: str = "") -> str:
    """`sentence<TAB>label` with a header, one line per row, then `tail` (bad lines a test wants); returns the path."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("sentence\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows) + tail)
    return str(path)
