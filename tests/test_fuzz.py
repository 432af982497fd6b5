"""Damaged and crafted uploads through every entry point, in one process that must survive them all.

Mutated copies of generated videos (truncations, bit flips, box damage, entry counts claiming
billions, moved or dropped boxes, headers and SPS claiming huge frames) plus hand-made non-videos go
through ``read_frames``, ``read_audio``, ``shortvid probe``, ``shortvid predict`` and the HTTP service. Each must
give frames or a ``DecodeError`` that names its cause (a 422 from the service, never a 500; never
the catch-all ``UnexpectedDecodeError``) within a time limit that only a hang would exceed.
``bench/fuzz.py --files N`` runs the same on many more files.
"""

import json
import os
import time

import psutil
import pytest

from shortvid import errors
from shortvid.cli import main
from shortvid.data.annotations import load_dataset
from shortvid.decode import AudioSpec, DecodeError, read_audio, read_frames
from shortvid.infer.classifier import Classifier
from shortvid.synth.damage import damaged_copies, with_coded_size

from serving import running

# The typed verdicts a damaged file may get. Not the catch-all ``UnexpectedDecodeError`` (a generic
# exception inside decoding: a failure shortvid does not understand, so a bug to fix on this set) nor
# the bare base class: every file here must fail for a reason shortvid names.
TYPED_ERRORS = {name for name, value in vars(errors).items() if isinstance(value, type)
                and issubclass(value, DecodeError) and value not in (DecodeError, errors.UnexpectedDecodeError)}
HANG = 60.0  # seconds: far above any decode here (each call's own limit is 5 s); only a hang exceeds it


@pytest.fixture(scope="module")
def fuzz_files(tmp_path_factory, small_videos, tiny_corpus) -> list[str]:
    """About 100 damaged copies of two real videos, and non-videos a user might name."""
    folder = tmp_path_factory.mktemp("fuzz")
    bases = [small_videos["v0.mp4"].read_bytes(), load_dataset(tiny_corpus, "val").samples[0].path.read_bytes()]
    paths = []
    for number, base in enumerate(bases):
        for name, data in damaged_copies(base, 48, seed=number):
            path = folder / f"b{number}-{name}.mp4"
            path.write_bytes(data)
            paths.append(str(path))
        for width, height in ((65520, 16), (16000, 16000)):
            path = folder / f"b{number}-sps-{width}x{height}.mp4"
            path.write_bytes(with_coded_size(base, width, height))
            paths.append(str(path))
    (folder / "folder.mp4").mkdir()
    os.mkfifo(folder / "fifo.mp4")
    (folder / "loop.mp4").symlink_to(folder / "loop.mp4")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "text.mp4").write_text("not a video\n")
    paths += [str(folder / name) for name in ("folder.mp4", "fifo.mp4", "loop.mp4", "empty.mp4", "text.mp4")]
    return paths


def test_read_frames_gives_frames_or_a_typed_error(fuzz_files):
    process = psutil.Process()
    before = process.memory_info().rss
    outcomes = {}
    for path in fuzz_files:
        started = time.perf_counter()
        try:
            clip = read_frames(path, 3, size=128, timeout=5)
            assert clip.frames.shape[0] == 3 and clip.frames.shape[-1] == 3
            assert clip.frames.nbytes <= 3 * 128 * 128 * 8 * 3  # the aspect limit bounds a frame
            outcomes[path] = "frames"
        except DecodeError as error:
            assert type(error).__name__ in TYPED_ERRORS and error.source == path, error
            outcomes[path] = type(error).__name__
        assert time.perf_counter() - started < HANG, path
    kinds = set(outcomes.values())
    assert "frames" in kinds and {"CorruptVideoError", "InvalidVideoError", "VideoTooLargeError"} <= kinds, kinds
    assert process.memory_info().rss - before < 300 * 2**20  # no file costs gigabytes


def test_read_audio_gives_a_sound_or_a_typed_error(fuzz_files):
    """The same files' sound: never an error for the audio (a status says what it is), and for a file that
    does not open, the typed error ``read_frames`` gives."""
    process = psutil.Process()
    before = process.memory_info().rss
    outcomes = {}
    for path in fuzz_files:
        started = time.perf_counter()
        try:
            sound = read_audio(path, AudioSpec(seconds=2.0, placement="spread"), timeout=5)
            assert sound.samples.shape == sound.mask.shape == (32000,) and sound.source == path
            assert sound.status in ("ok", "none", "silent", "broken") and (sound.status == "ok") == (
                sound.valid > 0 and sound.status != "silent"), sound.to_dict()
            outcomes[path] = sound.status
        except DecodeError as error:
            assert type(error).__name__ in TYPED_ERRORS and error.source == path, error
            outcomes[path] = type(error).__name__
        assert time.perf_counter() - started < HANG, path
    assert {"ok", "InvalidVideoError"} <= set(outcomes.values()), set(outcomes.values())
    assert process.memory_info().rss - before < 300 * 2**20


def test_probe_gives_every_file_a_line(fuzz_files, capsys):
    code = main(["probe", *fuzz_files, "--size", "96", "--timeout", "5"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and [line["path"] for line in lines] == fuzz_files
    for line in lines:
        assert "frames" in line or line["error"]["type"] in TYPED_ERRORS, line


def test_predict_gives_every_file_a_line(fuzz_files, trained_run, capsys):
    code = main(["predict", str(trained_run), *fuzz_files, "--device", "cpu"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and sorted(line["path"] for line in lines) == sorted(fuzz_files)
    for line in lines:
        assert "labels" in line or line["error"]["type"] in TYPED_ERRORS, line


@pytest.mark.slow
def test_the_service_answers_every_upload_with_200_or_422(fuzz_files, trained_run):
    uploads = [path for path in fuzz_files if os.path.isfile(path) and not os.path.islink(path)
               and not path.endswith("fifo.mp4")]
    with running(Classifier.load(trained_run, device="cpu"), timeout=30) as client:
        for path in uploads:
            with open(path, "rb") as handle:
                response = client.post("/v1/classify", content=handle.read(),
                                       headers={"content-type": "application/octet-stream",
                                                "x-filename": os.path.basename(path)})
            assert response.status_code in (200, 422), (path, response.text)
            if response.status_code == 422:
                error = response.json()["error"]
                assert error["type"] in TYPED_ERRORS and os.path.basename(path) in error["message"]
        assert client.get("/healthz").status_code == 200
