"""``shortvid ablate --senses``: what motion and sound add to three keyframes (issue 21's table).

On the ``av`` corpus (classes told apart by appearance, by motion only or by sound only, in the same
confusable groups, on videos with 1-3 keyframes) one frame cache holds each video's keyframes, the
frames shown after each and its sound. Four models train on it with the same recipe and differ only in
what they take: keyframes only, + motion (TSN's RGB difference), + sound (log-mel), both. The model with
both is trained again with each modality fusion of the registry. Each is evaluated through the serving
path, one video at a time, and the table splits mean Jaccard by class kind and by keyframe count, with
the time of each stage.

With ``--pretrained`` the visual backbone of every model also starts, in a second set of rows, from a
``shortvid pretrain`` backbone (supervised on the ``pretrain`` corpus, the pretrained ablation's step);
the motion and audio encoders start from scratch in both regimes.
"""

from __future__ import annotations

import time

from ..decode import AudioSpec, FrameSpec
from ..evaluate.report import markdown_table
from .pretrained import PretrainedAblation
from .report import pct, size_text

VARIANTS = {  # name -> the overrides that give the model its inputs
    "keyframes": (),
    "motion": ("model.motion={motion}",),
    "sound": ("model.audio=true",),
    "both": ("model.motion={motion}", "model.audio=true"),
}


class SensesAblation(PretrainedAblation):
    """The plan of the module's docstring; the pretraining steps are the pretrained ablation's."""

    def config(self, run: str, *overrides: str):
        plan = self.plan
        encoders = [f"model.args.motion_args={{backbone: {plan.motion_backbone}, scale: {plan.motion_scale}}}",
                    f"model.args.audio_args={{backbone: {plan.audio_backbone}}}",
                    f"model.args.fusion_args={{dropout: {plan.modality_dropout}}}",
                    f"model.args.stream_heads={str(plan.stream_heads).lower()}"]
        return super(PretrainedAblation, self).config(run, f"data.cache={self.out / 'cache_av'}", *encoders,
                                                      *overrides)

    def cache_av(self) -> dict:
        from ..data.annotations import dataset_videos
        from ..data.cache import extract

        plan = self.plan
        videos, _ = dataset_videos(self.data)
        spec = FrameSpec(k=3, size=plan.resize, motion=plan.motion)
        return extract(videos, self.out / "cache_av", spec, audio=AudioSpec(seconds=plan.audio_seconds),
                       workers=plan.workers, progress=plan.progress).to_dict()

    def variant(self, name: str, pretrained: bool = False, fusion: str | None = None) -> dict:
        overrides = [override.format(motion=self.plan.motion) for override in VARIANTS[name]]
        if fusion:
            overrides.append(f"model.args.fusion={fusion}")
        if pretrained:
            overrides += [*self.backbone(self.plan.student), f"optim.lr={self.plan.finetune_lr}"]
        return self.train(run_name(name, pretrained, fusion), *overrides)

    def run(self) -> dict:
        plan, runs = self.plan, self.out / "runs"
        started = time.perf_counter()
        self.step("corpus", self.corpus)
        self.step("cache_av", self.cache_av)
        regimes = [False]
        if plan.pretrained:
            self.step("source_corpus", self.source_corpus)
            self.step("source_cache", self.source_cache)
            self.step(f"pretrain_{plan.student}", lambda: self.pretrain(plan.student))
            regimes.append(True)
        for pretrained in regimes:  # the full model first: a run cut short has the headline row
            trained = [(name, None) for name in sorted(VARIANTS, key=lambda name: name != "both")] + \
                [("both", fusion) for fusion in plan.fusions]
            for name, fusion in trained:
                run = run_name(name, pretrained, fusion)
                self.step(f"train_{run}", lambda name=name, fusion=fusion, pretrained=pretrained: self.variant(
                    name, pretrained, fusion))
                self.step(f"eval_{run}", lambda run=run: self.evaluate(runs / run))
        return self.finish(started, senses_report)


def run_name(variant: str, pretrained: bool, fusion: str | None) -> str:
    """The run folder of a variant: ``both_gate``, ``pretrained_motion``, ..."""
    return ("pretrained_" if pretrained else "") + variant + (f"_{fusion}" if fusion else "")


