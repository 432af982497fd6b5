"""LabelMap: reading both CSV layouts, look-ups, validation, and the official 63-class map."""

from __future__ import annotations

import pickle

import pytest

from shortvid.data.labels import LabelMap, UnknownLabelError
from shortvid.errors import DatasetError


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def small_map() -> LabelMap:
    return LabelMap(names=("dog", "cat", "guitar"), class_groups=("pets", "pets", "music"))


def test_official_map_has_63_classes_in_the_four_groups_of_the_slides():
    label_map = LabelMap.aichallenger2018()
    assert len(label_map) == 63
    sizes = {group: len(ids) for group, ids in label_map.groups.items()}
    assert sizes == {"close-up people": 11, "pets": 5, "distant people": 21, "other": 26}
    assert label_map.groups["pets"] == [0, 1, 2, 3, 4]
    assert label_map.name(0) == "Dog"
    assert label_map.names_zh[0] == "狗"
    assert label_map.group(17) == "close-up people"
    assert label_map.id("handsign dance") == 17
    assert sorted(i for ids in label_map.groups.values() for i in ids) == list(range(63))


def test_official_map_is_shared_and_immutable():
    label_map = LabelMap.aichallenger2018()
    assert LabelMap.aichallenger2018() is label_map
    with pytest.raises(AttributeError):
        label_map.names = ("x",)  # type: ignore[misc]


def test_from_csv_reads_the_shortvid_layout_in_any_row_order(tmp_path):
    path = write(tmp_path / "labels.csv", "id,name,group\n1,cat,pets\n0,dog,pets\n2,guitar,music\n")
    label_map = LabelMap.from_csv(path)
    assert label_map.names == ("dog", "cat", "guitar")
    assert label_map.groups == {"pets": [0, 1], "music": [2]}
    assert label_map.names_zh == ()


def test_from_csv_reads_the_official_layout_with_english_names(tmp_path):
    path = write(tmp_path / "official.csv", "\ufeffid,name_zh,name_en,group\n0,狗,Dog,pets\n1,猫,Cat,pets\n")
    label_map = LabelMap.from_csv(path)
    assert label_map.names == ("Dog", "Cat")
    assert label_map.names_zh == ("狗", "猫")


def test_group_column_is_optional(tmp_path):
    label_map = LabelMap.from_csv(write(tmp_path / "l.csv", "id,name\n0,a\n1,b\n"))
    assert label_map.group(1) == ""
    assert label_map.groups == {}


@pytest.mark.parametrize(
    "text, cause",
    [
        ("id,name\n0,a\n2,b\n", "contiguous"),
        ("id,name\n0,a\n0,b\n", "line 3: duplicate id 0"),
        ("id,name\n0,a\n1,A\n", "duplicate class name"),
        ("id,name\n0,a\nx,b\n", "line 3: id 'x' is not an integer"),
        ("id,name\n0,a\n1,\n", "line 3: class 1 has an empty name"),
        ("idx,label\n0,a\n", "header must be"),
        ("", "empty label map file"),
        ("id,name\n", "no classes"),
    ],
)
def test_from_csv_rejects_invalid_maps_naming_the_file(tmp_path, text, cause):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(DatasetError) as caught:
        LabelMap.from_csv(path)
    assert str(path) in str(caught.value)
    assert cause in str(caught.value)


def test_from_csv_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        LabelMap.from_csv(tmp_path / "nope.csv")


def test_id_accepts_ints_digit_strings_and_names_ignoring_case(small_map):
    assert small_map.id(2) == 2
    assert small_map.id("2") == 2
    assert small_map.id(" Guitar ") == 2
    assert small_map.id("CAT") == 1
    assert small_map.name(1) == "cat"
    assert small_map.group(2) == "music"
    assert "dog" in small_map and 5 not in small_map


def test_a_class_named_by_digits_resolves_by_name_first():
    label_map = LabelMap(names=("10", "2"))
    assert label_map.id("2") == 1
    assert label_map.id("10") == 0
    assert label_map.id("0") == 0


@pytest.mark.parametrize("label", ["dgo", 3, -1, "7", ""])
def test_unknown_labels_raise_a_clear_error(small_map, label):
    with pytest.raises(UnknownLabelError) as caught:
        small_map.id(label)
    assert isinstance(caught.value, DatasetError)
    assert "unknown" in str(caught.value)


def test_unknown_name_suggests_close_matches(small_map):
    with pytest.raises(UnknownLabelError, match="did you mean 'dog'"):
        small_map.id("dgo")


def test_constructor_validates():
    with pytest.raises(DatasetError, match="no classes"):
        LabelMap(names=())
    with pytest.raises(DatasetError, match="duplicate class name"):
        LabelMap(names=("a", "b", "a"))
    with pytest.raises(DatasetError, match="groups given"):
        LabelMap(names=("a", "b"), class_groups=("g",))


@pytest.mark.parametrize(
    "label_map", [LabelMap.aichallenger2018(), LabelMap(names=("dog", "cat"), class_groups=("pets", ""))]
)
def test_csv_round_trip(tmp_path, label_map):
    path = tmp_path / "labels.csv"
    label_map.to_csv(path)
    assert LabelMap.from_csv(path) == label_map


def test_to_csv_writes_the_shortvid_header_without_chinese_names(tmp_path, small_map):
    path = tmp_path / "labels.csv"
    small_map.to_csv(path)
    assert path.read_text().splitlines()[:2] == ["id,name,group", "0,dog,pets"]


def test_subset_renumbers_in_original_order(small_map):
    sub = small_map.subset(["guitar", 0])
    assert sub.names == ("dog", "guitar")
    assert sub.class_groups == ("pets", "music")
    pets = LabelMap.aichallenger2018().subset(LabelMap.aichallenger2018().groups["pets"])
    assert pets.names == ("Dog", "Cat", "Mouse", "Rabbit", "Bird")
    assert pets.names_zh[0] == "狗"


def test_unknown_label_error_survives_pickling(small_map):
    with pytest.raises(UnknownLabelError) as caught:
        small_map.id("parrot")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is UnknownLabelError and str(copy) == str(caught.value)
