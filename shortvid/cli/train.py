"""Making runs: ``train``, ``pretrain``, ``distill``, ``fuse``, ``adaptive``, ``ablate``, ``hardmine``, ``finetune``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .options import (
    add_dataset_options,
    add_device_option,
    add_inference_options,
    add_quiet_option,
    inference_options,
    load_config_announced,
)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """train, pretrain, distill, fuse, adaptive, ablate, hardmine, finetune."""
    commands.add_parser("train", help="train a video classifier",
                        description="Train per a config (YAML file or shipped name: "
                                    "resnet50, mobilenet_cpu, tiny) with key=value overrides, "
                                    "e.g. data.dataset=data/small data.cache=cache/small out=runs/x.",
                        arguments=train_arguments).set_defaults(handler=cmd_train)
    commands.add_parser("pretrain", help="pretrain a backbone: supervised on a many-class source, SimCLR, or "
                                         "audio-visual correspondence",
                        description="Pretrain a timm backbone and write RUN/backbone.pth, which "
                                    "model.checkpoint_path loads in every other command. --method supervised "
                                    "(default): a K-way image classifier on single frames of a labelled source "
                                    "(shipped config: pretrain; `shortvid synth --preset pretrain` makes one), "
                                    "exported with its K-way head, which distillation uses as the ImageNet head. "
                                    "--method simclr: SimCLR on unlabelled videos of a frame cache, keyframes of "
                                    "one video as positive pairs (shipped config: simclr). --method avc: "
                                    "audio-visual correspondence on the videos with sound of a frame cache "
                                    "extracted with --audio, also writing RUN/audio_encoder.pth for "
                                    "model.args.audio_args.checkpoint_path (shipped config: avc).",
                        arguments=pretrain_arguments).set_defaults(handler=cmd_pretrain)
    commands.add_parser("distill", help="train a student with a trained teacher run",
                        description="Train per a config with a teacher: loss = classification + "
                                    "distill.weight x the squared difference of the L2-normalised ImageNet "
                                    "heads (the seed's; both nets keep their 1000-way head), or Hinton "
                                    "soft targets on the class logits with distill.kind=logits.",
                        arguments=distill_arguments).set_defaults(handler=cmd_distill)
    commands.add_parser("fuse", help="fuse a general run with per-group specialist runs into one run",
                        description="Fuse a general run with specialists (`train --group`) into one run that "
                                    "predict, evaluate and judge load; every fusion rule is scored on the "
                                    "validation videos and the best is kept (report in OUT/fusion.json).",
                        arguments=fuse_arguments).set_defaults(handler=cmd_fuse)
    commands.add_parser("adaptive", help="one run choosing among runs trained on 1, 2, 3... frames by keyframe count",
                        description="Combine runs trained on different frame counts (data.k) into "
                                    "one run that classifies a video with the run trained on as many frames as "
                                    "the video has keyframes; nothing but keyframes is decoded.",
                        arguments=adaptive_arguments).set_defaults(handler=cmd_adaptive)
    commands.add_parser("ablate", help="the seed's five ablation tables on a synthetic corpus, in one run",
                        description="Train and evaluate every model of the seed's tables (3 keyframes vs 8 "
                                    "frames, distillation, hard-set fine-tuning, mean vs NeXtVLAD, adaptive vs "
                                    "fixed) and write OUT/ABLATION.md. Resumable: finished steps are kept.",
                        arguments=ablate_arguments).set_defaults(handler=cmd_ablate)
    commands.add_parser("hardmine", help="write the training videos a run gets wrong as a split",
                        description="Classify the split's videos with RUN; write those it gets wrong (Jaccard "
                                    "below 1 under its decision policy, or a score margin below --margin) "
                                    "as DATASET/NAME.txt, a split the other commands read.",
                        arguments=hardmine_arguments).set_defaults(handler=cmd_hardmine)
    commands.add_parser("finetune", help="the seed's two-step fine-tuning on a hard set",
                        description="Fine-tune RUN on a hard split: first with the backbone's stem and first "
                                    "stages frozen until validation stops improving (OUT/frozen), then the "
                                    "whole network (OUT/full).",
                        arguments=finetune_arguments).set_defaults(handler=cmd_finetune)


def train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file or shipped config name")
    parser.add_argument("--resume", metavar="RUN", help="continue the run in RUN from its last checkpoint")
    parser.add_argument("--group", metavar="NAME",
                        help="train a specialist on one label group's classes (data.group)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")


def cmd_train(args: argparse.Namespace) -> int:
    from ..train.trainer import train

    if args.resume:
        config = load_config_announced(_saved_config(args.resume), [*args.overrides, f"out={args.resume}"])
    else:
        if not args.config:
            print("shortvid train: error: --config is required (a YAML file or a shipped name)", file=sys.stderr)
            return 2
        group = [f"data.group={args.group}"] if args.group else []
        config = load_config_announced(args.config, [*args.overrides, *group])
    record = train(config, resume=bool(args.resume))
    _report({"run": config.out, **record})
    return 0


def pretrain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--method", choices=["supervised", "simclr", "avc"], default="supervised")
    parser.add_argument("--config", help="YAML file or shipped config name (default: pretrain, simclr or avc)")
    parser.add_argument("--resume", metavar="RUN", help="continue the pretraining in RUN from its last checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")


def cmd_pretrain(args: argparse.Namespace) -> int:
    from ..train.avc import AVCConfig, pretrain_avc
    from ..train.config import TrainConfig
    from ..train.pretrain import pretrain_supervised
    from ..train.simclr import SimCLRConfig, pretrain_simclr

    methods = {"supervised": (TrainConfig, pretrain_supervised, "pretrain"),
               "simclr": (SimCLRConfig, pretrain_simclr, "simclr"), "avc": (AVCConfig, pretrain_avc, "avc")}
    schema, pretrain, shipped = methods[args.method]
    if args.resume:
        source, overrides = _saved_config(args.resume), [*args.overrides, f"out={args.resume}"]
    else:
        source, overrides = args.config or shipped, args.overrides
    config = load_config_announced(source, overrides, schema=schema)
    summary = pretrain(config, resume=bool(args.resume))
    _report({"run": config.out, **summary})
    return 0


def _saved_config(run: str) -> str:
    """RUN/config.yaml, or a typed error saying why RUN cannot be resumed."""
    from ..errors import ShortvidError

    saved = Path(run) / "config.yaml"
    if not saved.is_file():
        raise ShortvidError(run, "nothing to resume: no config.yaml (not a run directory, or the run "
                            "was stopped before it started)")
    return str(saved)


def distill_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", required=True, metavar="RUN", help="the teacher's run directory")
    parser.add_argument("--config", required=True, help="the student's config (YAML file or shipped name)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")


def cmd_distill(args: argparse.Namespace) -> int:
    """`train` with a teacher: the seed's ImageNet-head distillation unless distill.kind=logits."""
    from ..train.trainer import train

    config = load_config_announced(args.config, [f"distill.teacher={args.teacher}", *args.overrides])
    if config.distill.kind == "imagenet":
        config.model.imagenet_head = True
    record = train(config)
    _report({"run": config.out, **record})
    return 0


