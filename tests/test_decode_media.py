"""Every codec, container and edge case: the keyframe sampler against an independent full decode;
every bad input: its typed error."""

import json

import av
import numpy as np
import pytest
from media import CODEC_CASES, make_bad_inputs, marker_corner, reference_keyframes

from shortvid.decode import (
    CorruptVideoError,
    DecodeError,
    InvalidVideoError,
    NoVideoStreamError,
    match_to_targets,
    read_frames,
    segment_targets,
)
from shortvid.decode.reader import _open


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    return {case.name: case.make(root).path for case in CODEC_CASES}


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory):
    return make_bad_inputs(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", CODEC_CASES, ids=lambda c: c.name)
def test_keyframe_sampler_equals_reference_keyframes(media_dir, case):
    path = media_dir[case.name]
    reference = reference_keyframes(path)
    clip = read_frames(path, 3, size=None)
    assert clip.frames.shape[0] == 3 and clip.frames.dtype == np.uint8
    assert all(clip.keyframe)
    assert clip.info.keyframes == len(reference)
    ref_times = [t for t, _ in reference]
    assert clip.info.keyframe_times == pytest.approx(ref_times, abs=1e-3)
    # the keyframes nearest the segment centres, pixel for pixel, each decoded once and nothing else
    wanted = match_to_targets(ref_times, segment_targets(0.0, clip.info.duration, 3))
    assert clip.times == pytest.approx([ref_times[i] for i in wanted], abs=1e-3)
    assert clip.decoded == len(set(wanted))
    for i, frame in zip(wanted, clip.frames):
        assert np.array_equal(frame, reference[i][1])
        assert marker_corner(frame) == "top_left"  # upright
    assert (clip.info.height, clip.info.width) == reference[0][1].shape[:2]


@pytest.mark.parametrize("case", CODEC_CASES, ids=lambda c: c.name)
def test_every_sampler_and_policy_gives_k_upright_frames(media_dir, case):
    path = media_dir[case.name]
    for options in ({"sampler": "uniform"}, {"fill": "seek"}, {"mode": "train", "rng": np.random.default_rng(0)}):
        clip = read_frames(path, 4, size=32, **options)
        assert clip.frames.shape[0] == 4
        assert min(clip.frames.shape[1:3]) == 32
        assert list(clip.times) == sorted(clip.times)
        assert all(marker_corner(frame) == "top_left" for frame in clip.frames) or min(
            clip.info.width, clip.info.height) < 32  # the marker survives scaling from 16 px up only


def test_span_comes_from_timestamps_not_headers(media_dir):
    clip = read_frames(media_dir["vfr_h264_mp4"], 3, size=None)
    last_time = reference_keyframes(media_dir["vfr_h264_mp4"])[-1][0]
    assert clip.info.duration > last_time


@pytest.mark.parametrize("name, error", [
    ("empty", InvalidVideoError),
    ("truncated_no_faststart", InvalidVideoError),
    ("random_bytes", InvalidVideoError),
    ("text", InvalidVideoError),
    ("audio_only", NoVideoStreamError),
])
def test_bad_inputs_raise_typed_errors_naming_the_file(bad_inputs, name, error):
    path = bad_inputs[name]
    with pytest.raises(error) as raised:
        read_frames(path)
    assert str(path) in str(raised.value)
    assert raised.value.cause
    with pytest.raises(error):
        read_frames(path.read_bytes()) if path.stat().st_size else read_frames(b"")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.mp4"):
        read_frames(tmp_path / "nope.mp4")
    with pytest.raises(DecodeError, match="directory"):
        read_frames(tmp_path)


@pytest.mark.parametrize("name", ["damaged_packets", "truncated_faststart"])
def test_damaged_files_with_good_keyframes_still_give_frames(bad_inputs, name):
    clip = read_frames(bad_inputs[name], 3, size=None)
    assert clip.frames.shape[0] == 3 and all(clip.keyframe)
    assert all(marker_corner(frame) == "top_left" for frame in clip.frames)


def test_a_file_whose_keyframes_are_all_gone_is_corrupt(bad_inputs, tmp_path):
    data = bytearray(bad_inputs["damaged_packets"].read_bytes())
    start = data.find(b"mdat") + 4
    data[start:] = bytes(len(data) - start)  # zero every sample, the index stays
    path = tmp_path / "zeroed.mp4"
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptVideoError, match="zeroed.mp4"):
        read_frames(path)


