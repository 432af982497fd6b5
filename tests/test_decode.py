"""The decoder's choices and pixels, checked against a full decode of the same file."""

import io

import av
import numpy as np
import pytest

from shortvid.decode import (
    DecodeTimeoutError,
    InvalidVideoError,
    read_frames,
    segment_targets,
)


def full_decode(path, width=None, height=None):
    """Reference: every frame, decoded in order: (time, is keyframe, rgb)."""
    with av.open(str(path)) as container:
        return [(frame.time, frame.key_frame, frame.to_ndarray(format="rgb24", width=width, height=height))
                for frame in container.decode(video=0)]


def test_keyframes_nearest_segment_centres_and_nothing_else_decoded(small_videos):
    # v0: 4 s at 10 fps, keyframes at 0, 1, 2, 3 s; centres of 3 segments: 0.67, 2, 3.33 s
    clip = read_frames(small_videos["v0.mp4"], 3, size=None)
    assert clip.times == pytest.approx((1.0, 2.0, 3.0))
    assert clip.keyframe == (True, True, True)
    assert clip.decoded == 3  # one decode per chosen keyframe, no other frame
    assert clip.info.keyframes == 4 and clip.info.keyframe_times == pytest.approx((0, 1, 2, 3))
    assert clip.info.duration == pytest.approx(4.0)
    reference = {round(t, 3): rgb for t, key, rgb in full_decode(small_videos["v0.mp4"]) if key}
    for t, frame in zip(clip.times, clip.frames, strict=True):
        assert np.array_equal(frame, reference[round(t, 3)])


def test_fewer_keyframes_than_k_repeat_by_default(small_videos):
    clip = read_frames(small_videos["v1.mp4"], 3, size=None)  # keyframes at 0 and 2.5 s
    assert clip.frames.shape[0] == 3
    assert clip.times == pytest.approx((0.0, 2.5, 2.5))
    assert all(clip.keyframe) and clip.decoded == 2
    one = read_frames(small_videos["v2.mp4"], 3, size=None)  # a single keyframe
    assert one.times == (0.0, 0.0, 0.0) and one.decoded == 1


def test_fill_seek_decodes_the_frame_on_screen_at_empty_segment_centres(small_videos):
    clip = read_frames(small_videos["v1.mp4"], 3, size=None, fill="seek")
    # the keyframe at 2.5 s fits the middle segment (centre 2 s) best; the last one (centre 3.33 s) is decoded
    assert clip.keyframe == (True, True, False)
    assert clip.times == pytest.approx((0.0, 2.5, 3.3))
    assert clip.decoded > 3
    reference = {round(t, 3): rgb for t, _, rgb in full_decode(small_videos["v1.mp4"])}
    for t, frame in zip(clip.times, clip.frames, strict=True):
        assert np.array_equal(frame, reference[round(t, 3)])


@pytest.mark.parametrize("name", ["v0.mp4", "v1.mp4"])
def test_uniform_sampler_matches_a_full_decode(small_videos, name):
    clip = read_frames(small_videos[name], 5, sampler="uniform", size=None)
    decoded = full_decode(small_videos[name])
    times = np.array([t for t, _, _ in decoded])
    for target, t, frame in zip(segment_targets(0.0, 4.0, 5), clip.times, clip.frames, strict=True):
        on_screen = int(np.searchsorted(times, target + 1e-6)) - 1
        assert t == pytest.approx(times[on_screen])
        assert np.array_equal(frame, decoded[on_screen][2])


def test_train_mode_picks_random_keyframes_within_segments(small_videos):
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(30):
        clip = read_frames(small_videos["v0.mp4"], 2, size=None, mode="train", rng=rng)
        assert all(clip.keyframe) and clip.decoded == 2
        assert clip.times[0] in (0.0, 1.0) and clip.times[1] in (2.0, 3.0)
        seen.add(clip.times)
    assert len(seen) == 4