def fuse_arguments(parser: argparse.ArgumentParser) -> None:
    from ..models import FUSION_RULES

    parser.add_argument("general", metavar="GENERAL")
    parser.add_argument("specialists", nargs="+", metavar="SPECIALIST")
    parser.add_argument("--out", required=True, metavar="RUN")
    add_dataset_options(parser, required=False, help="dataset to choose the rule on (default: the general run's)")
    parser.add_argument("--rule", choices=["best", *FUSION_RULES], default="best",
                        help="fusion rule (default: the best on the split)")
    add_device_option(parser)
    add_quiet_option(parser)
    add_inference_options(parser)


def cmd_fuse(args: argparse.Namespace) -> int:
    from ..models import FUSION_RULES
    from ..train.fuse import fuse_runs

    rules = list(FUSION_RULES) if args.rule == "best" else [args.rule]
    report = fuse_runs(args.general, args.specialists, args.out, dataset=args.data, split=args.split,
                       rules=rules, device=args.device, progress=not args.quiet, **inference_options(args))
    print(f"{report['videos']} {args.split} videos: general mean Jaccard {report['general']['mean_jaccard']:.4f}")
    for rule, result in report["rules"].items():
        chosen = "  <- kept" if rule == report["rule"] else ""
        print(f"  fused ({rule}): mean Jaccard {result['mean_jaccard']:.4f}, top-1 {result['top1_hit']:.4f}{chosen}")
    for group, result in report["groups"].items():
        if result["videos"]:
            print(f"  group {group} ({result['videos']} videos): general {result['general']:.4f}, "
                  f"fused {result['fused']:.4f}")
    print(f"fused run written to {args.out}")
    return 0


def adaptive_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", metavar="RUN")
    parser.add_argument("--out", required=True, metavar="RUN")


def cmd_adaptive(args: argparse.Namespace) -> int:
    from ..train.fuse import adaptive_runs

    print(json.dumps(adaptive_runs(args.runs, args.out)))
    return 0


