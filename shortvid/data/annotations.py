"""Dataset readers: annotation files and class-folder trees, all read into one `Annotations` type.

Formats:
- AI Challenger: ``name.mp4,label[,label...]`` per line, integer class ids, no header; videos in a
  ``videos/`` folder beside the annotation file, label map in ``labels.csv`` beside it (else the
  official 63-class map).
- CSV: header ``path,labels``; labels are names or ids separated by ``|``.
- Folders: one folder per class, videos anywhere below it.

Every reader validates what it reads. By default (``on_error="raise"``) a bad entry raises
`AnnotationError`, naming the file, the line and the cause; with ``on_error="skip"`` bad entries
are left out and listed in `Annotations.problems` so the caller can print them.
"""

from __future__ import annotations

import csv
import io
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import DatasetError
from ..files import atomic_write
from .labels import LabelMap, UnknownLabelError, natural_sort_key

VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".flv", ".m4v"})
SPLIT_FOLDER_NAMES = frozenset({"train", "val", "valid", "validation", "test"})
LABELS_FILE_NAME = "labels.csv"
MAX_NAMES_IN_MESSAGE = 10

OnError = Literal["raise", "skip"]
LabelsSource = LabelMap | str | os.PathLike | None

MALFORMED = "malformed"
UNKNOWN_LABEL = "unknown label"
EMPTY_LABELS = "empty labels"
DUPLICATE = "duplicate"
MISSING_VIDEO = "missing video"


@dataclass(frozen=True)
class Sample:
    """One labelled video."""

    path: Path  # absolute path of the video
    labels: tuple[int, ...]  # sorted unique class ids
    name: str  # as written in the annotation, relative to `Annotations.root` unless absolute


@dataclass(frozen=True)
class Problem:
    """An entry a reader skipped, and why. ``line`` is None where the source has no lines (folders)."""

    file: str
    line: int | None
    kind: str  # one of MALFORMED, UNKNOWN_LABEL, EMPTY_LABELS, DUPLICATE, MISSING_VIDEO
    cause: str
    name: str | None = None  # the video (or class folder) concerned, when known

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.cause}"


class AnnotationError(DatasetError):
    """Invalid entries in an annotation source; ``problems`` lists every one found."""

    def __init__(self, source: str, cause: str, problems: Sequence[Problem] = ()):
        super().__init__(source, cause)
        self.problems = list(problems)

    def __reduce__(self):
        # Rebuilt from its parts, so it crosses process boundaries (DataLoader workers).
        return type(self), (self.source, self.cause, self.problems)


@dataclass
class Annotations:
    """Labelled videos of one split, with their label map.

    ``root`` is the folder the sample names are relative to (the videos folder of an AI Challenger
    split); ``problems`` lists what the reader skipped (always empty in strict mode).
    """

    samples: list[Sample]
    label_map: LabelMap
    root: Path
    problems: list[Problem] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, index: int) -> Sample:
        return self.samples[index]

    def __repr__(self) -> str:
        return (
            f"Annotations({len(self.samples)} samples, {len(self.label_map)} classes, "
            f"root={str(self.root)!r}, {len(self.problems)} problems)"
        )

    def class_counts(self) -> np.ndarray:
        """Number of samples carrying each class, shape [C], int64."""
        return np.bincount(self._flat_labels(), minlength=len(self.label_map)).astype(np.int64)

    def multi_hot(self, num_classes: int | None = None) -> np.ndarray:
        """Targets for a multi-label loss: float32 [N, C] with 1 where a sample carries a class."""
        num_classes = len(self.label_map) if num_classes is None else num_classes
        columns = self._flat_labels()
        if columns.size and columns.max() >= num_classes:
            raise ValueError(f"num_classes={num_classes} but labels go up to {columns.max()}")
        rows = np.repeat(np.arange(len(self.samples)), [len(sample.labels) for sample in self.samples])
        targets = np.zeros((len(self.samples), num_classes), dtype=np.float32)
        targets[rows, columns] = 1.0
        return targets

    def subset(self, classes: Iterable[int | str]) -> Annotations:
        """Only the given classes (ids or names), renumbered 0..K-1 in the order of their original ids.

        Labels outside ``classes`` are dropped from each sample, and samples left with none are
        dropped; this is the training set of a per-group model.
        """
        kept = sorted({self.label_map.id(label) for label in classes})
        label_map = self.label_map.subset(kept)
        new_id = {old_id: index for index, old_id in enumerate(kept)}
        samples = []
        for sample in self.samples:
            labels = tuple(new_id[label] for label in sample.labels if label in new_id)
            if labels:
                samples.append(Sample(path=sample.path, labels=labels, name=sample.name))
        return Annotations(samples=samples, label_map=label_map, root=self.root)

    def split_by_group(self) -> dict[str, Annotations]:
        """One `subset` per group of the label map, keyed by group name."""
        groups = self.label_map.groups
        if not groups:
            raise DatasetError(self.label_map.source, "the label map has no groups")
        return {group: self.subset(class_ids) for group, class_ids in groups.items()}

    def write_aichallenger(self, path: str | os.PathLike, write_labels: bool = True) -> None:
        """Write ``name,label[,label...]`` lines; with ``write_labels``, also ``labels.csv`` beside them.

        An existing ``labels.csv`` is kept if it holds the same map (several splits share one) and
        is an error otherwise. Read it back with ``read_aichallenger(path, videos_dir=self.root)``.
        """
        path = Path(path)
        for sample in self.samples:
            if "," in sample.name or "\n" in sample.name or "\r" in sample.name:
                raise DatasetError(
                    str(path), f"video name {sample.name!r} holds a comma or line break; the format cannot store it"
                )
        path.parent.mkdir(parents=True, exist_ok=True)
        if write_labels:
            labels_path = path.parent / LABELS_FILE_NAME
            if labels_path.exists():
                if LabelMap.from_csv(labels_path) != self.label_map:
                    raise DatasetError(
                        str(labels_path), "already holds a different label map; write elsewhere or remove it"
                    )
            else:
                self.label_map.to_csv(labels_path)
        lines = [",".join([sample.name, *map(str, sample.labels)]) for sample in self.samples]
        atomic_write(path, "".join(line + "\n" for line in lines))

    def _flat_labels(self) -> np.ndarray:
        count = sum(len(sample.labels) for sample in self.samples)
        flat = itertools.chain.from_iterable(sample.labels for sample in self.samples)
        return np.fromiter(flat, dtype=np.int64, count=count)


