"""JSON-lines files that survive crashes: a torn last line is left out, anything else undecodable is an error.

Every JSONL file of a run (metrics, ledger log, quarantine) is written a whole line per write, newline last, and
only ever appended to or cut at a line boundary; so a crash can leave one torn line, the last, without its newline.
That line is left out (and cut when the file is next rewound). A line in the middle that does not decode is
corruption, not a crash, and reading it fails naming the file and line instead of dropping records silently.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterator

__all__ = ["JsonlError", "iter_jsonl", "read_jsonl", "cut_after"]

BLOCK = 1 << 12  # bytes read per step backwards: a ledger line is a few hundred; longer ones span blocks


class JsonlError(ValueError):
    """A JSON-lines file with an undecodable line that is not a torn last line."""


def _decode(path: str, where: str, line: str) -> dict[str, Any]:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise JsonlError(f"{path}: {where} is not JSON ({error}): the file is corrupt; move it aside or repair "
                         f"that line") from None


def iter_jsonl(path: str) -> Iterator[dict[str, Any]]:
    """The records of a JSON-lines file in order, one at a time; nothing when it does not exist."""
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.endswith("\n"):  # the last line, torn by a crash
                return
            if line.strip():
                yield _decode(path, f"line {number}", line)


def read_jsonl(path: str) -> list[dict[str, Any]]:
    """All the records of a JSON-lines file (see iter_jsonl); [] when it does not exist."""
    return list(iter_jsonl(path))


def cut_after(path: str, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """Cut a JSON-lines file after its last record that `keep` accepts, where records are in order (once `keep`
    refuses one it refuses every later one); returns the records cut, oldest first (a torn last line is cut and not
    returned). Reads backwards from the end, so a restore reads only what it cuts, however long the file."""
    if not os.path.exists(path):
        return []
    cut: list[dict[str, Any]] = []
    with open(path, "r+b") as handle:
        end = handle.seek(0, os.SEEK_END)
        position = end
        if end and _byte_at(handle, end - 1) != b"\n":  # a torn last line: cut it
            start = _line_start(handle, end)
            position, end = start, start
        while position > 0:
            start = _line_start(handle, position - 1)
            handle.seek(start)
            line = handle.read(position - start)
            if line.strip():
                record = _decode(path, f"the line at byte {start}", line.decode("utf-8"))
                if keep(record):
                    break
                cut.append(record)
            position = start
        handle.truncate(position)
    cut.reverse()
    return cut


def _byte_at(handle: Any, offset: int) -> bytes:
    handle.seek(offset)
    return handle.read(1)


def _line_start(handle: Any, before: int) -> int:
    """The offset where the line holding the byte before `before` starts (just after the previous newline)."""
    position = before
    while position > 0:
        start = max(0, position - BLOCK)
        handle.seek(start)
        block = handle.read(position - start)
        newline = block.rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        position = start
    return 0