def ablate_arguments(parser: argparse.ArgumentParser) -> None:
    from ..decode.options import parse_size
    from ..synth.corpus import PRESETS

    parser.add_argument("--preset", choices=list(PRESETS), default="bench",
                        help="corpus preset, generated into --data when missing (default: bench)")
    parser.add_argument("--data", default=None, help="the corpus folder (default: data/PRESET)")
    parser.add_argument("--out", default=None, help="working folder (default: runs/ablate-PRESET)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10, help="training epochs of every model (default: 10)")
    parser.add_argument("--workers", type=int, default=None, help="extraction processes (default: all cores)")
    parser.add_argument("--resize", type=parse_size, default=80,
                        help="frames decoded to this short side, or HxW: the whole frame, squeezed (default: 80)")
    parser.add_argument("--report", default=None, help="also copy ABLATION.md here")
    pretrained = parser.add_argument_group("pretrained regime")
    pretrained.add_argument("--pretrained", action="store_true",
                            help="start every network from a `shortvid pretrain` backbone, pretrained on the "
                                 "--pretrain-preset corpus (the seed's setup; "
                                 "default out: runs/ablate-PRESET-pretrained)")
    pretrained.add_argument("--pretrain-preset", choices=list(PRESETS), default="pretrain",
                            help="the source corpus's preset (default: pretrain)")
    pretrained.add_argument("--pretrain-data", default=None, help="the source corpus folder (default: data/PRESET)")
    pretrained.add_argument("--pretrain-epochs", type=int, default=30,
                            help="supervised pretraining epochs (default: 30)")
    pretrained.add_argument("--simclr-epochs", type=int, default=20, help="SimCLR pretraining epochs (default: 20)")
    senses = parser.add_argument_group("motion and sound")
    senses.add_argument("--senses", action="store_true",
                        help="the motion-and-sound table instead: keyframes only, + motion, + sound, both, by class "
                             "kind and keyframe count (use --preset av; default out: runs/ablate-PRESET-senses)")
    senses.add_argument("--motion", type=int, default=2, help="motion frames after each keyframe (default: 2)")
    senses.add_argument("--audio-seconds", type=float, default=1.0, help="seconds of sound a video (default: 1)")
    senses.add_argument("--fusions", default="gate,attention",
                        help="modality fusions trained besides concat on both inputs, comma-separated "
                             "(default: gate,attention; empty: none)")
    senses.add_argument("--modality-dropout", type=float, default=0.25,
                        help="each modality's dropout in the fusion while training (default: 0.25; 0: none)")
    senses.add_argument("--stream-heads", action=argparse.BooleanOptionalAction, default=True,
                        help="a loss on each modality's own classifier besides the fused one (default: on)")
    add_quiet_option(parser)


def cmd_ablate(args: argparse.Namespace) -> int:
    from ..ablate import AblationPlan, ablate
    from ..files import atomic_write

    suffix = ("-senses" if args.senses else "") + ("-pretrained" if args.pretrained else "")
    plan = AblationPlan(data=args.data or f"data/{args.preset}", out=args.out or f"runs/ablate-{args.preset}{suffix}",
                        preset=args.preset, seed=args.seed, epochs=args.epochs, workers=args.workers,
                        resize=args.resize,
                        progress=not args.quiet, pretrained=args.pretrained, pretrain_preset=args.pretrain_preset,
                        pretrain_data=args.pretrain_data, pretrain_epochs=args.pretrain_epochs,
                        simclr_epochs=args.simclr_epochs, senses=args.senses, motion=args.motion,
                        audio_seconds=args.audio_seconds, modality_dropout=args.modality_dropout,
                        stream_heads=args.stream_heads,
                        fusions=tuple(name for name in args.fusions.split(",") if name))
    summary = ablate(plan)
    if args.report:
        atomic_write(args.report, (Path(plan.out) / "ABLATION.md").read_bytes())
    print(f"ablation done in {summary['wall_seconds'] / 60:.1f} min: {Path(plan.out) / 'ABLATION.md'}")
    return 0


def hardmine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN")
    add_dataset_options(parser, split="train", help="the AI Challenger dataset folder")
    parser.add_argument("--margin", type=float, default=None, help="also count right answers won by less than this")
    parser.add_argument("--name", default="hard", help="the hard split's name (default: hard)")
    add_device_option(parser)
    add_quiet_option(parser)
    add_inference_options(parser)


def cmd_hardmine(args: argparse.Namespace) -> int:
    from ..train.hardset import mine_hard_set

    report = mine_hard_set(args.run, args.data, split=args.split, margin=args.margin, name=args.name,
                           device=args.device, progress=not args.quiet, **inference_options(args))
    print(json.dumps(report))
    return 0


def finetune_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN")
    parser.add_argument("--out", required=True)
    parser.add_argument("--hard", default="hard", help="the hard split's name (from `shortvid hardmine`)")
    parser.add_argument("--stages", type=int, default=2, help="stages frozen in step 1 (default: 2)")
    parser.add_argument("--epochs", type=int, default=10, help="at most, per step")
    parser.add_argument("--patience", type=int, default=2, help="epochs without improvement before a step ends")
    parser.add_argument("--lr-scale", type=float, default=0.1, help="the run's learning rate times this")
    parser.add_argument("--easy", type=float, default=1.0,
                        help="mix in easy videos, as a fraction of the hard set (default: 1.0, as many; 0: hard only)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")


def cmd_finetune(args: argparse.Namespace) -> int:
    from ..train.hardset import finetune

    report = finetune(args.run, args.out, hard=args.hard, stages=args.stages, epochs=args.epochs,
                      patience=args.patience, lr_scale=args.lr_scale, easy_fraction=args.easy,
                      overrides=tuple(args.overrides))
    _report(report)
    return 0


def _report(record: dict) -> None:
    """The command's result line: under torchrun, printed by rank 0 only (one line, not one per process)."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(record))