def read_aichallenger(
    annotation_file: str | os.PathLike,
    videos_dir: str | os.PathLike | None = None,
    labels: LabelsSource = None,
    *,
    on_error: OnError = "raise",
    check_files: bool = True,
) -> Annotations:
    """Read an AI Challenger annotation file (``name.mp4,label[,label...]``, ids, no header).

    ``videos_dir`` defaults to ``videos/`` beside the file; ``labels`` (a map or a CSV path) to
    ``labels.csv`` beside the file if present, else the official 63-class map. Names may be clips
    (``<id>_<start>_<end>.mp4``) or relative paths; repeated labels on a line count once.
    """
    _check_on_error(on_error)
    annotation_file = Path(annotation_file).absolute()
    source = str(annotation_file)
    text = _read_text(annotation_file, "annotation file")
    root = Path(videos_dir).absolute() if videos_dir is not None else annotation_file.parent / "videos"
    label_map = _label_map_from(labels, annotation_file.parent / LABELS_FILE_NAME) or LabelMap.aichallenger2018()
    num_classes = len(label_map)

    entries: list[tuple[int, str, tuple[int, ...]]] = []
    problems: list[Problem] = []
    for line_number, line in enumerate(text.split("\n"), start=1):
        line = line.strip()
        if not line:
            continue
        name, *fields = line.split(",")
        name = name.strip()
        label_fields = [value for value in fields if value and not value.isspace()]
        if not name:
            problems.append(Problem(source, line_number, MALFORMED, f"no video name in {line!r}"))
            continue
        if not label_fields:
            problems.append(Problem(source, line_number, EMPTY_LABELS, f"no labels for {name}", name))
            continue
        class_ids: set[int] = set()
        for value in label_fields:
            try:
                class_id = int(value)
            except ValueError:
                cause = f"label {value.strip()!r} of {name} is not an integer class id"
                problems.append(Problem(source, line_number, MALFORMED, cause, name))
                break
            if not 0 <= class_id < num_classes:
                cause = f"unknown class id {class_id} for {name} (ids are 0..{num_classes - 1})"
                problems.append(Problem(source, line_number, UNKNOWN_LABEL, cause, name))
                break
            class_ids.add(class_id)
        else:
            entries.append((line_number, name, tuple(sorted(class_ids))))
    return _build(source, entries, problems, label_map, root, on_error, check_files)


