"""Every path of issue 21 with a run that sees motion and hears (docs/motion-and-sound.md, "The contract between
the layers"): training and resuming, prediction on every backend, evaluation and analysis, distillation, hard-set
fine-tuning, specialists and fusion, the adaptive model, the HTTP service, the judge adapter, Ray, and damaged files
read with motion frames and sound. All on the `av-tiny` corpus, with a video that has no audio track (conftest:
``av_corpus``, ``av_cache``, ``av_run``)."""

import dataclasses
import json
import math
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from test_fuzz import TYPED_ERRORS

from shortvid.cli import main
from shortvid.data.annotations import load_dataset
from shortvid.data.cache import FrameCache, extract
from shortvid.decode import AudioSpec, DecodeError, FrameSpec, read_frames
from shortvid.evaluate.analyze import analyze_run
from shortvid.evaluate.runner import evaluate_run
from shortvid.infer.classifier import Classifier
from shortvid.infer.store import PredictionStore
from shortvid.judge import ServerApi, judge
from shortvid.models import INPUT_NAMES, FusedClassifier, create_model
from shortvid.models.adaptive import FrameCountSwitch
from shortvid.run import Preprocess, RunDir, RunError
from shortvid.synth.damage import damaged_copies
from shortvid.train.config import ConfigError, load_config
from shortvid.train.fuse import adaptive_runs, fuse_runs
from shortvid.train.hardset import finetune, mine_hard_set
from shortvid.train.trainer import train

from conftest import AV_MUTE, AV_OVERRIDES, tiny_config
from serving import running

ATOL = 1e-4  # PyTorch against ONNX Runtime (fp32)
SOUND_STATUSES = {"ok", "none", "silent", "broken"}


@pytest.fixture(scope="module")
def videos(av_corpus) -> dict:
    """``source``: the first validation video; ``mute``: the same video stream without audio; ``sound``: the first
    validation video of a sound class (the others all carry the same tone); ``val``: the validation videos
    (1-3 keyframes each)."""
    val = load_dataset(av_corpus, "val")
    kinds = val.label_map.class_kinds
    sound = next(s.path for s in val.samples if "sound" in {kinds[label] for label in s.labels})
    return {"source": val.samples[0].path, "mute": av_corpus / "videos" / AV_MUTE, "sound": sound,
            "val": [s.path for s in val.samples]}


def ids(prediction) -> list[int]:
    return [label.id for label in prediction.labels]


# 1. Training

def test_the_run_records_motion_and_sound_and_its_model_takes_them(av_run):
    preprocess = json.loads((av_run / "preprocess.json").read_text())
    assert preprocess["frames"]["motion"] == 2 and preprocess["mels"] == 64
    assert AudioSpec.from_dict(preprocess["audio"]) == AudioSpec(seconds=2.0)  # the cache's
    model = RunDir(av_run).load_model()
    assert model.inputs == INPUT_NAMES == ("motion", "audio", "audio_mask")
    assert model.motion_frames == 2 and model.mels == 64
    config = load_config(av_run / "config.yaml")
    assert (config.model.motion, config.model.audio) == (2, True)


def test_a_run_with_its_own_mel_bands_trains_and_resumes(av_corpus, av_cache, videos, tmp_path):
    """32 mel bands (``model.args.audio_args.mels``): the datasets give the model's bands, the run records them,
    and a resumed run continues after the epoch it had, keeping it."""
    out = tmp_path / "mels"
    config = tiny_config(av_corpus, av_cache, out, "optim.epochs=1", *AV_OVERRIDES,
                         "model.args={audio_args: {mels: 32}}")
    train(config)
    first = RunDir(out).read_metrics()
    assert [record["epoch"] for record in first] == [0]
    train(load_config(out / "config.yaml", ["optim.epochs=2"]), resume=True)
    metrics = RunDir(out).read_metrics()
    assert [record["epoch"] for record in metrics] == [0, 1] and metrics[0] == first[0]
    assert torch.load(out / "checkpoints" / "last.pt", weights_only=False)["state"]["epoch"] == 2  # the next one
    assert RunDir(out).preprocess().mels == 32
    classifier = Classifier.load(out, device="cpu", backend="torch")
    assert classifier.model.mels == 32 and classifier.inputs == INPUT_NAMES
    _, _, extra = classifier.prepare([classifier.read(videos["source"])])
    assert extra["audio"].shape[:2] == (1, 32)
    assert classifier.predict(videos["mute"]).labels


