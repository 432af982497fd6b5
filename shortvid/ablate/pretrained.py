"""``shortvid ablate --pretrained``: the seed's tables again, every network starting from a
``shortvid pretrain`` backbone, in the seed's exact setup.

The stand-in for ImageNet is the ``pretrain`` corpus (``shortvid synth --preset pretrain``: hundreds
of classes, none of them the benchmark's). Each backbone of the tables (the student, the second
student, the teacher) is pretrained on it once, supervised, with a K-way head; SimCLR pretrains the
student's backbone on the same videos without their labels. Then, on the benchmark corpus:

1. 3 keyframes vs 8 frames; the student from scratch, from SimCLR and from supervised pretraining;
2. distillation through the L2-normalised K-way heads (MSE) plus BCE, the teacher a larger
   pretrained network fine-tuned first;
3. hard-set fine-tuning of the converged student (stem and two stages frozen, then all), with and
   without easy videos mixed back in;
4. every aggregation head on pretrained features, NeXtVLAD with its own learning rate;
5. the adaptive model and the frame policies, by keyframe count;
6. specialists started from the general model (class head reset), fused with it.

Steps are cached in ``OUT/steps`` as in the from-scratch ablation; a rerun resumes.
"""

from __future__ import annotations

import time
from pathlib import Path

from ..decode import FrameSpec
from .engine import Ablation, AblationPlan, fusion_summary, size_value
from .report import pretrained_report

HEADS = ("netvlad", "netfv", "dbof", "lstm", "bigru")  # besides mean (the student) and NeXtVLAD
POLICY_RUNS = (("student", False), ("student_near", False), ("student_adaptive", True), ("by_frame_count", False))
"""The frame policies compared by keyframe count: keyframes repeated, near fill, and the two adaptive models."""


