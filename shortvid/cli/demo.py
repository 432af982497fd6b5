"""``demo``: the whole pipeline on generated data (``shortvid.demo.run_demo``)."""

from __future__ import annotations

import argparse


def add_commands(commands: argparse._SubParsersAction) -> None:
    """demo."""
    commands.add_parser("demo", help="the whole pipeline on generated data",
                        description="Generate a small synthetic corpus, extract its keyframes, train a "
                                    "small model on the CPU, evaluate it and classify held-out videos.",
                        arguments=demo_arguments).set_defaults(handler=cmd_demo)


def demo_arguments(parser: argparse.ArgumentParser) -> None:
    from ..synth.corpus import PRESETS

    parser.add_argument("--out", default="runs/demo", help="working folder (default: runs/demo)")
    parser.add_argument("--preset", choices=list(PRESETS), default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--config", default="tiny", help="training config (default: the shipped 'tiny')")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="training config overrides")


def cmd_demo(args: argparse.Namespace) -> int:
    """Exit 0 when the trained model beats always guessing the commonest class, else 1."""
    from ..demo import run_demo

    summary = run_demo(args.out, preset=args.preset, seed=args.seed, workers=args.workers, config=args.config,
                       overrides=args.overrides)
    return 0 if summary["mean_jaccard"] > summary["chance"] else 1
