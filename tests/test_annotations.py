"""Dataset readers on small files in tmp_path: formats, validation errors, skip mode, helpers."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from shortvid.data.annotations import (
    DUPLICATE,
    EMPTY_LABELS,
    MALFORMED,
    MISSING_VIDEO,
    UNKNOWN_LABEL,
    AnnotationError,
    Annotations,
    Sample,
    load_dataset,
    read_aichallenger,
    read_csv,
    read_folders,
)
from shortvid.data.labels import LabelMap
from shortvid.errors import DatasetError

PETS_MAP_CSV = "id,name,group\n0,dog,pets\n1,cat,pets\n2,guitar,music\n"


def touch(folder: Path, *names: str) -> None:
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def make_aichallenger(root: Path, lines: list[str], videos: list[str] | None = None, split: str = "train") -> Path:
    """A dataset folder: ``videos/`` with empty placeholders, ``labels.csv`` and ``<split>.txt``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "labels.csv").write_text(PETS_MAP_CSV)
    names = videos if videos is not None else [line.split(",")[0] for line in lines if line.strip()]
    touch(root / "videos", *names)
    annotation = root / f"{split}.txt"
    annotation.write_text("\n".join(lines) + "\n")
    return annotation


# --- AI Challenger -------------------------------------------------------------------------------


def test_read_aichallenger_sorts_and_dedupes_labels_and_resolves_paths(tmp_path):
    annotation = make_aichallenger(tmp_path / "ds", ["a.mp4,2,0", "b.mp4,1", "123_4_9.mp4,0,0", "c.mp4,1,"])
    annotations = read_aichallenger(annotation)
    assert [sample.labels for sample in annotations] == [(0, 2), (1,), (0,), (1,)]
    assert annotations[2].name == "123_4_9.mp4"
    assert annotations[0].path == tmp_path / "ds" / "videos" / "a.mp4"
    assert annotations[0].path.is_absolute()
    assert annotations.root == tmp_path / "ds" / "videos"
    assert annotations.label_map.names == ("dog", "cat", "guitar")
    assert annotations.problems == []


def test_read_aichallenger_defaults_to_the_official_map_without_labels_csv(tmp_path):
    touch(tmp_path / "videos", "a.mp4")
    (tmp_path / "val.txt").write_text("a.mp4,62\r\n")
    annotations = read_aichallenger(tmp_path / "val.txt")
    assert len(annotations.label_map) == 63
    assert annotations[0].labels == (62,)


def test_read_aichallenger_with_explicit_videos_dir_and_subfolders(tmp_path):
    touch(tmp_path / "elsewhere", "x/a.mp4", "y/b.mp4")
    annotation = tmp_path / "ann.txt"
    annotation.write_text("x/a.mp4,0\ny/b.mp4,1\n")
    annotations = read_aichallenger(annotation, videos_dir=tmp_path / "elsewhere", labels=LabelMap(("p", "q")))
    assert [sample.path for sample in annotations] == [tmp_path / "elsewhere/x/a.mp4", tmp_path / "elsewhere/y/b.mp4"]


@pytest.mark.parametrize(
    "bad_line, kind, cause",
    [
        ("bad.mp4,7", UNKNOWN_LABEL, "unknown class id 7"),
        ("bad.mp4,dog", MALFORMED, "not an integer"),
        ("bad.mp4", EMPTY_LABELS, "no labels for bad.mp4"),
        ("bad.mp4,", EMPTY_LABELS, "no labels for bad.mp4"),
        (",1", MALFORMED, "no video name"),
        ("a.mp4,1", DUPLICATE, "duplicate entry a.mp4 (first on line 1)"),
    ],
)
def test_read_aichallenger_bad_lines(tmp_path, bad_line, kind, cause):
    annotation = make_aichallenger(tmp_path, ["a.mp4,0", bad_line, "c.mp4,1"], videos=["a.mp4", "bad.mp4", "c.mp4"])
    with pytest.raises(AnnotationError) as caught:
        read_aichallenger(annotation)
    message = str(caught.value)
    assert str(annotation) in message and "line 2" in message and cause in message
    assert isinstance(caught.value, DatasetError)
    assert [(problem.line, problem.kind) for problem in caught.value.problems] == [(2, kind)]

    annotations = read_aichallenger(annotation, on_error="skip")
    assert [sample.name for sample in annotations] == ["a.mp4", "c.mp4"]
    (problem,) = annotations.problems
    assert (problem.file, problem.line, problem.kind) == (str(annotation), 2, kind)
    assert cause in problem.cause
    assert str(problem).startswith(f"{annotation}:2: ")