def read_csv(
    path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    labels: LabelsSource = None,
    *,
    on_error: OnError = "raise",
    check_files: bool = True,
) -> Annotations:
    """Read a CSV with a header holding ``path`` and ``labels``; labels are names or ids joined by ``|``.

    Paths are relative to ``root``, default the CSV's folder. Without ``labels`` the map is made
    from the label names seen, sorted (numbers by value, so ids 0..N-1 keep their numbers).
    """
    _check_on_error(on_error)
    path = Path(path).absolute()
    source = str(path)
    text = _read_text(path, "annotation CSV")
    base = Path(root).absolute() if root is not None else path.parent

    rows: list[tuple[int, str, list[str]]] = []
    problems: list[Problem] = []
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, None)
        if header is None:
            raise DatasetError(source, "empty file; expected a header 'path,labels'")
        columns = {column.strip().casefold(): index for index, column in enumerate(header)}
        if "path" not in columns or "labels" not in columns:
            found = ",".join(header)
            raise DatasetError(source, f"line 1: header must name 'path' and 'labels' columns, got {found!r}")
        path_column, labels_column = columns["path"], columns["labels"]
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            line = reader.line_num
            if len(row) > len(header):
                cause = f"{len(row)} fields for {len(header)} columns (join several labels with '|', not ',')"
                problems.append(Problem(source, line, MALFORMED, cause))
                continue
            name = row[path_column].strip() if path_column < len(row) else ""
            raw_labels = row[labels_column] if labels_column < len(row) else ""
            tokens = [token.strip() for token in raw_labels.split("|") if token.strip()]
            if not name:
                problems.append(Problem(source, line, MALFORMED, "no video path"))
            elif not tokens:
                problems.append(Problem(source, line, EMPTY_LABELS, f"no labels for {name}", name))
            else:
                rows.append((line, name, tokens))
    except csv.Error as error:
        raise DatasetError(source, f"line {reader.line_num}: not valid CSV ({error})") from None

    label_map = _label_map_from(labels, None) or _infer_label_map([t for _, _, tokens in rows for t in tokens], source)
    entries: list[tuple[int, str, tuple[int, ...]]] = []
    for line, name, tokens in rows:
        try:
            class_ids = tuple(sorted({label_map.id(token) for token in tokens}))
        except UnknownLabelError as error:
            problems.append(Problem(source, line, UNKNOWN_LABEL, f"{error.cause} for {name}", name))
            continue
        entries.append((line, name, class_ids))
    return _build(source, entries, problems, label_map, base, on_error, check_files)


def read_folders(
    root: str | os.PathLike,
    labels: LabelsSource = None,
    *,
    on_error: OnError = "raise",
) -> Annotations:
    """Read one-folder-per-class: the class is the folder's name, videos are found at any depth in it.

    Without ``labels`` the classes are the folder names, sorted (numbers by value). Pass the map
    of the training split when reading another split, so a class missing there keeps its id.
    Hidden files and folders are ignored; sample names are paths relative to ``root``.
    """
    _check_on_error(on_error)
    root = Path(root).absolute()
    source = str(root)
    class_folders = _class_folders(root)
    if not class_folders:
        raise DatasetError(source, "no class folders found (expected one folder per class)")
    label_map = _label_map_from(labels, None) or LabelMap(tuple(class_folders), source=source)

    entries: list[tuple[int | None, str, tuple[int, ...]]] = []
    problems: list[Problem] = []
    for folder in class_folders:
        try:
            class_id = label_map.id(folder)
        except UnknownLabelError:
            cause = f"class folder {folder!r} is not in the label map ({label_map.source})"
            problems.append(Problem(source, None, UNKNOWN_LABEL, cause, folder))
            continue
        for video in _videos_under(root / folder):
            entries.append((None, video.relative_to(root).as_posix(), (class_id,)))
    if not entries and not problems:
        extensions = " ".join(sorted(VIDEO_EXTENSIONS))
        raise DatasetError(source, f"no videos found in the class folders (extensions {extensions})")
    return _build(source, entries, problems, label_map, root, on_error, check_files=False)


