"""``shortvid ablate``: the seed's tables, reproduced in one command on a synthetic corpus.

Every model is trained from scratch with the same recipe (the shipped ``tiny`` config, sized by
``AblationPlan``) and evaluated on the validation split through the serving path, one video at a
time, so accuracy and ms/video are what a user would get. Five tables, as in the seed:

1. 3 keyframes vs 8 uniformly sampled frames;
2. distillation: two students, each alone and distilled from the teacher;
3. hard-set fine-tuning, before and after each of its two steps;
4. aggregators: mean (TSN) vs NeXtVLAD;
5. adaptive I-frame model vs the fixed 3-frame one (one TSN fed every keyframe, and separately
   trained 1/2/3-frame models), overall and on videos with fewer than 3 keyframes;

and a sixth: the student fused with one specialist per label group.

Each step leaves ``OUT/steps/<name>.json``; a rerun skips finished steps, so an interrupted
ablation resumes. ``OUT/ablation.json`` holds every number and ``OUT/ABLATION.md`` the tables.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..data.annotations import dataset_videos
from ..data.cache import extract
from ..decode import FrameSpec
from ..files import atomic_write
from ..machine import describe
from .report import scratch_report


def size_value(size: int | tuple[int, int] | list[int]) -> str:
    """A frame size as a config override's value: ``80`` or ``[80, 80]`` (YAML's list, which ``data.resize``
    takes as height and width)."""
    return f"[{size[0]}, {size[1]}]" if isinstance(size, tuple | list) else str(size)


@dataclass
class AblationPlan:
    """What the ablation trains and how. The defaults fit the ``bench`` corpus in under an hour on 2 cores."""

    data: str  # the corpus (AI Challenger layout); generated from ``preset`` when missing
    out: str = "runs/ablate"
    preset: str = "bench"
    seed: int = 0
    resize: int | tuple[int, int] = 80  # short side of the decoded frames, or (height, width): the whole frame
    input_size: int = 72  # centre crop fed to the networks
    epochs: int = 10
    batch_size: int = 16
    student: str = "test_resnet"  # timm backbones, all trained from scratch (no weights can be downloaded)
    second_student: str = "test_efficientnet"
    teacher: str = "resnet10t"
    teacher_lr: float = 0.003
    distill_weight: float = 1.0
    temperature: float = 4.0
    hard_epochs: int = 5  # at most, per fine-tuning step
    hard_patience: int = 2
    workers: int | None = None  # extraction processes (default: all cores)
    progress: bool = True
    # --- the pretrained regime (``--pretrained``; ``ablate/pretrained.py``) ---
    pretrained: bool = False
    pretrain_preset: str = "pretrain"  # the source corpus (many classes, none of the benchmark's)
    pretrain_data: str | None = None  # default: data/PRETRAIN_PRESET
    pretrain_epochs: int = 30  # supervised pretraining of each backbone on the source
    simclr_epochs: int = 20
    finetune_lr: float = 0.003  # AdamW, every network started from a pretrained backbone
    scratch_lr: float = 0.01  # the from-scratch control (the ``tiny`` config's rate)
    head_lr_scale: float = 0.1  # NeXtVLAD's rate: optim.lr_scale={aggregator: this}
    head_epochs: int | None = None  # NeXtVLAD's budget (default: epochs)
    # --- motion and sound (``--senses``; ``ablate/senses.py``) ---
    senses: bool = False
    motion: int = 2  # motion frames after each keyframe
    audio_seconds: float = 1.0  # seconds of sound a video (AudioSpec's default)
    # The encoders' timm backbones and the motion encoder's scale: tiny nets trained from scratch, as the
    # visual student is (the model's defaults are ImageNet-sized mobilenets, for pretrained weights)
    motion_backbone: str = "test_resnet"
    audio_backbone: str = "test_resnet"
    motion_scale: float = 1.0
    fusions: tuple[str, ...] = ("gate", "attention")  # modality fusions trained besides concat, on both inputs
    modality_dropout: float = 0.25  # each modality's dropout in the fusion while training (fusion_args.dropout)
    stream_heads: bool = True  # a loss on each modality's own head besides the fused one (model.args.stream_heads)


class Ablation:
    """Runs the plan step by step; each step's result is cached in ``OUT/steps``."""

    def __init__(self, plan: AblationPlan):
        self.plan = plan
        self.out = Path(plan.out)
        self.data = Path(plan.data)
        self.results: dict[str, Any] = {}
        self.seconds: dict[str, float] = {}

    def step(self, name: str, work: Callable[[], Any]) -> Any:
        marker = self.out / "steps" / f"{name}.json"
        if marker.exists():
            saved = json.loads(marker.read_text())
            self.results[name], self.seconds[name] = saved["result"], saved["seconds"]
            return self.results[name]
        self.say(f"{name} ...")
        started = time.perf_counter()
        result = work()
        seconds = round(time.perf_counter() - started, 1)
        marker.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(marker, json.dumps({"result": result, "seconds": seconds}, indent=2) + "\n")
        self.results[name], self.seconds[name] = result, seconds
        self.say(f"{name}: done in {seconds:.0f} s")
        return result

    def say(self, message: str) -> None:
        if self.plan.progress:
            print(f"[ablate {time.strftime('%H:%M:%S')}] {message}", flush=True)

    # --- the pieces -------------------------------------------------------------------------

    def corpus(self) -> dict:
        from ..synth.corpus import generate_corpus, preset

        summary = generate_corpus(self.data, preset(self.plan.preset, seed=self.plan.seed), workers=self.plan.workers,
                                  progress=self.plan.progress)
        return {"videos": summary.videos, "splits": summary.split_counts,
                "keyframes_per_video": {str(k): v for k, v in summary.keyframe_histogram.items()}}

    def cache(self, name: str, spec: FrameSpec) -> dict:
        videos, _ = dataset_videos(self.data)
        return extract(videos, self.out / name, spec, workers=self.plan.workers, progress=self.plan.progress).to_dict()

    def config(self, run: str, *overrides: str):
        from ..train.config import load_config

        plan = self.plan
        return load_config("tiny", [
            f"data.dataset={self.data}", f"data.cache={self.out / 'cache3'}", f"data.resize={size_value(plan.resize)}",
            f"data.input_size={plan.input_size}", f"data.batch_size={plan.batch_size}", f"optim.epochs={plan.epochs}",
            f"seed={plan.seed}", f"out={self.out / 'runs' / run}", "device=cpu",
            f"progress={str(plan.progress).lower()}",
            "model.name=tsn", f"model.args.backbone={plan.student}", *overrides])

    def train(self, run: str, *overrides: str) -> dict:
        from ..train.trainer import train

        config = self.config(run, *overrides)
        resume = (Path(config.out) / "checkpoints" / "last.pt").exists()
        record = train(config, resume=resume)
        model = torch.load(Path(config.out) / "checkpoints" / "best.pt", weights_only=False)["model"]
        return {"run": config.out, "last_epoch": record, "params": sum(v.numel() for k, v in model.items()
                                                                        if not k.startswith("imagenet_head"))}

    def evaluate(self, run: str | Path, adaptive: bool = False, dataset: Path | None = None, tag: str = "") -> dict:
        """The run on the validation split of ``dataset`` (default: the corpus); ``tag`` names its metrics file."""
        from ..evaluate.runner import evaluate_run

        name = Path(run).name + ("_adaptive" if adaptive else "") + tag
        (self.out / "metrics").mkdir(parents=True, exist_ok=True)
        report = evaluate_run(run, dataset or self.data, "val", device="cpu", adaptive=adaptive,
                              progress=self.plan.progress, out=self.out / "metrics" / f"{name}.json")
        timing = report["timing_ms"]
        few = [g for n, g in report["by_keyframes"].items() if int(n) < 3]
        few_videos = sum(g["videos"] for g in few)
        return {
            "mean_jaccard": report["mean_jaccard"], "top1": report["top1_hit"], "mAP": report["mAP"],
            "videos": report["num_videos"], "failed": report["failed"],
            "decode_ms": timing["decode"]["median"], "model_ms": timing["model"]["median"],
            "preprocess_ms": timing["preprocess"]["median"], "total_ms": timing["total"]["median"],
            "few_keyframes": {"videos": few_videos, "mean_jaccard": (sum(g["videos"] * g["mean_jaccard"] for g in few)
                                                                     / few_videos) if few_videos else None},
            "by_keyframes": {n: {"videos": g["videos"], "mean_jaccard": g["mean_jaccard"]}
                             for n, g in report["by_keyframes"].items()},
            **{key: report[key] for key in ("by_kind", "by_sound") if key in report},
            **({"decode_audio_ms": timing["decode_audio"]["median"]} if "decode_audio" in timing else {}),
        }

    # --- the plan ---------------------------------------------------------------------------

    def run(self) -> dict:
        from ..data.labels import LabelMap
        from ..train.fuse import adaptive_runs, fuse_runs
        from ..train.hardset import finetune, mine_hard_set

        plan, runs = self.plan, self.out / "runs"
        started = time.perf_counter()
        self.step("corpus", self.corpus)
        self.step("cache3", lambda: self.cache("cache3", FrameSpec(k=3, size=plan.resize)))
        self.step("cache8", lambda: self.cache("cache8", FrameSpec(k=8, sampler="uniform", size=plan.resize)))

        distill = ["distill.kind=logits", f"distill.teacher={runs / 'teacher'}",
                   f"distill.weight={plan.distill_weight}", f"distill.temperature={plan.temperature}",
                   "distill.cache=true"]
        self.step("train_student", lambda: self.train("student"))
        self.step("train_frames8", lambda: self.train("frames8", f"data.cache={self.out / 'cache8'}",
                                                      "data.k=8"))
        self.step("train_teacher", lambda: self.train("teacher", f"model.args.backbone={plan.teacher}",
                                                      f"optim.lr={plan.teacher_lr}"))
        self.step("train_student_distilled", lambda: self.train("student_distilled", *distill))
        self.step("train_second", lambda: self.train("second", f"model.args.backbone={plan.second_student}"))
        self.step("train_second_distilled", lambda: self.train(
            "second_distilled", f"model.args.backbone={plan.second_student}", *distill))
        self.step("train_nextvlad", lambda: self.train("nextvlad", "model.args.aggregator=nextvlad"))
        self.step("train_frames1", lambda: self.train("frames1", "data.k=1"))
        self.step("train_frames2", lambda: self.train("frames2", "data.k=2"))
        self.step("hard_mine", lambda: mine_hard_set(runs / "student", self.data, split="train", name="hard",
                                                     device="cpu", progress=plan.progress))
        self.step("hard_finetune", lambda: finetune(runs / "student", runs / "hard", hard="hard",
                                                    epochs=plan.hard_epochs, patience=plan.hard_patience,
                                                    easy_fraction=0.0,  # the seed's table: the hard set alone
                                                    overrides=(f"progress={str(plan.progress).lower()}",)))
        groups = LabelMap.from_csv(self.data / "labels.csv").groups
        for group in groups:
            self.step(f"train_group_{group}", lambda group=group: self.train(f"group_{group}", f"data.group={group}"))
        self.step("fuse", lambda: fusion_summary(fuse_runs(runs / "student", [runs / f"group_{g}" for g in groups],
                                                            runs / "fused", dataset=self.data,
                                                            progress=plan.progress)))
        self.step("adaptive_members", lambda: adaptive_runs([runs / "frames1", runs / "frames2", runs / "student"],
                                                            runs / "by_frame_count"))

        for name in ("student", "frames8", "teacher", "student_distilled", "second", "second_distilled", "nextvlad",
                     "by_frame_count", "fused"):
            self.step(f"eval_{name}", lambda name=name: self.evaluate(runs / name))
        self.step("eval_hard_frozen", lambda: self.evaluate(runs / "hard" / "frozen"))
        self.step("eval_hard_full", lambda: self.evaluate(runs / "hard" / "full"))
        self.step("eval_student_adaptive", lambda: self.evaluate(runs / "student", adaptive=True))

        return self.finish(started, scratch_report)

    def finish(self, started: float, report: Callable[[dict], str]) -> dict:
        """Write ``OUT/ablation.json`` (plan, machine, every result and step time) and ``OUT/ABLATION.md``."""
        summary = {"plan": {k: v for k, v in asdict(self.plan).items() if k != "progress"},
                   "machine": describe(), "results": self.results, "seconds": self.seconds,
                   "wall_seconds": round(time.perf_counter() - started, 1)}
        atomic_write(self.out / "ablation.json", json.dumps(summary, indent=2) + "\n")
        atomic_write(self.out / "ABLATION.md", report(summary))
        return summary


def fusion_summary(report: dict) -> dict:
    """What the ablation keeps of a fusion report."""
    return {key: report[key] for key in ("rule", "groups", "general", "rules", "videos")}