def senses_report(summary: dict) -> str:
    """ABLATION.md's motion-and-sound table: each model's inputs against mean Jaccard by class kind and by
    keyframe count, and the time of each stage; then the modality fusions; then the issue's targets."""
    r, plan, machine = summary["results"], summary["plan"], summary["machine"]
    kinds = sorted({kind for key, value in r.items() if key.startswith("eval_") for kind in value.get("by_kind", {})})
    counts = sorted({n for key, value in r.items() if key.startswith("eval_") for n in value["by_keyframes"]}, key=int)

    def row(label: str, ev: dict) -> list[str]:
        by_kind, by_count = ev.get("by_kind", {}), ev["by_keyframes"]
        return [label, pct(ev["mean_jaccard"]), *(pct(by_kind[k]["mean_jaccard"]) if k in by_kind else "–"
                                                   for k in kinds),
                *(pct(by_count[n]["mean_jaccard"]) if n in by_count else "–" for n in counts),
                f"{ev['decode_ms']:.1f}", "–" if "decode_audio_ms" not in ev else f"{ev['decode_audio_ms']:.1f}",
                f"{ev['preprocess_ms']:.2f}", f"{ev['model_ms']:.1f}", f"{ev['total_ms']:.1f}"]

    header = ["inputs", "mean Jaccard", *(f"{k} classes" for k in kinds), *(f"{n} keyframe(s)" for n in counts),
              "decode ms", "of which sound", "preprocess ms", "model ms", "total ms"]
    regimes = [(False, "from scratch")] + ([(True, "pretrained visual backbone")] if plan["pretrained"] else [])
    names = {"keyframes": "keyframes only", "motion": f"+ motion ({plan['motion']} frames a keyframe)",
             "sound": f"+ sound ({plan['audio_seconds']:g} s)", "both": "+ motion + sound"}
    corpus = r["corpus"]
    parts = [
        "# Motion and sound: what they add to three keyframes\n\n",
        f"Command: `shortvid ablate --senses --preset {plan['preset']} --data {plan['data']} --out {plan['out']} "
        f"--seed {plan['seed']} --epochs {plan['epochs']} --resize {size_text(plan['resize'])}"
        f"{' --pretrained' if plan['pretrained'] else ''} "
        f"--motion {plan['motion']} --fusions '{','.join(plan['fusions'])}' "
        f"--modality-dropout {plan.get('modality_dropout', 0.0):g}"
        f"{'' if plan.get('stream_heads') else ' --no-stream-heads'}`. Every model "
        f"has the same recipe ({plan['epochs']} epochs, {size_text(plan['resize'])} px frames, "
        f"{plan['input_size']} px crops, "
        f"visual backbone {plan['student']}) and differs only in its inputs; evaluated on the validation split one "
        "video at a time through the serving path (median ms/video; decode includes the sound's, preprocess the "
        "log-mel features).\n\n",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} "
        f"({machine['torch_threads']} threads), PyAV {machine['pyav']}. Corpus: {corpus['videos']} videos "
        f"{corpus['splits']}, keyframes per video {corpus['keyframes_per_video']}. Whole ablation: "
        f"{summary['wall_seconds'] / 60:.1f} min (steps done by an earlier run count 0).\n",
    ]
    for pretrained, title in regimes:
        rows = [row(label, r[f"eval_{run_name(name, pretrained, None)}"]) for name, label in names.items()
                if f"eval_{run_name(name, pretrained, None)}" in r]
        parts += [f"\n## {title}\n\n", markdown_table(header, rows)]
        fusions = [("concat", r.get(f"eval_{run_name('both', pretrained, None)}"))]
        fusions += [(f, r.get(f"eval_{run_name('both', pretrained, f)}")) for f in plan["fusions"]]
        parts += [f"\n### Modality fusion ({title}, both inputs)\n\n",
                  markdown_table(header[:1 + len(kinds) + 1], [row(f, ev)[:1 + len(kinds) + 1]
                                                               for f, ev in fusions if ev])]
        base, full = (r.get(f"eval_{run_name(n, pretrained, None)}") for n in ("keyframes", "both"))
        if base and full and base.get("by_kind") and full.get("by_kind"):
            parts.append("\n" + _senses_targets(base, full) + "\n")
    return "".join(parts)


def _senses_targets(base: dict, full: dict) -> str:
    """The issue's accuracy targets read off two rows: on the classes keyframes cannot separate (motion,
    sound) the full model >= 0.95 where keyframes alone <= 0.8, with no loss on the appearance classes."""
    hidden = [k for k in ("motion", "sound") if k in base["by_kind"] and k in full["by_kind"]]

    def mean(ev: dict) -> float:
        groups = [ev["by_kind"][k] for k in hidden]
        return sum(g["videos"] * g["mean_jaccard"] for g in groups) / max(1, sum(g["videos"] for g in groups))

    lines = [f"Targets: on the {' and '.join(hidden)} classes keyframes alone score {mean(base):.3f} (target <= 0.8) "
             f"and the full model {mean(full):.3f} (target >= 0.95)."]
    if "appearance" in base["by_kind"] and "appearance" in full["by_kind"]:
        delta = full["by_kind"]["appearance"]["mean_jaccard"] - base["by_kind"]["appearance"]["mean_jaccard"]
        lines.append(f"Appearance classes: {delta:+.3f} (target: no loss).")
    return " ".join(lines)