def test_resize_and_crop(small_videos):
    native = read_frames(small_videos["v0.mp4"], 1, size=None)
    assert native.frames.shape == (1, 112, 64, 3)
    short = read_frames(small_videos["v0.mp4"], 1, size=32)
    assert short.frames.shape == (1, 56, 32, 3)
    exact = read_frames(small_videos["v0.mp4"], 1, size=(20, 30))
    assert exact.frames.shape == (1, 20, 30, 3)
    cropped = read_frames(small_videos["v0.mp4"], 1, size=32, crop=24)
    assert cropped.frames.shape == (1, 24, 24, 3)
    assert np.array_equal(cropped.frames[0], short.frames[0][16:40, 4:28])
    with pytest.raises(ValueError, match="crop"):
        read_frames(small_videos["v0.mp4"], 1, size=32, crop=40)


def test_path_bytes_and_file_objects_give_the_same_frames(small_videos):
    path = small_videos["v0.mp4"]
    by_path = read_frames(path, 3, size=32)
    data = path.read_bytes()
    by_bytes = read_frames(data, 3, size=32)
    with open(path, "rb") as handle:
        by_file = read_frames(handle, 3, size=32)
        assert not handle.closed  # the caller's file stays the caller's

    class Pipe(io.RawIOBase):  # not seekable, like a socket or a pipe
        def __init__(self, payload):
            self.buffer = io.BytesIO(payload)

        def readable(self):
            return True

        def readinto(self, target):
            chunk = self.buffer.read(len(target))
            target[: len(chunk)] = chunk
            return len(chunk)

    by_pipe = read_frames(Pipe(data), 3, size=32)
    for other in (by_bytes, by_file, by_pipe):
        assert np.array_equal(by_path.frames, other.frames)
        assert other.times == by_path.times
    assert by_bytes.info.source == "<bytes>"


def test_time_limit(small_videos):
    with pytest.raises(DecodeTimeoutError, match="v0.mp4"):
        read_frames(small_videos["v0.mp4"], 3, timeout=1e-9)


BAD_OPTIONS = [  # (options, what the message names)
    ({"k": 0}, "k must be"),
    ({"k": 2.5}, "k must be"),
    ({"k": True}, "k must be"),
    ({"sampler": "all"}, "sampler must be"),
    ({"fill": "zeros"}, "fill must be"),
    ({"fill": "near", "max_decode": 0}, "max_decode must be"),
    ({"max_decode": 2.5}, "max_decode must be"),
    ({"size": 0}, "size must be"),
    ({"size": -5}, "size must be"),
    ({"size": 12.5}, "size must be"),
    ({"size": "224"}, "size must be"),
    ({"size": (224,)}, "size must be"),
    ({"size": (0, 10)}, "size must be"),
    ({"size": (10, 20, 30)}, "size must be"),
    ({"crop": 0}, "crop must be"),
    ({"crop": -1}, "crop must be"),
    ({"size": 32, "crop": 40}, "crop 40 is larger"),
    ({"size": (48, 30), "crop": 31}, "crop 31 is larger"),
]


@pytest.mark.parametrize("options, message", BAD_OPTIONS)
def test_frame_spec_refuses_bad_options_at_construction(options, message):
    from shortvid.decode import FrameSpec

    with pytest.raises(ValueError, match=message):
        FrameSpec(**options)


@pytest.mark.parametrize("options, message", BAD_OPTIONS)
def test_read_frames_refuses_the_same_options_before_opening(options, message, tmp_path):
    options = dict(options)
    with pytest.raises(ValueError, match=message):  # the file does not exist: nothing was opened
        read_frames(tmp_path / "missing.mp4", options.pop("k", 3), **options)


def test_frame_spec_accepts_every_documented_form():
    from shortvid.decode import FrameSpec

    assert FrameSpec(size=None, crop=500).crop == 500  # the frame's size is known only when decoding
    assert FrameSpec(size=(48, 30), crop=30).size == (48, 30)
    listed = FrameSpec(size=[48, 30])  # as JSON gives it: kept as a tuple, so the spec stays hashable
    assert listed.size == (48, 30) and hash(listed) == hash(FrameSpec(size=(48, 30)))
    assert FrameSpec.from_dict(listed.to_dict()) == listed
    assert FrameSpec(k=1, sampler="uniform", fill="none", size=1, crop=1).k == 1


def test_bad_arguments(small_videos):
    with pytest.raises(TypeError):
        read_frames(12345)
    with pytest.raises(InvalidVideoError, match="smaller than the crop"):  # size=None: checked on the frame
        read_frames(small_videos["v0.mp4"], 1, size=None, crop=100)


