"""The ``shortvid`` command: a thin layer over the Python API, one subcommand per job."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

from . import __version__


def _size(text: str) -> int | tuple[int, int] | None:
    """``256`` (short side), ``256x455`` (height x width) or ``none`` (native size)."""
    if text.lower() == "none":
        return None
    if "x" in text:
        height, width = text.lower().split("x")
        return int(height), int(width)
    return int(text)


def _frame_options(parser: argparse.ArgumentParser, size: str) -> None:
    parser.add_argument("--k", type=int, default=3, help="frames per video (default: 3)")
    parser.add_argument("--sampler", choices=["keyframes", "uniform"], default="keyframes",
                        help="keyframes: one keyframe per TSN segment, decoding nothing else (default); "
                             "uniform: the frame at each segment centre, by seeking")
    parser.add_argument("--fill", choices=["repeat", "seek"], default="repeat",
                        help="fewer keyframes than --k: repeat keyframes (default, free) or decode a "
                             "frame at each empty segment's centre (costs a GOP decode each)")
    parser.add_argument("--size", type=_size, default=_size(size),
                        help=f"short side in pixels, HxW, or none for native size (default: {size})")
    parser.add_argument("--crop", type=int, default=None, help="centre square crop after resizing")


def _frame_spec(args: argparse.Namespace):
    from .decode import FrameSpec

    return FrameSpec(k=args.k, sampler=args.sampler, size=args.size, crop=args.crop, fill=args.fill)


def cmd_probe(args: argparse.Namespace) -> int:
    from .decode import DecodeError

    spec = _frame_spec(args)
    failures = 0
    for path in args.videos:
        try:
            clip = spec.read(path, timeout=args.timeout)
        except DecodeError as error:
            failures += 1
            print(json.dumps({"path": path, "error": error.to_dict()}, ensure_ascii=False), flush=True)
            continue
        record = clip.to_dict()
        record["path"] = path
        if args.save:
            record["saved"] = _save_frames(clip, path, Path(args.save))
        print(json.dumps(record, ensure_ascii=False), flush=True)
    return 1 if failures == len(args.videos) else 0


def _save_frames(clip, path: str, folder: Path) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(path).stem
    saved = []
    for i, (frame, t) in enumerate(zip(clip.frames, clip.times)):
        target = folder / f"{stem}_{i}_{t:.3f}s.jpg"
        Image.fromarray(frame).save(target, quality=95)
        saved.append(str(target))
    return saved


def cmd_synth(args: argparse.Namespace) -> int:
    from .synth.corpus import generate_corpus, preset

    overrides = {}
    if args.videos is not None:
        overrides["num_videos"] = args.videos
    spec = preset(args.preset, seed=args.seed, **overrides)
    summary = generate_corpus(args.out, spec, workers=args.workers, progress=not args.quiet)
    print(summary.format())
    return 0


def _dataset_videos(dataset: str, splits: Sequence[str] | None) -> tuple[list[tuple[str, Path]], list]:
    """Every (name, path) of the dataset's splits (all found, by default), and the skipped problems."""
    from .data.annotations import load_dataset

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