# 2. Prediction

@pytest.mark.parametrize("backend, precision", [("torch", "fp32"), ("onnx", "fp32"), ("onnx", "int8-dynamic"),
                                                ("onnx", "int8")])
def test_predict_on_each_backend_with_and_without_sound(av_run, videos, backend, precision):
    """Labels for a video and for its copy without audio (sound "none"); a batch of both and of videos of 1-3
    keyframes gives each the scores it gets alone."""
    classifier = Classifier.load(av_run, device="cpu", backend=backend, precision=precision)
    assert classifier.backend.name == backend and classifier.inputs == INPUT_NAMES
    heard, mute = classifier.predict(videos["source"]), classifier.predict(videos["mute"])
    assert heard.to_dict()["sound"] == "ok" and mute.to_dict()["sound"] == "none"
    assert heard.labels and mute.labels and all(0 <= i < len(classifier.labels) for i in ids(heard) + ids(mute))
    assert mute.frames == heard.frames and mute.keyframes == heard.keyframes  # the same video stream
    clips = [classifier.read(path) for path in [videos["mute"], *videos["val"][:5]]]
    assert [clip.sound.status for clip in clips[:2]] == ["none", "ok"] and clips[0].motion.shape[:2] == (3, 2)
    together, _ = classifier.scores_many(clips)
    alone = np.stack([classifier.scores(clip)[0] for clip in clips])
    # dynamic int8 quantises activations by each call's own range: a batch moves the scores a little
    assert np.abs(together - alone).max() < (1e-2 if precision == "int8-dynamic" else 1e-5)
    assert np.isfinite(together).all()


def test_torch_and_onnx_agree_on_padded_batches(av_run, videos):
    """Adaptive reading (no filled frames): a padded batch of videos of 1-3 keyframes, with motion frames and
    a video without sound, scored alike by both backends and alike alone or together."""
    on_torch = Classifier.load(av_run, device="cpu", backend="torch", adaptive=True)
    on_onnx = Classifier.load(av_run, device="cpu", backend="onnx", adaptive=True)
    clips = [on_torch.read(path) for path in [videos["mute"], *videos["val"][:8]]]
    assert len({len(clip.frames) for clip in clips}) == 3  # 1, 2 and 3 frames: padded and masked
    torch_scores, _ = on_torch.scores_many(clips)
    onnx_scores, _ = on_onnx.scores_many(clips)
    assert np.abs(torch_scores - onnx_scores).max() < ATOL
    alone = np.stack([on_torch.scores(clip)[0] for clip in clips])
    assert np.abs(alone - torch_scores).max() < 1e-5


def test_the_model_hears_the_sound_and_sees_the_motion(av_run, videos):
    """The logits move when the sound or the motion frames are replaced; the video without audio gets the logits
    of its original with the "no sound" input."""
    classifier = Classifier.load(av_run, device="cpu", backend="torch")
    clip, mute, other = (classifier.read(path) for path in (videos["source"], videos["mute"], videos["sound"]))

    @torch.no_grad()
    def logits(clip) -> np.ndarray:
        frames, mask, extra = classifier.prepare([clip])
        return classifier.backend(frames, mask, **extra)[0].numpy()

    def moved(**changes) -> float:
        return float(np.abs(logits(dataclasses.replace(clip, **changes)) - logits(clip)).max())

    assert moved(sound=other.sound) > 1e-3
    assert moved(sound=mute.sound) > 1e-3
    still = np.repeat(clip.frames[:, None], clip.motion.shape[1], axis=1)  # motion frames equal to their keyframe
    assert moved(motion=still) > 1e-3
    assert moved() == 0.0
    np.testing.assert_allclose(logits(mute), logits(dataclasses.replace(clip, sound=mute.sound)), atol=1e-5)


# 3. Evaluation and analysis

