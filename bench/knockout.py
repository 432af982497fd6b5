"""What a model that sees motion or hears sound does when a video lacks them: a still video, a mute one.

Uploads without movement (a slideshow, a still image with music) or without sound are common. A model
with motion and sound should then fall back on its keyframes, not lose the classes its keyframes know.
This reads each video of a labelled split once through the serving path (RUN's classifier, real decoding
of the keyframes, motion frames and sound), then scores four versions of it:

- as is;
- still: every motion frame replaced by its keyframe (what a still video decodes to);
- mute: the sound marked absent (status "none", what a video without an audio track gives);
- still and mute.

It prints mean Jaccard (the run's decision policy) by class kind for each, as JSON and a Markdown table.

    python bench/knockout.py RUN DATASET [--split val] [--limit N] [--json out.json]
"""

from __future__ import annotations

import dataclasses

import numpy as np

from shortvid.data.annotations import load_dataset
from shortvid.errors import DecodeError
from shortvid.infer.classifier import Classifier
from shortvid.metrics import by_slice, jaccard, predicted_matrix, video_kind

from common import machine, make_parser, write_json

BATCH = 32


def still(clip):
    """The clip as a still video gives it: each motion frame a copy of its keyframe."""
    if clip.motion is None:
        return clip
    return dataclasses.replace(clip, motion=np.repeat(clip.frames[:, None], clip.motion.shape[1], axis=1))


def mute(clip):
    """The clip as a video without an audio track gives it."""
    if clip.sound is None:
        return clip
    sound = dataclasses.replace(clip.sound, samples=np.zeros_like(clip.sound.samples),
                                mask=np.zeros_like(clip.sound.mask), status="none", reason="knocked out")
    return dataclasses.replace(clip, sound=sound)


VERSIONS = {"as is": lambda clip: clip, "still": still, "mute": mute, "still and mute": lambda clip: mute(still(clip))}


def main() -> None:
    parser = make_parser(__doc__, data=False)
    parser.add_argument("run", help="a trained run directory (a model with motion and/or sound)")
    parser.add_argument("dataset", help="a labelled dataset (any layout `shortvid evaluate` reads)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--limit", type=int, default=None, help="the first N videos only")
    args = parser.parse_args()

    classifier = Classifier.load(args.run, device="cpu", backend="torch")
    annotations = load_dataset(args.dataset, args.split)
    samples = list(annotations)[:args.limit]
    clips, kept = [], []
    for sample in samples:
        try:
            clips.append(classifier.read(sample.path))
            kept.append(sample)
        except DecodeError as error:
            print(f"skipped {sample.path}: {type(error).__name__}: {error}")
    kinds = [video_kind(sample.labels, annotations.label_map.class_kinds) for sample in kept]
    truth = predicted_matrix([sample.labels for sample in kept], len(annotations.label_map))  # multi-hot
    report = {"machine": machine(), "run": args.run, "videos": len(kept), "inputs": list(classifier.inputs),
              "versions": {}}
    for name, version in VERSIONS.items():
        chosen = []
        for start in range(0, len(clips), BATCH):
            scores, _ = classifier.scores_many([version(clip) for clip in clips[start:start + BATCH]])
            chosen += [[label.id for label in classifier.decide(row)[0]] for row in scores]
        per_video = jaccard(chosen, truth)
        report["versions"][name] = {"mean_jaccard": float(per_video.mean()), "by_kind": by_slice(kinds, per_video)}
    write_json(args.json, report)
    kind_names = sorted(set(kinds))
    print(f"{report['machine']}\n{args.run}: {len(kept)} videos of {args.split}, inputs {report['inputs']}\n")
    print("| video | mean Jaccard | " + " | ".join(f"{kind} ({kinds.count(kind)})" for kind in kind_names) + " |")
    print("| --- | --- |" + " --- |" * len(kind_names))
    for name, result in report["versions"].items():
        print(f"| {name} | {result['mean_jaccard']:.3f} | "
              + " | ".join(f"{result['by_kind'][kind]['mean_jaccard']:.3f}" for kind in kind_names) + " |")


if __name__ == "__main__":
    main()