def test_frame_rate_is_none_when_the_headers_give_none():
    from fractions import Fraction

    from shortvid.decode.keyframes import frame_rate

    assert frame_rate(Fraction(30), Fraction(25), Fraction(60), Fraction(1, 90000)) == 30  # the average first
    assert frame_rate(None, Fraction(30), Fraction(60), Fraction(1, 90000)) == 30  # then the codec's (not a field rate)
    assert frame_rate(None, None, Fraction(30), Fraction(1, 61440)) == 30  # then the base rate
    assert frame_rate(None, None, Fraction(1000), Fraction(1, 1000)) is None  # only the clock: unknown
    assert frame_rate(None, None, None, Fraction(1, 1000)) is None
    assert frame_rate(Fraction(0), Fraction(0), None, None) is None


def test_fill_none_returns_each_keyframe_once(small_videos):
    two = read_frames(small_videos["v1.mp4"], 3, size=None, fill="none")  # keyframes at 0 and 2.5 s
    assert two.frames.shape[0] == 2 and two.times == pytest.approx((0.0, 2.5)) and two.decoded == 2
    four = read_frames(small_videos["v0.mp4"], 3, size=None, fill="none")  # enough keyframes: as usual
    assert four.times == read_frames(small_videos["v0.mp4"], 3, size=None).times


def test_skip_loop_filter_is_opt_in_and_close_to_the_default(small_videos):
    path = small_videos["v0.mp4"]
    default = read_frames(path, 3, size=32, crop=24)
    fast = read_frames(path, 3, size=32, crop=24, skip_loop_filter=True)
    assert fast.frames.shape == default.frames.shape == (3, 24, 24, 3) and fast.frames.dtype == np.uint8
    assert fast.times == default.times and fast.decoded == default.decoded
    # allowed to differ (no deblocking), but only slightly
    assert np.abs(fast.frames.astype(int) - default.frames.astype(int)).mean() < 4
    # the option stays with the call: the next default read gives the default pixels again
    assert np.array_equal(read_frames(path, 3, size=32, crop=24).frames, default.frames)
    seek = read_frames(small_videos["v1.mp4"], 3, size=32, fill="seek", skip_loop_filter=True)
    assert seek.frames.shape == (3, 56, 32, 3)


def test_frame_spec_records_skip_loop_filter_only_when_set(small_videos):
    from shortvid.decode import FrameSpec

    plain = FrameSpec(k=3, size=48)
    assert "skip_loop_filter" not in plain.to_dict()
    assert FrameSpec.from_dict(plain.to_dict()) == plain
    fast = FrameSpec(k=3, size=48, skip_loop_filter=True)
    assert fast.to_dict()["skip_loop_filter"] is True
    assert FrameSpec.from_dict(fast.to_dict()) == fast
    # the spec passed whole reads as its options given one by one, the loop filter skipped
    whole = read_frames(small_videos["v0.mp4"], fast)
    assert whole.frames.shape == (3, 84, 48, 3)
    assert np.array_equal(whole.frames, read_frames(small_videos["v0.mp4"], 3, size=48, skip_loop_filter=True).frames)
    assert not np.array_equal(whole.frames, read_frames(small_videos["v0.mp4"], plain).frames)


def test_read_frames_takes_a_spec_or_its_options_not_both(small_videos):
    from shortvid.decode import FrameSpec

    spec = FrameSpec(k=2, size=32, fill="none")
    assert read_frames(small_videos["v1.mp4"], spec).times == read_frames(small_videos["v1.mp4"], 2, size=32,
                                                                          fill="none").times
    assert read_frames(small_videos["v0.mp4"], k=2, size=32).frames.shape[0] == 2  # k by name, as the README has it
    with pytest.raises(TypeError, match="not both"):
        read_frames(small_videos["v0.mp4"], spec, size=48)
    with pytest.raises(TypeError):
        read_frames(small_videos["v0.mp4"], 3, colour="grey")  # not a FrameSpec option


def test_reused_scaler_gives_the_pixels_of_a_fresh_one(small_videos):
    # the default path scales with one swscale context per thread, on one thread
    reference = {round(t, 3): rgb for t, key, rgb in full_decode(small_videos["v0.mp4"], width=40, height=70) if key}
    for _ in range(2):
        clip = read_frames(small_videos["v0.mp4"], 3, size=(70, 40))
        for t, frame in zip(clip.times, clip.frames, strict=True):
            assert np.array_equal(frame, reference[round(t, 3)])


