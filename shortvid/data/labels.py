"""Class ids, names and groups: one immutable map shared by the readers, the models and the reports.

Two CSV layouts are read: ``id,name,group`` (what shortvid writes for its own datasets) and the
official AI Challenger 2018 ``id,name_zh,name_en,group``, where the English name becomes ``name``
and the Chinese one stays in ``names_zh``.
"""

from __future__ import annotations

import csv
import difflib
import functools
import io
import operator
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..errors import DatasetError
from ..files import atomic_write

OFFICIAL_LABELS_RESOURCE = "resources/aichallenger2018_labels.csv"


class UnknownLabelError(DatasetError, LookupError):
    """A class name or id that the label map does not hold."""

    def __reduce__(self):
        # Rebuilt from its parts, so it crosses process boundaries (DataLoader workers).
        return type(self), (self.source, self.cause)


def natural_sort_key(text: str) -> list:
    """Sort key that orders embedded numbers by value ("class2" before "class10", "9" before "10")."""
    parts = re.split(r"(\d+)", text)
    return [int(part) if index % 2 else part.casefold() for index, part in enumerate(parts)]


@dataclass(frozen=True)
class LabelMap:
    """Immutable map between class ids (0..N-1), names and groups.

    ``names[i]`` is the name of class ``i``; ``class_groups[i]`` its group ("" when ungrouped);
    ``names_zh`` the Chinese names of the official map (empty otherwise); ``class_kinds`` the optional
    ``kind`` column of synthetic audio-visual maps (appearance, motion or sound; empty otherwise).
    ``source`` says where the map came from, for error messages. Name look-ups ignore case, so names must differ in more
    than case.
    """

    names: tuple[str, ...]
    class_groups: tuple[str, ...] = ()
    names_zh: tuple[str, ...] = ()
    source: str = field(default="label map", compare=False, repr=False)
    class_kinds: tuple[str, ...] = ()  # what tells a class apart (appearance, motion, sound); () when not given
    _ids_by_key: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = tuple(str(name).strip() for name in self.names)
        if not names:
            raise DatasetError(self.source, "label map has no classes")
        groups = tuple(str(group).strip() for group in self.class_groups) or ("",) * len(names)
        names_zh = tuple(str(name).strip() for name in self.names_zh)
        if len(groups) != len(names):
            raise DatasetError(self.source, f"{len(groups)} groups given for {len(names)} classes")
        if names_zh and len(names_zh) != len(names):
            raise DatasetError(self.source, f"{len(names_zh)} Chinese names given for {len(names)} classes")
        kinds = tuple(str(kind).strip() for kind in self.class_kinds)
        if kinds and len(kinds) != len(names):
            raise DatasetError(self.source, f"{len(kinds)} kinds given for {len(names)} classes")
        object.__setattr__(self, "class_kinds", kinds)
        ids_by_key: dict[str, int] = {}
        for class_id, name in enumerate(names):
            if not name:
                raise DatasetError(self.source, f"class {class_id} has an empty name")
            key = name.casefold()
            if key in ids_by_key:
                raise DatasetError(
                    self.source, f"duplicate class name {name!r} (ids {ids_by_key[key]} and {class_id})"
                )
            ids_by_key[key] = class_id
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "class_groups", groups)
        object.__setattr__(self, "names_zh", names_zh)
        object.__setattr__(self, "_ids_by_key", ids_by_key)

    @classmethod
    def from_csv(cls, path: str | os.PathLike) -> LabelMap:
        """Read ``id,name[,group]`` or the official ``id,name_zh,name_en,group``; rows in any order."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise DatasetError(str(path), "label map file not found") from None
        except UnicodeDecodeError as error:
            raise DatasetError(str(path), f"not UTF-8 text ({error.reason} at byte {error.start})") from None
        except OSError as error:
            raise DatasetError(str(path), f"cannot read label map: {error.strerror or error}") from None
        return _parse_label_csv(text, str(path))

    @classmethod
    def aichallenger2018(cls) -> LabelMap:
        """The official 63-class AI Challenger 2018 map shipped with the package."""
        return _official_label_map()

    def to_csv(self, path: str | os.PathLike) -> None:
        """Write the map; the official four-column layout when Chinese names are held, else ``id,name,group``."""
        rows: list[list[object]]
        if self.names_zh:
            header = ["id", "name_zh", "name_en", "group"]
            rows = [[i, self.names_zh[i], self.names[i], self.class_groups[i]] for i in range(len(self))]
        else:
            header = ["id", "name", "group"] + ["kind"] * bool(self.class_kinds)
            rows = [[i, self.names[i], self.class_groups[i], *self.class_kinds[i:i + 1]] for i in range(len(self))]
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        atomic_write(path, text.getvalue())

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, label: object) -> bool:
        try:
            self.id(label)  # type: ignore[arg-type]
        except (UnknownLabelError, TypeError):
            return False
        return True

    def id(self, label: int | str) -> int:
        """Class id of ``label``: an id, a digit string, or a name (case-insensitive).

        A string that is the name of a class wins over reading it as an id, so classes named by
        digits resolve by name.
        """
        if isinstance(label, str):
            key = label.strip().casefold()
            found = self._ids_by_key.get(key)
            if found is not None:
                return found
            if key.isascii() and key.isdigit() and int(key) < len(self):
                return int(key)
            raise UnknownLabelError(self.source, f"unknown label {label!r}{self._suggestion(key)}")
        class_id = operator.index(label)
        if 0 <= class_id < len(self):
            return class_id
        raise UnknownLabelError(self.source, f"unknown class id {class_id} (ids are 0..{len(self) - 1})")

    def name(self, class_id: int) -> str:
        """Name of class ``class_id`` (the English one for the official map)."""
        return self.names[self.id(class_id)]

    def group(self, class_id: int) -> str:
        """Group of class ``class_id``; "" when the map has no groups."""
        return self.class_groups[self.id(class_id)]

    @property
    def groups(self) -> dict[str, list[int]]:
        """Class ids of each group, groups in order of first appearance; ungrouped classes left out."""
        members: dict[str, list[int]] = {}
        for class_id, group in enumerate(self.class_groups):
            if group:
                members.setdefault(group, []).append(class_id)
        return members

    def group_order(self) -> tuple[list[int], list[int]]:
        """Class ids ordered by group (ungrouped last) and the sizes of those blocks: the order of the
        confusion heatmaps."""
        order, sizes = [], []
        for members in self.groups.values():
            order += members
            sizes.append(len(members))
        rest = [i for i in range(len(self)) if i not in set(order)]
        if rest:
            order += rest
            sizes.append(len(rest))
        return order, sizes

    def subset(self, classes: Iterable[int | str]) -> LabelMap:
        """Map restricted to ``classes``, renumbered 0..K-1 in the order of their original ids."""
        kept = sorted({self.id(label) for label in classes})
        if not kept:
            raise DatasetError(self.source, "subset of no classes")
        return LabelMap(
            names=tuple(self.names[i] for i in kept),
            class_groups=tuple(self.class_groups[i] for i in kept),
            names_zh=tuple(self.names_zh[i] for i in kept) if self.names_zh else (),
            source=self.source,
            class_kinds=tuple(self.class_kinds[i] for i in kept) if self.class_kinds else (),
        )

    def _suggestion(self, key: str) -> str:
        close = difflib.get_close_matches(key, list(self._ids_by_key), n=3, cutoff=0.6)
        if close:
            return " (did you mean " + ", ".join(repr(self.names[self._ids_by_key[k]]) for k in close) + "?)"
        return f" ({len(self)} classes, ids 0..{len(self) - 1})"


def _parse_label_csv(text: str, source: str) -> LabelMap:
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        raise DatasetError(source, "empty label map file")
    columns = {column.strip().casefold(): index for index, column in enumerate(header)}
    name_column = columns.get("name", columns.get("name_en"))
    if "id" not in columns or name_column is None:
        raise DatasetError(
            source, f"header must be 'id,name,group' or 'id,name_zh,name_en,group', got {','.join(header)!r}"
        )
    id_column = columns["id"]
    zh_column = columns.get("name_zh")
    group_column = columns.get("group")
    kind_column = columns.get("kind")

    def cell(row: list[str], column: int | None) -> str:
        return row[column].strip() if column is not None and column < len(row) else ""

    rows_by_id: dict[int, tuple[str, str, str, str]] = {}
    line_of_id: dict[int, int] = {}
    for row in reader:
        if not any(value.strip() for value in row):
            continue
        line = reader.line_num
        raw_id = cell(row, id_column)
        try:
            class_id = int(raw_id)
        except ValueError:
            raise DatasetError(source, f"line {line}: id {raw_id!r} is not an integer") from None
        if class_id in rows_by_id:
            raise DatasetError(source, f"line {line}: duplicate id {class_id} (first on line {line_of_id[class_id]})")
        name = cell(row, name_column)
        if not name:
            raise DatasetError(source, f"line {line}: class {class_id} has an empty name")
        rows_by_id[class_id] = (name, cell(row, group_column), cell(row, zh_column), cell(row, kind_column))
        line_of_id[class_id] = line
    if not rows_by_id:
        raise DatasetError(source, "label map has no classes")
    expected = set(range(len(rows_by_id)))
    if set(rows_by_id) != expected:
        missing = sorted(expected - set(rows_by_id))
        extra = sorted(set(rows_by_id) - expected)
        raise DatasetError(
            source,
            f"ids must be contiguous 0..{len(rows_by_id) - 1}: missing {_short_list(missing)}, "
            f"out of range {_short_list(extra)}",
        )
    ordered = [rows_by_id[i] for i in range(len(rows_by_id))]
    has_chinese = zh_column is not None and any(zh for _, _, zh, _ in ordered)
    return LabelMap(
        names=tuple(name for name, _, _, _ in ordered),
        class_groups=tuple(group for _, group, _, _ in ordered),
        names_zh=tuple(zh for _, _, zh, _ in ordered) if has_chinese else (),
        source=source,
        class_kinds=tuple(kind for _, _, _, kind in ordered) if kind_column is not None else (),
    )


def _short_list(values: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(value) for value in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "") if values else "none"


@functools.cache
def _official_label_map() -> LabelMap:
    resource = resources.files("shortvid").joinpath(OFFICIAL_LABELS_RESOURCE)
    return _parse_label_csv(resource.read_text(encoding="utf-8-sig"), f"shortvid/{OFFICIAL_LABELS_RESOURCE}")
