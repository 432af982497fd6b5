"""Options several subcommands share, each group defined once, and the readers of their values."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence


def at_least_one(text: str) -> int:
    """A count that must be positive (an argparse ``type``)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_frame_options(parser: argparse.ArgumentParser, **defaults: Any) -> None:
    """One option per ``FrameSpec`` field (--k, --sampler, --size, --crop, --fill, --skip-loop-filter,
    --max-decode, --motion): how frames are read (probe, extract). Help, parsing and choices come from the field's
    metadata; ``defaults`` overrides the spec's defaults (``size=256``)."""
    import dataclasses

    from ..decode import FrameSpec

    shown = FrameSpec(**defaults)
    for option in dataclasses.fields(FrameSpec):
        flag, default = "--" + option.name.replace("_", "-"), getattr(shown, option.name)
        meta = dict(option.metadata)
        text = meta.pop("help").replace("%", "%%")
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", default=default, help=text)
            continue
        if default is not None:
            text += f" (default: {'x'.join(map(str, default)) if isinstance(default, tuple) else default})"
        parser.add_argument(flag, default=default, help=text, **meta)


def frame_spec(args: argparse.Namespace):
    """The ``FrameSpec`` of ``add_frame_options``' values, checked there once; impossible ones are an error
    naming them (exit 2)."""
    import dataclasses

    from ..decode import FrameSpec
    from ..errors import ShortvidError

    try:
        return FrameSpec(**{option.name: getattr(args, option.name) for option in dataclasses.fields(FrameSpec)})
    except ValueError as error:
        raise ShortvidError("frame options", str(error)) from None


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """--max-width/--max-height/--max-pixels/--max-aspect: the largest frames decoded (docs/security.md)."""
    from ..decode import DecodeLimits

    default = DecodeLimits()
    group = parser.add_argument_group("decode limits", "videos with larger frames fail with VideoTooLargeError "
                                      "before their pixels are decoded or scaled")
    group.add_argument("--max-width", type=at_least_one, default=default.max_width, metavar="PX",
                       help=f"widest upright frame (default: {default.max_width})")
    group.add_argument("--max-height", type=at_least_one, default=default.max_height, metavar="PX",
                       help=f"tallest upright frame (default: {default.max_height})")
    group.add_argument("--max-pixels", type=at_least_one, default=default.max_pixels, metavar="N",
                       help=f"most pixels per frame (default: {default.max_pixels}, 8K UHD)")
    group.add_argument("--max-aspect", type=float, default=default.max_aspect, metavar="R",
                       help=f"longest side over shortest side (default: {default.max_aspect:g})")


def decode_limits(args: argparse.Namespace):
    """The ``DecodeLimits`` of ``add_limit_options``' values; an impossible one is an error naming the option."""
    from ..decode import DecodeLimits
    from ..errors import ShortvidError

    try:
        return DecodeLimits(args.max_width, args.max_height, args.max_pixels, args.max_aspect)
    except ValueError as error:
        raise ShortvidError("--max-aspect", str(error)) from None


def add_inference_options(parser: argparse.ArgumentParser, *, adaptive: bool = False) -> None:
    """How a command that classifies runs the run's model: --backend, --precision (with ``adaptive``, also
    --adaptive) and the decode limits (``add_limit_options``). Every command that classifies takes them:
    predict, serve, evaluate, analyze, judge, hardmine, fuse."""
    from ..infer.backends import ALL_PRECISIONS, BACKENDS

    group = parser.add_argument_group("inference", "how the run's model runs (docs/onnx.md)")
    if adaptive:
        group.add_argument("--adaptive", action="store_true",
                           help="classify a video with fewer keyframes than the run's frame count from those alone")
    group.add_argument("--backend", choices=BACKENDS, default=None,
                       help="default: $SHORTVID_BACKEND, else auto: onnx on the CPU (exported on first use), torch "
                            "on a GPU and for bf16, torch with a warning where onnx cannot run; torch: PyTorch; "
                            "onnx: ONNX Runtime on RUN/model.onnx, exported when missing")
    group.add_argument("--precision", choices=ALL_PRECISIONS, default=None,
                       help="default: $SHORTVID_PRECISION, else fp32; torch: bf16 (autocast); onnx: int8 (static, "
                            "calibrated on training frames, RUN/model.int8-static.onnx) or int8-dynamic "
                            "(RUN/model.int8-dynamic.onnx), made when missing")
    add_limit_options(parser)


