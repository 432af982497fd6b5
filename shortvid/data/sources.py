"""Which videos a batch job reads: paths and URIs named on the command line, folders and globs, and
manifests that list millions of files (argv cannot).

A video may be a local path or a URI of any fsspec protocol (``s3://``, ``gs://``, ``https://``,
``memory://``...: ``read_frames`` opens it; the protocol's package, such as s3fs, gcsfs or aiohttp,
must be installed). A manifest may be a URI too.
"""

from __future__ import annotations

import csv
import glob
import io
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path

from ..decode import is_uri
from ..errors import DatasetError, InvalidVideoError, VideoNotFoundError
from .annotations import VIDEO_EXTENSIONS

MANIFEST_COLUMN = "path"


def read_manifest(manifest: str | os.PathLike) -> list[str]:
    """The videos a manifest lists, in order: a Parquet file or a CSV (with a header) with a ``path``
    column, or else a text file with one path or URI per line (blank lines and ``#`` comments
    skipped). Relative entries are relative to the manifest's own folder. ``DatasetError`` naming
    the manifest when it cannot be read."""
    name = str(manifest)
    try:
        data = _read_bytes(name)
    except FileNotFoundError:
        raise DatasetError(name, "no such manifest") from None
    except (OSError, ImportError, ValueError) as error:
        raise DatasetError(name, f"cannot read the manifest: {error}") from None
    suffix = posixpath.splitext(name.split("?")[0])[1].lower()
    if suffix == ".parquet":
        entries = _parquet_paths(name, data)
    elif suffix == ".csv":
        entries = _csv_paths(name, data)
    else:
        text = data.decode("utf-8-sig")
        entries = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [_absolute(entry, name) for entry in entries]


def expand_inputs(inputs: Sequence[str]) -> tuple[list[str], list[tuple[str, Exception]]]:
    """Files and URIs as given, folders searched for videos, globs expanded; order kept, duplicates
    dropped. Also the inputs that name no video (a folder without videos, a glob matching nothing),
    each with its error, so every input a user names gets a line."""
    found: list[str] = []
    empty: list[tuple[str, Exception]] = []
    for item in inputs:
        if is_uri(item):
            found.append(item)
            continue
        path = Path(item)
        if path.is_dir():
            videos = [str(p) for p in sorted(path.rglob("*")) if p.suffix.lower() in VIDEO_EXTENSIONS]
            if not videos:
                empty.append((item, InvalidVideoError(item, "a folder with no videos in it (searched for "
                                                            f"{', '.join(sorted(VIDEO_EXTENSIONS))})")))
            found.extend(videos)
        elif any(ch in item for ch in "*?[") and not path.exists():
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                empty.append((item, VideoNotFoundError(item, "no file matches this pattern")))
            found.extend(matches)
        else:
            found.append(item)
    return list(dict.fromkeys(found)), empty


def _read_bytes(name: str) -> bytes:
    if is_uri(name):
        import fsspec

        with fsspec.open(name, "rb") as handle:
            return handle.read()
    return Path(name).read_bytes()


def _absolute(entry: str, manifest: str) -> str:
    if is_uri(entry) or os.path.isabs(entry):
        return entry
    if is_uri(manifest):
        return posixpath.join(posixpath.dirname(manifest), entry)
    return str(Path(manifest).parent / entry)


def _csv_paths(name: str, data: bytes) -> list[str]:
    reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    if MANIFEST_COLUMN not in (reader.fieldnames or []):
        raise DatasetError(name, f"a CSV manifest needs a {MANIFEST_COLUMN!r} column (columns: {reader.fieldnames})")
    return [row[MANIFEST_COLUMN].strip() for row in reader if (row[MANIFEST_COLUMN] or "").strip()]


def _parquet_paths(name: str, data: bytes) -> list[str]:
    from ..extras import require

    require("parquet", "Parquet manifests")
    import pyarrow.parquet as pq

    table = pq.read_table(io.BytesIO(data), columns=None)
    if MANIFEST_COLUMN not in table.column_names:
        raise DatasetError(name, f"a Parquet manifest needs a {MANIFEST_COLUMN!r} column "
                                 f"(columns: {table.column_names})")
    return [str(value) for value in table.column(MANIFEST_COLUMN).to_pylist() if value]
