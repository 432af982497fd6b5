"""Using runs: ``predict`` (JSON lines), ``serve`` (the HTTP service), ``export`` (ONNX files)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .options import (
    add_device_option,
    add_engine_options,
    add_inference_options,
    at_least_one,
    error_body,
    error_line,
    inference_options,
    ray_options,
)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """predict, serve, export."""
    commands.add_parser("predict", help="classify videos; one JSON line per video, or rows in a folder",
                        description="Classify files, folders (searched for videos), globs, URIs and manifests with "
                                    "a run; one JSON line per video, an error line for a broken one; with --out, one "
                                    "row per video in Parquet or JSONL parts, resumable; --engine ray runs it on a "
                                    "Ray cluster (docs/scaling.md).",
                        arguments=predict_arguments).set_defaults(handler=cmd_predict)
    commands.add_parser("serve", help="HTTP service: POST /v1/classify with dynamic batching",
                        description="Serve a run over HTTP (FastAPI + uvicorn): POST /v1/classify, /healthz, "
                                    "/readyz, /metrics, /docs. Concurrent requests are decoded in parallel and "
                                    "batched into one model call. See docs/serving.md.",
                        arguments=serve_arguments).set_defaults(handler=cmd_serve)
    commands.add_parser("export", help="export a run's model to ONNX for ONNX Runtime",
                        description="Write the run's best model as ONNX: input frames [batch, frames, 3, H, W] "
                                    "(normalised), output logits [batch, classes], batch and frames dynamic "
                                    "(docs/onnx.md). by_frame_count runs are refused.",
                        arguments=export_arguments).set_defaults(handler=cmd_export)


def predict_arguments(parser: argparse.ArgumentParser) -> None:
    from ..infer.store import FORMATS as STORE_FORMATS

    parser.add_argument("run", metavar="RUN")
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="video files, folders, globs or URIs (s3://, gs://, https://, any fsspec protocol)")
    parser.add_argument("--manifest", action="append", default=[], metavar="FILE",
                        help="a list of videos (text, one per line; or CSV/Parquet with a 'path' column), a path or "
                             "URI; repeatable")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="write one row per video into DIR (resumable: a rerun skips the videos already there); "
                             "default: JSON lines on stdout")
    parser.add_argument("--format", choices=list(STORE_FORMATS), default="parquet",
                        help="format of the rows in --out (default: parquet)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="with --out: classify again the videos whose row is an error (a rerun always retries "
                             "WorkerCrashed rows); the new row supersedes the old")
    add_device_option(parser)
    add_inference_options(parser, adaptive=True)
    parser.add_argument("--batch-size", type=at_least_one, default=1,
                        help="videos per model call; above 1, decode threads run ahead of the model and the summary "
                             "reports videos/s (default: 1, one video at a time, the competition's timing)")
    parser.add_argument("--workers", type=at_least_one, default=None,
                        help="decode threads with --batch-size > 1 (default: the CPU count, at most 4)")
    add_engine_options(parser)


def cmd_predict(args: argparse.Namespace) -> int:
    from ..data.sources import expand_inputs, read_manifest
    from ..errors import ShortvidError

    if not args.inputs and not args.manifest:
        raise ShortvidError("predict", "name videos (INPUT...) or a --manifest")
    paths, empty = expand_inputs(args.inputs)
    for manifest in args.manifest:
        paths += read_manifest(manifest)
    paths = list(dict.fromkeys(paths))
    if args.engine == "ray" or args.out:
        return _predict_to_store(paths, empty, args)
    from ..infer.classifier import Classifier

    classifier = Classifier.load(args.run, device=args.device, **inference_options(args),
                                 spin=args.batch_size == 1)  # one at a time: spinning threads are fastest
    for item, error in empty:
        print(error_line(item, error), flush=True)
    if args.batch_size > 1:
        return _predict_pipelined(classifier, paths, len(empty), args)
    failed = len(empty)
    totals = []
    for path in paths:
        try:
            prediction = classifier.predict(path)
        except Exception as error:  # noqa: BLE001 - one file's failure is its own line; the rest go on
            failed += 1
            print(error_line(path, error), flush=True)
            continue
        totals.append(prediction.timings["total"])
        print(json.dumps({"path": path, **prediction.to_dict()}, ensure_ascii=False), flush=True)
    median = sorted(totals)[len(totals) // 2] if totals else 0.0
    named = len(paths) + len(empty)
    print(f"{named} videos: {named - failed} classified, {failed} failed; median {median:.1f} ms/video",
          file=sys.stderr)
    return 1 if failed == named else 0


def _predict_to_store(paths: list[str], empty: list, args: argparse.Namespace) -> int:
    """``predict --out DIR`` (and every ``--engine ray`` run): one row per video in DIR, resumable; the exit
    status is non-zero only when a video has no row."""
    from ..errors import ShortvidError
    from ..infer.store import PredictionStore, prediction_row

    if not args.out:
        raise ShortvidError("predict", "--engine ray writes its rows into a folder: give --out DIR")
    inference = inference_options(args)  # a backend, precision or limit that cannot be is refused before too
    if args.engine == "ray":
        from ..extras import require

        require("ray", "the Ray engine")
        options = ray_options(args)  # a bad --max-retries is refused before anything is written
    store = PredictionStore(args.out, args.format)
    done = store.done(args.retry_failed)
    store.write([prediction_row({"path": item, "error": error_body(item, error)}) for item, error in empty
                 if item not in done])
    common = {"fmt": args.format, "device": args.device, "batch_size": args.batch_size, "workers": args.workers,
              "retry_failed": args.retry_failed, **inference}
    if args.engine == "ray":
        from ..distributed import predict_ray

        summary = predict_ray(args.run, paths, args.out, options=options, **common)
    else:
        from ..distributed import predict_local

        summary = predict_local(args.run, paths, args.out, **common)
    summary.total += len(empty)
    print(summary.format(), file=sys.stderr)
    return 1 if summary.missing else 0


def _predict_pipelined(classifier, paths: list[str], empty: int, args: argparse.Namespace) -> int:
    """``predict --batch-size N``: decode threads run ahead of batched model calls (shortvid.infer.batch)."""
    from ..infer.batch import PipelineStats, classify_many

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


def serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    add_device_option(parser)
    add_inference_options(parser, adaptive=True)
    parser.add_argument("--max-batch", type=int, default=8, help="clips per model call (default: 8)")
    parser.add_argument("--max-wait-ms", type=float, default=5.0,
                        help="how long to wait for more clips after the first before calling the model (default: 5)")
    parser.add_argument("--max-queue", type=int, default=64,
                        help="requests in progress before new ones get 503 (default: 64)")
    parser.add_argument("--max-queue-seconds", type=float, default=1.0, metavar="S",
                        help="admit a request only if those ahead of it are expected to be answered within S seconds "
                             "at the measured throughput; others get 503 at once (default: 1; 0: bound by "
                             "--max-queue only)")
    parser.add_argument("--capacity-window", type=float, default=10.0, metavar="S",
                        help="the time constant (seconds) of the window capacity is measured over: requests answered "
                             "per second of busy time, older seconds weighing less (default: 10)")
    parser.add_argument("--max-uploads", type=at_least_one, default=128,
                        help="request bodies received at once; more get 503 (default: 128)")
    parser.add_argument("--upload-budget-mb", type=float, default=None, metavar="MB",
                        help="MiB of request bodies held at once (being received, or received and not yet answered); "
                             "a body past it gets 503 before it is read (default: the smaller of 1 GiB and a quarter "
                             "of this process's memory, at least --max-body-mb)")
    parser.add_argument("--admin-token-file", default=None, metavar="FILE",
                        help="turn on model control (POST /admin/reload) for clients that send the token in FILE "
                             "as 'Authorization: Bearer TOKEN' (also: the SHORTVID_ADMIN_TOKEN environment variable; "
                             "default: off). SIGHUP reloads the run either way")
    parser.add_argument("--body-timeout", type=float, default=15.0, metavar="S",
                        help="seconds to receive a whole body; past it 408 (default: 15)")
    parser.add_argument("--max-connections", type=at_least_one, default=1000,
                        help="open connections; past it the one idle the longest (no request in progress) is closed "
                             "(default: 1000)")
    parser.add_argument("--header-timeout", type=float, default=10.0, metavar="S",
                        help="seconds for a connection to send a request's line and headers, from opening or its "
                             "previous answer; past it the connection is closed (default: 10)")
    parser.add_argument("--max-header-kb", type=float, default=64.0, metavar="KB",
                        help="largest request line and headers in KiB; larger get 431 (default: 64)")
    parser.add_argument("--shutdown-grace", type=float, default=10.0, metavar="S",
                        help="after SIGTERM, seconds for requests in progress to finish before they are cancelled "
                             "(default: 10)")
    parser.add_argument("--decode-workers", type=int, default=None, help="decode threads (default: min(4, CPUs))")
    parser.add_argument("--max-body-mb", type=float, default=64.0,
                        help="largest upload in MiB; larger get 413 (default: 64)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds per request once its body is in; past it 504 (default: 10)")
    parser.add_argument("--allow-root", default=None, metavar="DIR",
                        help='let JSON {"path": ...} requests read files under DIR (default: no server-side paths)')
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def cmd_serve(args: argparse.Namespace) -> int:
    from ..infer.classifier import Classifier
    from ..serve.http import ServeSettings
    from ..serve.server import serve

    if args.allow_root and not Path(args.allow_root).is_dir():
        print(f"shortvid serve: error: --allow-root {args.allow_root}: not a folder", file=sys.stderr)
        return 2
    for option, value in (("--header-timeout", args.header_timeout), ("--max-header-kb", args.max_header_kb),
                          ("--capacity-window", args.capacity_window)):
        if not value > 0:
            print(f"shortvid serve: error: {option} {value:g}: must be above 0", file=sys.stderr)
            return 2
    try:
        token = _admin_token(args.admin_token_file)
        workers = {"decode_workers": args.decode_workers} if args.decode_workers else {}
        settings = ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
                                 max_queue_seconds=args.max_queue_seconds or None, max_body_mb=args.max_body_mb,
                                 max_uploads=args.max_uploads, body_timeout=args.body_timeout, **workers,
                                 timeout=args.timeout, allow_root=args.allow_root, shutdown_grace=args.shutdown_grace,
                                 max_connections=args.max_connections, header_timeout=args.header_timeout,
                                 max_header_kb=args.max_header_kb, capacity_window=args.capacity_window,
                                 upload_budget_mb=args.upload_budget_mb, admin_token=token)
    except (OSError, ValueError) as error:
        print(f"shortvid serve: error: {error}", file=sys.stderr)
        return 2
    classifier = Classifier.load(args.run, device=args.device, **inference_options(args))
    try:
        serve(classifier, settings, host=args.host, port=args.port, log_level=args.log_level)
    except OSError as error:
        print(f"shortvid serve: error: {error}", file=sys.stderr)
        return 2
    return 0


def _admin_token(path: str | None) -> str | None:
    """The admin token: the first line of ``path``, else $SHORTVID_ADMIN_TOKEN, else None (model control
    off). Read from a file or the environment, never the command line, which other users can list."""
    import os

    if path is not None:
        with open(path, encoding="utf-8") as handle:
            token = handle.readline().strip()
        if not token:
            raise ValueError(f"--admin-token-file {path}: the file is empty")
        return token
    return os.environ.get("SHORTVID_ADMIN_TOKEN") or None


def export_arguments(parser: argparse.ArgumentParser) -> None:
    from ..export import DEFAULT_OPSET

    parser.add_argument("run", metavar="RUN")
    parser.add_argument("--format", choices=["onnx"], default="onnx")
    parser.add_argument("--out", default=None, metavar="FILE", help="default: RUN/model.onnx")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default: {DEFAULT_OPSET})")
    parser.add_argument("--quantize", choices=["static", "dynamic"], default=None,
                        help="write an int8 model instead (default FILE: RUN/model.int8-static.onnx or "
                             "RUN/model.int8-dynamic.onnx): static calibrates activations on training frames, "
                             "dynamic quantises them at run time (docs/onnx.md)")
    parser.add_argument("--calibration-videos", type=at_least_one, default=64, metavar="N",
                        help="training videos to calibrate --quantize static on (default: 64)")
    parser.add_argument("--calibration-data", default=None, metavar="DATA",
                        help="calibrate on this dataset instead of the run's training data (config.yaml)")
    parser.add_argument("--calibration-split", default=None, metavar="SPLIT",
                        help="split of the calibration data (default: the run's train split)")


def cmd_export(args: argparse.Namespace) -> int:
    from ..export import export_run

    if args.quantize:
        from ..quantize import quantize_run

        print(quantize_run(args.run, args.quantize, out=args.out, videos=args.calibration_videos,
                           dataset=args.calibration_data, split=args.calibration_split, opset=args.opset))
        return 0
    print(export_run(args.run, args.out, opset=args.opset))
    return 0