def test_evaluate_and_analyze_by_kind_and_by_sound(av_run, av_corpus, tmp_path):
    report = evaluate_run(av_run, av_corpus, "muted", device="cpu", out=tmp_path / "metrics.json", progress=False)
    videos = report["num_videos"]
    assert report["failed"] == 0 and videos == len(load_dataset(av_corpus, "val")) + 1
    assert {"appearance", "motion", "sound"} <= set(report["by_kind"]) <= {"appearance", "motion", "sound", "mixed"}
    assert sum(row["videos"] for row in report["by_kind"].values()) == videos
    assert set(report["by_sound"]) == {"ok", "none"} and report["by_sound"]["none"]["videos"] == 1
    assert report["by_sound"]["ok"]["videos"] == videos - 1
    audio = report["timing_ms"]["decode_audio"]
    assert audio["count"] == videos and audio["median"] > 0  # the sound's share of each decode

    analysis = analyze_run(av_run, av_corpus, "muted", tmp_path / "analysis", device="cpu", progress=False)
    assert analysis["summary"]["classified"] == videos
    by_modality = analysis["by_modality"]
    assert set(by_modality) == {"kind", "sound"}
    assert by_modality["sound"] == report["by_sound"]
    for kind, row in by_modality["kind"].items():
        assert row["videos"] == report["by_kind"][kind]["videos"]
        assert row["mean_jaccard"] == pytest.approx(report["by_kind"][kind]["mean_jaccard"], abs=1e-6)
    summary = (tmp_path / "analysis" / "summary.md").read_text()
    assert "## By class kind" in summary and "## By sound" in summary and "| none | 1 |" in summary


def test_stream_heads_are_trained_beside_the_fused_classifier(av_corpus, av_cache, tmp_path):
    """``model.args.stream_heads``: the trainer adds each modality head's loss (``optim.stream_loss``); with a
    weight of 0 the heads get no gradient and stay as initialised, so the two runs' heads differ."""
    heads = {}
    for weight in (1.0, 0.0):
        out = tmp_path / f"streams{weight:g}"
        train(tiny_config(av_corpus, av_cache, out, "optim.epochs=1", *AV_OVERRIDES, "model.args.stream_heads=true",
                          f"optim.stream_loss={weight}", "optim.weight_decay=0"))
        model = RunDir(out).load_model("last")
        assert model.inputs == INPUT_NAMES and set(model.stream_heads) == {"visual", "motion", "audio"}
        heads[weight] = {key: value for key, value in model.state_dict().items() if key.startswith("stream_heads")}
    assert all((heads[1.0][key] - heads[0.0][key]).abs().max() > 1e-3 for key in heads[1.0])


def test_a_run_that_sees_and_hears_has_stream_heads_unless_told(av_run, av_corpus, av_cache, tmp_path):
    assert set(RunDir(av_run).load_model().stream_heads) == {"visual", "motion", "audio"}  # the default
    out = tmp_path / "plain"
    train(tiny_config(av_corpus, av_cache, out, "optim.epochs=1", "model.audio=true", "model.args.stream_heads=false"))
    assert RunDir(out).load_model().stream_heads is None


# 4. Distillation

def test_distillation_from_a_teacher_that_sees_and_hears(av_run, av_corpus, av_cache, tmp_path):
    teacher = RunDir(av_run).load_model().state_dict()
    record = train(tiny_config(av_corpus, av_cache, tmp_path / "student", "optim.epochs=1", *AV_OVERRIDES,
                               f"distill.teacher={av_run}", "distill.kind=logits", "distill.cache=false"))
    assert math.isfinite(record["distill_loss"]) and record["distill_loss"] > 0
    assert RunDir(tmp_path / "student").load_model().inputs == INPUT_NAMES
    after = RunDir(av_run).load_model().state_dict()
    assert all(torch.equal(teacher[key], after[key]) for key in after)  # the teacher only teaches

    with pytest.raises(ConfigError, match="takes motion, audio, audio_mask as well as frames.*distill.cache=false"):
        train(tiny_config(av_corpus, av_cache, tmp_path / "cached", "optim.epochs=1", *AV_OVERRIDES,
                          f"distill.teacher={av_run}", "distill.kind=logits", "distill.cache=true"))
    # a student whose batches lack the teacher's inputs is refused before training, not at its first batch
    for student, needs in (((), r"model.motion=2 \(the student reads 0\) and model.audio=true"),
                           (("model.motion=1", "model.audio=true"), r"model.motion=2 \(the student reads 1\)"),
                           ((*AV_OVERRIDES, "model.args={audio_args: {mels: 32}}"), "64 mel bands")):
        out = tmp_path / "refused"
        with pytest.raises(ConfigError, match=needs):
            train(tiny_config(av_corpus, av_cache, out, "optim.epochs=1", *student, f"distill.teacher={av_run}",
                              "distill.kind=logits"))
        assert not (out / "checkpoints" / "last.pt").exists()


