"""Motion frames (``FrameSpec.motion``): the frames after each chosen keyframe, decoded from its GOP's prefix,
against an independent full decode, in both orders (``motion_order``: the next shown, the next decoded); the
spec, the CLI, the cache and the limits with them."""

import json

import av
import numpy as np
import pytest

import shortvid.decode.decoder as decoder
from shortvid.cli import main
from shortvid.decode import DecodeLimits, DecodeTimeoutError, FrameSpec, VideoTooLargeError, read_frames
from shortvid.decode.scaling import rgb_difference, scale_frame

from media import make_video, read_index


@pytest.fixture(scope="session")
def gops(tmp_path_factory):
    """90 frames at 30 fps, a keyframe every 30, without and with B-frames, in MP4 (a sample index) and in
    Matroska and AVI (keyframes from the packet pass); and 40 frames with keyframes at 0, 8, 10 and 38
    (GOPs of 8, 2, 28 and 2 frames)."""
    root = tmp_path_factory.mktemp("motion")
    videos = {name: make_video(root, name, n_frames=90, gop=30, bframes=bframes, **options).path
              for name, bframes, options in (("mp4", 0, {}), ("bframes_mp4", 3, {}),
                                            ("mkv", 2, {"container_suffix": ".mkv"}),
                                            ("avi", None, {"codec": "mpeg4", "container_suffix": ".avi"}),
                                            ("webm", None, {"codec": "libvpx-vp9", "container_suffix": ".webm"}))}
    videos["short_gops"] = make_video(root, "short_gops", n_frames=40, gop=1000, keyframes=(8, 10, 38), bframes=0).path
    videos["one_keyframe"] = make_video(root, "one_keyframe", n_frames=30, gop=1000, bframes=2).path
    return videos


def full_decode(path) -> dict[int, av.VideoFrame]:
    """Every frame of the video by the index its picture shows: an independent decode from the start."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return {read_index(frame.to_ndarray(format="rgb24")): frame for frame in frames}


@pytest.mark.parametrize("name", ["mp4", "bframes_mp4", "mkv", "avi", "webm"])
def test_motion_frames_are_the_next_frames_of_a_full_decode(gops, name):
    path = gops[name]
    reference = full_decode(path)
    plain = read_frames(path, 3, size=None)
    for motion in (1, 2, 4):
        clip = read_frames(path, 3, size=None, motion=motion)
        keys = [read_index(frame) for frame in clip.frames]
        assert keys == [0, 30, 60] and clip.keyframe == (True, True, True)
        assert np.array_equal(clip.frames, plain.frames) and clip.times == plain.times
        assert clip.motion.shape == (3, motion, 48, 64, 3) and clip.motion.dtype == np.uint8
        assert clip.motion_valid == (motion,) * 3
        for key, following, times in zip(keys, clip.motion, clip.motion_times, strict=True):
            # the next frames in presentation order, B-frames included, with the pixels of a full decode
            assert [read_index(image) for image in following] == list(range(key + 1, key + 1 + motion))
            assert times == pytest.approx([(key + 1 + j) / 30 for j in range(motion)], abs=2e-3)
            for j, image in enumerate(following):
                assert np.array_equal(image, reference[key + 1 + j].to_ndarray(format="rgb24"))
        assert clip.decoded > plain.decoded


def decode_order(path) -> dict[int, list[int]]:
    """Each keyframe's frame index and the indices of the frames decoded after it, in decode order (the
    packets' presentation times, read independently by demuxing the whole stream)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [(packet.pts, packet.is_keyframe) for packet in container.demux(stream) if packet.size]
        rate, base = float(stream.average_rate), stream.time_base
    order: dict[int, list[int]] = {}
    for pts, key in packets:
        index = round(float(pts * base) * rate)
        if key:
            current = order.setdefault(index, [])
        else:
            current.append(index)
    return order


@pytest.mark.parametrize("name", ["mp4", "bframes_mp4", "mkv", "avi", "webm"])
def test_decoded_order_takes_the_next_frames_decoded_and_decodes_no_other(gops, name):
    path = gops[name]
    reference, order = full_decode(path), decode_order(path)
    plain = read_frames(path, 3, size=None)
    for motion in (1, 2, 4):
        clip = read_frames(path, 3, size=None, motion=motion, motion_order="decoded")
        shown = read_frames(path, 3, size=None, motion=motion)
        assert np.array_equal(clip.frames, plain.frames) and clip.times == plain.times
        assert clip.motion.shape == (3, motion, 48, 64, 3) and clip.motion_valid == (motion,) * 3
        for key, following, times in zip((0, 30, 60), clip.motion, clip.motion_times, strict=True):
            # the first `motion` decoded after the keyframe, shown in time order, with a full decode's pixels
            expected = sorted(order[key][:motion])
            assert [read_index(image) for image in following] == expected
            assert times == pytest.approx([index / 30 for index in expected], abs=2e-3)
            for index, image in zip(expected, following, strict=True):
                assert np.array_equal(image, reference[index].to_ndarray(format="rgb24"))
        # nothing decoded but the keyframes and their motion frames
        assert clip.decoded == 3 * (1 + motion)
        assert clip.decoded <= shown.decoded
        if all(order[key][:motion] == list(range(key + 1, key + 1 + motion)) for key in (0, 30, 60)):
            # no B-frame decoded ahead of one shown earlier: the same frames either way
            assert np.array_equal(clip.motion, shown.motion) and clip.motion_times == shown.motion_times