def test_missing_videos_are_counted_and_the_first_ten_named(tmp_path):
    names = [f"v{i:02d}.mp4" for i in range(15)]
    annotation = make_aichallenger(tmp_path, [f"{name},0" for name in names], videos=names[:3])
    with pytest.raises(AnnotationError) as caught:
        read_aichallenger(annotation)
    message = str(caught.value)
    assert str(annotation) in message
    assert "12 of 15 videos not found" in message
    assert "v03.mp4" in message and "v12.mp4" in message and "v13.mp4" not in message

    annotations = read_aichallenger(annotation, on_error="skip")
    assert len(annotations) == 3
    assert [problem.kind for problem in annotations.problems] == [MISSING_VIDEO] * 12
    assert annotations.problems[0].line == 4 and annotations.problems[0].name == "v03.mp4"


def test_missing_videos_folder_is_named(tmp_path):
    (tmp_path / "train.txt").write_text("a.mp4,0\n")
    with pytest.raises(AnnotationError, match="folder does not exist"):
        read_aichallenger(tmp_path / "train.txt")


def test_check_files_false_skips_the_existence_check(tmp_path):
    (tmp_path / "train.txt").write_text("a.mp4,0\n")
    assert len(read_aichallenger(tmp_path / "train.txt", check_files=False)) == 1


def test_file_check_lists_each_folder_once_instead_of_a_stat_per_file(tmp_path, monkeypatch):
    names = [f"{i}.mp4" for i in range(500)]
    annotation = make_aichallenger(tmp_path, [f"{name},{i % 3}" for i, name in enumerate(names)])
    calls = {"listdir": 0, "exists": 0}
    real_listdir, real_exists = os.listdir, os.path.exists

    def counting_listdir(path):
        calls["listdir"] += 1
        return real_listdir(path)

    def counting_exists(path):
        calls["exists"] += 1
        return real_exists(path)

    monkeypatch.setattr(os, "listdir", counting_listdir)
    monkeypatch.setattr(os.path, "exists", counting_exists)
    assert len(read_aichallenger(annotation)) == 500
    assert calls == {"listdir": 1, "exists": 0}


def test_all_entries_bad_in_skip_mode_is_still_an_error(tmp_path):
    annotation = make_aichallenger(tmp_path, ["a.mp4,9"])
    with pytest.raises(AnnotationError, match="no usable samples"):
        read_aichallenger(annotation, on_error="skip")


def test_empty_and_missing_annotation_files(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DatasetError, match="no usable samples"):
        read_aichallenger(tmp_path / "empty.txt")
    with pytest.raises(DatasetError, match="not found"):
        read_aichallenger(tmp_path / "absent.txt")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DatasetError, match="not UTF-8"):
        read_aichallenger(tmp_path / "binary.txt")


def test_invalid_on_error_value(tmp_path):
    with pytest.raises(ValueError, match="on_error"):
        read_aichallenger(tmp_path / "x.txt", on_error="ignore")  # type: ignore[arg-type]


# --- CSV -----------------------------------------------------------------------------------------


