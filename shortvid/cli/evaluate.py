"""Measuring runs: ``analyze`` (bad cases), ``evaluate`` (the competition's metrics), ``judge`` (the kit's protocol)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .options import (
    add_dataset_options,
    add_device_option,
    add_inference_options,
    add_quiet_option,
    inference_options,
)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """analyze, evaluate, judge."""
    commands.add_parser("analyze", help="bad-case report: confusions by group, heatmap, worst errors",
                        description="Classify a split with RUN and write an HTML report and a markdown "
                                    "summary: confusion pairs grouped by label group, per-class precision, "
                                    "recall and AP, a confusion heatmap ordered by group, thumbnails of the "
                                    "worst errors from the frames the model saw, and proposed groups.",
                        arguments=analyze_arguments).set_defaults(handler=cmd_analyze)
    commands.add_parser("evaluate", help="the competition's metrics for a run, with per-stage timing",
                        description="Classify every video of a split through the serving path; report mean "
                                    "Jaccard (the competition's accuracy), top-1/5, mAP, GAP@20, per-class "
                                    "AP, confusions and decode/preprocess/model times; write metrics.json.",
                        arguments=evaluate_arguments).set_defaults(handler=cmd_evaluate)
    commands.add_parser("judge", help="the competition kit's protocol: 10 timed passes, accuracy, gates",
                        description="Run the AI Challenger kit's protocol through shortvid.judge.ServerApi: "
                                    "serial passes over the videos, fastest and slowest dropped, mean "
                                    "ms/video; mean Jaccard against a tag file; the 120 ms gate.",
                        arguments=judge_arguments).set_defaults(handler=cmd_judge)


def analyze_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN")
    add_dataset_options(parser)
    parser.add_argument("--out", required=True, metavar="REPORT")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--worst", type=int, default=12, help="worst errors shown with their frames")
    add_device_option(parser)
    add_quiet_option(parser)
    add_inference_options(parser, adaptive=True)


def cmd_analyze(args: argparse.Namespace) -> int:
    from ..evaluate.analyze import analyze_run

    report = analyze_run(args.run, args.data, args.split, args.out, limit=args.limit, worst=args.worst,
                         device=args.device, progress=not args.quiet, **inference_options(args))
    summary = report.get("summary", {})
    print(json.dumps(summary, indent=2))
    print(f"report: {Path(args.out) / 'report.html'}")
    return 0


def evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN")
    add_dataset_options(parser, help="the dataset (any layout `extract` reads)")
    add_device_option(parser)
    parser.add_argument("--limit", type=int, default=None, help="only the first N videos")
    parser.add_argument("--out", default=None, help="where to write the metrics (default: RUN/metrics.json)")
    add_quiet_option(parser)
    add_inference_options(parser, adaptive=True)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..evaluate.runner import evaluate_run

    report = evaluate_run(args.run, args.data, args.split, device=args.device, limit=args.limit, out=args.out,
                          progress=not args.quiet, **inference_options(args))
    total = report["timing_ms"].get("total", {})
    print(f"{report['num_videos']} videos ({report['failed']} failed): mean Jaccard {report['mean_jaccard']:.4f}, "
          f"top-1 {report['top1_hit']:.4f}, top-5 {report['top5_hit']:.4f}, mAP {report['mAP']:.4f}, "
          f"GAP@20 {report['GAP@20']:.4f}")
    for stage, summary in report["timing_ms"].items():
        print(f"  {stage:10s} median {summary['median']:.2f} ms, p95 {summary['p95']:.2f} ms")
    if total:
        print(f"written to {args.out or Path(args.run) / 'metrics.json'}")
    return 0


def judge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN")
    parser.add_argument("--videos", required=True, help="a file listing video paths, or a folder")
    parser.add_argument("--labels", required=True, help="tag file: name.mp4,label[,label]")
    parser.add_argument("--passes", type=int, default=10)
    parser.add_argument("--gpu", type=int, default=0)
    add_inference_options(parser)


def cmd_judge(args: argparse.Namespace) -> int:
    from ..judge import judge

    report = judge(args.run, args.videos, args.labels, passes=args.passes, gpu_id=args.gpu, **inference_options(args))
    print(json.dumps(report, indent=2))
    return 0