def inference_options(args: argparse.Namespace) -> dict[str, Any]:
    """``add_inference_options``' values as keyword arguments of ``Classifier.load`` (and of ``evaluate_run``,
    ``analyze_run``, ``judge``, ``mine_hard_set``, ``fuse_runs``): the backend and precision checked where
    they enter (``check_backend``, which reads the environment for those not given) and the decode limits,
    so that a pair that does not exist is an error naming the valid ones (exit 2) before anything is loaded
    or written."""
    from ..infer.backends import check_backend

    backend, precision = check_backend(args.backend, args.precision)
    options = {"backend": backend, "precision": precision, "limits": decode_limits(args)}
    if "adaptive" in vars(args):
        options["adaptive"] = args.adaptive
    return options


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """--device: ``auto`` (CUDA when there is one), ``cpu``, ``cuda:N``."""
    parser.add_argument("--device", default="auto")


def add_quiet_option(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    """--quiet: no progress output."""
    parser.add_argument("--quiet", action="store_true", help=help)


def add_dataset_options(parser: argparse.ArgumentParser, *, required: bool = True, split: str = "val",
                        help: str | None = None) -> None:
    """--data (the dataset) and --split (one of its splits)."""
    parser.add_argument("--data", required=required, default=None, help=help)
    parser.add_argument("--split", default=split)


def error_body(path: str, error: Exception) -> dict:
    """``{type, message}`` of a video that failed; an error shortvid does not type is named by its class."""
    from ..errors import ShortvidError

    if isinstance(error, ShortvidError):
        return error.to_dict()
    return {"type": type(error).__name__, "message": f"{path}: {error}"}


def error_line(path: str, error: Exception) -> str:
    """The JSON line of a video that failed."""
    return json.dumps({"path": path, "error": error_body(path, error)}, ensure_ascii=False)


def load_config_announced(source: str, overrides: Sequence[str], **load_options):
    """``load_config``, saying on stderr which file or shipped config it read."""
    from ..train.config import load_config, resolve_config

    print(f"config: {resolve_config(source)[1]}", file=sys.stderr)
    return load_config(source, overrides, **load_options)




def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """--engine and the Ray options (predict, extract; docs/scaling.md)."""
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="local (default): this machine's processes and threads; ray: a Ray cluster "
                             "(pip install 'shortvid[ray]')")
    group = parser.add_argument_group("ray engine")
    group.add_argument("--address", default=None, metavar="ADDR",
                       help="the Ray cluster to join: auto or HOST:PORT (default: a private local Ray with this "
                            "machine's CPUs)")
    group.add_argument("--actors", type=at_least_one, default=None, metavar="N",
                       help="worker actors (default: as many as the cluster's CPUs and GPUs hold)")
    group.add_argument("--cpus-per-actor", type=float, default=1.0, metavar="C", help="CPUs per actor (default: 1)")
    group.add_argument("--gpus-per-actor", type=float, default=0.0, metavar="G", help="GPUs per actor (default: 0)")
    group.add_argument("--max-retries", type=int, default=4, metavar="R",
                       help="retries of a block whose worker died, at least 2: one runs the block a video at a "
                            "time, the next reports the video that killed the worker and runs the rest (default: 4)")


def ray_options(args: argparse.Namespace):
    """The ``RayOptions`` of ``add_engine_options``' values; an impossible one (``--max-retries`` under 2) is
    a ``DistributedError`` naming the option, before anything starts."""
    from ..distributed import RayOptions

    return RayOptions(address=args.address, actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                      gpus_per_actor=args.gpus_per_actor, max_retries=args.max_retries)