def cmd_extract(args: argparse.Namespace) -> int:
    from .data.cache import extract

    videos, problems = _dataset_videos(args.dataset, args.split)
    for problem in problems[:10]:
        print(f"skipped: {problem}", file=sys.stderr)
    if len(problems) > 10:
        print(f"skipped: ... and {len(problems) - 10} more annotation problems", file=sys.stderr)
    summary = extract(videos, args.out, _frame_spec(args), fmt=args.format, quality=args.quality,
                      workers=args.workers, timeout=args.timeout, retry_failed=args.retry_failed,
                      progress=not args.quiet)
    print(json.dumps(summary.to_dict()))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .data.cache import FrameCache, extract
    from .decode import FrameSpec
    from .synth.corpus import generate_corpus, preset

    out = Path(args.out)
    started = time.perf_counter()
    print(f"[1/2] generating the '{args.preset}' synthetic corpus in {out / 'data'}", flush=True)
    corpus = generate_corpus(out / "data", preset(args.preset, seed=args.seed), workers=args.workers)
    print(corpus.format())
    print(f"[2/2] extracting keyframes into {out / 'cache'}", flush=True)
    videos, _ = _dataset_videos(str(out / "data"), None)
    summary = extract(videos, out / "cache", FrameSpec(k=3, size=256), workers=args.workers)
    cache = FrameCache(out / "cache")
    facts = summary.to_dict()
    histogram = ", ".join(f"{n}: {count}" for n, count in facts["keyframes_per_video"].items())
    print(f"frame cache: {len(cache)} of {len(videos)} videos, {len(cache.failures)} failed, "
          f"{facts['extracted']} decoded now in {facts['seconds']} s")
    print(f"decode ms/video (3 keyframes, short side 256): median {facts['decode_ms_median']}, "
          f"p95 {facts['decode_ms_p95']}")
    print(f"videos by keyframe count: {histogram}")
    print(f"done in {time.perf_counter() - started:.0f} s; data in {out / 'data'}, frames in {out / 'cache'}")
    return 0 if len(cache) == len(videos) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shortvid", description="Real-time short-video classification on keyframes.")
    parser.add_argument("--version", action="version", version=f"shortvid {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    probe = commands.add_parser("probe", help="read frames from videos; one JSON line per video",
                                description="Decode K frames per video and print one JSON line each: keyframes "
                                            "found, the frames' times, decode time; or the error.")
    probe.add_argument("videos", nargs="+", metavar="VIDEO")
    _frame_options(probe, "224")
    probe.add_argument("--save", metavar="DIR", help="also write the frames as JPEG files into DIR")
    probe.add_argument("--timeout", type=float, default=10.0, help="seconds allowed per video (default: 10)")
    probe.set_defaults(run=cmd_probe)

    synth = commands.add_parser("synth", help="generate a labelled synthetic short-video corpus",
                                description="Write a labelled synthetic corpus in the AI Challenger layout: "
                                            "videos/, train.txt, val.txt, labels.csv.")
    synth.add_argument("out", metavar="OUT")
    synth.add_argument("--preset", choices=["tiny", "small", "bench"], default="small")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--videos", type=int, default=None, help="override the preset's number of videos")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(run=cmd_synth)

    ext = commands.add_parser("extract", help="decode every video of a dataset once into a frame cache",
                              description="Decode each video of DATASET once, in parallel, into a resumable "
                                          "frame cache; failures are recorded in its manifest and skipped.")
    ext.add_argument("dataset", metavar="DATASET",
                     help="AI Challenger folder (train.txt, val.txt, videos/), a .txt annotation file, "
                          "a path,labels CSV, or one folder per class")
    ext.add_argument("--out", required=True, metavar="CACHE")
    _frame_options(ext, "256")
    ext.add_argument("--split", action="append", help="split(s) to extract (default: all found)")
    ext.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    ext.add_argument("--format", choices=["jpeg", "raw"], default="jpeg",
                     help="jpeg (default, ~20x smaller) or raw (exact pixels)")
    ext.add_argument("--quality", type=int, default=95, help="JPEG quality (default: 95)")
    ext.add_argument("--timeout", type=float, default=30.0, help="seconds allowed per video (default: 30)")
    ext.add_argument("--retry-failed", action="store_true", help="try again the videos that failed before")
    ext.add_argument("--quiet", action="store_true", help="no progress bar")
    ext.set_defaults(run=cmd_extract)

    demo = commands.add_parser("demo", help="the whole pipeline on generated data",
                               description="Generate a small synthetic corpus, extract its keyframes and "
                                           "print a summary.")
    demo.add_argument("--out", default="runs/demo", help="working folder (default: runs/demo)")
    demo.add_argument("--preset", choices=["tiny", "small", "bench"], default="small")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--workers", type=int, default=None)
    demo.set_defaults(run=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .errors import ShortvidError

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ShortvidError as error:
        print(f"shortvid {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
