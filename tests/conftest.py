"""Shared fixtures: small real videos and corpora, generated once per test session."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from shortvid.synth.encode import EncodeSpec, encode_video  # noqa: E402


def pattern_frames(n: int, width: int, height: int, seed: int = 0):
    """Frames with structure and per-frame differences, so JPEG and scalers behave as on real video."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    big = np.repeat(np.repeat(base, 8, 0), 8, 1)[:height, :width]
    y, x = np.mgrid[0:height, 0:width]
    for i in range(n):
        frame = big.copy()
        frame[..., 0] = ((x + 3 * i) % 64 * 4).astype(np.uint8)
        yield frame


@pytest.fixture(scope="session")
def small_videos(tmp_path_factory) -> dict[str, Path]:
    """A few good tiny H.264 videos with keyframes at known times, plus broken files."""
    root = tmp_path_factory.mktemp("small_videos")
    spec = EncodeSpec(fps=10, gop=100, scenecut=False, audio=True)
    videos = {}
    for i, keyframes in enumerate([(0, 10, 20, 30), (0, 25), (0,)]):
        path = root / f"v{i}.mp4"
        encode_video(path, pattern_frames(40, 64, 112, seed=i), spec, keyframes=keyframes)
        videos[path.name] = path
    (root / "text.mp4").write_text("not a video\n")
    videos["text.mp4"] = root / "text.mp4"
    videos["missing.mp4"] = root / "missing.mp4"
    return videos


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """The `tiny` synthetic corpus (AI Challenger layout), generated once per session."""
    from shortvid.synth.corpus import generate_corpus, preset

    root = tmp_path_factory.mktemp("tiny_corpus")
    generate_corpus(root, preset("tiny", seed=0), workers=2, progress=False)
    return root


@pytest.fixture(scope="session")
def tiny_cache(tiny_corpus, tmp_path_factory) -> Path:
    """The tiny corpus's frame cache (3 keyframes, short side 72, as the `tiny` config reads)."""
    from shortvid.data.annotations import load_dataset
    from shortvid.data.cache import extract
    from shortvid.decode import FrameSpec

    root = tmp_path_factory.mktemp("tiny_cache")
    names = []
    for split in ("train", "val"):
        names += [(s.name, s.path) for s in load_dataset(tiny_corpus, split)]
    extract(names, root, FrameSpec(k=3, size=72), workers=2, progress=False)
    return root


def tiny_config(corpus, cache, out, *extra):
    """The shipped `tiny` config on the tiny corpus, quiet, with `extra` overrides."""
    from shortvid.train.config import load_config

    return load_config("tiny", [f"data.dataset={corpus}", f"data.cache={cache}", f"out={out}", "progress=false",
                                "data.batch_size=6", "data.resize=72", "data.input_size=64", *extra])


@pytest.fixture(scope="session")
def trained_run(tiny_corpus, tiny_cache, tmp_path_factory) -> Path:
    """A tiny model trained for 3 epochs: the run directory the serving-side tests read."""
    from shortvid.train.trainer import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train(tiny_config(tiny_corpus, tiny_cache, out, "optim.epochs=3"))
    return out
