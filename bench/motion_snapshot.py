"""The ceiling of motion from keyframes on the `av` corpus: how well a perfect snapshot separates its classes.

shortvid's motion input is a few frames right after each keyframe: a snapshot of where the object is and
how it moves at that instant. This takes the generator's own rules (`synth.motion`), draws trajectories
as the corpus does, and gives a k-nearest-neighbour classifier the exact snapshot of each keyframe: the
object's position at the keyframe and its displacement over the next `--frames` frames. Its accuracy is
close to the best any model can do from such snapshots (no pixels, no noise, no compression), per class.

Two views: the whole frame, and the centre square that a short-side resize and a centre crop keep of a
portrait video (`--crop`, the fraction of the short side kept: 72 of 80 px in the ablation); an object
outside it at the keyframe is seen as absent. With `--shots N` a video gives N independent snapshots of
its class (a video with N keyframes, each a shot of the same class).

    python bench/motion_snapshot.py [--frames 2] [--shots 1] [--crop 0.9]
"""

from __future__ import annotations

import argparse

import numpy as np

from shortvid.synth.motion import MOTIONS, plan_trajectory, position

WIDTH, HEIGHT, FPS = 180, 320, 30.0  # the av preset's frames
EXTENT = 0.12  # the sprite's reach in short sides (its margin on a wrapped track)
ABSENT = 10.0  # the feature value of an object the view does not show


def snapshots(rng: np.random.Generator, name: str, count: int, frames: int, crop: float | None) -> np.ndarray:
    """``[count, 4]``: position (fractions of the frame) at the keyframe and displacement (pixels) over
    ``frames`` frames, or ``ABSENT`` where the view (``crop``: a centre square) does not show the object."""
    out = np.empty((count, 4))
    for i in range(count):
        trajectory = plan_trajectory(rng, name, EXTENT)
        start = np.array(position(trajectory, 0.0, WIDTH, HEIGHT))
        moved = np.array(position(trajectory, frames / FPS, WIDTH, HEIGHT)) - start
        out[i] = [start[0] / WIDTH, start[1] / HEIGHT, moved[0] / 2, moved[1] / 2]
        if crop is not None:
            side = crop * min(WIDTH, HEIGHT)
            inside = abs(start[0] - WIDTH / 2) < side / 2 and abs(start[1] - HEIGHT / 2) < side / 2
            if not inside:
                out[i] = ABSENT
    return out


def knn_scores(train: np.ndarray, labels: np.ndarray, test: np.ndarray, classes: int, k: int = 25) -> np.ndarray:
    """``[N, classes]`` vote shares of the ``k`` nearest training snapshots; an absent object's votes are the
    classes' shares among the absent training snapshots (the best guess there is)."""
    votes = np.zeros((len(test), classes))
    train_absent, absent = train[:, 0] == ABSENT, test[:, 0] == ABSENT
    votes[absent] = np.bincount(labels[train_absent], minlength=classes) / max(1, train_absent.sum())
    seen = np.flatnonzero(~absent)
    for chunk in np.array_split(seen, max(1, len(seen) // 200)):
        distances = ((test[chunk, None] - train[None]) ** 2).sum(-1)
        nearest = labels[np.argsort(distances, 1)[:, :k]]
        for row, neighbours in zip(chunk, nearest, strict=True):
            votes[row] = np.bincount(neighbours, minlength=classes) / k
    return votes


def ceiling(frames: int, shots: int, crop: float | None, train_per_class: int, test_per_class: int,
            seed: int) -> dict[str, float]:
    """Per class, the share of test videos whose summed snapshot votes pick their class."""
    rng = np.random.default_rng(seed)
    names = list(MOTIONS)
    train = np.concatenate([snapshots(rng, name, train_per_class, frames, crop) for name in names])
    labels = np.repeat(np.arange(len(names)), train_per_class)
    result = {}
    for index, name in enumerate(names):
        votes = sum(knn_scores(train, labels, snapshots(rng, name, test_per_class, frames, crop), len(names))
                    for _ in range(shots))
        result[name] = float(np.mean(votes.argmax(1) == index))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2, help="motion frames after the keyframe (default: 2)")
    parser.add_argument("--shots", type=int, default=1, help="independent snapshots a video (default: 1)")
    parser.add_argument("--crop", type=float, default=0.9,
                        help="the centre view's side as a share of the short side (default: 0.9, 72 of 80 px)")
    parser.add_argument("--train", type=int, default=3000, help="training snapshots a class (default: 3000)")
    parser.add_argument("--test", type=int, default=300, help="test videos a class (default: 300)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    views = {"whole frame": None, f"centre crop ({args.crop:g} of the short side)": args.crop}
    results = {view: ceiling(args.frames, args.shots, crop, args.train, args.test, args.seed)
               for view, crop in views.items()}
    print(f"snapshot ceiling, {args.frames} frame(s) after the keyframe, {args.shots} snapshot(s) a video")
    print("| class | " + " | ".join(views) + " |")
    print("| --- |" + " --- |" * len(views))
    for name in MOTIONS:
        print(f"| {name} | " + " | ".join(f"{results[view][name]:.3f}" for view in views) + " |")
    print("| mean | " + " | ".join(f"{np.mean(list(results[view].values())):.3f}" for view in views) + " |")


if __name__ == "__main__":
    main()
