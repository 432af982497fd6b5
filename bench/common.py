"""What the benchmarks share: where generated data lives, the corpora, the machine a report ran on, the
models written as runs, a `shortvid serve` subprocess, interleaved timing and the JSON report.

The benchmarks run as `python bench/NAME.py`; Python puts the script's folder first on `sys.path`, so
they import this file as `common`. Loading it imports nothing of shortvid (each helper imports what it
uses), because bench/soak.py's child process imports it and then runs another revision's package.

Generated data (corpora, damaged copies, baseline worktrees) is kept in `$SHORTVID_BENCH_DATA`, by
default bench/.cache, and reused by later runs; a corpus left half-made is finished.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not at run time: loading this file imports nothing of shortvid
    from shortvid.decode import AudioSpec

BENCH = Path(__file__).resolve().parent
DATA = Path(os.environ.get("SHORTVID_BENCH_DATA") or BENCH / ".cache").expanduser()
SIZE, CROP, K = 256, 224, 3  # the decoding benchmarks' frames: short side 256, centre crop 224, 3 segments


# -- the command line and the report ------------------------------------------------------------
def make_parser(doc: str, *, data: bool = True) -> argparse.ArgumentParser:
    """A benchmark's parser: its docstring as the description (what it measures, against what baseline,
    what it prints), where generated data goes (``data``), and ``--json``."""
    epilog = f"Generated data is kept in $SHORTVID_BENCH_DATA (here: {DATA}) and reused." if data else None
    made = argparse.ArgumentParser(description=doc, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    made.add_argument("--json", type=Path, default=None, help="also write the report here (JSON)")
    return made


def write_json(path: Path | None, report: dict) -> None:
    """Write ``report`` to ``path`` (the ``--json`` option) when one was given."""
    if path is not None:
        path.write_text(json.dumps(report, indent=2) + "\n")


def machine() -> str:
    """One line naming what the numbers ran on: architecture, cores, CPU, Python and PyAV."""
    from shortvid.machine import describe

    m = describe()
    return f"{m['arch']}, {m['cores']} cores, {m['cpu']}; Python {m['python']}, PyAV {m['pyav']}"


# -- timing -------------------------------------------------------------------------------------
def interleaved(calls: dict[str, Callable], items: Sequence[Hashable], repeats: int) -> dict[str, dict]:
    """Milliseconds of every call on every item: ``repeats`` passes over ``items``, all the calls on
    each item in a new shuffled order (seed 0), so machine noise and the cold caches left by a heavy
    call hit them alike. A call that returns None is not timed (it failed and was dropped)."""
    times: dict[str, dict] = {name: {item: [] for item in items} for name in calls}
    order = list(calls)
    shuffle = random.Random(0).shuffle
    for _ in range(repeats):
        for item in items:
            shuffle(order)
            for name in order:
                started = time.perf_counter()
                if calls[name](item) is not None:
                    times[name][item].append((time.perf_counter() - started) * 1000)
    return times


def p95(values: Sequence[float]) -> float:
    import numpy as np

    return float(np.percentile(values, 95))


def percentiles(seconds: Sequence[float], digits: int = 1) -> dict[str, float | None]:
    """p50 and p99 of latencies given in seconds, in ms (None for no latencies)."""
    import numpy as np

    values = np.asarray(seconds, dtype=float) * 1000
    return {f"p{q}_ms": round(float(np.percentile(values, q)), digits) if len(values) else None for q in (50, 99)}


# -- corpora ------------------------------------------------------------------------------------
def generated(folder: str, spec, *, workers: int | None = None, progress: bool = True) -> list[Path]:
    """The videos of the corpus ``spec`` (a `shortvid.synth.corpus.CorpusSpec`), generated once into
    DATA/``folder``."""
    from shortvid.synth.corpus import generate_corpus

    out = DATA / folder
    generate_corpus(out, spec, workers=workers or os.cpu_count(), progress=progress)
    return sorted((out / "videos").glob("*.mp4"))


def realistic_corpus(videos: int, sizes: tuple[tuple[int, int], ...] = ((720, 1280),)) -> list[Path]:
    """Competition-like videos: portrait (720x1280 by default), 30 fps, a keyframe every 120 frames plus
    one at each cut, 10-15 s, H.264 High + AAC, faststart."""
    from shortvid.synth.corpus import preset

    spec = dataclasses.replace(
        preset("small"), name="decode-bench", num_classes=4, num_groups=2, num_videos=max(videos, 4),
        min_videos_per_class=1, sizes=sizes, legacy_share=0.0, vfr_share=0.0, rotated_share=0.0,
        audio_first_share=0.0, clip_name_share=0.0, duration=(10.0, 15.0), fps=30.0, gop=120,
        render_short_side=240, difficulty=0.3, seed=7,
    )
    tag = "" if sizes == ((720, 1280),) else "-".join(str(min(size)) for size in sizes) + "-"
    return generated(f"decode-corpus-{tag}{videos}", spec)


# Real uploads as issue 14 measured them: 16 of 25 square 480x480, the rest portrait 540x954-720x1282
# and one 1280x720 landscape; 6-15 s with AAC audio interleaved; 2-15 keyframes, mostly 2-4.
REAL_SHAPED_SIZES = ((480, 480),) * 16 + ((540, 954),) * 4 + ((720, 1282),) * 4 + ((1280, 720),)


def real_shaped_corpus(videos: int) -> list[Path]:
    """Videos shaped like the real uploads (`REAL_SHAPED_SIZES`, a keyframe every 5 s plus one per
    cut). Every second file has its index (`moov`) moved after the media data, as uploads written
    without faststart have it; every third has its edit lists removed (x264's B-frames make the muxer
    write one), so both kinds are present."""
    from shortvid.synth.corpus import preset

    spec = dataclasses.replace(
        preset("small"), name="real-shaped", num_classes=4, num_groups=2, num_videos=max(videos, 4),
        min_videos_per_class=1, sizes=REAL_SHAPED_SIZES, legacy_share=0.0, vfr_share=0.0, rotated_share=0.0,
        audio_first_share=0.0, clip_name_share=0.0, duration=(6.0, 15.0), fps=30.0, gop=150,
        render_short_side=240, difficulty=0.3, seed=11,
    )
    paths = generated(f"real-shaped-{videos}", spec)
    for index, path in enumerate(paths):
        _reshape_container(path, index_last=index % 2 == 1, edit_lists=index % 3 != 2)
    return paths


def _reshape_container(path: Path, *, index_last: bool, edit_lists: bool) -> None:
    """Move `moov` after `mdat` and drop the edit lists, as asked; chunk offsets follow the media data."""
    from shortvid.files import atomic_path
    from shortvid.synth.damage import find, parse_boxes, serialise_boxes

    data = path.read_bytes()
    boxes = parse_boxes(data)
    kinds = [box.kind for box in boxes]
    changed = False
    if index_last and kinds.index(b"moov") < kinds.index(b"mdat"):
        boxes.append(boxes.pop(kinds.index(b"moov")))
        changed = True
    if not edit_lists:
        for trak in find(boxes, b"trak"):
            kept = [child for child in trak.children or () if child.kind != b"edts"]
            changed |= len(kept) != len(trak.children or ())
            trak.children = kept
    if changed:
        with atomic_path(path, suffix=".mp4") as partial:
            Path(partial).write_bytes(serialise_boxes(boxes))


def container_shapes(paths: list[Path]) -> dict[str, int]:
    """How many files have their index last, and how many have edit lists."""
    from shortvid.synth.damage import find, parse_boxes

    shapes = {"moov_last": 0, "edit_lists": 0}
    for path in paths:
        boxes = parse_boxes(path.read_bytes())
        kinds = [box.kind for box in boxes]
        shapes["moov_last"] += kinds.index(b"moov") > kinds.index(b"mdat")
        shapes["edit_lists"] += bool(find(boxes, b"elst"))
    return shapes


def bench_corpus(videos: int, gop: int = 120) -> list[Path]:
    """The `bench` preset's shapes (270x480 and 360x640 portrait, 240x240 legacy, 4-10 s, VFR, rotated,
    ...) in a small corpus, ``gop`` frames between forced keyframes (the preset's is 120)."""
    from shortvid.synth.corpus import preset

    made = max(videos, preset("bench").num_classes)  # at least a video a class: fewer are sampled from them
    spec = preset("bench", num_videos=made, min_videos_per_class=max(1, made // 24), gop=gop)
    paths = generated(f"frame-policy-bench-{made}-gop{gop}", spec)  # the folder bench/frame_policy.py named
    return paths if videos >= made else sorted(random.Random(0).sample(paths, videos))


GENERATED = ("realistic-720", "realistic-540", "real-shaped")  # the corpora --corpus names


def add_corpus_argument(parser: argparse.ArgumentParser, default: str = "realistic-720",
                        choices: Sequence[str] = GENERATED) -> None:
    """``--corpus``: which generated corpus (see `corpus`)."""
    parser.add_argument("--corpus", choices=choices, default=default,
                        help="the videos: realistic-720/-540, portrait 720x1280/540x960, 10-15 s; real-shaped, "
                             "shaped like real uploads (mostly 480x480, moov first or last); bench, the `bench` "
                             f"preset's shapes (default: {default})")


def corpus(name: str, videos: int, bench_dir: Path | None = None) -> list[Path]:
    """``videos`` videos of the corpus ``name``: one of GENERATED, or `bench`, the `bench` preset's
    shapes (sampled with seed 0 from the corpus in ``bench_dir`` where one is given)."""
    if name == "real-shaped":
        return real_shaped_corpus(videos)
    if name == "realistic-720":
        return realistic_corpus(videos)
    if name == "realistic-540":
        return realistic_corpus(videos, sizes=((540, 960),))
    if name == "bench":
        if bench_dir is None:
            return bench_corpus(videos)
        every = sorted(bench_dir.glob("*.mp4"))
        if not every:
            raise SystemExit(f"no .mp4 files in {bench_dir}: pass the videos folder of a `bench` preset corpus")
        return sorted(random.Random(0).sample(every, min(videos, len(every))))
    raise SystemExit(f"unknown corpus {name!r}")


def originals() -> list[Path]:
    """The soak and fuzz benchmarks' good videos: 24 of the `bench` preset's shapes (270x480 and 360x640
    portrait H.264 + AAC, 4-10 s)."""
    from shortvid.synth.corpus import preset

    spec = preset("bench", num_videos=24, num_classes=4, num_groups=2, min_videos_per_class=1, seed=11)
    return generated("soak/good", spec, workers=2, progress=False)


def damaged(good: list[Path], folder: Path, per_video: int, seed: int = 0) -> list[Path]:
    """``per_video`` damaged copies of each of ``good`` (`shortvid.synth.damage`, every kind in turn;
    the copies of video i seeded ``seed + i``), written once into ``folder``."""
    from shortvid.synth.damage import damaged_copies

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, path in enumerate(good):
        for name, data in damaged_copies(path.read_bytes(), per_video, seed=seed + index):
            target = folder / f"{path.stem}-{name}.mp4"
            if not target.exists():
                target.write_bytes(data)
            paths.append(target)
    return paths


def baseline_tree(revision: str) -> Path:
    """The package as it was at ``revision``, checked out once (a git worktree in DATA/soak), to run
    a baseline with ``PYTHONPATH`` pointing at it."""
    tree = DATA / "soak" / f"baseline-{revision}"
    if not (tree / "shortvid").is_dir():
        subprocess.run(["git", "worktree", "add", "--force", "--detach", str(tree), revision], check=True,
                       cwd=BENCH, capture_output=True)
    return tree


# -- models -------------------------------------------------------------------------------------
STUDENT, SEED = "student tsn_mobilenetv3 @160", "seed tsn_resnet50 @224"
MODELS = {  # label: (model, short side decoded, input crop)
    STUDENT: ("tsn_mobilenetv3", 182, 160),  # the CPU-fast student, the shipped `mobilenet_cpu` config
    SEED: ("tsn_resnet50", 256, 224),  # the seed's net
}


def make_run(root: Path, label: str = STUDENT, *, model_args: dict | None = None, motion_order: str = "shown",
             audio: AudioSpec | None = None) -> Path:
    """A run folder at ``root`` serving the model ``label`` (of MODELS) with random weights (no download
    here; time does not depend on them).

    ``model_args`` go to `create_model` (e.g. ``motion=1, audio=True`` and their encoders' ``motion_args``,
    ``audio_args``); the run then reads the motion frames its model takes, in ``motion_order``, and, for
    a model that hears, the sound ``audio`` (a `shortvid.decode.AudioSpec`; default ``AudioSpec()``)."""
    from shortvid.data.labels import LabelMap
    from shortvid.decode import AudioSpec, FrameSpec
    from shortvid.models import create_model
    from shortvid.run import Preprocess, RunDir

    model_name, resize, crop = MODELS[label]
    labels = LabelMap.aichallenger2018()
    model_args = model_args or {}
    model = create_model(model_name, num_classes=len(labels), **model_args)
    motion = int(model_args.get("motion", 0))
    frames = FrameSpec(k=3, size=resize, motion=motion, motion_order=motion_order if motion else "shown")
    hears = bool(model_args.get("audio", False))
    preprocess = Preprocess(frames, crop, "sigmoid", audio=(audio or AudioSpec()) if hears else None)
    RunDir(root).write_inference(model, labels, preprocess)
    return root


# -- a `shortvid serve` subprocess --------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, server: subprocess.Popen, timeout: float = 180) -> None:
    """Until ``base``/readyz answers 200; an error if the server exits or takes longer than ``timeout`` s."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(f"the server at {base} was not ready in {timeout:g} s")


def launch(command: Sequence[str], port: int, env: dict[str, str] | None = None, **popen) -> subprocess.Popen:
    """Start the server subprocess ``command`` (``env`` added to this environment, ``popen`` passed on)
    and return it once 127.0.0.1:``port``/readyz answers 200; stopped again if it never does."""
    server = subprocess.Popen(list(command), env={**os.environ, **(env or {})}, **popen)
    try:
        wait_ready(f"http://127.0.0.1:{port}", server)
    except BaseException:
        stop(server)
        raise
    return server


def start_server(run: Path, port: int, *options: str, tree: Path | None = None,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    """`shortvid serve RUN` on 127.0.0.1:``port`` (CPU, warnings only, then ``options``) as a subprocess,
    its own process and GIL as deployed; from this checkout, or from ``tree`` (`baseline_tree`). Returns
    once it is ready."""
    command = [sys.executable, "-m", "shortvid.cli", "serve", str(run), "--port", str(port), "--device", "cpu",
               "--log-level", "warning", *options]
    return launch(command, port, {**(env or {}), **({"PYTHONPATH": str(tree)} if tree is not None else {})})


def stop(server: subprocess.Popen) -> None:
    """SIGTERM (the server drains), then SIGKILL after 60 s."""
    server.terminate()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def metric(text: str, name: str, default: float = 0.0) -> float:
    """The value of the unlabelled sample ``name`` in a Prometheus text exposition (/metrics)."""
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else default
