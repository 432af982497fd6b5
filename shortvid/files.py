"""Publishing a file atomically: whoever reads it (a server, a resumed run, a rerun) finds the old
file or the new one, never half of one, whenever the writer is killed.

    with atomic_path(run / "model.onnx") as temporary:
        torch.onnx.export(..., str(temporary))      # any writer that takes a path
    atomic_write(run / "policy.json", text)          # text or bytes

The temporary file sits beside the target (same file system, so the rename is atomic), is hidden
(``.NAME.partial``), and is removed if the block fails. A kill leaves at most such a hidden file,
which the next write of the same target replaces.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL = ".partial"


def partial_path(path: str | os.PathLike, suffix: str = "") -> Path:
    """Where ``atomic_path`` writes ``path`` before renaming it (``suffix`` kept last, for writers
    that choose a format from the name)."""
    path = Path(path)
    return path.with_name(f".{path.name}{PARTIAL}{suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to; renamed over ``path`` when the block ends
    without an error, removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = partial_path(path, suffix)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Replace ``path`` with ``data`` (text as UTF-8) atomically."""
    with atomic_path(path) as temporary:
        if isinstance(data, str):
            temporary.write_text(data, encoding="utf-8")
        else:
            temporary.write_bytes(data)