def test_read_csv_with_names_ids_and_inferred_map(tmp_path):
    touch(tmp_path, "clips/a.mp4", "clips/b.mp4", "c.mp4")
    (tmp_path / "ann.csv").write_text('path,labels\nclips/a.mp4,dog|Cat\nclips/b.mp4,cat\n"c.mp4", guitar \n')
    annotations = read_csv(tmp_path / "ann.csv")
    assert annotations.label_map.names == ("Cat", "dog", "guitar")  # first spelling seen
    assert [sample.labels for sample in annotations] == [(0, 1), (0,), (2,)]
    assert annotations[0].path == tmp_path / "clips" / "a.mp4"
    assert annotations[0].name == "clips/a.mp4"
    assert annotations.root == tmp_path


def test_read_csv_with_a_label_map_and_root(tmp_path):
    touch(tmp_path / "media", "a.mp4", "b.mp4")
    (tmp_path / "labels.csv").write_text(PETS_MAP_CSV)
    (tmp_path / "ann.csv").write_text("labels,path,comment\n2|0,a.mp4,x\n1,b.mp4,\n")
    annotations = read_csv(tmp_path / "ann.csv", root=tmp_path / "media", labels=tmp_path / "labels.csv")
    assert [sample.labels for sample in annotations] == [(0, 2), (1,)]
    assert annotations[1].path == tmp_path / "media" / "b.mp4"


def test_read_csv_infers_ids_as_their_own_names(tmp_path):
    touch(tmp_path, "a.mp4", "b.mp4", "c.mp4")
    (tmp_path / "ann.csv").write_text("path,labels\na.mp4,10\nb.mp4,2\nc.mp4," + "|".join(map(str, range(11))) + "\n")
    annotations = read_csv(tmp_path / "ann.csv")
    assert len(annotations.label_map) == 11
    assert annotations[0].labels == (10,) and annotations[1].labels == (2,)


def test_read_csv_ids_with_gaps_need_a_label_map(tmp_path):
    touch(tmp_path, "a.mp4")
    (tmp_path / "ann.csv").write_text("path,labels\na.mp4,3\n")
    with pytest.raises(DatasetError, match="pass labels="):
        read_csv(tmp_path / "ann.csv")


@pytest.mark.parametrize(
    "bad_row, kind, cause",
    [
        ("b.mp4,parrot", UNKNOWN_LABEL, "unknown label 'parrot'"),
        ("b.mp4,", EMPTY_LABELS, "no labels for b.mp4"),
        ("b.mp4,dog,cat", MALFORMED, "join several labels with '|'"),
        (",dog", MALFORMED, "no video path"),
        ("a.mp4,cat", DUPLICATE, "duplicate entry a.mp4 (first on line 2)"),
        ("missing.mp4,cat", MISSING_VIDEO, "missing.mp4"),
    ],
)
def test_read_csv_bad_rows(tmp_path, bad_row, kind, cause):
    touch(tmp_path, "a.mp4", "b.mp4", "c.mp4")
    path = tmp_path / "ann.csv"
    path.write_text(f"path,labels\na.mp4,dog\n{bad_row}\nc.mp4,guitar\n")
    label_map = LabelMap(("dog", "cat", "guitar"))
    with pytest.raises(AnnotationError) as caught:
        read_csv(path, labels=label_map)
    assert str(path) in str(caught.value) and cause in str(caught.value)

    annotations = read_csv(path, labels=label_map, on_error="skip")
    assert [sample.name for sample in annotations] == ["a.mp4", "c.mp4"]
    assert [(problem.line, problem.kind) for problem in annotations.problems] == [(3, kind)]


def test_read_csv_requires_the_header(tmp_path):
    (tmp_path / "ann.csv").write_text("a.mp4,dog\n")
    with pytest.raises(DatasetError, match="header must name 'path' and 'labels'"):
        read_csv(tmp_path / "ann.csv")


# --- folders -------------------------------------------------------------------------------------


def test_read_folders_finds_videos_recursively_by_extension(tmp_path):
    touch(tmp_path, "dog/a.mp4", "dog/deep/b.MOV", "cat/c.webm", "cat/notes.txt", "cat/.hidden.mp4", "bird/x.mkv")
    (tmp_path / ".cache").mkdir()
    annotations = read_folders(tmp_path)
    assert annotations.label_map.names == ("bird", "cat", "dog")
    assert [(sample.name, sample.labels) for sample in annotations] == [
        ("bird/x.mkv", (0,)),
        ("cat/c.webm", (1,)),
        ("dog/a.mp4", (2,)),
        ("dog/deep/b.MOV", (2,)),
    ]
    assert annotations[3].path == tmp_path / "dog" / "deep" / "b.MOV"


