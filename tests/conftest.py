"""Shared fixtures: small real videos and corpora, generated once per test session (once for all
pytest-xdist workers: the first to ask makes them while the others wait)."""

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock

sys.path.insert(0, str(Path(__file__).parent))

from shortvid.synth.encode import EncodeSpec, encode_video


def pytest_configure(config):
    """Under pytest-xdist, one torch thread a worker (and a process it starts): as many workers as cores,
    none left waiting for another's threads. Two workers of two threads each on 2 cores made a test
    that trains 7 times slower (measured: 158 s against 21 s)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto`` (make test): one worker a core this process may use (its CPU affinity and a cgroup's
    CPU quota, where a container sets one, not the host's count), fewer where memory would not hold
    4 GiB a worker (a worker that starts Ray or trains peaks near that)."""
    from shortvid.machine import memory_bytes

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    memory = memory_bytes()
    return max(1, min(cores, memory // (4 << 30) if memory else cores))


def shared(tmp_path_factory, name: str, make: Callable[[Path], object]) -> Path:
    """The folder ``name``, filled by ``make(folder)`` once for the session. Under pytest-xdist every
    worker has a temporary folder of its own inside the session's: the folder is made there, by the
    first worker to ask, under a lock the others wait on. A folder whose making failed is made again."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder, done = root / name, root / f"{name}.done"
    with FileLock(root / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            make(folder)
            done.touch()
    return folder


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
def damaged(small_videos, tmp_path_factory) -> dict[str, Path]:
    """The damaged files of issue 10's report, made from ``v0.mp4``: a sample description and a handler
    box that leave the video stream without a decoder, SPS claiming huge frames, swapped moov/mdat, and
    the good original."""
    from shortvid.synth.damage import find, parse_boxes, with_boxes_swapped, with_coded_size

    folder = tmp_path_factory.mktemp("damaged")
    good = small_videos["v0.mp4"].read_bytes()
    entry, handler = find(parse_boxes(good), b"avc1")[0], find(parse_boxes(good), b"hdlr")[0]
    files = {
        "good": good,
        # FFmpeg opens both with a video stream that has no codec context
        "stsd": good[:entry.offset + 4] + b"zzzz" + good[entry.offset + 8:],  # the sample entry's codec tag
        "hdlr": good[:handler.offset] + b"\xff" + good[handler.offset + 1:],  # the handler box's size
        "sps_65520x16": with_coded_size(good, 65520, 16),
        "sps_16000x16000": with_coded_size(good, 16000, 16000),
        "swapped": with_boxes_swapped(good),
    }
    paths = {}
    for key, data in files.items():
        paths[key] = folder / f"{key}.mp4"
        paths[key].write_bytes(data)
    return paths


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """The `tiny` synthetic corpus (AI Challenger layout), generated once per session."""
    from shortvid.synth.corpus import generate_corpus, preset

    return shared(tmp_path_factory, "tiny_corpus",
                  lambda root: generate_corpus(root, preset("tiny", seed=0), workers=2, progress=False))


@pytest.fixture(scope="session")
def tiny_cache(tiny_corpus, tmp_path_factory) -> Path:
    """The tiny corpus's frame cache (3 keyframes, short side 72, as the `tiny` config reads)."""
    from shortvid.data.annotations import load_dataset
    from shortvid.data.cache import extract
    from shortvid.decode import FrameSpec

    def make(root: Path) -> None:
        names = []
        for split in ("train", "val"):
            names += [(s.name, s.path) for s in load_dataset(tiny_corpus, split)]
        extract(names, root, FrameSpec(k=3, size=72), workers=2, progress=False)

    return shared(tmp_path_factory, "tiny_cache", make)


def tiny_config(corpus, cache, out, *extra):
    """The shipped `tiny` config on the tiny corpus, quiet, with `extra` overrides."""
    from shortvid.train.config import load_config

    return load_config("tiny", [f"data.dataset={corpus}", f"data.cache={cache}", f"out={out}", "progress=false",
                                "data.batch_size=6", "data.resize=72", "data.input_size=64", *extra])


@pytest.fixture(scope="session")
def trained_run(tiny_corpus, tiny_cache, tmp_path_factory) -> Path:
    """A tiny model trained for 3 epochs: the run directory the serving-side tests read."""
    from shortvid.train.trainer import train

    runs = shared(tmp_path_factory, "runs",
                  lambda root: train(tiny_config(tiny_corpus, tiny_cache, root / "tiny", "optim.epochs=3")))
    return runs / "tiny"


AV_MUTE = "mute.mp4"  # in av_corpus's videos/: its first validation video without the audio track
AV_OVERRIDES = ("model.motion=2", "model.audio=true")  # a model that sees 2 motion frames a keyframe and hears


def without_audio(source: Path, target: Path) -> Path:
    """``source``'s video stream copied packet for packet into ``target``, without its audio track: the same
    frames, no sound."""
    import av

    with av.open(str(source)) as reading, av.open(str(target), "w") as writing:
        stream = writing.add_stream_from_template(reading.streams.video[0])
        for packet in reading.demux(reading.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                writing.mux(packet)
    return target


@pytest.fixture(scope="session")
def av_corpus(tmp_path_factory) -> Path:
    """The `av-tiny` corpus (seed 0: motion, sound and appearance classes, videos of 1-3 keyframes), plus
    ``videos/mute.mp4`` (``AV_MUTE``: the first validation video's video stream without its audio track) and
    the split ``muted`` (the validation videos and that one, with its original's labels); train and val are
    the preset's."""
    from shortvid.synth.corpus import generate_corpus, preset

    def make(root: Path) -> None:
        generate_corpus(root, preset("av-tiny", seed=0), workers=2, progress=False)
        val = (root / "val.txt").read_text().splitlines()
        first, labels = val[0].split(",", 1)
        without_audio(root / "videos" / first, root / "videos" / AV_MUTE)
        (root / "muted.txt").write_text("\n".join([*val, f"{AV_MUTE},{labels}"]) + "\n")

    return shared(tmp_path_factory, "av_corpus", make)


@pytest.fixture(scope="session")
def av_cache(av_corpus, tmp_path_factory) -> Path:
    """The av corpus's frame cache (train and val): 3 keyframes at short side 72, 2 motion frames after
    each, 2 s of sound."""
    from shortvid.data.annotations import load_dataset
    from shortvid.data.cache import extract
    from shortvid.decode import AudioSpec, FrameSpec

    def make(root: Path) -> None:
        names = [(s.name, s.path) for split in ("train", "val") for s in load_dataset(av_corpus, split)]
        extract(names, root, FrameSpec(k=3, size=72, motion=2), workers=2, progress=False,
                audio=AudioSpec(seconds=2.0))

    return shared(tmp_path_factory, "av_cache", make)


@pytest.fixture(scope="session")
def av_run(av_corpus, av_cache, tmp_path_factory) -> Path:
    """The tiny config with motion and sound (``AV_OVERRIDES``) trained 2 epochs on the av corpus."""
    from shortvid.train.trainer import train

    runs = shared(tmp_path_factory, "av_runs",
                  lambda root: train(tiny_config(av_corpus, av_cache, root / "av", "optim.epochs=2", *AV_OVERRIDES)))
    return runs / "av"


def stop_at_checkpoint(monkeypatch) -> None:
    """Make each checkpoint save end the run right after writing (a ``KeyboardInterrupt``), as a kill would;
    ``monkeypatch.undo()`` lets a resume run normally."""
    from shortvid.run import RunDir

    save = RunDir.save_checkpoint

    def save_then_stop(self, checkpoint, path):
        save(self, checkpoint, path)
        raise KeyboardInterrupt("simulated stop")

    monkeypatch.setattr(RunDir, "save_checkpoint", save_then_stop)
