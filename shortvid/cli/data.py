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
    add_audio_options(parser, help="also read each video's sound: its status, length and source in the line")
    parser.add_argument("--save", metavar="DIR", help="also write the frames as JPEG files into DIR")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds allowed per video (default: 10)")
    add_limit_options(parser)


def cmd_probe(args: argparse.Namespace) -> int:
    from ..decode import read_frames

    spec, limits, audio = frame_spec(args), decode_limits(args), audio_spec(args)
    failures = 0
    for path in args.videos:
        try:
            clip = read_frames(path, spec, timeout=args.timeout, limits=limits, audio=audio)
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
    add_audio_options(parser, help="also read and store each video's sound (mono, at --audio-rate; its status in the "
                                   "manifest); datasets asking for sound (model.audio) need it")
    parser.add_argument("--split", action="append", help="split(s) to extract (default: all found)")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    parser.add_argument("--format", choices=["jpeg", "raw"], default="jpeg",
                        help="jpeg (default, ~20x smaller) or raw (exact pixels)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality (default: 95)")
    parser.add_argument("--sound-format", choices=["float32", "int16"], default="float32",
                        help="with --audio: the samples as float32 (default: exactly as read) or int16 (half the "
                             "bytes; lifts the empty mel bands of noise-free sound, docs/frame-cache.md)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds allowed per video (default: 30)")
    parser.add_argument("--retry-failed", action="store_true", help="try again the videos that failed before")
    add_quiet_option(parser, help="no progress bar")
    add_limit_options(parser)
    add_engine_options(parser)


# AudioSpec fields whose option is not --audio-<field name>, and the options' metavars
_AUDIO_FLAGS = {"sample_rate": "--audio-rate"}
_AUDIO_METAVARS = {"sample_rate": "HZ", "seconds": "S", "windows": "N"}


def add_audio_options(parser: argparse.ArgumentParser, help: str) -> None:
    """--audio (a flag: read the sound) and one option per ``AudioSpec`` field (--audio-rate, --audio-seconds,
    --audio-placement, --audio-windows), help and choices from the field's metadata, parsed as its default's
    type; given without --audio, they are an error (``audio_spec``)."""
    import dataclasses

    from ..decode import AudioSpec

    group = parser.add_argument_group("sound", "the audio track, read as a fixed-length mono waveform "
                                      "(docs/motion-and-sound.md)")
    group.add_argument("--audio", action="store_true", help=help)
    for option in dataclasses.fields(AudioSpec):
        meta = dict(option.metadata)
        flag = _AUDIO_FLAGS.get(option.name, "--audio-" + option.name.replace("_", "-"))
        text = meta.pop("help").replace("%", "%%") + f" (default: {option.default})"
        if option.name in _AUDIO_METAVARS:
            meta["metavar"] = _AUDIO_METAVARS[option.name]
        group.add_argument(flag, dest=f"audio_{option.name}", type=type(option.default), default=None, help=text,
                           **meta)


def audio_spec(args: argparse.Namespace):
    """The ``AudioSpec`` of ``add_audio_options``' values (None without --audio), checked there once; an
    impossible one, or an audio option without --audio, is an error naming it (exit 2)."""
    import dataclasses

    from ..decode import AudioSpec
    from ..errors import ShortvidError

    given = {option.name: getattr(args, f"audio_{option.name}") for option in dataclasses.fields(AudioSpec)
             if getattr(args, f"audio_{option.name}") is not None}
    if not args.audio:
        if given:
            flags = ", ".join(_AUDIO_FLAGS.get(name, "--audio-" + name.replace("_", "-")) for name in given)
            raise ShortvidError("sound options", f"{flags} given without --audio")
        return None
    try:
        return AudioSpec(**given)
    except ValueError as error:
        raise ShortvidError("sound options", str(error)) from None


def cmd_extract(args: argparse.Namespace) -> int:
    from ..data.annotations import dataset_videos
    from ..data.cache import extract

    audio = audio_spec(args)  # checked before the dataset is read
    videos, problems = dataset_videos(args.dataset, args.split)
    for problem in problems[:10]:
        print(f"skipped: {problem}", file=sys.stderr)
    if len(problems) > 10:
        print(f"skipped: ... and {len(problems) - 10} more annotation problems", file=sys.stderr)
    common = {"fmt": args.format, "quality": args.quality, "timeout": args.timeout, "retry_failed": args.retry_failed,
              "progress": not args.quiet, "limits": decode_limits(args), "audio": audio,
              "sound_format": args.sound_format}
    if args.engine == "ray":
        from ..distributed import extract_ray

        summary = extract_ray(videos, args.out, frame_spec(args), options=ray_options(args), **common)
    else:
        summary = extract(videos, args.out, frame_spec(args), workers=args.workers, **common)
    print(json.dumps(summary.to_dict()))
    return 0
