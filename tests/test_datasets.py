"""Torch datasets over the frame cache and over raw videos."""

import pytest
import torch
from torch.utils.data import DataLoader

from shortvid.data.annotations import Annotations, Sample
from shortvid.data.cache import FrameCountError, extract
from shortvid.data.datasets import CachedVideoDataset, RawVideoDataset
from shortvid.data.labels import LabelMap
from shortvid.decode import FrameSpec
from shortvid.errors import DatasetError

SPEC = FrameSpec(k=4, size=48)  # cache 4 keyframes; datasets take 2 or 3 of them


@pytest.fixture(scope="module")
def annotations(small_videos):
    samples = [Sample(path=small_videos[name], labels=labels, name=name) for name, labels in
               [("v0.mp4", (0,)), ("v1.mp4", (1, 2)), ("v2.mp4", (2,)), ("text.mp4", (0,))]]
    return Annotations(samples, LabelMap(("a", "b", "c")), next(iter(small_videos.values())).parent)


@pytest.fixture(scope="module")
def cache(annotations, tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    extract([(s.name, s.path) for s in annotations], root, SPEC, fmt="raw", workers=2, progress=False)
    return root


def crop(frames: torch.Tensor, mode: str) -> torch.Tensor:
    return frames[:, :48, :48]


def test_cached_dataset_items(annotations, cache):
    dataset = CachedVideoDataset(annotations, cache, k=3, mode="test", transform=crop)
    assert len(dataset) == 3  # the text file is left out and said so
    assert "text.mp4" in dataset.missing and "not a readable video" in dataset.missing["text.mp4"]
    item = dataset[1]
    assert item["frames"].shape == (3, 48, 48, 3) and item["frames"].dtype == torch.uint8
    assert item["labels"].tolist() == [0.0, 1.0, 1.0]
    assert item["name"] == "v1.mp4"
    # test mode is deterministic and picks the cached keyframes nearest the segment centres
    assert torch.equal(dataset[0]["frames"], dataset[0]["frames"])
    assert dataset[0]["times"].tolist() == pytest.approx([1.0, 2.0, 3.0])


def test_cached_training_sampling_is_random_among_cached_frames_and_seeded(annotations, cache):
    dataset = CachedVideoDataset(annotations, cache, k=2, mode="train", seed=3)
    picks = set()
    for epoch in range(20):
        dataset.set_epoch(epoch)
        picks.add(tuple(dataset[0]["times"].tolist()))
    assert len(picks) > 1
    assert all(set(p) <= {0.0, 1.0, 2.0, 3.0} for p in picks)
    again = CachedVideoDataset(annotations, cache, k=2, mode="train", seed=3)
    again.set_epoch(19)
    assert again[0]["times"].tolist() == dataset[0]["times"].tolist()


def test_cache_and_raw_datasets_give_the_same_test_frames(annotations, cache):
    spec3 = FrameSpec(k=3, size=48)
    cached = CachedVideoDataset(annotations, cache, k=3, mode="test")
    raw = RawVideoDataset(annotations, spec3, mode="test")
    for i in range(2):
        assert torch.equal(cached[i]["frames"], raw[i]["frames"])


def test_cached_dataset_refuses_more_frames_than_the_cache_holds(annotations, cache):
    with pytest.raises(FrameCountError, match=rf"{cache}: holds 4 frames a video .* 5 were asked for"):
        CachedVideoDataset(annotations, cache, k=5, mode="test")
    dataset = CachedVideoDataset(annotations, cache, k=4, mode="test")  # as many as it holds: fine
    assert dataset.spec == FrameSpec(k=4, size=48) and dataset[0]["frames"].shape[0] == 4
    assert CachedVideoDataset(annotations, cache, k=2, mode="test").spec == FrameSpec(k=2, size=48)


def test_raw_dataset_skips_a_broken_video_up_to_a_bound(annotations):
    raw = RawVideoDataset(annotations, FrameSpec(k=2, size=48), mode="train", max_failures=5)
    item = raw[3]  # the text file: replaced by the next video
    assert item["name"] == "v0.mp4"
    assert "text.mp4" in raw.failures
    strict = RawVideoDataset(annotations, FrameSpec(k=2, size=48), max_failures=0)
    with pytest.raises(DatasetError, match="failed to decode"):
        strict[3]


def test_dataloader_with_worker_processes(annotations, cache):
    dataset = CachedVideoDataset(annotations, cache, k=3, mode="train", transform=crop, seed=0)
    batches = list(DataLoader(dataset, batch_size=2, num_workers=2))
    assert sum(len(b["name"]) for b in batches) == 3
    assert batches[0]["frames"].shape == (2, 3, 48, 48, 3)
    assert batches[0]["labels"].shape == (2, 3)


def test_empty_cache_is_an_error(annotations, tmp_path):
    extract([("v0.mp4", annotations[0].path)], tmp_path, SPEC, workers=1, progress=False)
    other = Annotations([annotations[1]], annotations.label_map, annotations.root)
    with pytest.raises(DatasetError, match="none of the 1 videos"):
        CachedVideoDataset(other, tmp_path)


@pytest.mark.parametrize("shape", [(3, 182, 242), (2, 161, 160), (1, 200, 171), (3, 160, 160)])
def test_cpu_centre_crop_matches_torchvision(shape):
    """The NumPy evaluation transform (CPU) gives torchvision's v2 crop and normalisation."""
    from shortvid.data.transforms import VideoTransform

    transform = VideoTransform(160, augment=False)
    frames = torch.randint(0, 256, shape + (3,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    fast = transform(frames, "test")
    reference = transform.test(frames.permute(0, 3, 1, 2)).contiguous()
    assert fast.dtype == torch.float32 and fast.shape == (shape[0], 3, 160, 160)
    assert torch.allclose(fast, reference, atol=1e-5)


def test_centre_crop_pads_like_torchvision_when_frames_are_smaller():
    from shortvid.data.transforms import VideoTransform

    transform = VideoTransform(64, augment=False)
    frames = torch.randint(0, 256, (2, 40, 80, 3), dtype=torch.uint8)
    assert transform(frames, "test").shape == (2, 3, 64, 64)
