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
    parser.add_argument("--fill", choices=["repeat", "seek", "none"], default="repeat",
                        help="fewer keyframes than --k: repeat keyframes (default, free), decode a "
                             "frame at each empty segment's centre (costs a GOP decode each), or none "
                             "(return fewer frames)")
    parser.add_argument("--size", type=_size, default=_size(size),
                        help=f"short side in pixels, HxW, or none for native size (default: {size})")
    parser.add_argument("--crop", type=int, default=None, help="centre square crop after resizing")
    parser.add_argument("--skip-loop-filter", action="store_true",
                        help="skip the codec's deblocking filter: 5-16%% less decode time, slightly other "
                             "pixels; a cache made so gives runs that serve the same way (BENCHMARKS.md)")


def _limit_options(parser: argparse.ArgumentParser) -> None:
    """--max-width/--max-height/--max-pixels/--max-aspect: the largest frames decoded (docs/security.md)."""
    from .decode import DecodeLimits

    default = DecodeLimits()
    group = parser.add_argument_group("decode limits", "videos with larger frames fail with VideoTooLargeError "
                                      "before their pixels are decoded or scaled")
    group.add_argument("--max-width", type=_at_least_one, default=default.max_width, metavar="PX",
                       help=f"widest upright frame (default: {default.max_width})")
    group.add_argument("--max-height", type=_at_least_one, default=default.max_height, metavar="PX",
                       help=f"tallest upright frame (default: {default.max_height})")
    group.add_argument("--max-pixels", type=_at_least_one, default=default.max_pixels, metavar="N",
                       help=f"most pixels per frame (default: {default.max_pixels}, 8K UHD)")
    group.add_argument("--max-aspect", type=float, default=default.max_aspect, metavar="R",
                       help=f"longest side over shortest side (default: {default.max_aspect:g})")


def _limits(args: argparse.Namespace):
    from .decode import DecodeLimits
    from .errors import ShortvidError

    try:
        return DecodeLimits(args.max_width, args.max_height, args.max_pixels, args.max_aspect)
    except ValueError as error:
        raise ShortvidError("--max-aspect", str(error)) from None


def _error_line(path: str, error: Exception) -> str:
    """The JSON line of a video that failed; an error shortvid does not type is named by its class."""
    from .errors import ShortvidError

    body = error.to_dict() if isinstance(error, ShortvidError) else {"type": type(error).__name__,
                                                                      "message": f"{path}: {error}"}
    return json.dumps({"path": path, "error": body}, ensure_ascii=False)


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    """How a run's model runs: --adaptive, --backend, --precision (evaluate, predict, serve)."""
    parser.add_argument("--adaptive", action="store_true",
                        help="classify a video with fewer keyframes than the run's frame count from those alone")
    parser.add_argument("--backend", choices=["torch", "onnx"], default="torch",
                        help="torch (default) or onnx (ONNX Runtime on RUN/model.onnx, exported when missing)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "int8", "int8-dynamic"], default="fp32",
                        help="fp32 (default); torch: bf16 (autocast); onnx: int8 (static, calibrated on training "
                             "frames, RUN/model.int8-static.onnx) or int8-dynamic (RUN/model.int8-dynamic.onnx), "
                             "made when missing")


def _frame_spec(args: argparse.Namespace):
    from .decode import FrameSpec

    return FrameSpec(k=args.k, sampler=args.sampler, size=args.size, crop=args.crop, fill=args.fill,
                     skip_loop_filter=args.skip_loop_filter)


def cmd_probe(args: argparse.Namespace) -> int:
    spec, limits = _frame_spec(args), _limits(args)
    failures = 0
    for path in args.videos:
        try:
            clip = spec.read(path, timeout=args.timeout, limits=limits)
            record = clip.to_dict()
            record["path"] = path
            if args.save:
                record["saved"] = _save_frames(clip, path, Path(args.save))
        except Exception as error:  # noqa: BLE001 - one file's failure is its own line; the rest go on
            failures += 1
            print(_error_line(path, error), flush=True)
            continue
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