def test_read_folders_with_a_map_keeps_ids_and_reports_unknown_folders(tmp_path):
    touch(tmp_path, "cat/c.mp4", "parrot/p.mp4")
    label_map = LabelMap(("dog", "cat"))
    with pytest.raises(AnnotationError, match="class folder 'parrot' is not in the label map"):
        read_folders(tmp_path, labels=label_map)
    annotations = read_folders(tmp_path, labels=label_map, on_error="skip")
    assert [sample.labels for sample in annotations] == [(1,)]
    assert annotations.problems[0].kind == UNKNOWN_LABEL and annotations.problems[0].line is None


def test_read_folders_errors(tmp_path):
    with pytest.raises(DatasetError, match="no class folders"):
        read_folders(tmp_path)
    (tmp_path / "dog").mkdir()
    with pytest.raises(DatasetError, match="no videos found"):
        read_folders(tmp_path)


# --- load_dataset --------------------------------------------------------------------------------


def test_load_dataset_aichallenger_folder_picks_the_split(tmp_path):
    make_aichallenger(tmp_path, ["a.mp4,0"], split="train")
    make_aichallenger(tmp_path, ["b.mp4,1", "c.mp4,2"], split="val")
    assert [sample.name for sample in load_dataset(tmp_path)] == ["a.mp4"]
    assert [sample.name for sample in load_dataset(tmp_path, split="val")] == ["b.mp4", "c.mp4"]
    with pytest.raises(DatasetError, match=r"no test.txt or test.csv here \(found train.txt, val.txt\)"):
        load_dataset(tmp_path, split="test")


def test_load_dataset_files_by_suffix(tmp_path):
    make_aichallenger(tmp_path, ["a.mp4,0"])
    official_name = tmp_path / "short_video_trainingset_annotations.txt.082902"
    official_name.write_text("a.mp4,1\n")
    assert load_dataset(official_name)[0].labels == (1,)
    (tmp_path / "ann.csv").write_text("path,labels\nvideos/a.mp4,dog\n")
    assert load_dataset(tmp_path / "ann.csv")[0].name == "videos/a.mp4"
    (tmp_path / "ann.json").write_text("{}")
    with pytest.raises(DatasetError, match="cannot tell the format"):
        load_dataset(tmp_path / "ann.json")


def test_load_dataset_class_folders_and_split_folders(tmp_path):
    touch(tmp_path / "flat", "dog/a.mp4", "cat/b.mp4")
    assert len(load_dataset(tmp_path / "flat")) == 2

    touch(tmp_path / "split", "train/dog/a.mp4", "train/cat/b.mp4", "val/dog/c.mp4")
    val = load_dataset(tmp_path / "split", split="val")
    assert val.label_map.names == ("cat", "dog")
    assert val[0].labels == (1,)
    with pytest.raises(DatasetError, match="no test/ folder"):
        load_dataset(tmp_path / "split", split="test")