def test_with_b_frames_the_decoded_order_starts_with_the_p_frame(gops):
    """x264's B-pyramid decodes I0 P4 B2 b1 b3: the first frame decoded after a keyframe is shown frames on, and
    "shown" decodes the P-frame and B2 to reach b1."""
    path = gops["bframes_mp4"]
    order = decode_order(path)
    assert order[0][:4] == [4, 2, 1, 3]  # the pyramid this test is about
    one = read_frames(path, 3, size=None, motion=1, motion_order="decoded")
    firsts = [read_index(following[0]) for following in one.motion]
    assert firsts == [order[key][0] for key in (0, 30, 60)] and firsts[0] == 4
    assert all(first > key + 1 for first, key in zip(firsts, (0, 30, 60), strict=True))
    assert read_frames(path, 3, size=None, motion=1).decoded > one.decoded
    four = read_frames(path, 3, size=None, motion=4, motion_order="decoded")
    assert [read_index(image) for image in four.motion[0]] == [1, 2, 3, 4]  # the whole mini-GOP: both orders agree


def test_decoded_order_in_short_gops_and_probe(gops, small_videos, capsys):
    clip = read_frames(gops["short_gops"], 8, size=None, fill="none", motion=3, motion_order="decoded")
    assert [[read_index(image) for image in following] for following in clip.motion] == \
        [[1, 2, 3], [9, 9, 9], [11, 12, 13], [39, 39, 39]]
    assert clip.motion_valid == (3, 1, 3, 1)
    assert main(["probe", str(small_videos["v0.mp4"]), "--k", "2", "--size", "32", "--motion", "1",
                 "--motion-order", "decoded"]) == 0
    line = json.loads(capsys.readouterr().out)
    first = line["frames"][0]
    assert len(first["motion"]) == 1 and first["motion"][0] > first["time"]
    with pytest.raises(SystemExit) as exit_:
        main(["probe", str(small_videos["v0.mp4"]), "--motion-order", "first"])
    assert exit_.value.code == 2 and "--motion-order" in capsys.readouterr().err


def test_motion_frames_are_scaled_and_cropped_like_the_keyframes(gops):
    path = gops["bframes_mp4"]
    reference = full_decode(path)
    clip = read_frames(path, 3, size=32, motion=2)
    assert clip.motion.shape == (3, 2, 32, 43, 3)
    for key, following in zip((0, 30, 60), clip.motion, strict=True):
        for j, image in enumerate(following):
            assert np.array_equal(image, scale_frame(reference[key + 1 + j], 43, 32))
    cropped = read_frames(path, 3, size=32, crop=24, motion=2)
    assert cropped.motion.shape == (3, 2, 24, 24, 3)
    assert np.array_equal(cropped.motion, clip.motion[:, :, 4:28, 9:33])


def test_a_gop_shorter_than_motion_repeats_its_last_frame_and_says_how_many_are_real(gops):
    path = gops["short_gops"]
    clip = read_frames(path, 8, size=None, fill="none", motion=3)  # each of the 4 keyframes once
    assert [read_index(frame) for frame in clip.frames] == [0, 8, 10, 38]
    shown = [[read_index(image) for image in following] for following in clip.motion]
    assert shown == [[1, 2, 3], [9, 9, 9], [11, 12, 13], [39, 39, 39]]
    assert clip.motion_valid == (3, 1, 3, 1)
    assert clip.motion_times[1] == pytest.approx([9 / 30] * 3, abs=2e-3)
    # a GOP of the keyframe alone (the last frame of the video): the keyframe repeated, none real
    single = make_video(path.parent, "last_alone", n_frames=20, gop=1000, keyframes=(19,), bframes=0).path
    clip = read_frames(single, 4, size=None, fill="none", motion=2)
    assert [read_index(frame) for frame in clip.frames] == [0, 19]
    assert clip.motion_valid == (2, 0)
    assert np.array_equal(clip.motion[1], np.stack([clip.frames[1]] * 2))
    assert clip.motion_times[1] == (clip.times[1],) * 2


def test_a_repeated_keyframe_repeats_its_motion_frames_that_move(gops):
    clip = read_frames(gops["one_keyframe"], 3, size=None, motion=2)
    assert clip.keyframe == (True, True, True) and clip.motion_valid == (2, 2, 2)
    assert all(np.array_equal(following, clip.motion[0]) for following in clip.motion)
    assert [read_index(image) for image in clip.motion[0]] == [1, 2]
    difference = rgb_difference(clip.frames, clip.motion)  # the pattern moves: the frames differ
    assert difference.shape == (3, 2, 48, 64, 3) and difference.dtype == np.int16
    assert np.abs(difference).mean() > 1