# 5. Hard-set fine-tuning

def test_hard_set_mining_and_finetuning(av_run, av_corpus, videos, tmp_path):
    data = tmp_path / "data"  # mining writes a split beside the corpus's
    shutil.copytree(av_corpus, data)
    mined = mine_hard_set(av_run, data, device="cpu", progress=False)
    hard = load_dataset(data, "hard")
    assert mined["failed"] == 0 and mined["hard"] == len(hard) > 0
    assert {s.name for s in hard} <= {s.name for s in load_dataset(data, "train")}
    report = finetune(av_run, tmp_path / "ft", epochs=1, patience=1, overrides=(f"data.dataset={data}",))
    for step in ("frozen", "full"):
        run = RunDir(tmp_path / "ft" / step)
        assert run.preprocess() == RunDir(av_run).preprocess() and run.load_model().inputs == INPUT_NAMES
    start, full = RunDir(av_run).load_model().state_dict(), RunDir(report["run"]).load_model().state_dict()
    for encoder in ("motion_encoder.", "audio_encoder."):  # the senses are fine-tuned too
        assert any(not torch.equal(start[k], full[k]) for k in start if k.startswith(encoder) and "running" not in k)
    assert Classifier.load(report["run"], device="cpu", backend="torch").predict(videos["mute"]).sound == "none"


# 6. Specialists and fusion

def test_a_specialist_that_sees_and_hears_fuses_with_the_general_run(av_run, av_corpus, av_cache, videos, tmp_path):
    specialist = tmp_path / "sound"
    assert main(["train", "--config", "tiny", "--group", "sound", f"data.dataset={av_corpus}", f"data.cache={av_cache}",
                 f"out={specialist}", "progress=false", "data.batch_size=6", "data.resize=72", "data.input_size=64",
                 "optim.epochs=1", *AV_OVERRIDES]) == 0
    labels = RunDir(av_run).label_map()
    assert RunDir(specialist).label_map().names == tuple(labels.name(i) for i in labels.groups["sound"])
    assert RunDir(specialist).load_model().inputs == INPUT_NAMES

    out = tmp_path / "fused"
    report = fuse_runs(av_run, [specialist], out, device="cpu", progress=False, backend="torch")
    assert report["failed"] == 0 and report["videos"] == len(load_dataset(av_corpus, "val"))
    model = RunDir(out).load_model()
    assert isinstance(model, FusedClassifier) and model.inputs == INPUT_NAMES  # the union of its members'
    assert RunDir(out).preprocess().audio == RunDir(av_run).preprocess().audio
    on_torch = Classifier.load(out, device="cpu", backend="torch")
    on_onnx = Classifier.load(out, device="cpu", backend="onnx")
    assert on_onnx.inputs == INPUT_NAMES
    for path, sound in ((videos["source"], "ok"), (videos["mute"], "none")):
        a, b = on_torch.predict(path), on_onnx.predict(path)
        assert a.sound == b.sound == sound and a.labels and ids(a) == ids(b)
        assert max(abs(x.score - y.score) for x, y in zip(a.top, b.top, strict=True)) < ATOL

    # a specialist that reads videos otherwise (keyframes only: no motion frames, no sound) is refused
    keyframes_only = tmp_path / "keyframes-only"
    RunDir(keyframes_only).write_inference(create_model("tsn_tiny", num_classes=3), RunDir(specialist).label_map(),
                                           Preprocess(FrameSpec(k=3, size=72), 64, "sigmoid"))
    with pytest.raises(RunError, match="with sound None, but the general run as .* with sound AudioSpec"):
        fuse_runs(av_run, [keyframes_only], tmp_path / "refused", device="cpu", progress=False)


# 7. The adaptive model