class PretrainedAblation(Ablation):
    """The plan of the module's docstring; ``Ablation`` gives the steps, caches, training and evaluation."""

    def __init__(self, plan: AblationPlan):
        super().__init__(plan)
        self.source = Path(plan.pretrain_data or f"data/{plan.pretrain_preset}")
        self.cuts = self.out / "cuts"

    def config(self, run: str, *overrides: str):
        return super().config(run, f"optim.lr={self.plan.finetune_lr}", *overrides)

    def backbone(self, name: str, method: str = "supervised") -> tuple[str, ...]:
        """Overrides that start ``name`` from its pretrained backbone (``method``: supervised, simclr, scratch)."""
        weights = () if method == "scratch" else (
            f"model.checkpoint_path={self.out / 'pretrain' / f'{method}_{name}' / 'backbone.pth'}",)
        return (f"model.args.backbone={name}", *weights)

    def source_corpus(self) -> dict:
        from ..synth.corpus import generate_corpus, preset

        summary = generate_corpus(self.source, preset(self.plan.pretrain_preset, seed=self.plan.seed),
                                  workers=self.plan.workers, progress=self.plan.progress)
        return {"videos": summary.videos, "splits": summary.split_counts, "classes": len(summary.class_counts),
                "keyframes_per_video": {str(k): v for k, v in summary.keyframe_histogram.items()}}

    def source_cache(self) -> dict:
        from ..data.annotations import dataset_videos
        from ..data.cache import extract

        videos, _ = dataset_videos(self.source)
        return extract(videos, self.out / "pretrain_cache", FrameSpec(k=3, size=self.plan.resize),
                       workers=self.plan.workers, progress=self.plan.progress).to_dict()

    def pretrain(self, name: str) -> dict:
        """Supervised: ``name`` as a K-way image classifier of the source's classes."""
        from ..train.config import load_config
        from ..train.pretrain import pretrain_supervised

        plan, out = self.plan, self.out / "pretrain" / f"supervised_{name}"
        config = load_config("pretrain", [
            f"data.dataset={self.source}", f"data.cache={self.out / 'pretrain_cache'}",
            f"data.resize={size_value(plan.resize)}",
            f"data.input_size={plan.input_size}", f"optim.epochs={plan.pretrain_epochs}", f"seed={plan.seed}",
            f"out={out}", "device=cpu", f"progress={str(plan.progress).lower()}", f"model.args.backbone={name}"])
        summary = pretrain_supervised(config, resume=(out / "checkpoints" / "last.pt").exists())
        return {**summary, "val": summary["last_epoch"]}

    def pretrain_simclr(self, name: str) -> dict:
        """SimCLR: ``name`` on the source's videos, labels unused."""
        from ..train.config import load_config
        from ..train.simclr import SimCLRConfig, pretrain_simclr

        plan, out = self.plan, self.out / "pretrain" / f"simclr_{name}"
        config = load_config("simclr", [
            f"data.cache={self.out / 'pretrain_cache'}", f"data.dataset={self.source}",
            f"data.input_size={plan.input_size}", f"optim.epochs={plan.simclr_epochs}", f"seed={plan.seed}",
            f"out={out}", "device=cpu", f"progress={str(plan.progress).lower()}", f"model.backbone={name}"],
            schema=SimCLRConfig)
        return pretrain_simclr(config, resume=(out / "checkpoints" / "last.pt").exists())

    def cuts_corpus(self) -> dict:
        """Benchmark classes with keyframes only at shot cuts (GOP 300): most videos have 1 or 2 keyframes,
        as many real uploads do. Nothing trains on it; 90% of it is the validation split."""
        from ..synth.corpus import generate_corpus, preset

        base = preset(self.plan.preset)
        videos = max(3 * base.num_classes, round(0.18 * base.num_videos))  # bench: 360, 10 a class at least
        spec = preset(self.plan.preset, seed=self.plan.seed + 1, gop=300, num_videos=videos, val_fraction=0.9,
                      min_videos_per_class=max(3, videos * 2 // (3 * base.num_classes)))
        summary = generate_corpus(self.cuts, spec, workers=self.plan.workers, progress=self.plan.progress)
        return {"videos": summary.videos, "splits": summary.split_counts,
                "keyframes_per_video": {str(k): v for k, v in summary.keyframe_histogram.items()}}

    def run(self) -> dict:
        from ..data.labels import LabelMap
        from ..train.fuse import adaptive_runs, fuse_runs
        from ..train.hardset import finetune, mine_hard_set

        plan, runs = self.plan, self.out / "runs"
        started = time.perf_counter()
        student, second, teacher = plan.student, plan.second_student, plan.teacher
        self.step("corpus", self.corpus)
        self.step("source_corpus", self.source_corpus)
        self.step("source_cache", self.source_cache)
        for name in (student, second, teacher):
            self.step(f"pretrain_{name}", lambda name=name: self.pretrain(name))
        self.step(f"simclr_{student}", lambda: self.pretrain_simclr(student))
        self.step("cache3", lambda: self.cache("cache3", FrameSpec(k=3, size=plan.resize)))
        self.step("cache8", lambda: self.cache("cache8", FrameSpec(k=8, sampler="uniform", size=plan.resize)))
        self.step("cache3_near", lambda: self.cache("cache3_near", FrameSpec(k=3, size=plan.resize, fill="near")))

        pre = self.backbone(student)
        heads = ("model.imagenet_head=true",)
        distill = ("distill.kind=imagenet", f"distill.teacher={runs / 'teacher'}",
                   f"distill.weight={plan.distill_weight}", "distill.cache=true", *heads)
        self.step("train_student", lambda: self.train("student", *pre))
        self.step("train_student_scratch", lambda: self.train("student_scratch", *self.backbone(student, "scratch"),
                                                               f"optim.lr={plan.scratch_lr}"))
        self.step("train_student_simclr", lambda: self.train("student_simclr", *self.backbone(student, "simclr")))
        self.step("train_frames8", lambda: self.train("frames8", *pre, f"data.cache={self.out / 'cache8'}",
                                                      "data.k=8"))
        self.step("train_teacher", lambda: self.train("teacher", *self.backbone(teacher), *heads))
        self.step("train_student_distilled", lambda: self.train("student_distilled", *pre, *distill))
        self.step("train_second", lambda: self.train("second", *self.backbone(second)))
        self.step("train_second_distilled", lambda: self.train("second_distilled", *self.backbone(second), *distill))
        self.step("train_nextvlad", lambda: self.train(
            "nextvlad", *pre, "model.args.aggregator=nextvlad", f"optim.lr_scale={{aggregator: {plan.head_lr_scale}}}",
            f"optim.epochs={plan.head_epochs or plan.epochs}"))
        for head in HEADS:
            self.step(f"train_{head}", lambda head=head: self.train(head, *pre, f"model.args.aggregator={head}"))
        self.step("train_moe", lambda: self.train("moe", *pre, "model.args.classifier=moe"))
        self.step("train_student_near", lambda: self.train("student_near", *pre,
                                                           f"data.cache={self.out / 'cache3_near'}"))
        self.step("train_frames1", lambda: self.train("frames1", *pre, "data.k=1"))
        self.step("train_frames2", lambda: self.train("frames2", *pre, "data.k=2"))
        self.step("hard_mine", lambda: mine_hard_set(runs / "student", self.data, split="train", name="hard",
                                                     device="cpu", progress=plan.progress))
        for easy in (0.0, 1.0):
            name = "hard" if easy == 0 else "hard_easy"
            self.step(f"{name}_finetune", lambda name=name, easy=easy: finetune(
                runs / "student", runs / name, hard="hard", epochs=plan.hard_epochs, patience=plan.hard_patience,
                easy_fraction=easy, overrides=(f"progress={str(plan.progress).lower()}",)))
        groups = LabelMap.from_csv(self.data / "labels.csv").groups
        for group in groups:
            self.step(f"train_group_{group}", lambda group=group: self.train(
                f"group_{group}", *pre, f"model.init_from={runs / 'student'}", f"data.group={group}"))
        self.step("fuse", lambda: fusion_summary(fuse_runs(runs / "student", [runs / f"group_{g}" for g in groups],
                                                            runs / "fused", dataset=self.data,
                                                            progress=plan.progress)))
        self.step("adaptive_members", lambda: adaptive_runs([runs / "frames1", runs / "frames2", runs / "student"],
                                                            runs / "by_frame_count"))

        for name in ("student", "student_scratch", "student_simclr", "frames8", "teacher",
                     "student_distilled", "second", "second_distilled", "nextvlad", *HEADS, "moe", "by_frame_count",
                     "fused"):
            self.step(f"eval_{name}", lambda name=name: self.evaluate(runs / name))
        for name in ("hard", "hard_easy"):
            for stage in ("frozen", "full"):
                self.step(f"eval_{name}_{stage}", lambda name=name, stage=stage: self.evaluate(runs / name / stage))
        self.step("eval_student_adaptive", lambda: self.evaluate(runs / "student", adaptive=True))
        self.step("eval_student_near", lambda: self.evaluate(runs / "student_near"))
        self.step("cuts_corpus", self.cuts_corpus)
        for name, adaptive in POLICY_RUNS:
            self.step(f"eval_cuts_{name}", lambda name=name, adaptive=adaptive: self.evaluate(
                runs / name.removesuffix("_adaptive"), adaptive=adaptive, dataset=self.cuts, tag="_cuts"))

        return self.finish(started, pretrained_report)
