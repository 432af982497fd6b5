"""The whole pipeline on generated data, in one call: corpus, frame cache, training, evaluation, prediction.

``shortvid demo`` runs it; so can a notebook or a test (``run_demo(tmp, preset="tiny", overrides=...)``).
It prints its progress as it goes and returns what it measured. Run again on the same folder, it
resumes: the corpus and the cache keep what they have, training continues from its last checkpoint.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .data.annotations import dataset_videos, load_dataset
from .data.cache import extract
from .decode import AudioSpec, FrameSpec
from .evaluate.runner import evaluate_run
from .infer.classifier import Classifier
from .metrics import mean_jaccard
from .synth.corpus import generate_corpus
from .synth.corpus import preset as corpus_preset
from .train.config import load_config
from .train.trainer import train

HELD_OUT_SHOWN = 5  # validation videos classified one by one at the end


def run_demo(out: str | os.PathLike, preset: str = "small", seed: int = 0, workers: int | None = None,
             config: str = "tiny", overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Generate the ``preset`` corpus in OUT/data, extract it into OUT/cache, train ``config`` (with
    ``overrides``) into OUT/run, evaluate it on the validation split and classify a few validation videos.

    Returns mean_jaccard, chance (always guessing the training set's commonest class), num_videos,
    top1_hit, top5_hit, mAP, run and data (folders), timing_ms (serving time per stage, median and p95),
    seconds (wall time per step and in total) and predictions (the held-out videos classified).
    """
    out = Path(out)
    data, cache, run = out / "data", out / "cache", out / "run"
    seconds: dict[str, float] = {}
    started = step = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal step
        now = time.perf_counter()
        seconds[name] = round(now - step, 2)
        step = now

    print(f"[1/5] generating the '{preset}' synthetic corpus in {data}", flush=True)
    corpus = generate_corpus(data, corpus_preset(preset, seed=seed), workers=workers)
    print(corpus.format())
    lap("corpus")

    settings = load_config(config, [f"data.dataset={data}", f"data.cache={cache}", f"out={run}", f"seed={seed}",
                                     *overrides])
    motion, hears = settings.model.motion, settings.model.audio
    senses = "".join((f", {motion} motion frames after each" if motion else "", " and the sound" if hears else ""))
    print(f"[2/5] extracting {settings.data.k} keyframes per video{senses} into {cache}", flush=True)
    videos, _ = dataset_videos(data)
    summary = extract(videos, cache, FrameSpec(k=settings.data.k, size=settings.frame_size(), motion=motion),
                      audio=AudioSpec() if hears else None, workers=workers).to_dict()
    print(f"  {summary['total'] - summary['failed']} of {summary['total']} videos in the cache; decode median "
          f"{summary['decode_ms_median']} ms/video; keyframes per video: {summary['keyframes_per_video']}")
    lap("extract")

    print(f"[3/5] training {settings.model.name} for {settings.optim.epochs} epochs on the CPU-friendly "
          f"'{config}' config", flush=True)
    train(settings, resume=(run / "checkpoints" / "last.pt").exists())
    lap("train")

    print("[4/5] evaluating on the validation split through the serving path", flush=True)
    report = evaluate_run(run, data, "val", progress=False)
    train_set, val_set = load_dataset(data, "train"), load_dataset(data, "val")
    majority = int(np.argmax(train_set.class_counts()))
    chance = mean_jaccard([(majority,)] * len(val_set), val_set.multi_hot(len(val_set.label_map)))
    timing = report["timing_ms"]
    print(f"  mean Jaccard (the competition's accuracy) {report['mean_jaccard']:.3f} on {report['num_videos']} "
          f"videos; always guessing the commonest class: {chance:.3f}")
    print(f"  top-1 {report['top1_hit']:.3f}, top-5 {report['top5_hit']:.3f}, mAP {report['mAP']:.3f}")
    if "by_kind" in report:  # a corpus of classes told apart by appearance, motion or sound (the av presets)
        print("  mean Jaccard by what tells the classes apart: " + ", ".join(
            f"{kind} {row['mean_jaccard']:.3f} ({row['videos']} videos)" for kind, row in report["by_kind"].items()))
    print(f"  ms/video: decode {timing['decode']['median']:.1f}, preprocess {timing['preprocess']['median']:.1f}, "
          f"model {timing['model']['median']:.1f}, total {timing['total']['median']:.1f} (median)")
    lap("evaluate")

    print("[5/5] classifying held-out videos", flush=True)
    classifier = Classifier.load(run)
    predictions = []
    for sample in val_set.samples[:HELD_OUT_SHOWN]:
        prediction = classifier.predict(sample.path)
        truth = [val_set.label_map.name(i) for i in sample.labels]
        said = ", ".join(f"{label.name} ({label.score:.2f})" for label in prediction.labels)
        kinds = val_set.label_map.class_kinds
        kind = f" ({', '.join(sorted({kinds[i] for i in sample.labels}))} classes)" if kinds else ""
        heard = f"; sound {prediction.sound}" if prediction.sound else ""
        print(f"  {sample.name}: predicted {said}; true {', '.join(truth)}{kind}; "
              f"{prediction.timings['total']:.1f} ms{heard}")
        predictions.append({"name": sample.name, "path": str(sample.path), "truth": truth, **prediction.to_dict()})
    lap("classify")
    seconds["total"] = round(time.perf_counter() - started, 2)
    print(f"done in {seconds['total']:.0f} s; run in {run} (try: shortvid predict {run} {data / 'videos'})")
    return {"mean_jaccard": float(report["mean_jaccard"]), "chance": float(chance),
            "num_videos": report["num_videos"], "top1_hit": report["top1_hit"], "top5_hit": report["top5_hit"],
            "mAP": report["mAP"], "run": str(run), "data": str(data), "timing_ms": timing, "seconds": seconds,
            "predictions": predictions}
