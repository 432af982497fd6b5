"""Prediction rows of a batch job, kept in a folder as Parquet (or JSONL) part files.

One row per input path, the same whichever engine made it (``shortvid predict --out``, local or
Ray): ``path``, ``labels`` and ``top5`` (each ``{id, name, score}``), ``timings_ms`` per stage,
``frames`` (the times of the frames the model saw), ``keyframes``, ``error`` (``{type, message}``
for a video that failed, else null), ``node`` (where it ran) and ``sound`` (the video's
``Sound.status`` for a run whose model hears: ok, none, silent, broken; else null; parts written
before the column was added lack it). Each part is published atomically,
so a killed job leaves only whole parts, and a rerun into the same folder skips the paths already
there, except those whose row is a ``WorkerCrashed`` error (a crash is not a verdict on the video)
and, when asked, every error row. A retried path's new row lands in a later part and supersedes the
old one: ``rows()`` gives the newest row of each path, so readers see exactly one row per path.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import DatasetError, WorkerCrashed
from ..files import atomic_write

FORMATS = ("parquet", "jsonl")
STAGES = ("decode", "preprocess", "model", "total")
RETRIED_ON_RERUN = frozenset({WorkerCrashed.__name__})  # error rows a rerun tries again without being asked


def settled(error: str | None, retry_failed: bool = False) -> bool:
    """Whether a row whose error type is ``error`` (None: a prediction) stands on a rerun: a prediction
    always, an error unless it is a crash (``RETRIED_ON_RERUN``) or ``retry_failed`` asks for every error."""
    return error is None or (not retry_failed and error not in RETRIED_ON_RERUN)


def prediction_row(outcome: dict, node: str = "") -> dict:
    """A store row from ``Outcome.to_dict()`` (or the same form for an error): every column present."""
    error = outcome.get("error")
    timings = outcome.get("timings_ms") or {}
    return {
        "path": str(outcome["path"]),
        "labels": list(outcome.get("labels", ())),
        "top5": list(outcome.get("top5", ())),
        "timings_ms": {stage: float(timings.get(stage, 0.0)) for stage in STAGES},
        "frames": [float(t) for t in outcome.get("frames", ())],
        "keyframes": int(outcome.get("keyframes", 0)),
        "error": {"type": str(error["type"]), "message": str(error["message"])} if error else None,
        "node": node,
        "sound": outcome.get("sound"),
    }


def _schema():
    import pyarrow as pa

    label = pa.struct([("id", pa.int64()), ("name", pa.string()), ("score", pa.float64())])
    return pa.schema([
        ("path", pa.string()), ("labels", pa.list_(label)), ("top5", pa.list_(label)),
        ("timings_ms", pa.struct([(stage, pa.float64()) for stage in STAGES])),
        ("frames", pa.list_(pa.float64())), ("keyframes", pa.int64()),
        ("error", pa.struct([("type", pa.string()), ("message", pa.string())])), ("node", pa.string()),
        ("sound", pa.string()),
    ])


class PredictionStore:
    """The part files of one output folder: ``write(rows)`` a new part, ``rows()`` the newest row of each
    path, ``latest()`` its error type, ``done()`` the paths a rerun skips."""

    def __init__(self, folder: str | os.PathLike, fmt: str = "parquet"):
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        if fmt == "parquet":
            from ..extras import require

            require("parquet", "Parquet output")
        self.folder, self.fmt = Path(folder), fmt
        self.folder.mkdir(parents=True, exist_ok=True)
        self.next_part = 1 + max((int(p.stem.split("-")[1]) for p in self._parts()), default=0)

    def _parts(self) -> list[Path]:
        parts = [p for p in self.folder.glob("part-*.*") if p.suffix[1:] in FORMATS and not p.name.startswith(".")]
        return sorted(parts, key=lambda p: int(p.stem.split("-")[1]))  # written in this order: later rows supersede

    def write(self, rows: list[dict]) -> None:
        if not rows:
            return
        target = self.folder / f"part-{self.next_part:06d}.{self.fmt}"
        self.next_part += 1
        if self.fmt == "jsonl":
            atomic_write(target, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=_schema()), buffer)
        atomic_write(target, buffer.getvalue())

    def rows(self) -> Iterator[dict]:
        """The newest row of each path, part by part: one row per path, a retry's row in place of the old."""
        parts = self._parts()
        newest = {path: place for path, (place, _) in self._index(parts).items()}
        for number, part in enumerate(parts):
            for index, row in enumerate(self._read(part)):
                if newest.get(row["path"]) == (number, index):
                    yield row

    def latest(self) -> dict[str, str | None]:
        """The error type of each path's newest row (None for a prediction): every path with a row."""
        return {path: error for path, (_, error) in self._index(self._parts()).items()}

    def done(self, retry_failed: bool = False) -> set[str]:
        """The paths a rerun skips: those whose newest row ``settled`` (not a crash; no error at all with
        ``retry_failed``)."""
        return {path for path, error in self.latest().items() if settled(error, retry_failed)}

    def _index(self, parts: list[Path]) -> dict[str, tuple[tuple[int, int], str | None]]:
        """Where each path's newest row is (part number, row), and its error type; reads two columns."""
        index: dict[str, tuple[tuple[int, int], str | None]] = {}
        for number, part in enumerate(parts):
            for position, row in enumerate(self._read(part, columns=["path", "error"])):
                index[row["path"]] = ((number, position), (row["error"] or {}).get("type"))
        return index

    @staticmethod
    def _read(part: Path, columns: list[str] | None = None) -> Iterable[dict]:
        try:
            if part.suffix == ".jsonl":
                return [json.loads(line) for line in part.read_text(encoding="utf-8").splitlines() if line]
            import pyarrow.parquet as pq

            return pq.read_table(part, columns=columns).to_pylist()
        except (OSError, ValueError) as error:
            raise DatasetError(str(part), f"unreadable prediction part: {error}") from None


__all__ = ["FORMATS", "RETRIED_ON_RERUN", "PredictionStore", "prediction_row", "settled"]