def load_dataset(
    spec: str | os.PathLike,
    split: str = "train",
    *,
    labels: LabelsSource = None,
    on_error: OnError = "raise",
    check_files: bool = True,
) -> Annotations:
    """Read a dataset of any supported layout, telling the layout from ``spec``.

    - a folder with ``<split>.txt`` (AI Challenger: ``videos/``, ``labels.csv``) or ``<split>.csv``;
    - a ``.csv`` file (`read_csv`) or an annotation file with ``.txt`` among its suffixes, as the
      official ``*.txt.082902`` (`read_aichallenger`);
    - a folder of split folders (``train/``, ``val/``, ...) each holding one folder per class;
      ids come from ``labels.csv`` beside them, else from the class folders of all splits;
    - a folder of class folders (`read_folders`).
    ``split`` picks a part of a dataset that has parts; a file or a single class tree is read whole.
    """
    path = Path(spec).absolute()
    options = {"on_error": on_error, "check_files": check_files}
    if path.is_file():
        suffixes = [suffix.lower() for suffix in path.suffixes]
        if path.suffix.lower() == ".csv":
            return read_csv(path, labels=labels, **options)
        if ".txt" in suffixes:
            return read_aichallenger(path, labels=labels, **options)
        raise DatasetError(
            str(path), "cannot tell the format: expected a .csv (path,labels) or a .txt AI Challenger annotation file"
        )
    if not path.is_dir():
        raise DatasetError(str(path), "no such file or folder")

    if (path / f"{split}.txt").is_file():
        return read_aichallenger(path / f"{split}.txt", labels=labels, **options)
    if (path / f"{split}.csv").is_file():
        return read_csv(path / f"{split}.csv", labels=labels, **options)
    split_files = sorted(
        candidate.name
        for candidate in path.iterdir()
        if candidate.suffix in (".txt", ".csv") and candidate.stem in SPLIT_FOLDER_NAMES and candidate.is_file()
    )
    if split_files:
        raise DatasetError(str(path), f"no {split}.txt or {split}.csv here (found {', '.join(split_files)})")

    subfolders = _class_folders(path)
    if subfolders and set(subfolders) <= SPLIT_FOLDER_NAMES:
        if split not in subfolders:
            raise DatasetError(str(path), f"no {split}/ folder here (found {', '.join(sorted(subfolders))})")
        label_map = _label_map_from(labels, path / LABELS_FILE_NAME) or _label_map_of_split_folders(path, subfolders)
        return read_folders(path / split, labels=label_map, on_error=on_error)
    if subfolders:
        return read_folders(path, labels=_label_map_from(labels, path / LABELS_FILE_NAME), on_error=on_error)
    raise DatasetError(
        str(path),
        f"cannot tell the dataset layout: expected {split}.txt (AI Challenger) or {split}.csv, "
        "one folder per class, or split folders (train/, val/) of class folders",
    )


def dataset_videos(dataset: str | os.PathLike, splits: Sequence[str] | None = None
                   ) -> tuple[list[tuple[str, Path]], list[Problem]]:
    """Every (name, path) of the dataset's splits (default: all of train, val, test found), each video
    once, and the annotation problems skipped: what extraction decodes."""
    path = Path(dataset)
    if not splits and path.is_dir():
        splits = [s for s in ("train", "val", "test")
                  if (path / f"{s}.txt").is_file() or (path / f"{s}.csv").is_file() or (path / s).is_dir()]
    videos: dict[str, Path] = {}
    problems: list = []
    for split in splits or ["train"]:
        annotations = load_dataset(dataset, split, on_error="skip", check_files=False)
        problems.extend(annotations.problems)
        for sample in annotations.samples:
            videos.setdefault(sample.name, sample.path)
    return list(videos.items()), problems


def _build(
    source: str,
    entries: list[tuple[int | None, str, tuple[int, ...]]],
    problems: list[Problem],
    label_map: LabelMap,
    root: Path,
    on_error: OnError,
    check_files: bool,
) -> Annotations:
    """Drop duplicates and missing videos, then raise or return according to ``on_error``."""
    first_line: dict[str, int | None] = {}
    unique_entries = []
    for line, name, class_ids in entries:
        if name in first_line:
            previous = first_line[name]
            where = f" (first on line {previous})" if previous is not None else ""
            problems.append(Problem(source, line, DUPLICATE, f"duplicate entry {name}{where}", name))
            continue
        first_line[name] = line
        unique_entries.append((line, name, class_ids))

    present = _files_exist(str(root), [name for _, name, _ in unique_entries]) if check_files else None
    samples = []
    for index, (line, name, class_ids) in enumerate(unique_entries):
        if present is not None and not present[index]:
            problems.append(Problem(source, line, MISSING_VIDEO, f"video not found: {name}", name))
            continue
        # `root / name` parses only the name, much faster than Path(full_path) over 200k samples.
        video = Path(os.path.normpath(os.path.join(root, name))) if ".." in name else root / name
        samples.append(Sample(path=video, labels=class_ids, name=name))

    problems.sort(key=lambda problem: problem.line if problem.line is not None else 0)
    if problems and on_error == "raise":
        raise _strict_error(source, problems, len(unique_entries), root)
    if not samples:
        summary = f" ({len(problems)} entries skipped; first: {problems[0].cause})" if problems else ""
        raise AnnotationError(source, f"no usable samples{summary}", problems)
    return Annotations(samples=samples, label_map=label_map, root=root, problems=problems)


