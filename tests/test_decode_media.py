"""Every codec, container and edge case: the keyframe sampler against an independent full decode;
every bad input: its typed error."""

import json

import av
import numpy as np
import pytest

from shortvid.decode import (
    CorruptVideoError,
    DecodeError,
    InvalidVideoError,
    NoVideoStreamError,
    match_to_targets,
    read_frames,
    segment_targets,
)
from shortvid.decode.opening import open_container

from media import (
    CODEC_CASES,
    make_bad_inputs,
    make_video,
    marker_corner,
    read_index,
    reference_keyframes,
)


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
    for i, frame in zip(wanted, clip.frames, strict=True):
        assert np.array_equal(frame, reference[i][1])
        assert marker_corner(frame) == "top_left"  # upright
    assert (clip.info.height, clip.info.width) == reference[0][1].shape[:2]


@pytest.mark.parametrize("case", CODEC_CASES, ids=lambda c: c.name)
def test_every_sampler_and_policy_gives_k_upright_frames(media_dir, case):
    path = media_dir[case.name]
    for options in ({"sampler": "uniform"}, {"fill": "seek"}, {"fill": "near"}, {"fill": "near", "mode": "train"},
                    {"mode": "train", "rng": np.random.default_rng(0)}):
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
        with av.open(str(media_dir["h264_high_bframes_mp4"])) as source, \
                av.open(str(paths[muxer]), "w", format=muxer) as target:
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
    for t, frame in zip(clip.times, clip.frames, strict=True):
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
    # the premise, the file opened as read_frames opens it: no rate but the clock's
    with open_container(str(path), str(path)) as container:
        video = container.streams.video[0]
        assert video.average_rate is None and video.base_rate == 1 / video.time_base
    clip = read_frames(path, 3, size=None)
    assert clip.info.fps is None and "fps" not in clip.info.sources
    assert clip.info.keyframes == len(reference_keyframes(path))
    assert json.loads(json.dumps(clip.to_dict()))["info"]["fps"] is None



# fill="near": the cheapest frames near the empty segments' centres

@pytest.fixture(scope="session")
def one_keyframe(tmp_path_factory):
    """90 frames at 30 fps with a keyframe at frame 0 only, without and with B-frames, in MP4 (a sample
    index) and in Matroska and AVI (keyframes from the packet pass)."""
    root = tmp_path_factory.mktemp("one_keyframe")
    videos = {name: make_video(root, name, n_frames=90, gop=1000, bframes=bframes, **options).path
              for name, bframes, options in (("mp4", 0, {}), ("bframes_mp4", 3, {}),
                                            ("mkv", 2, {"container_suffix": ".mkv"}),
                                            ("avi", None, {"codec": "mpeg4", "container_suffix": ".avi"}))}
    videos["two_mp4"] = make_video(root, "two", n_frames=90, gop=1000, keyframes=(50,), bframes=0).path
    return videos


def test_fill_near_gives_distinct_frames_within_the_cap(one_keyframe):
    # k=3 over 3 s: centres at frames 15, 45 and 75; the keyframe takes the first segment, the others
    # reach max_decode and 2 x max_decode frames past it, in one forward decode
    path = one_keyframe["mp4"]
    assert read_frames(path, 3, size=None).decoded == 1
    for cap, frames in ((4, [0, 4, 8]), (20, [0, 20, 40]), (60, [0, 45, 75])):
        clip = read_frames(path, 3, size=None, fill="near", max_decode=cap)
        assert [read_index(frame) for frame in clip.frames] == frames
        assert clip.keyframe == (True, False, False)
        assert clip.times == pytest.approx([i / 30 for i in frames], abs=1e-3)
        assert clip.decoded == frames[-1] + 1  # the keyframe and the prefix up to the last frame taken
        assert all(marker_corner(frame) == "top_left" for frame in clip.frames)
    # the same pixels as the frames read any other way (the reader's scaler)
    seek = read_frames(path, 3, size=32, fill="seek")
    near = read_frames(path, 3, size=32, fill="near", max_decode=60)
    assert np.array_equal(seek.frames, near.frames) and near.decoded < seek.decoded