def test_fill_near_fills_empty_segments_from_the_gop_prefix(small_videos):
    # v1: keyframes at 0 and 2.5 s (10 fps); as with "seek", 2.5 s keeps the middle segment; the last
    # segment (centre 3.33 s) gets the frame nearest it within 8 frames of decoding past 2.5 s
    clip = read_frames(small_videos["v1.mp4"], 3, size=None, fill="near", max_decode=8)
    assert clip.keyframe == (True, True, False)
    assert clip.times[:2] == pytest.approx((0.0, 2.5)) and 2.5 < clip.times[2] <= 3.3 + 1e-6
    assert clip.decoded <= 2 + 8  # the lone keyframe, then its GOP's prefix
    reference = {round(t, 3): rgb for t, _, rgb in full_decode(small_videos["v1.mp4"])}
    for t, frame in zip(clip.times, clip.frames, strict=True):
        assert np.array_equal(frame, reference[round(t, 3)])
    # enough keyframes: every policy gives the keyframe sampler's frames
    v0 = read_frames(small_videos["v0.mp4"], 3, size=32, fill="near")
    plain = read_frames(small_videos["v0.mp4"], 3, size=32)
    assert v0.times == plain.times and v0.decoded == plain.decoded and np.array_equal(v0.frames, plain.frames)


def test_fill_near_keeps_its_cap_in_the_frame_spec():
    from shortvid.decode import DEFAULT_MAX_DECODE, FrameSpec

    plain = FrameSpec(k=3, size=48)
    assert "max_decode" not in plain.to_dict()  # specs stored before fill="near" existed compare equal
    near = FrameSpec(k=3, size=48, fill="near", max_decode=5)
    assert near.to_dict()["fill"] == "near" and near.to_dict()["max_decode"] == 5
    assert FrameSpec.from_dict(near.to_dict()) == near
    default = FrameSpec(fill="near")
    assert default.to_dict()["max_decode"] == DEFAULT_MAX_DECODE  # kept, so a later default changes nothing
    assert FrameSpec.from_dict(default.to_dict()) == default
    assert FrameSpec.from_dict({"k": 3, "fill": "near"}).max_decode == DEFAULT_MAX_DECODE


def test_cli_frame_options_take_fill_near_and_its_cap():
    from shortvid.cli import build_parser
    from shortvid.cli.options import frame_spec
    from shortvid.decode import DEFAULT_MAX_DECODE, FrameSpec
    from shortvid.errors import ShortvidError

    parser = build_parser()
    args = parser.parse_args(["probe", "v.mp4", "--fill", "near", "--max-decode", "4"])
    assert frame_spec(args) == FrameSpec(k=3, size=224, fill="near", max_decode=4)
    assert frame_spec(parser.parse_args(["extract", "data", "--out", "c"])).max_decode == DEFAULT_MAX_DECODE
    with pytest.raises(ShortvidError, match="max_decode must be"):  # checked by FrameSpec, as the API checks it
        frame_spec(parser.parse_args(["probe", "v.mp4", "--max-decode", "0"]))


def test_match_within_reach_takes_the_nearest_reachable_frames_in_order():
    from shortvid.decode import match_within_reach, near_reach

    times = [0.1, 0.2, 0.3, 0.4]
    every = [[True] * 4, [True] * 4]
    assert match_within_reach(times, [0.15, 0.35], every) == [0, 2]
    assert match_within_reach(times, [1.0, 2.0], every) == [2, 3]  # distinct, in order
    # the first target reaches only the first two frames
    assert match_within_reach(times, [1.0, 2.0], [[True, True, False, False], [True] * 4]) == [1, 3]
    assert match_within_reach(times, [0.1, 0.2, 0.3], [[False] * 4, [True] * 4, [True] * 4]) == [None, 1, 2]
    assert match_within_reach([], [1.0], [[]]) == [None]
    assert near_reach(3, 5) == [5, 10, 15]
    rng = np.random.default_rng(0)
    for _ in range(20):
        reach = near_reach(3, 5, "train", rng)
        assert all((i - 1) * 5 < r <= i * 5 for i, r in enumerate(reach, 1))