def _strict_error(source: str, problems: list[Problem], num_entries: int, root: Path) -> AnnotationError:
    """One error for all problems: the first few entry problems, then the missing videos in one sentence."""
    missing = [problem for problem in problems if problem.kind == MISSING_VIDEO]
    others = [problem for problem in problems if problem.kind != MISSING_VIDEO]
    parts = []
    if others:
        shown = "; ".join(f"line {p.line}: {p.cause}" if p.line is not None else p.cause for p in others[:3])
        parts.append(shown + (f" (and {len(others) - 3} more problems)" if len(others) > 3 else ""))
    if missing:
        where = str(root) if root.is_dir() else f"{root} (folder does not exist)"
        first_names = ", ".join(str(problem.name) for problem in missing[:MAX_NAMES_IN_MESSAGE])
        more = f" (first {MAX_NAMES_IN_MESSAGE})" if len(missing) > MAX_NAMES_IN_MESSAGE else ""
        parts.append(f"{len(missing)} of {num_entries} videos not found in {where}: {first_names}{more}")
    cause = "; ".join(parts) + "; pass on_error='skip' to skip bad entries"
    return AnnotationError(source, cause, problems)


def _files_exist(root: str, names: list[str]) -> list[bool]:
    """Whether each ``root/name`` exists, with one listing per folder instead of a stat per file."""
    listings: dict[str, set[str] | None] = {}
    present = []
    for name in names:
        if "/" in name or os.sep in name:
            folder, base = os.path.split(os.path.join(root, name))
        else:
            folder, base = root, name
        if folder not in listings:
            try:
                listings[folder] = set(os.listdir(folder))
            except OSError:
                listings[folder] = None
        listing = listings[folder]
        if listing is None:
            present.append(False)
        elif base in listing:
            present.append(True)
        else:
            # Case-insensitive or Unicode-normalising filesystems list a name differently from how it is written.
            present.append(os.path.exists(os.path.join(folder, base)))
    return present


def _class_folders(root: Path) -> list[str]:
    try:
        with os.scandir(root) as entries:
            names = [entry.name for entry in entries if entry.is_dir() and not entry.name.startswith(".")]
    except OSError as error:
        raise DatasetError(str(root), f"cannot list folder: {error.strerror or error}") from None
    return sorted(names, key=natural_sort_key)


def _videos_under(folder: Path) -> Iterator[Path]:
    for current, subfolders, files in os.walk(folder):
        subfolders[:] = sorted((name for name in subfolders if not name.startswith(".")), key=natural_sort_key)
        for file_name in sorted(files, key=natural_sort_key):
            if not file_name.startswith(".") and os.path.splitext(file_name)[1].lower() in VIDEO_EXTENSIONS:
                yield Path(current, file_name)


def _label_map_of_split_folders(root: Path, splits: list[str]) -> LabelMap:
    """Classes of every split together, so a class missing from one split keeps its id."""
    names: set[str] = set()
    for split in splits:
        names.update(_class_folders(root / split))
    if not names:
        raise DatasetError(str(root), "no class folders in the split folders")
    return LabelMap(tuple(sorted(names, key=natural_sort_key)), source=str(root))


def _infer_label_map(tokens: list[str], source: str) -> LabelMap:
    """Label map from the labels seen: sorted names; ids used as names must be exactly 0..N-1."""
    spelling: dict[str, str] = {}
    for token in tokens:
        spelling.setdefault(token.casefold(), token)
    if not spelling:
        raise AnnotationError(source, "no labelled entries to infer the label map from")
    names = list(spelling.values())
    if all(name.isascii() and name.isdigit() for name in names):
        ids = {int(name) for name in names}
        if ids != set(range(max(ids) + 1)):
            raise DatasetError(
                source,
                f"labels are class ids but not all of 0..{max(ids)} occur, so their names are unknown; "
                "pass labels= a label map",
            )
        names = [str(class_id) for class_id in range(max(ids) + 1)]
    else:
        names.sort(key=natural_sort_key)
    return LabelMap(tuple(names), source=f"{source} (labels inferred)")


def _label_map_from(labels: LabelsSource, default_file: Path | None) -> LabelMap | None:
    if isinstance(labels, LabelMap):
        return labels
    if labels is not None:
        return LabelMap.from_csv(labels)
    if default_file is not None and default_file.is_file():
        return LabelMap.from_csv(default_file)
    return None


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(str(path), f"{what} not found") from None
    except IsADirectoryError:
        raise DatasetError(str(path), f"{what} expected, found a folder") from None
    except UnicodeDecodeError as error:
        raise DatasetError(str(path), f"not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise DatasetError(str(path), f"cannot read {what}: {error.strerror or error}") from None


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