@pytest.mark.parametrize("name", ["bframes_mp4", "mkv", "avi"])
def test_fill_near_with_b_frames_and_without_a_sample_index(one_keyframe, name):
    path = one_keyframe[name]
    for cap in (4, 20):
        clip = read_frames(path, 3, size=None, fill="near", max_decode=cap)
        shown = [read_index(frame) for frame in clip.frames]
        assert shown[0] == 0 and shown == sorted(set(shown))  # distinct, in time order
        assert clip.decoded <= 1 + 2 * cap  # past the keyframe: at most the cap per filled segment
        assert clip.keyframe == (True, False, False)
        # the cap counts frames in decode order: with B-frames the frame shown is within a B-frame run
        # (3 here) of the reach, either side
        assert abs(shown[1] - cap) <= 3 and abs(shown[2] - 2 * cap) <= 3
        # the pixels of a full decode: frames skipped on the way (no later frame refers to them) change none
        with av.open(str(path)) as container:
            decoded = (frame.to_ndarray(format="rgb24") for frame in container.decode(video=0))
            reference = {read_index(rgb): rgb for rgb in decoded}
        assert all(np.array_equal(frame, reference[index]) for frame, index in zip(clip.frames, shown, strict=True))
    mp4 = read_frames(one_keyframe["bframes_mp4"], 3, size=None, fill="near", max_decode=60)
    assert [read_index(frame) for frame in mp4.frames] == [0, 45, 75]
    assert mp4.decoded < 76  # B-frames no frame refers to are skipped on the way


def test_fill_near_with_two_keyframes_and_a_long_video(one_keyframe):
    # keyframes at frames 0 and 50, k=4: centres at frames 11, 34, 56 and 79; the keyframes keep the
    # first and the third segment, and each fills the segment after it from its own GOP
    clip = read_frames(one_keyframe["two_mp4"], 4, size=None, fill="near", max_decode=30)
    assert [read_index(frame) for frame in clip.frames] == [0, 30, 50, 79]
    assert clip.keyframe == (True, False, True, False)
    assert clip.decoded == 31 + 30
    # many segments, a small cap: the decode stays bounded by it
    many = read_frames(one_keyframe["mp4"], 16, size=32, fill="near", max_decode=2)
    shown = [read_index(frame) for frame in many.frames]
    assert shown == list(range(0, 31, 2)) and many.decoded == 31


def test_fill_near_in_training_varies_within_the_cap(one_keyframe):
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(12):
        clip = read_frames(one_keyframe["mp4"], 3, size=32, fill="near", max_decode=10, mode="train", rng=rng)
        shown = tuple(read_index(frame) for frame in clip.frames)
        assert shown[0] == 0 and 1 <= shown[1] <= 10 and 11 <= shown[2] <= 20 and clip.decoded <= 21
        seen.add(shown)
    assert len(seen) > 3
    test = {tuple(read_frames(one_keyframe["mp4"], 3, size=32, fill="near", max_decode=10).times) for _ in range(3)}
    assert len(test) == 1  # deterministic at test time


@pytest.mark.parametrize("name", ["keyframe_per_second_mp4", "forced_keyframes_mp4", "h264_mkv", "vp9_webm"])
def test_fill_near_with_enough_keyframes_is_the_keyframe_sampler(media_dir, name):
    k = len(reference_keyframes(media_dir[name]))  # as many segments as keyframes: nothing to fill
    near = read_frames(media_dir[name], k, size=32, fill="near")
    plain = read_frames(media_dir[name], k, size=32)
    assert near.times == plain.times and near.keyframe == plain.keyframe and near.decoded == plain.decoded
    assert np.array_equal(near.frames, plain.frames)


def test_fill_near_on_damaged_files_still_gives_k_frames(bad_inputs):
    for name in ("damaged_packets", "truncated_faststart"):
        clip = read_frames(bad_inputs[name], 6, size=None, fill="near", max_decode=4)
        assert clip.frames.shape[0] == 6 and list(clip.times) == sorted(clip.times)
        assert all(marker_corner(frame) == "top_left" for frame in clip.frames)
