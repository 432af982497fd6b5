"""Prediction rows of a batch job, kept in a folder as Parquet (or JSONL) part files.

One row per input path, the same whichever engine made it (``shortvid predict --out``, local or
Ray): ``path``, ``labels`` and ``top5`` (each ``{id, name, score}``), ``timings_ms`` per stage,
``frames`` (the times of the frames the model saw), ``keyframes``, ``error`` (``{type, message}``
for a video that failed, else null) and ``node`` (where it ran). Each part is published atomically,
so a killed job leaves only whole parts, and a rerun into the same folder skips the paths already
there.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import DatasetError
from ..files import atomic_write

FORMATS = ("parquet", "jsonl")
STAGES = ("decode", "preprocess", "model", "total")


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
    }


def _schema():
    import pyarrow as pa

    label = pa.struct([("id", pa.int64()), ("name", pa.string()), ("score", pa.float64())])
    return pa.schema([
        ("path", pa.string()), ("labels", pa.list_(label)), ("top5", pa.list_(label)),
        ("timings_ms", pa.struct([(stage, pa.float64()) for stage in STAGES])),
        ("frames", pa.list_(pa.float64())), ("keyframes", pa.int64()),
        ("error", pa.struct([("type", pa.string()), ("message", pa.string())])), ("node", pa.string()),
    ])


class PredictionStore:
    """The part files of one output folder: ``done()`` the paths written, ``write(rows)`` a new part."""

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
        return sorted(p for p in self.folder.glob("part-*.*") if p.suffix[1:] in FORMATS and not p.name.startswith("."))

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
        """Every row written so far, part by part."""
        for part in self._parts():
            yield from self._read(part)

    def done(self) -> set[str]:
        """The paths already written (resume skips them)."""
        return {row["path"] for row in self.rows()}

    @staticmethod
    def _read(part: Path) -> Iterable[dict]:
        try:
            if part.suffix == ".jsonl":
                return [json.loads(line) for line in part.read_text(encoding="utf-8").splitlines() if line]
            import pyarrow.parquet as pq

            return pq.read_table(part).to_pylist()
        except (OSError, ValueError) as error:
            raise DatasetError(str(part), f"unreadable prediction part: {error}") from None


__all__ = ["FORMATS", "PredictionStore", "prediction_row"]