def test_adaptive_run_of_members_that_see_and_hear(av_run, av_corpus, av_cache, videos, tmp_path):
    one = tmp_path / "k1"
    train(tiny_config(av_corpus, av_cache, one, "optim.epochs=1", "data.k=1", *AV_OVERRIDES))
    out = tmp_path / "adaptive"
    adaptive_runs([av_run, one], out)
    classifier = Classifier.load(out, device="cpu")  # auto: torch (one ONNX graph cannot switch members)
    assert classifier.backend.name == "torch" and isinstance(classifier.model, FrameCountSwitch)
    assert classifier.model.counts == [1, 3] and classifier.inputs == INPUT_NAMES
    members = {1: Classifier.load(one, device="cpu", backend="torch"),
               3: Classifier.load(av_run, device="cpu", backend="torch", adaptive=True)}
    clips = [classifier.read(path) for path in [videos["mute"], *videos["val"][:8]]]
    counts = [len(clip.frames) for clip in clips]
    assert {1, 3} <= set(counts)
    together, _ = classifier.scores_many(clips)
    for clip, count, scores in zip(clips, counts, together, strict=True):
        if count in members:  # the member for its keyframe count, with its motion frames and sound
            np.testing.assert_allclose(scores, members[count].scores(clip)[0], atol=1e-5)
    assert classifier.predict(videos["mute"]).sound == "none"

    # members that read motion frames or sound otherwise are refused
    pre = RunDir(one).preprocess()
    for name, frames, audio in (("keyframes-only", FrameSpec(k=1, size=72), None),
                                ("deaf", pre.frames, None)):
        run = tmp_path / name
        RunDir(run).write_inference(create_model("tsn_tiny", num_classes=len(classifier.labels)), classifier.labels,
                                    dataclasses.replace(pre, frames=frames, audio=audio))
        with pytest.raises(RunError, match="does not read, normalise or label videos as"):
            adaptive_runs([av_run, run], tmp_path / f"refused-{name}")


# 8. The HTTP service

def test_the_service_answers_with_the_sound(av_run, videos):
    """Uploads with and without sound, batched together (multipart and raw bodies), answer as ``predict`` does,
    with the sound's status."""
    classifier = Classifier.load(av_run, device="cpu")
    paths = [videos["source"], videos["mute"], *videos["val"][1:5]]
    expected = {path: classifier.predict(path) for path in paths}

    with running(classifier, max_batch=len(paths), max_wait_ms=2000, decode_workers=2) as client:
        def post(path):
            if path == videos["mute"]:
                return client.post("/v1/classify", files={"file": (AV_MUTE, path.read_bytes(), "video/mp4")})
            return client.post("/v1/classify", content=path.read_bytes(),
                               headers={"content-type": "application/octet-stream"})

        with ThreadPoolExecutor(len(paths)) as pool:  # one batch of all: max_batch
            answers = list(pool.map(post, paths))
    for path, response in zip(paths, answers, strict=True):
        assert response.status_code == 200, response.text
        answer, want = response.json(), expected[path]
        assert answer["sound"] == want.sound and [label["id"] for label in answer["labels"]] == ids(want)
        for got, label in zip(answer["top5"], want.top, strict=True):
            assert got["id"] == label.id and abs(got["score"] - label.score) <= 1e-4
    assert [answer.json()["sound"] for answer in answers[:2]] == ["ok", "none"]
    assert max(response.json()["batch_size"] for response in answers) > 1


# 9. The judge adapter

def test_the_judge_adapter(av_run, av_corpus, videos, tmp_path):
    listed = tmp_path / "videos.txt"
    listed.write_text(f"{videos['source']}\n{videos['mute']}\n")
    result = judge(av_run, listed, av_corpus / "muted.txt", passes=3, backend="onnx")
    assert (result["videos"], result["scored"], result["errors"], result["backend"]) == (2, 2, 0, "onnx")
    assert 0.0 <= result["accuracy"] <= 1.0
    api = ServerApi(0, run_dir=str(av_run), backend="torch")
    reference = Classifier.load(av_run, device="cpu", backend="torch")
    for path in (videos["source"], videos["mute"]):
        assert api.handle(str(path)) == ids(reference.predict(path)) != []
    assert api.handle(str(tmp_path / "missing.mp4")) == [] and api.errors