def cmd_extract(args: argparse.Namespace) -> int:
    from .data.annotations import dataset_videos
    from .data.cache import extract

    videos, problems = dataset_videos(args.dataset, args.split)
    for problem in problems[:10]:
        print(f"skipped: {problem}", file=sys.stderr)
    if len(problems) > 10:
        print(f"skipped: ... and {len(problems) - 10} more annotation problems", file=sys.stderr)
    summary = extract(videos, args.out, _frame_spec(args), fmt=args.format, quality=args.quality,
                      workers=args.workers, timeout=args.timeout, retry_failed=args.retry_failed,
                      progress=not args.quiet, limits=_limits(args))
    print(json.dumps(summary.to_dict()))
    return 0


def _load_config(source: str, overrides: Sequence[str]):
    """``load_config``, saying on stderr which file or shipped config it read."""
    from .train.config import load_config, resolve_config

    print(f"config: {resolve_config(source)[1]}", file=sys.stderr)
    return load_config(source, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from .errors import ShortvidError
    from .train.trainer import train

    if args.resume:
        saved = Path(args.resume) / "config.yaml"
        if not saved.is_file():
            raise ShortvidError(args.resume, "nothing to resume: no config.yaml (not a run directory, or the run "
                                "was stopped before it started)")
        config = _load_config(str(saved), [*args.overrides, f"out={args.resume}"])
    else:
        if not args.config:
            print("shortvid train: error: --config is required (a YAML file or a shipped name)", file=sys.stderr)
            return 2
        group = [f"data.group={args.group}"] if args.group else []
        config = _load_config(args.config, [*args.overrides, *group])
    record = train(config, resume=bool(args.resume))
    print(json.dumps({"run": config.out, **record}))
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    """`train` with a teacher: the seed's ImageNet-head distillation unless distill.kind=logits."""
    from .train.trainer import train

    config = _load_config(args.config, [f"distill.teacher={args.teacher}", *args.overrides])
    if config.distill.kind == "imagenet":
        config.model.imagenet_head = True
    record = train(config)
    print(json.dumps({"run": config.out, **record}))
    return 0


def cmd_fuse(args: argparse.Namespace) -> int:
    from .models import FUSION_RULES
    from .train.fuse import fuse_runs

    rules = list(FUSION_RULES) if args.rule == "best" else [args.rule]
    report = fuse_runs(args.general, args.specialists, args.out, dataset=args.data, split=args.split,
                       rules=rules, device=args.device, progress=not args.quiet)
    print(f"{report['videos']} {args.split} videos: general mean Jaccard {report['general']['mean_jaccard']:.4f}")
    for rule, result in report["rules"].items():
        chosen = "  <- kept" if rule == report["rule"] else ""
        print(f"  fused ({rule}): mean Jaccard {result['mean_jaccard']:.4f}, top-1 {result['top1_hit']:.4f}{chosen}")
    for group, result in report["groups"].items():
        if result["videos"]:
            print(f"  group {group} ({result['videos']} videos): general {result['general']:.4f}, fused {result['fused']:.4f}")
    print(f"fused run written to {args.out}")
    return 0


def cmd_adaptive(args: argparse.Namespace) -> int:
    from .train.fuse import adaptive_runs

    print(json.dumps(adaptive_runs(args.runs, args.out)))
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    import shutil

    from .ablate import AblationPlan, ablate

    plan = AblationPlan(data=args.data or f"data/{args.preset}", out=args.out or f"runs/ablate-{args.preset}",
                        preset=args.preset, seed=args.seed, epochs=args.epochs, workers=args.workers,
                        progress=not args.quiet)
    summary = ablate(plan)
    if args.report:
        shutil.copyfile(Path(plan.out) / "ABLATION.md", args.report)
    print(f"ablation done in {summary['wall_seconds'] / 60:.1f} min: {Path(plan.out) / 'ABLATION.md'}")
    return 0


def cmd_hardmine(args: argparse.Namespace) -> int:
    from .train.hardset import mine_hard_set

    report = mine_hard_set(args.run, args.data, split=args.split, margin=args.margin, name=args.name,
                           device=args.device, progress=not args.quiet)
    print(json.dumps(report))
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from .train.hardset import finetune

    report = finetune(args.run, args.out, hard=args.hard, stages=args.stages, epochs=args.epochs,
                      patience=args.patience, lr_scale=args.lr_scale, easy_fraction=args.easy,
                      overrides=tuple(args.overrides))
    print(json.dumps(report))
    return 0


def cmd_analyze(args: argparse.Namespace) -> int:
    from .evaluate.analyze import analyze_run

    report = analyze_run(args.run, args.data, args.split, args.out, limit=args.limit, worst=args.worst,
                         device=args.device)
    summary = report.get("summary", {})
    print(json.dumps(summary, indent=2))
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate.runner import evaluate_run

    report = evaluate_run(args.run, args.data, args.split, device=args.device, limit=args.limit, out=args.out,
                          progress=not args.quiet, adaptive=args.adaptive, backend=args.backend,
                          precision=_precision(args.backend, args.precision), limits=_limits(args))
    total = report["timing_ms"].get("total", {})
    print(f"{report['num_videos']} videos ({report['failed']} failed): mean Jaccard {report['mean_jaccard']:.4f}, "
          f"top-1 {report['top1_hit']:.4f}, top-5 {report['top5_hit']:.4f}, mAP {report['mAP']:.4f}, "
          f"GAP@20 {report['GAP@20']:.4f}")
    for stage, summary in report["timing_ms"].items():
        print(f"  {stage:10s} median {summary['median']:.2f} ms, p95 {summary['p95']:.2f} ms")
    if total:
        print(f"written to {args.out or Path(args.run) / 'metrics.json'}")
    return 0


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _expand_inputs(inputs: Sequence[str]) -> tuple[list[str], list[tuple[str, Exception]]]:
    """Files as given, folders searched for videos, globs expanded; order kept, duplicates dropped.
    Also the inputs that name no video (a folder without videos, a glob matching nothing), each
    with its error, so every input a user names gets a line."""
    import glob

    from .data.annotations import VIDEO_EXTENSIONS
    from .errors import InvalidVideoError, VideoNotFoundError

    found: list[str] = []
    empty: list[tuple[str, Exception]] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            videos = [str(p) for p in sorted(path.rglob("*")) if p.suffix.lower() in VIDEO_EXTENSIONS]
            if not videos:
                empty.append((item, InvalidVideoError(item, "a folder with no videos in it (searched for "
                                                            f"{', '.join(sorted(VIDEO_EXTENSIONS))})")))
            found.extend(videos)
        elif any(ch in item for ch in "*?[") and not path.exists():
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                empty.append((item, VideoNotFoundError(item, "no file matches this pattern")))
            found.extend(matches)
        else:
            found.append(item)
    return list(dict.fromkeys(found)), empty


def cmd_predict(args: argparse.Namespace) -> int:
    from .serve.classifier import Classifier

    classifier = Classifier.load(args.run, device=args.device, adaptive=args.adaptive, backend=args.backend,
                                 precision=_precision(args.backend, args.precision), limits=_limits(args))
    paths, empty = _expand_inputs(args.inputs)
    for item, error in empty:
        print(_error_line(item, error), flush=True)
    if args.batch_size > 1:
        return _predict_pipelined(classifier, paths, len(empty), args)
    failed = len(empty)
    totals = []
    for path in paths:
        try:
            prediction = classifier.predict(path)
        except Exception as error:  # noqa: BLE001 - one file's failure is its own line; the rest go on
            failed += 1
            print(_error_line(path, error), flush=True)
            continue
        totals.append(prediction.timings["total"])
        print(json.dumps({"path": path, **prediction.to_dict()}, ensure_ascii=False), flush=True)
    median = sorted(totals)[len(totals) // 2] if totals else 0.0
    named = len(paths) + len(empty)
    print(f"{named} videos: {named - failed} classified, {failed} failed; median {median:.1f} ms/video",
          file=sys.stderr)
    return 1 if failed == named else 0


def _predict_pipelined(classifier, paths: list[str], empty: int, args: argparse.Namespace) -> int:
    """``predict --batch-size N``: decode threads run ahead of batched model calls (shortvid.serve.batch)."""
    from .serve.batch import PipelineStats, classify_many

    stats = PipelineStats()
    for outcome in classify_many(classifier, paths, batch_size=args.batch_size, workers=args.workers, stats=stats):
        print(json.dumps(outcome.to_dict(), ensure_ascii=False), flush=True)
    summary = stats.to_dict()
    stages = ", ".join(f"{stage} {ms:.1f}" for stage, ms in summary["ms_per_video"].items())
    failed = stats.failed + empty
    print(f"{stats.videos + empty} videos: {stats.videos - stats.failed} classified, {failed} failed; "
          f"{summary['videos_per_s']:.1f} videos/s, mean batch {summary['mean_batch']}; ms/video: {stages}",
          file=sys.stderr)
    return 1 if failed == stats.videos + empty else 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve.classifier import Classifier
    from .serve.http import ServeSettings, serve

    if args.allow_root and not Path(args.allow_root).is_dir():
        print(f"shortvid serve: error: --allow-root {args.allow_root}: not a folder", file=sys.stderr)
        return 2
    workers = {"decode_workers": args.decode_workers} if args.decode_workers else {}
    settings = ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                             max_queue_seconds=args.max_queue_seconds or None, max_body_mb=args.max_body_mb,
                             max_uploads=args.max_uploads, body_timeout=args.body_timeout, **workers,
                             timeout=args.timeout, allow_root=args.allow_root, shutdown_grace=args.shutdown_grace)
    classifier = Classifier.load(args.run, device=args.device, adaptive=args.adaptive, backend=args.backend,
                                 precision=_precision(args.backend, args.precision), limits=_limits(args))
    try:
        serve(classifier, settings, host=args.host, port=args.port, log_level=args.log_level)
    except OSError as error:
        print(f"shortvid serve: error: {error}", file=sys.stderr)
        return 2
    return 0


def cmd_judge(args: argparse.Namespace) -> int:
    import os

    from .judge import judge

    backend = args.backend or os.environ.get("SHORTVID_BACKEND") or "torch"
    precision = _precision(backend, args.precision or os.environ.get("SHORTVID_PRECISION") or "fp32")
    report = judge(args.run, args.videos, args.labels, passes=args.passes, gpu_id=args.gpu, backend=backend,
                   precision=precision)
    print(json.dumps(report, indent=2))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_run

    if args.quantize:
        from .quantize import quantize_run

        print(quantize_run(args.run, args.quantize, out=args.out, videos=args.calibration_videos,
                           dataset=args.calibration_data, split=args.calibration_split, opset=args.opset))
        return 0
    print(export_run(args.run, args.out, opset=args.opset))
    return 0


def _precision(backend: str, precision: str) -> str:
    """``--precision``, checked against the backend: a pair that does not exist is an error naming the
    valid ones (exit 2), before any model is loaded."""
    from .backends import check_precision
    from .errors import ShortvidError

    try:
        check_precision(backend, precision)
    except ValueError as error:
        raise ShortvidError("--precision", str(error)) from None
    return precision


def cmd_demo(args: argparse.Namespace) -> int:
    import numpy as np

    from .data.annotations import dataset_videos, load_dataset
    from .data.cache import extract
    from .decode import FrameSpec
    from .evaluate.runner import evaluate_run
    from .metrics import mean_jaccard
    from .serve.classifier import Classifier
    from .synth.corpus import generate_corpus, preset
    from .train.config import load_config
    from .train.trainer import train

    out = Path(args.out)
    started = time.perf_counter()
    print(f"[1/5] generating the '{args.preset}' synthetic corpus in {out / 'data'}", flush=True)
    corpus = generate_corpus(out / "data", preset(args.preset, seed=args.seed), workers=args.workers)
    print(corpus.format())

    config = load_config(args.config, [f"data.dataset={out / 'data'}", f"data.cache={out / 'cache'}",
                                       f"out={out / 'run'}", f"seed={args.seed}", *args.overrides])
    print(f"[2/5] extracting 3 keyframes per video into {out / 'cache'}", flush=True)
    videos, _ = dataset_videos(out / "data")
    summary = extract(videos, out / "cache", FrameSpec(k=config.data.num_segments, size=config.frame_size()),
                      workers=args.workers).to_dict()
    print(f"  {summary['total'] - summary['failed']} of {summary['total']} videos in the cache; decode median "
          f"{summary['decode_ms_median']} ms/video; keyframes per video: {summary['keyframes_per_video']}")

    print(f"[3/5] training {config.model.name} for {config.optim.epochs} epochs on the CPU-friendly "
          f"'{args.config}' config", flush=True)
    resume = (out / "run" / "checkpoints" / "last.pt").exists()
    train(config, resume=resume)

    print("[4/5] evaluating on the validation split through the serving path", flush=True)
    report = evaluate_run(out / "run", out / "data", "val", progress=False)
    train_set = load_dataset(out / "data", "train")
    val_set = load_dataset(out / "data", "val")
    majority = int(np.argmax(train_set.class_counts()))
    chance = mean_jaccard([(majority,)] * len(val_set), val_set.multi_hot(len(val_set.label_map)))
    timing = report["timing_ms"]
    print(f"  mean Jaccard (the competition's accuracy) {report['mean_jaccard']:.3f} on {report['num_videos']} "
          f"videos; always guessing the commonest class: {chance:.3f}")
    print(f"  top-1 {report['top1_hit']:.3f}, top-5 {report['top5_hit']:.3f}, mAP {report['mAP']:.3f}")
    print(f"  ms/video: decode {timing['decode']['median']:.1f}, preprocess {timing['preprocess']['median']:.1f}, "
          f"model {timing['model']['median']:.1f}, total {timing['total']['median']:.1f} (median)")

    print("[5/5] classifying held-out videos", flush=True)
    classifier = Classifier.load(out / "run")
    for sample in val_set.samples[:5]:
        prediction = classifier.predict(sample.path)
        truth = ", ".join(val_set.label_map.name(i) for i in sample.labels)
        said = ", ".join(f"{label.name} ({label.score:.2f})" for label in prediction.labels)
        print(f"  {sample.name}: predicted {said}; true {truth}; {prediction.timings['total']:.1f} ms")
    print(f"done in {time.perf_counter() - started:.0f} s; run in {out / 'run'} "
          f"(try: shortvid predict {out / 'run'} {out / 'data' / 'videos'})")
    return 0 if report["mean_jaccard"] > chance else 1


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
    _limit_options(probe)
    probe.set_defaults(handler=cmd_probe)

    synth = commands.add_parser("synth", help="generate a labelled synthetic short-video corpus",
                                description="Write a labelled synthetic corpus in the AI Challenger layout: "
                                            "videos/, train.txt, val.txt, labels.csv.")
    synth.add_argument("out", metavar="OUT")
    synth.add_argument("--preset", choices=["tiny", "small", "bench"], default="small")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--videos", type=int, default=None, help="override the preset's number of videos")
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(handler=cmd_synth)

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
    _limit_options(ext)
    ext.set_defaults(handler=cmd_extract)

    tr = commands.add_parser("train", help="train a video classifier",
                             description="Train per a config (YAML file or shipped name: "
                                         "resnet50, mobilenet_cpu, tiny) with key=value overrides, "
                                         "e.g. data.dataset=data/small data.cache=cache/small out=runs/x.")
    tr.add_argument("--config", help="YAML file or shipped config name")
    tr.add_argument("--resume", metavar="RUN", help="continue the run in RUN from its last checkpoint")
    tr.add_argument("--group", metavar="NAME", help="train a specialist on one label group's classes (data.group)")
    tr.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    tr.set_defaults(handler=cmd_train)

    ds = commands.add_parser("distill", help="train a student with a trained teacher run",
                             description="Train per a config with a teacher: loss = classification + "
                                         "distill.weight x the squared difference of the L2-normalised ImageNet "
                                         "heads (the seed's; both nets keep their 1000-way head), or Hinton "
                                         "soft targets on the class logits with distill.kind=logits.")
    ds.add_argument("--teacher", required=True, metavar="RUN", help="the teacher's run directory")
    ds.add_argument("--config", required=True, help="the student's config (YAML file or shipped name)")
    ds.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    ds.set_defaults(handler=cmd_distill)

    fu = commands.add_parser("fuse", help="fuse a general run with per-group specialist runs into one run",
                             description="Fuse a general run with specialists (`train --group`) into one run that "
                                         "predict, evaluate and judge load; every fusion rule is scored on the "
                                         "validation videos and the best is kept (report in OUT/fusion.json).")
    fu.add_argument("general", metavar="GENERAL")
    fu.add_argument("specialists", nargs="+", metavar="SPECIALIST")
    fu.add_argument("--out", required=True, metavar="RUN")
    fu.add_argument("--data", default=None, help="dataset to choose the rule on (default: the general run's)")
    fu.add_argument("--split", default="val")
    fu.add_argument("--rule", choices=["best", "gate", "mean", "geometric"], default="best",
                    help="fusion rule (default: the best on the split)")
    fu.add_argument("--device", default="auto")
    fu.add_argument("--quiet", action="store_true")
    fu.set_defaults(handler=cmd_fuse)

    ad = commands.add_parser("adaptive", help="one run choosing among runs trained on 1, 2, 3... frames by keyframe count",
                             description="Combine runs trained on different frame counts (data.num_segments) into "
                                         "one run that classifies a video with the run trained on as many frames as "
                                         "the video has keyframes; nothing but keyframes is decoded.")
    ad.add_argument("runs", nargs="+", metavar="RUN")
    ad.add_argument("--out", required=True, metavar="RUN")
    ad.set_defaults(handler=cmd_adaptive)

    ab = commands.add_parser("ablate", help="the seed's five ablation tables on a synthetic corpus, in one run",
                             description="Train and evaluate every model of the seed's tables (3 keyframes vs 8 "
                                         "frames, distillation, hard-set fine-tuning, mean vs NeXtVLAD, adaptive vs "
                                         "fixed) and write OUT/ABLATION.md. Resumable: finished steps are kept.")
    ab.add_argument("--preset", choices=["tiny", "small", "bench"], default="bench",
                    help="corpus preset, generated into --data when missing (default: bench)")
    ab.add_argument("--data", default=None, help="the corpus folder (default: data/PRESET)")
    ab.add_argument("--out", default=None, help="working folder (default: runs/ablate-PRESET)")
    ab.add_argument("--seed", type=int, default=0)
    ab.add_argument("--epochs", type=int, default=10, help="training epochs of every model (default: 10)")
    ab.add_argument("--workers", type=int, default=None, help="extraction processes (default: all cores)")
    ab.add_argument("--report", default=None, help="also copy ABLATION.md here")
    ab.add_argument("--quiet", action="store_true")
    ab.set_defaults(handler=cmd_ablate)

    hm = commands.add_parser("hardmine", help="write the training videos a run gets wrong as a split",
                             description="Classify the split's videos with RUN; write those it gets wrong (Jaccard "
                                         "below 1 under its decision policy, or a score margin below --margin) "
                                         "as DATASET/NAME.txt, a split the other commands read.")
    hm.add_argument("run", metavar="RUN")
    hm.add_argument("--data", required=True, help="the AI Challenger dataset folder")
    hm.add_argument("--split", default="train")
    hm.add_argument("--margin", type=float, default=None, help="also count right answers won by less than this")
    hm.add_argument("--name", default="hard", help="the hard split's name (default: hard)")
    hm.add_argument("--device", default="auto")
    hm.add_argument("--quiet", action="store_true")
    hm.set_defaults(handler=cmd_hardmine)

    ft = commands.add_parser("finetune", help="the seed's two-step fine-tuning on a hard set",
                             description="Fine-tune RUN on a hard split: first with the backbone's stem and first "
                                         "stages frozen until validation stops improving (OUT/frozen), then the "
                                         "whole network (OUT/full).")
    ft.add_argument("run", metavar="RUN")
    ft.add_argument("--out", required=True)
    ft.add_argument("--hard", default="hard", help="the hard split's name (from `shortvid hardmine`)")
    ft.add_argument("--stages", type=int, default=2, help="stages frozen in step 1 (default: 2)")
    ft.add_argument("--epochs", type=int, default=10, help="at most, per step")
    ft.add_argument("--patience", type=int, default=2, help="epochs without improvement before a step ends")
    ft.add_argument("--lr-scale", type=float, default=0.1, help="the run's learning rate times this")
    ft.add_argument("--easy", type=float, default=0.0, help="mix in easy videos, as a fraction of the hard set")
    ft.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    ft.set_defaults(handler=cmd_finetune)

    an = commands.add_parser("analyze", help="bad-case report: confusions by group, heatmap, worst errors",
                             description="Classify a split with RUN and write an HTML report and a markdown "
                                         "summary: confusion pairs grouped by label group, per-class precision, "
                                         "recall and AP, a confusion heatmap ordered by group, thumbnails of the "
                                         "worst errors from the frames the model saw, and proposed groups.")
    an.add_argument("run", metavar="RUN")
    an.add_argument("--data", required=True)
    an.add_argument("--split", default="val")
    an.add_argument("--out", required=True, metavar="REPORT")
    an.add_argument("--limit", type=int, default=None)
    an.add_argument("--worst", type=int, default=12, help="worst errors shown with their frames")
    an.add_argument("--device", default="auto")
    an.set_defaults(handler=cmd_analyze)

    ev = commands.add_parser("evaluate", help="the competition's metrics for a run, with per-stage timing",
                             description="Classify every video of a split through the serving path; report mean "
                                         "Jaccard (the competition's accuracy), top-1/5, mAP, GAP@20, per-class "
                                         "AP, confusions and decode/preprocess/model times; write metrics.json.")
    ev.add_argument("run", metavar="RUN")
    ev.add_argument("--data", required=True, help="the dataset (any layout `extract` reads)")
    ev.add_argument("--split", default="val")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--limit", type=int, default=None, help="only the first N videos")
    ev.add_argument("--out", default=None, help="where to write the metrics (default: RUN/metrics.json)")
    ev.add_argument("--quiet", action="store_true")
    _limit_options(ev)
    _add_model_args(ev)
    ev.set_defaults(handler=cmd_evaluate)

    pr = commands.add_parser("predict", help="classify videos; one JSON line per video",
                             description="Classify files, folders (searched for videos) and globs with a run; "
                                         "one JSON line per video, an error line for a broken one.")
    pr.add_argument("run", metavar="RUN")
    pr.add_argument("inputs", nargs="+", metavar="INPUT")
    pr.add_argument("--device", default="auto")
    _limit_options(pr)
    _add_model_args(pr)
    pr.add_argument("--batch-size", type=_at_least_one, default=1,
                    help="videos per model call; above 1, decode threads run ahead of the model and the summary "
                         "reports videos/s (default: 1, one video at a time, the competition's timing)")
    pr.add_argument("--workers", type=_at_least_one, default=None,
                    help="decode threads with --batch-size > 1 (default: the CPU count, at most 4)")
    pr.set_defaults(handler=cmd_predict)

    sv = commands.add_parser("serve", help="HTTP service: POST /v1/classify with dynamic batching",
                             description="Serve a run over HTTP (FastAPI + uvicorn): POST /v1/classify, /healthz, "
                                         "/readyz, /metrics, /docs. Concurrent requests are decoded in parallel and "
                                         "batched into one model call. See docs/serving.md.")
    sv.add_argument("run", metavar="RUN")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    sv.add_argument("--device", default="auto")
    _add_model_args(sv)
    sv.add_argument("--max-batch", type=int, default=8, help="clips per model call (default: 8)")
    sv.add_argument("--max-wait-ms", type=float, default=5.0,
                    help="how long to wait for more clips after the first before calling the model (default: 5)")
    sv.add_argument("--max-queue", type=int, default=64,
                    help="requests in progress before new ones get 503 (default: 64)")
    sv.add_argument("--max-queue-seconds", type=float, default=1.0, metavar="S",
                    help="admit a request only if those ahead of it are expected to be answered within S seconds at "
                         "the measured throughput; others get 503 at once (default: 1; 0: bound by --max-queue only)")
    sv.add_argument("--max-uploads", type=_at_least_one, default=128,
                    help="request bodies received at once; more get 503 (default: 128)")
    sv.add_argument("--body-timeout", type=float, default=15.0, metavar="S",
                    help="seconds to receive a whole body; past it 408 (default: 15)")
    sv.add_argument("--shutdown-grace", type=float, default=10.0, metavar="S",
                    help="after SIGTERM, seconds for requests in progress to finish before they are cancelled "
                         "(default: 10)")
    sv.add_argument("--decode-workers", type=int, default=None,
                    help="decode threads (default: min(4, CPUs))")
    sv.add_argument("--max-body-mb", type=float, default=64.0, help="largest upload in MiB; larger get 413 (default: 64)")
    sv.add_argument("--timeout", type=float, default=10.0,
                    help="seconds per request once its body is in; past it 504 (default: 10)")
    sv.add_argument("--allow-root", default=None, metavar="DIR",
                    help='let JSON {"path": ...} requests read files under DIR (default: no server-side paths)')
    sv.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    _limit_options(sv)
    sv.set_defaults(handler=cmd_serve)

    jd = commands.add_parser("judge", help="the competition kit's protocol: 10 timed passes, accuracy, gates",
                             description="Run the AI Challenger kit's protocol through shortvid.judge.ServerApi: "
                                         "serial passes over the videos, fastest and slowest dropped, mean "
                                         "ms/video; mean Jaccard against a tag file; the 120 ms gate.")
    jd.add_argument("run", metavar="RUN")
    jd.add_argument("--videos", required=True, help="a file listing video paths, or a folder")
    jd.add_argument("--labels", required=True, help="tag file: name.mp4,label[,label]")
    jd.add_argument("--passes", type=int, default=10)
    jd.add_argument("--gpu", type=int, default=0)
    jd.add_argument("--backend", choices=["torch", "onnx"], default=None,
                    help="torch (default: $SHORTVID_BACKEND, else torch) or onnx (ONNX Runtime on RUN/model.onnx, exported when missing)")
    jd.add_argument("--precision", choices=["fp32", "bf16", "int8", "int8-dynamic"], default=None,
                    help="default: $SHORTVID_PRECISION, else fp32; torch: fp32, bf16; onnx: fp32, int8, int8-dynamic")
    jd.set_defaults(handler=cmd_judge)

    ex = commands.add_parser("export", help="export a run's model to ONNX for ONNX Runtime",
                             description="Write the run's best model as ONNX: input frames [batch, frames, 3, H, W] "
                                         "(normalised), output logits [batch, classes], batch and frames dynamic "
                                         "(docs/onnx.md). by_frame_count runs are refused.")
    ex.add_argument("run", metavar="RUN")
    ex.add_argument("--format", choices=["onnx"], default="onnx")
    ex.add_argument("--out", default=None, metavar="FILE", help="default: RUN/model.onnx")
    ex.add_argument("--opset", type=int, default=17, help="ONNX opset (default: 17)")
    ex.add_argument("--quantize", choices=["static", "dynamic"], default=None,
                    help="write an int8 model instead (default FILE: RUN/model.int8-static.onnx or "
                         "RUN/model.int8-dynamic.onnx): static calibrates activations on training frames, "
                         "dynamic quantises them at run time (docs/onnx.md)")
    ex.add_argument("--calibration-videos", type=_at_least_one, default=64, metavar="N",
                    help="training videos to calibrate --quantize static on (default: 64)")
    ex.add_argument("--calibration-data", default=None, metavar="DATA",
                    help="calibrate on this dataset instead of the run's training data (config.yaml)")
    ex.add_argument("--calibration-split", default=None, metavar="SPLIT",
                    help="split of the calibration data (default: the run's train split)")
    ex.set_defaults(handler=cmd_export)

    demo = commands.add_parser("demo", help="the whole pipeline on generated data",
                               description="Generate a small synthetic corpus, extract its keyframes, train a "
                                           "small model on the CPU, evaluate it and classify held-out videos.")
    demo.add_argument("--out", default="runs/demo", help="working folder (default: runs/demo)")
    demo.add_argument("--preset", choices=["tiny", "small", "bench"], default="small")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--workers", type=int, default=None)
    demo.add_argument("--config", default="tiny", help="training config (default: the shipped 'tiny')")
    demo.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training config overrides")
    demo.set_defaults(handler=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from .errors import ShortvidError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # KEY=VALUE overrides may follow options too (`finetune RUN --out X optim.lr=0.1`)
    if extra and hasattr(args, "overrides") and all("=" in item and not item.startswith("-") for item in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.handler(args)
    except ShortvidError as error:
        print(f"shortvid {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
