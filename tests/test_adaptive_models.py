"""Separately trained 1/2/3-frame models switched by keyframe count (`shortvid adaptive`)."""

import pytest
import torch

from shortvid.cli import main
from shortvid.evaluate.runner import evaluate_run
from shortvid.infer.classifier import Classifier
from shortvid.models import FrameCountSwitch, create_model
from shortvid.run import RunDir, RunError
from shortvid.train.trainer import train

from conftest import tiny_config


class Constant(torch.nn.Module):
    """Logits that say which member ran and how many frames it got."""

    def __init__(self, marker: float):
        super().__init__()
        self.marker = marker
        self.num_classes = 2

    def forward(self, frames, mask=None):
        seen = frames.shape[1] if mask is None else mask.sum(1).float()
        return torch.stack([torch.full((len(frames),), self.marker),
                            torch.as_tensor(seen, dtype=torch.float).expand(len(frames))], 1)


def test_each_video_goes_to_the_member_for_its_frame_count():
    switch = FrameCountSwitch({1: Constant(1.0), 3: Constant(3.0), 2: Constant(2.0)})
    assert [switch.member_for(n) for n in (0, 1, 2, 3, 7)] == [1, 1, 2, 3, 3]
    frames = torch.zeros(4, 3, 3, 8, 8)
    mask = torch.tensor([[1, 0, 0], [1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    logits = switch(frames, mask)
    assert logits[:, 0].tolist() == [1.0, 3.0, 2.0, 1.0]
    assert logits[:, 1].tolist() == [1.0, 3.0, 2.0, 1.0]  # members see only the video's own valid frames
    assert switch(torch.zeros(1, 2, 3, 8, 8))[0, 0] == 2.0  # no mask: every frame is valid


def test_members_must_share_classes():
    with pytest.raises(ValueError, match="share their classes"):
        FrameCountSwitch({1: create_model("tsn_tiny", num_classes=3), 2: create_model("tsn_tiny", num_classes=4)})


def test_adaptive_run_from_the_cli(tiny_corpus, tiny_cache, tmp_path):
    runs = []
    for count in (1, 3):
        runs.append(tmp_path / f"f{count}")
        train(tiny_config(tiny_corpus, tiny_cache, runs[-1], "optim.epochs=1", f"data.k={count}"))
    out = tmp_path / "adaptive"
    assert main(["adaptive", *map(str, runs), "--out", str(out)]) == 0
    classifier = Classifier.load(out, device="cpu", backend="torch")
    assert classifier.preprocess.frames.fill == "none" and classifier.preprocess.frames.k == 3
    assert isinstance(classifier.model, FrameCountSwitch) and classifier.model.counts == [1, 3]
    one = RunDir(runs[0]).load_model()
    three = RunDir(runs[1]).load_model()
    video = next(s for s in (tiny_corpus / "videos").glob("*.mp4"))
    clip = classifier.read(video)
    frames = classifier.transform(torch.from_numpy(clip.frames), "test").unsqueeze(0)
    expected = (three if len(clip.frames) >= 3 else one)(frames)
    with torch.no_grad():
        assert torch.allclose(classifier.model(frames), expected)
    report = evaluate_run(out, tiny_corpus, device="cpu", progress=False, out=tmp_path / "m.json")
    decoded = report["num_videos"] - report["failed"]
    assert report["num_videos"] > 0 and sum(report["frames_per_video"].values()) == decoded
    with pytest.raises(RunError, match="same number of frames"):
        from shortvid.train.fuse import adaptive_runs
        adaptive_runs([runs[0], runs[0]], tmp_path / "x")