@pytest.fixture(scope="session")
def remuxed(media_dir, tmp_path_factory):
    """The H.264 High test video copied, packet for packet, into MPEG-TS and FLV by FFmpeg's muxers."""
    root = tmp_path_factory.mktemp("remuxed")
    paths = {}
    for muxer, suffix in (("mpegts", ".ts"), ("flv", ".flv")):
        paths[muxer] = root / f"remux{suffix}"
        with av.open(str(media_dir["h264_high_bframes_mp4"])) as source, av.open(str(paths[muxer]), "w", format=muxer) as target:
            stream = target.add_stream_from_template(source.streams.video[0])
            for packet in source.demux(source.streams.video[0]):
                if packet.dts is not None:
                    packet.stream = stream
                    target.mux(packet)
    return paths


@pytest.mark.parametrize("muxer", ["mpegts", "flv"])
def test_containers_whose_streams_appear_only_while_probing(remuxed, muxer):
    reference = reference_keyframes(remuxed[muxer])
    clip = read_frames(remuxed[muxer], 3, size=None)
    assert all(clip.keyframe) and clip.info.keyframes == len(reference)
    assert clip.info.fps == pytest.approx(30)  # MPEG-TS: the codec's rate, not FFmpeg's guess of 60 (fields)
    by_time = {round(t, 3): rgb for t, rgb in reference}
    for t, frame in zip(clip.times, clip.frames):
        assert np.array_equal(frame, by_time[round(t, 3)])


# Where each VideoInfo value came from

DECODED = {"width": "decoded", "height": "decoded", "rotation": "decoded"}


def test_an_mp4s_keyframes_and_span_come_from_its_index(media_dir):
    info = read_frames(media_dir["h264_baseline_mp4"], 3, size=32).info
    assert info.index == "container"
    assert info.sources == {"fps": "header", "start": "index", "duration": "index", "keyframes": "index", **DECODED}
    assert info.to_dict()["sources"] == info.sources and info.fps == 30
    uniform = read_frames(media_dir["h264_baseline_mp4"], 3, size=32, sampler="uniform").info
    assert "keyframes" not in uniform.sources and uniform.keyframes == 0  # not looked for
    assert uniform.sources["duration"] == "index"


@pytest.mark.parametrize("name", ["h264_mkv", "vp9_webm", "mpeg4_avi"])
def test_other_containers_keyframes_and_span_come_from_their_packets(media_dir, name):
    info = read_frames(media_dir[name], 3, size=32).info
    assert info.index == "packets"
    assert info.sources == {"fps": "header", "start": "packets", "duration": "packets", "keyframes": "packets",
                            **DECODED}
    uniform = read_frames(media_dir[name], 3, size=32, sampler="uniform").info
    assert uniform.sources["duration"] == "header"  # the header gives a span: no pass over the packets


def test_a_stream_without_a_frame_rate_has_fps_none(media_dir, tmp_path):
    """VP9 copied into Matroska with no frame duration: FFmpeg's only "rate" is its 1 ms clock."""
    path = tmp_path / "rateless.mkv"
    with av.open(str(media_dir["vp9_webm"])) as source, av.open(str(path), "w", format="matroska") as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    with _open(str(path), str(path)) as container:  # the premise, as the reader opens it: no rate but the clock's
        video = container.streams.video[0]
        assert video.average_rate is None and video.base_rate == 1 / video.time_base
    clip = read_frames(path, 3, size=None)
    assert clip.info.fps is None and "fps" not in clip.info.sources
    assert clip.info.keyframes == len(reference_keyframes(path))
    assert json.loads(json.dumps(clip.to_dict()))["info"]["fps"] is None
