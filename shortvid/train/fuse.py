"""Runs made of other runs, servable like any run.

``shortvid fuse``: the general run and per-group specialist runs in one run.

Specialists' classes are matched to the general model's by name (a specialist numbers its group's
classes 0..K-1). Every fusion rule of :mod:`shortvid.models.fusion` is scored on the validation
videos, each decoded once and scored by every member through the serving path (``classify_split``);
the best rule and a decision policy fitted to its scores are saved with the weights of all members,
and ``fusion.json`` reports general vs fused, overall and per group.

``shortvid adaptive``: runs trained on 1, 2, 3... frames in one run that hands each video to the
member trained on as many frames as the video has keyframes (see :mod:`shortvid.models.adaptive`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..data.annotations import load_dataset
from ..data.labels import UnknownLabelError
from ..decode import Clip, DecodeLimits
from ..files import atomic_write
from ..infer.batch import classify_split
from ..infer.classifier import Classifier
from ..metrics import jaccard, mean_ap, top_k_hit
from ..models import FUSION_RULES, FusedClassifier, create_model
from ..models.adaptive import FrameCountSwitch
from ..models.fusion import renormalisation
from ..policy import DecisionPolicy
from ..run import Preprocess, RunDir, RunError


def _members(general: RunDir, specialists: Sequence[RunDir]) -> tuple[dict, list[dict]]:
    """The fused model's config: members' architectures, score kinds, classes and re-normalisation."""
    labels, preprocess = general.label_map(), general.preprocess()
    general_config = general.load_checkpoint()["model_config"]
    if general_config.get("name") == "fused":
        raise RunError(str(general.root), "is already a fused run; fuse its general run instead")
    members, taken = [], {}
    for run in specialists:
        own = run.preprocess()
        if (own.frames, own.input_size, own.audio, own.mels) != (preprocess.frames, preprocess.input_size,
                                                                  preprocess.audio, preprocess.mels):
            raise RunError(str(run.root), f"reads frames as {own.frames} at {own.input_size} px with sound "
                                          f"{own.audio}, but the general run as {preprocess.frames} at "
                                          f"{preprocess.input_size} px with sound {preprocess.audio}; fused models "
                                          f"share their inputs")
        try:
            classes = [labels.id(name) for name in run.label_map().names]
        except UnknownLabelError as error:
            raise RunError(str(run.root), f"has a class the general run does not know: {error.cause}") from None
        for class_id in classes:
            if class_id in taken:
                raise RunError(str(run.root), f"class {labels.name(class_id)!r} is also covered by {taken[class_id]}")
            taken[class_id] = str(run.root)
        scale, shift = renormalisation(list(preprocess.mean), list(preprocess.std), list(own.mean), list(own.std))
        members.append({"model": run.load_checkpoint()["model_config"], "scores": own.scores, "classes": classes,
                        "scale": scale, "shift": shift})
    return {"model": general_config, "scores": preprocess.scores}, members


def _summary(scores: np.ndarray, targets: np.ndarray) -> dict:
    policy, value = DecisionPolicy.fit(scores, targets)
    return {"mean_jaccard": value, "top1_hit": top_k_hit(scores, targets, 1), "mAP": mean_ap(scores, targets),
            "policy": policy.to_dict()}


def fuse_runs(general_run: str | os.PathLike, specialist_runs: Sequence[str | os.PathLike], out: str | os.PathLike,
              *, dataset: str | os.PathLike | None = None, split: str = "val", rules: Sequence[str] = FUSION_RULES,
              device: str = "auto", progress: bool = True, backend: str | None = "auto", precision: str | None = "fp32",
              limits: DecodeLimits | None = None) -> dict:
    """Fuse the runs into ``out`` with the best of ``rules`` on ``dataset``'s ``split``; returns the report.

    ``dataset`` defaults to the general run's training dataset. Each video is decoded once
    (``classify_split`` with the general run's classifier, within ``limits``) and scored by every member
    run's own classifier (``backend``, ``precision`` and ``device`` as in ``Classifier.load``); a video
    that fails is counted in ``failed`` and left out.
    """
    if not specialist_runs:
        raise RunError(str(general_run), "no specialist runs to fuse")
    general = RunDir(general_run)
    if dataset is None:
        dataset = general.training_data().get("dataset")
        if not dataset:
            raise RunError(str(general.root), "its config names no dataset: give one (--data)")
    specialists = [RunDir(run) for run in specialist_runs]
    general_member, members = _members(general, specialists)
    labels, preprocess = general.label_map(), general.preprocess()
    model: FusedClassifier = create_model("fused", num_classes=len(labels), general=general_member,
                                          specialists=members, rule=rules[0])
    model.general.load_state_dict(general.load_model("best").state_dict())
    for slot, run in zip(model.specialists, specialists, strict=True):
        slot.load_state_dict(run.load_model("best").state_dict())
    model.eval()

    # Each member scores the frames as its own run does: the same as the fused model's parts, whose
    # re-normalisation turns the general run's inputs into each specialist's.
    load = {"device": device, "backend": backend, "precision": precision, "limits": limits, "spin": True}
    scorers = [Classifier.load(run.root, **load) for run in (general, *specialists)]

    def member_scores(clip: Clip) -> tuple[np.ndarray, dict[str, float]]:
        parts = [scorer.scores(clip) for scorer in scorers]
        timings = {stage: sum(part[1][stage] for part in parts) for stage in parts[0][1]}
        return np.concatenate([part[0] for part in parts]), timings

    annotations = load_dataset(dataset, split, labels=labels, on_error="skip")
    rows, targets, failed = [], [], []
    for video in classify_split(scorers[0], annotations.samples, score=member_scores, progress=progress,
                                desc="fuse"):
        if video.error is not None:
            failed.append(video.error.to_dict())
            continue
        rows.append(video.scores)
        target = np.zeros(len(labels), dtype=np.int8)
        target[list(video.sample.labels)] = 1
        targets.append(target)
    if not targets:
        raise RunError(str(dataset), f"no {split} video could be classified to choose a fusion rule")
    widths = [len(labels), *(len(member["classes"]) for member in members)]
    p, *qs = (torch.from_numpy(np.ascontiguousarray(part))
              for part in np.split(np.stack(rows), np.cumsum(widths)[:-1], axis=1))
    y = np.stack(targets)

    report = {"general": _summary(p.numpy(), y), "rules": {}, "videos": len(y), "failed": len(failed),
              "dataset": str(dataset), "split": split}
    fused = {}
    for rule in rules:
        fused[rule] = model.fuse(p, qs, rule).cpu().numpy()
        report["rules"][rule] = _summary(fused[rule], y)
    best = max(rules, key=lambda rule: report["rules"][rule]["mean_jaccard"])
    report["rule"] = best
    report["groups"] = _per_group(labels, members, p.numpy(), fused[best], y,
                                  DecisionPolicy.from_dict(report["general"]["policy"]),
                                  DecisionPolicy.from_dict(report["rules"][best]["policy"]))

    model.rule = best
    model.config["rule"] = best
    run = RunDir(out)
    fused_preprocess = dataclasses.replace(preprocess, scores="sigmoid")
    run.write_inference(model, labels, fused_preprocess, report["rules"][best]["policy"])
    report["members"] = {"general": str(general.root), "specialists": [str(s.root) for s in specialists]}
    atomic_write(Path(out) / "fusion.json", json.dumps(report, indent=2) + "\n")
    return report


def _per_group(labels, members: list[dict], general: np.ndarray, fused: np.ndarray, targets: np.ndarray,
               general_policy: DecisionPolicy, fused_policy: DecisionPolicy) -> dict:
    """Mean Jaccard of general and fused on the videos that carry a class of each specialist's group."""
    out = {}
    general_jaccard = jaccard(general_policy.apply(general), targets)
    fused_jaccard = jaccard(fused_policy.apply(fused), targets)
    for member in members:
        rows = targets[:, member["classes"]].any(axis=1)
        group = labels.group(member["classes"][0]) or labels.name(member["classes"][0])
        out[group] = {"videos": int(rows.sum()),
                      "general": float(general_jaccard[rows].mean()) if rows.any() else None,
                      "fused": float(fused_jaccard[rows].mean()) if rows.any() else None}
    return out


def adaptive_runs(runs: Sequence[str | os.PathLike], out: str | os.PathLike) -> dict:
    """Write ``out``: one run switching between ``runs`` by the number of keyframes a video has.

    The runs must share classes, frame size, input size, normalisation and score kind, and differ in
    their frame count. The run reads up to the largest count of keyframes and never fills missing
    ones (``fill=none``); it keeps the largest member's decision policy.
    """
    members = sorted((RunDir(run) for run in runs), key=lambda run: run.preprocess().frames.k)
    if len(members) < 2:
        raise RunError(str(out), "an adaptive run needs runs for at least two frame counts")
    reference, reference_pre = members[-1], members[-1].preprocess()
    labels = reference.label_map()
    counts = [run.preprocess().frames.k for run in members]
    if len(set(counts)) != len(counts):
        raise RunError(str(out), f"two runs read the same number of frames ({counts})")
    for run in members:
        if _reads(run.preprocess()) != _reads(reference_pre) or run.label_map().names != labels.names:
            raise RunError(str(run.root), f"does not read, normalise or label videos as {reference.root} does")
    model = FrameCountSwitch({count: run.load_model() for count, run in zip(counts, members, strict=True)})
    model.config = {"name": "by_frame_count", "num_classes": len(labels),
                    "members": {str(count): run.load_checkpoint()["model_config"]
                                for count, run in zip(counts, members, strict=True)}}
    frames = dataclasses.replace(reference_pre.frames, fill="none")
    RunDir(out).write_inference(model, labels, dataclasses.replace(reference_pre, frames=frames), reference.policy())
    return {"run": str(out), "members": {str(count): str(run.root) for count, run in zip(counts, members, strict=True)}}


def _reads(pre: Preprocess) -> tuple:
    """What adaptive members must share: how they read, normalise and score a video (not the frame count)."""
    return (pre.frames.size, pre.frames.sampler, pre.frames.motion, pre.input_size, pre.mean, pre.std, pre.scores,
            pre.audio, pre.mels)