# 10. Ray

@pytest.mark.slow
def test_ray_predict_and_extract_with_motion_and_sound(av_run, videos, tmp_path):
    """One local Ray for both jobs: predictions equal the local engine's and their rows carry the sound; the
    cache Ray fills holds the local engine's motion frames and sound."""
    ray = pytest.importorskip("ray")
    from shortvid.distributed import RayOptions, extract_ray, predict_local, predict_ray

    options = RayOptions(actors=1, block_size=4, max_retries=4)
    items = [str(path) for path in [videos["source"], videos["mute"], *videos["val"][1:3]]]
    (tmp_path / "text.mp4").write_text("not a video\n")
    items.append(str(tmp_path / "text.mp4"))
    named = [(f"v{i}", path) for i, path in enumerate(items)]
    spec, audio = FrameSpec(k=3, size=48, motion=2), AudioSpec(seconds=1.0)
    ray.init(num_cpus=2, object_store_memory=100 * 2**20, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    try:
        remote = predict_ray(str(av_run), items, tmp_path / "ray", options=options, device="cpu", fmt="jsonl")
        cached = extract_ray(named, tmp_path / "ray-cache", spec, options=options, progress=False, audio=audio)
    finally:
        ray.shutdown()
    local = predict_local(str(av_run), items, tmp_path / "local", device="cpu")  # parquet
    for summary in (remote, local):
        assert (summary.done, summary.missing, dict(summary.failed)) == (5, 0, {"InvalidVideoError": 1})
    mine = {row["path"]: row for row in PredictionStore(tmp_path / "local").rows()}
    theirs = {row["path"]: row for row in PredictionStore(tmp_path / "ray", "jsonl").rows()}
    assert [theirs[path]["sound"] for path in items] == [mine[path]["sound"] for path in items] == [
        "ok", "none", "ok", "ok", None]
    for path in items:
        assert [label["id"] for label in theirs[path]["labels"]] == [label["id"] for label in mine[path]["labels"]]

    here = extract(named, tmp_path / "local-cache", spec, workers=1, progress=False, audio=audio)
    assert (cached.extracted, cached.failed) == (here.extracted, here.failed) == (4, 1)
    assert cached.sound == here.sound == {"ok": 3, "none": 1}
    a, b = FrameCache(tmp_path / "local-cache"), FrameCache(tmp_path / "ray-cache")
    for name, _ in named[:4]:
        x, y = a.read(name), b.read(name)
        assert np.array_equal(x.frames, y.frames) and np.array_equal(x.motion, y.motion)
        assert x.sound.status == y.sound.status and np.array_equal(x.sound.samples, y.sound.samples)


# 11. Damaged files, read with motion frames and sound

def test_damaged_files_give_frames_motion_and_a_sound_or_a_typed_error(videos, tmp_path):
    """``read_frames(..., audio=)`` on damaged copies of a video with sound: the sound never fails the video, and a
    file that fails fails with a typed ``DecodeError`` (tests/test_fuzz.py covers ``read_audio`` alone)."""
    paths = [videos["mute"]]
    for name, data in damaged_copies(videos["source"].read_bytes(), 32, seed=21):
        paths.append(tmp_path / f"{name}.mp4")
        paths[-1].write_bytes(data)
    outcomes, partial = {}, 0
    for path in paths:
        try:
            clip = read_frames(path, FrameSpec(k=3, size=64, motion=2), timeout=5,
                               audio=AudioSpec(seconds=1.0, placement="spread"))
        except DecodeError as error:
            assert type(error).__name__ in TYPED_ERRORS and error.source == str(path), error
            outcomes[path] = type(error).__name__
            continue
        assert clip.frames.shape[0] == 3 and clip.motion.shape[:2] == (3, 2)
        assert clip.sound.status in SOUND_STATUSES and clip.sound.samples.shape == clip.sound.mask.shape == (16000,)
        outcomes[path] = clip.sound.status
        partial += clip.sound.status in ("ok", "broken") and clip.sound.valid < 16000
    assert outcomes[videos["mute"]] == "none"
    kinds = set(outcomes.values())
    assert "ok" in kinds and kinds - SOUND_STATUSES, kinds  # some read whole, some refused
    assert partial, "no damage reached the sound of a video that was read"