def test_load_dataset_cannot_tell(tmp_path):
    touch(tmp_path, "loose.mp4")
    with pytest.raises(DatasetError, match="cannot tell the dataset layout"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no such file or folder"):
        load_dataset(tmp_path / "nothing")


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture
def official_sample_set(tmp_path) -> Annotations:
    names = ["a.mp4", "b.mp4", "c.mp4", "d.mp4"]
    touch(tmp_path / "videos", *names)
    (tmp_path / "train.txt").write_text("a.mp4,0\nb.mp4,1,18\nc.mp4,18\nd.mp4,5\n")
    return read_aichallenger(tmp_path / "train.txt")


def test_class_counts_and_multi_hot(official_sample_set):
    counts = official_sample_set.class_counts()
    assert counts.shape == (63,) and counts.dtype == np.int64
    assert counts[[0, 1, 5, 18]].tolist() == [1, 1, 1, 2] and counts.sum() == 5
    targets = official_sample_set.multi_hot()
    assert targets.shape == (4, 63) and targets.dtype == np.float32
    assert np.flatnonzero(targets[1]).tolist() == [1, 18]
    assert targets.sum() == 5
    with pytest.raises(ValueError, match="num_classes"):
        official_sample_set.multi_hot(10)


def test_subset_remaps_ids_and_drops_unlabelled_samples(official_sample_set):
    pets = official_sample_set.subset(LabelMap.aichallenger2018().groups["pets"])
    assert pets.label_map.names == ("Dog", "Cat", "Mouse", "Rabbit", "Bird")
    assert [(sample.name, sample.labels) for sample in pets] == [("a.mp4", (0,)), ("b.mp4", (1,))]
    dance = official_sample_set.subset(["Street Dance", 5])
    assert [(sample.name, sample.labels) for sample in dance] == [("b.mp4", (1,)), ("c.mp4", (1,)), ("d.mp4", (0,))]


def test_split_by_group(official_sample_set):
    groups = official_sample_set.split_by_group()
    assert {group: len(part) for group, part in groups.items()} == {
        "pets": 2,
        "other": 1,
        "close-up people": 0,
        "distant people": 2,
    }
    assert len(groups["distant people"].label_map) == 21


def test_write_aichallenger_round_trip(tmp_path, official_sample_set):
    out = tmp_path / "out" / "train.txt"
    official_sample_set.write_aichallenger(out)
    assert out.read_text().splitlines()[1] == "b.mp4,1,18"
    again = read_aichallenger(out, videos_dir=official_sample_set.root)
    assert again.samples == official_sample_set.samples
    assert again.label_map == official_sample_set.label_map

    official_sample_set.write_aichallenger(tmp_path / "out" / "val.txt")
    with pytest.raises(DatasetError, match="different label map"):
        official_sample_set.subset([0, 1]).write_aichallenger(tmp_path / "out" / "test.txt")


def test_write_aichallenger_rejects_names_with_commas(tmp_path):
    annotations = Annotations([Sample(tmp_path / "a,b.mp4", (0,), "a,b.mp4")], LabelMap(("x",)), tmp_path)
    with pytest.raises(DatasetError, match="comma"):
        annotations.write_aichallenger(tmp_path / "t.txt")


def test_repr_is_short(official_sample_set):
    assert repr(official_sample_set).startswith("Annotations(4 samples, 63 classes")


def test_names_with_parent_folders_or_absolute_paths(tmp_path):
    touch(tmp_path, "shared/x.mp4", "videos/y.mp4", "abs/z.mp4")
    annotation = tmp_path / "train.txt"
    annotation.write_text(f"../shared/x.mp4,0\ny.mp4,1\n{tmp_path / 'abs' / 'z.mp4'},2\n")
    annotations = read_aichallenger(annotation, labels=LabelMap(("a", "b", "c")))
    assert [sample.path for sample in annotations] == [
        tmp_path / "shared" / "x.mp4",
        tmp_path / "videos" / "y.mp4",
        tmp_path / "abs" / "z.mp4",
    ]
    assert annotations[0].name == "../shared/x.mp4"


def test_load_dataset_class_folders_use_labels_csv_beside_them(tmp_path):
    touch(tmp_path, "cat/a.mp4")
    (tmp_path / "labels.csv").write_text(PETS_MAP_CSV)
    annotations = load_dataset(tmp_path)
    assert annotations.label_map.names == ("dog", "cat", "guitar")
    assert annotations[0].labels == (1,)


def test_annotation_errors_survive_pickling(tmp_path):
    annotation = make_aichallenger(tmp_path, ["a.mp4,9"])
    with pytest.raises(AnnotationError) as caught:
        read_aichallenger(annotation)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert str(copy) == str(caught.value) and copy.problems == caught.value.problems
