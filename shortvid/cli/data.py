"""Videos in, frames out: ``probe`` (read frames), ``synth`` (generate a corpus), ``extract`` (the frame cache)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .options import (
    add_engine_options,
    add_frame_options,
    add_limit_options,
    add_quiet_option,
    decode_limits,
    error_line,
    frame_spec,
    ray_options,
)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """probe, synth, extract."""
    commands.add_parser("probe", help="read frames from videos; one JSON line per video",
                        description="Decode K frames per video and print one JSON line each: keyframes "
                                    "found, the frames' times, decode time; or the error.",
                        arguments=probe_arguments).set_defaults(handler=cmd_probe)
    commands.add_parser("synth", help="generate a labelled synthetic short-video corpus",
                        description="Write a labelled synthetic corpus in the AI Challenger layout: "
                                    "videos/, train.txt, val.txt, labels.csv.",
                        arguments=synth_arguments).set_defaults(handler=cmd_synth)
    commands.add_parser("extract", help="decode every video of a dataset once into a frame cache",
                        description="Decode each video of DATASET once, in parallel, into a resumable "
                                    "frame cache; failures are recorded in its manifest and skipped.",
                        arguments=extract_arguments).set_defaults(handler=cmd_extract)


def probe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", metavar="VIDEO")
    add_frame_options(parser)
    parser.add_argument("--save", metavar="DIR", help="also write the frames as JPEG files into DIR")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds allowed per video (default: 10)")
    add_limit_options(parser)


def cmd_probe(args: argparse.Namespace) -> int:
    from ..decode import read_frames

    spec, limits = frame_spec(args), decode_limits(args)
    failures = 0
    for path in args.videos:
        try:
            clip = read_frames(path, spec, timeout=args.timeout, limits=limits)
            record = clip.to_dict()
            record["path"] = path
            if args.save:
                record["saved"] = _save_frames(clip, path, Path(args.save))
        except Exception as error:  # noqa: BLE001 - one file's failure is its own line; the rest go on
            failures += 1
            print(error_line(path, error), flush=True)
            continue
        print(json.dumps(record, ensure_ascii=False), flush=True)
    return 1 if failures == len(args.videos) else 0


def _save_frames(clip, path: str, folder: Path) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(path).stem
    saved = []
    for i, (frame, t) in enumerate(zip(clip.frames, clip.times, strict=True)):
        target = folder / f"{stem}_{i}_{t:.3f}s.jpg"
        Image.fromarray(frame).save(target, quality=95)
        saved.append(str(target))
    return saved


def synth_arguments(parser: argparse.ArgumentParser) -> None:
    from ..synth.corpus import PRESETS

    parser.add_argument("out", metavar="OUT")
    parser.add_argument("--preset", choices=list(PRESETS), default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--videos", type=int, default=None, help="override the preset's number of videos")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    add_quiet_option(parser, help="no progress bar")


def cmd_synth(args: argparse.Namespace) -> int:
    from ..synth.corpus import generate_corpus, preset

    overrides = {}
    if args.videos is not None:
        overrides["num_videos"] = args.videos
    spec = preset(args.preset, seed=args.seed, **overrides)
    summary = generate_corpus(args.out, spec, workers=args.workers, progress=not args.quiet)
    print(summary.format())
    return 0


def extract_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", metavar="DATASET",
                        help="AI Challenger folder (train.txt, val.txt, videos/), a .txt annotation file, "
                             "a path,labels CSV, or one folder per class")
    parser.add_argument("--out", required=True, metavar="CACHE")
    add_frame_options(parser, size=256)
    parser.add_argument("--split", action="append", help="split(s) to extract (default: all found)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--format", choices=["jpeg", "raw"], default="jpeg",
                        help="jpeg (default, ~20x smaller) or raw (exact pixels)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality (default: 95)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds allowed per video (default: 30)")
    parser.add_argument("--retry-failed", action="store_true", help="try again the videos that failed before")
    add_quiet_option(parser, help="no progress bar")
    add_limit_options(parser)
    add_engine_options(parser)


def cmd_extract(args: argparse.Namespace) -> int:
    from ..data.annotations import dataset_videos
    from ..data.cache import extract

    videos, problems = dataset_videos(args.dataset, args.split)
    for problem in problems[:10]:
        print(f"skipped: {problem}", file=sys.stderr)
    if len(problems) > 10:
        print(f"skipped: ... and {len(problems) - 10} more annotation problems", file=sys.stderr)
    common = {"fmt": args.format, "quality": args.quality, "timeout": args.timeout, "retry_failed": args.retry_failed,
              "progress": not args.quiet, "limits": decode_limits(args)}
    if args.engine == "ray":
        from ..distributed import extract_ray

        summary = extract_ray(videos, args.out, frame_spec(args), options=ray_options(args), **common)
    else:
        summary = extract(videos, args.out, frame_spec(args), workers=args.workers, **common)
    print(json.dumps(summary.to_dict()))
    return 0
