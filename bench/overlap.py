"""Overlapping decoding and the model within one video: is it worth building into `predict`?

Today a single request decodes all its frames, then runs the model on them. The lever measured
here: run the backbone on frame 1 while frame 2 decodes. A TSN student with mean pooling and a
linear classifier is linear after the backbone, so the mean of its per-frame logits is its logits
on the whole clip (checked on every video, max abs difference reported); the per-frame runs can
start as soon as each frame is decoded.

This is a prototype for measuring, not a shipped path: it takes each frame the moment shortvid's
reader has it scaled (by wrapping the reader's private `_Reader._to_rgb`), decodes in a thread and
runs ONNX Runtime per frame on the calling thread. Ways, round-robin on every video:

- `sequential`: `Classifier.predict`, the shipped path (decode all, then one model call, T=3);
- `overlap, ORT N threads`: decode in a thread, the model per frame (T=1) as frames arrive.

    python bench/overlap.py [--corpus real-shaped] [--videos 25] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from decode import add_corpus_argument, corpus, machine  # bench/decode.py
from predict import MODELS, make_run  # bench/predict.py

from shortvid.decode import reader as reader_module
from shortvid.export import INPUT_NAME
from shortvid.models.scores import probabilities
from shortvid.serve.classifier import Classifier

_frames: "queue.Queue | None" = None  # where the decode thread's frames go while a video is timed
_original_to_rgb = reader_module._Reader._to_rgb


def _to_rgb_and_hand_over(self, frame):
    image = _original_to_rgb(self, frame)
    if _frames is not None and threading.current_thread().name == "overlap-decode":
        _frames.put(image)
    return image


class Overlapped:
    """Decode in a thread; run the model per frame as each arrives; average the logits."""

    def __init__(self, classifier: Classifier, threads: int):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads  # threads spin, as in the sequential way's session
        self.session = ort.InferenceSession(str(classifier.backend.path), sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self.classifier = classifier

    def predict(self, path: Path) -> tuple[np.ndarray, dict[str, float]]:
        global _frames
        started = time.perf_counter()
        frames: queue.Queue = queue.Queue()
        _frames = frames
        done: dict = {}

        def decode() -> None:
            try:
                done["clip"] = self.classifier.read(path)
            finally:
                frames.put(None)

        worker = threading.Thread(target=decode, name="overlap-decode")
        worker.start()
        images, logits = [], []
        while (image := frames.get()) is not None:
            x = self.classifier.transform.centre_crop(image[None])[None]
            logits.append(self.session.run(None, {INPUT_NAME: x})[0][0])
            images.append(image)
        worker.join()
        _frames = None
        clip = done["clip"]
        # Each of the clip's frames (keyframes may repeat) is one of the images modelled.
        rows = [next(i for i, image in enumerate(images) if np.array_equal(image, frame)) for frame in clip.frames]
        mean = np.mean([logits[row] for row in rows], axis=0)
        scores = probabilities(torch.from_numpy(mean[None]), self.classifier.preprocess.scores)[0].numpy()
        self.classifier.decide(scores)
        return mean, {"total": (time.perf_counter() - started) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_corpus_argument(parser, "real-shaped")
    parser.add_argument("--videos", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    reader_module._Reader._to_rgb = _to_rgb_and_hand_over
    paths = corpus(args.corpus, args.videos)
    with tempfile.TemporaryDirectory() as scratch:
        run = make_run(Path(scratch) / "student", *MODELS["student tsn_mobilenetv3 @160"])
        classifier = Classifier.load(run, backend="onnx", spin=True)  # as `shortvid predict` loads it
        ways = {"sequential (Classifier.predict)": lambda path: classifier.predict(path).timings}
        for threads in (1, 2):
            overlapped = Overlapped(classifier, threads)
            ways[f"overlap, ORT {threads} thread{'s' if threads > 1 else ''}"] = (
                lambda path, o=overlapped: o.predict(path)[1])
        # Same logits: the per-frame mean against one call on the whole clip.
        difference = 0.0
        for path in paths:
            clip = classifier.read(path)
            whole = classifier.backend(classifier.transform(torch.from_numpy(clip.frames), "test")[None])[0].numpy()
            difference = max(difference, float(np.abs(overlapped.predict(path)[0] - whole).max()))
        times: dict[str, list[float]] = {name: [] for name in ways}
        for path in paths[:3]:
            for way in ways.values():
                way(path)
        order = list(ways)
        for _ in range(args.repeats):
            for path in paths:
                random.shuffle(order)
                for name in order:
                    times[name].append(ways[name](path)["total"])
    base = statistics.median(times["sequential (Classifier.predict)"])
    report = {"machine": machine(), "corpus": args.corpus, "videos": len(paths), "repeats": args.repeats,
              "max_abs_logit_difference": difference,
              "ways": {name: {"median_ms": statistics.median(values), "p95_ms": float(np.percentile(values, 95)),
                              "x_sequential": statistics.median(values) / base} for name, values in times.items()}}
    print(f"max abs logit difference, per-frame mean vs whole clip: {difference:.2e}")
    print("| way | median ms/video | p95 | × sequential |")
    print("| --- | --- | --- | --- |")
    for name, row in report["ways"].items():
        print(f"| {name} | {row['median_ms']:.2f} | {row['p95_ms']:.2f} | {row['x_sequential']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