def test_rgb_difference_is_each_frame_less_the_one_before():
    keyframe = np.zeros((2, 2, 3), np.uint8)
    following = np.stack([np.full((2, 2, 3), 200, np.uint8), np.full((2, 2, 3), 10, np.uint8)])
    difference = rgb_difference(keyframe, following)
    assert difference.dtype == np.int16 and difference[:, 0, 0, 0].tolist() == [200, -190]


def test_motion_zero_leaves_the_clip_the_spec_and_the_probe_line_as_before(small_videos):
    path = small_videos["v0.mp4"]
    clip = read_frames(path, 3, size=32)
    assert clip.motion is None and clip.motion_times is None and clip.motion_valid is None
    assert clip.decoded == 3  # the keyframes alone
    assert all("motion" not in frame for frame in clip.to_dict()["frames"])
    # a spec stored before motion existed: the same dict, read back equal
    stored = {"k": 3, "sampler": "keyframes", "size": 256, "crop": None, "fill": "repeat"}
    assert FrameSpec(size=256).to_dict() == stored
    assert FrameSpec.from_dict(stored) == FrameSpec(size=256) and FrameSpec.from_dict(stored).motion == 0
    spec = FrameSpec(size=256, motion=2)
    assert spec.to_dict() == {**stored, "motion": 2} and FrameSpec.from_dict(spec.to_dict()) == spec
    # the decode order is stored; without motion frames there is no order to store
    decoded = FrameSpec(size=256, motion=2, motion_order="decoded")
    assert decoded.to_dict() == {**stored, "motion": 2, "motion_order": "decoded"}
    assert FrameSpec.from_dict(decoded.to_dict()) == decoded
    assert FrameSpec(size=256, motion_order="decoded") == FrameSpec(size=256)


def test_motion_frames_of_real_videos_match_a_full_decode(small_videos):
    # x264 defaults (B-frames), 10 fps, keyframes at frames 0, 10, 20 and 30
    path = small_videos["v0.mp4"]
    with av.open(str(path)) as container:
        reference = {round(float(frame.time), 3): frame for frame in container.decode(video=0)}
    clip = read_frames(path, 4, size=32, motion=3)
    assert clip.times == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=1e-3)
    for key, following, times in zip(clip.times, clip.motion, clip.motion_times, strict=True):
        assert times == pytest.approx([key + 0.1, key + 0.2, key + 0.3], abs=1e-3)
        for image, t in zip(following, times, strict=True):
            assert np.array_equal(image, scale_frame(reference[round(t, 3)], *image.shape[1::-1]))


@pytest.mark.parametrize("options, message", [
    ({"motion": 5}, "motion must be an integer from 0 to 4"),
    ({"motion": -1}, "motion must be an integer from 0 to 4"),
    ({"motion": True}, "motion must be an integer from 0 to 4"),
    ({"motion": 1.0}, "motion must be an integer from 0 to 4"),
    ({"motion": 2, "sampler": "uniform"}, "motion frames follow keyframes"),
    ({"motion": 2, "fill": "near"}, "motion frames follow keyframes"),
    ({"motion": 2, "fill": "seek"}, "motion frames follow keyframes"),
    ({"motion": 2, "motion_order": "presentation"}, "motion_order must be one of 'shown', 'decoded'"),
    ({"motion": 2, "motion_order": None}, "motion_order must be one of"),
])
def test_motion_options_are_checked_when_the_spec_is_made(options, message):
    with pytest.raises(ValueError, match=message):
        FrameSpec(**options)


def test_limits_and_the_time_limit_reach_the_motion_frames(gops, monkeypatch):
    path = gops["one_keyframe"]
    with pytest.raises(VideoTooLargeError):
        read_frames(path, 3, size=None, motion=2, limits=DecodeLimits(max_width=32, max_height=32))

    class Clock:  # each frame scaled takes 20 s: past the 10 s limit after the keyframe
        now = 0.0

        @classmethod
        def perf_counter(cls) -> float:
            return cls.now

    def slow_scale(*args, **kwargs):
        Clock.now += 20.0
        return scale_frame(*args, **kwargs)

    monkeypatch.setattr(decoder, "time", Clock)
    monkeypatch.setattr(decoder, "scale_frame", slow_scale)
    assert read_frames(path, 1, size=32, timeout=10.0).decoded == 1  # the keyframe alone: in time
    Clock.now = 0.0
    with pytest.raises(DecodeTimeoutError, match="one_keyframe"):
        read_frames(path, 1, size=32, timeout=10.0, motion=2)


def test_probe_prints_the_motion_frames_times(small_videos, capsys):
    assert main(["probe", str(small_videos["v0.mp4"]), "--k", "2", "--size", "32", "--motion", "2"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert [frame["motion_valid"] for frame in line["frames"]] == [2, 2]
    first = line["frames"][0]
    assert first["motion"] == pytest.approx([first["time"] + 0.1, first["time"] + 0.2], abs=1e-3)
    assert main(["probe", str(small_videos["v0.mp4"]), "--motion", "9"]) == 2
