"""The decode limits (docs/security.md, "The limits"): ``DecodeLimits`` at each of its boundaries, and
each place ``read_frames`` checks it: the headers when the file opens, FFmpeg's decoder (opened with
``max_pixels``), each decoded frame, and the time limit. Fast: ``make mutation`` runs these against the
limits code (docs/testing.md)."""

import math

import numpy as np
import pytest

from shortvid.decode import (
    CorruptVideoError,
    DecodeLimits,
    DecoderTuning,
    DecodeTimeoutError,
    VideoTooLargeError,
    read_frames,
)
from shortvid.synth.damage import parse_boxes, with_coded_size

# Each refused size is refused by one check only: over the width or height limit alone, over the pixel
# limit alone (fitting the sides), over the aspect limit alone; each passing size sits on a boundary.
LIMITS = DecodeLimits(max_width=4000, max_height=2000, max_pixels=6_000_000, max_aspect=4)
BOUNDARIES = [  # (width, height, why it is refused, or None)
    (4000, 1500, None),  # the widest picture
    (4001, 1400, "over the 4000x2000 limit"),
    (3000, 2000, None),  # the tallest, and exactly the pixel limit
    (2900, 2001, "over the 4000x2000 limit"),
    (3001, 2000, "6.0 megapixels, over the 6.0 limit"),
    (2000, 3001, "over the 4000x2000 limit"),  # turned, it would fit: not without either_way
    (4000, 1000, None),  # exactly the aspect limit
    (4000, 999, "aspect ratio 4:1, over the 4:1 limit"),
    (999, 4000, "over the 4000x2000 limit"),
    (1, 4, None),
    (1, 5, "aspect ratio 5:1, over the 4:1 limit"),
    (5, 1, "aspect ratio 5:1, over the 4:1 limit"),
    (0, 10, None),  # a side not known yet: checked again on the decoded frame
    (10, 0, None),
    (-1, 10, None),
    (10, -1, None),
]


@pytest.mark.parametrize("width, height, problem", BOUNDARIES)
def test_each_limit_at_its_boundary(width, height, problem):
    assert LIMITS.problem(width, height) == problem


def test_either_way_admits_a_picture_that_fits_turned():
    """The headers' size is checked before the rotation is known: a portrait 1080x1920 passes a
    landscape 1920x1080 limit then (the decoded, upright frame is checked without turning)."""
    hd = DecodeLimits(max_width=1920, max_height=1080)
    assert hd.problem(1080, 1920) == "over the 1920x1080 limit"
    assert hd.problem(1080, 1920, either_way=True) is None
    assert hd.problem(1920, 1080, either_way=True) is None
    assert hd.problem(1080, 1921, either_way=True) == "over the 1920x1080 limit"
    assert hd.problem(1081, 1920, either_way=True) == "over the 1920x1080 limit"
    assert hd.problem(2000, 1000, either_way=True) == "over the 1920x1080 limit"  # neither way
    assert LIMITS.problem(2000, 3001, either_way=True) == "6.0 megapixels, over the 6.0 limit"  # turned, still too many


def test_the_defaults_admit_real_uploads_and_say_what_they_are():
    limits = DecodeLimits()
    assert limits.to_dict() == {"max_width": 8192, "max_height": 8192, "max_pixels": 7680 * 4320, "max_aspect": 8.0,
                                "max_sample_rate": 192_000, "max_channels": 16, "max_audio_seconds": 60.0}
    assert DecodeLimits(**limits.to_dict()) == limits
    for width, height in ((7680, 4320), (4320, 7680), (3840, 2160), (1080, 1920), (8192, 1024), (1024, 8192), (16, 16)):
        assert limits.problem(width, height) is None, (width, height)
    assert limits.problem(8193, 1100) == "over the 8192x8192 limit"
    assert limits.problem(7680, 4321) == "33.2 megapixels, over the 33.2 limit"
    assert limits.problem(8192, 1023) == "aspect ratio 8:1, over the 8:1 limit"


@pytest.mark.parametrize("field", ["max_width", "max_height", "max_pixels"])
def test_sides_and_pixels_must_be_at_least_one(field):
    assert getattr(DecodeLimits(**{field: 1}), field) == 1
    with pytest.raises(ValueError, match="decode limits must be positive and max_aspect at least 1"):
        DecodeLimits(**{field: 0})


@pytest.mark.parametrize("aspect", [0.99, 0.0, -2.0, math.nan])
def test_the_aspect_limit_must_be_at_least_one(aspect):
    with pytest.raises(ValueError, match="decode limits must be positive and max_aspect at least 1"):
        DecodeLimits(max_aspect=aspect)
    assert DecodeLimits(max_aspect=1).problem(10, 10) is None and DecodeLimits(max_aspect=1).problem(10, 11)


# --- where read_frames checks them (small_videos["v0.mp4"]: 64x112 frames, no rotation) ------------

def refusal(source, **options) -> str:
    with pytest.raises(VideoTooLargeError) as raised:
        read_frames(source, 3, size=32, **options)
    assert raised.value.source == str(source)
    return raised.value.cause


def test_the_headers_are_checked_when_the_file_opens(small_videos):
    assert refusal(small_videos["v0.mp4"], limits=DecodeLimits(max_width=32, max_height=32)) == \
        "the headers claim frames of 64x112: over the 32x32 limit"
    assert refusal(small_videos["v0.mp4"], limits=DecodeLimits(max_pixels=64 * 112 - 1)) == \
        "the headers claim frames of 64x112: 0.0 megapixels, over the 0.0 limit"
    at_the_limit = DecodeLimits(max_pixels=64 * 112)
    assert read_frames(small_videos["v0.mp4"], 3, size=32, limits=at_the_limit).frames.shape[0] == 3


def test_each_decoded_frame_is_checked_upright(small_videos):
    """Turned, 64x112 fits 112x64, so the headers pass; the decoded frame, upright, does not."""
    assert refusal(small_videos["v0.mp4"], limits=DecodeLimits(max_width=112, max_height=64)) == \
        "a frame is 64x112: over the 112x64 limit"
    clip = read_frames(small_videos["v0.mp4"], 3, size=None, limits=DecodeLimits(max_width=64, max_height=112))
    assert clip.frames.shape == (3, 112, 64, 3)


@pytest.fixture(scope="module")
def claims(small_videos) -> dict[str, bytes]:
    """v0 with an SPS claiming another size than its headers, and v0 with moov and mdat swapped
    (nothing decodes, the headers' size stays)."""
    good = small_videos["v0.mp4"].read_bytes()
    boxes = parse_boxes(good)
    raw = [good[box.offset:box.offset + box.size] for box in boxes]
    kinds = [box.kind for box in boxes]
    moov, mdat = kinds.index(b"moov"), kinds.index(b"mdat")
    raw[moov], raw[mdat] = raw[mdat], raw[moov]
    swapped = b"".join(raw)
    return {"640x480": with_coded_size(good, 640, 480), "16000x16000": with_coded_size(good, 16000, 16000),
            "swapped": swapped}


def test_the_decoder_refuses_pictures_over_the_pixel_limit(claims, tmp_path):
    """The headers say 64x112; the stream's parameter sets claim more. FFmpeg's decoder, opened with
    ``max_pixels``, refuses the picture before allocating it, and the size it claimed is reported."""
    for name in ("640x480", "16000x16000"):
        (tmp_path / f"{name}.mp4").write_bytes(claims[name])
    assert refusal(tmp_path / "16000x16000.mp4") == "the stream claims frames of 16000x16000: over the 8192x8192 limit"
    assert refusal(tmp_path / "640x480.mp4", limits=DecodeLimits(max_pixels=100_000)) == \
        "the stream claims frames of 640x480: 0.3 megapixels, over the 0.1 limit"
    assert read_frames(claims["640x480"], 3, size=32).frames.shape == (3, 32, 43, 3)  # within the limits: decoded


def test_a_failed_decode_checks_the_claimed_size_either_way(claims):
    """After a failed decode the size the stream claims is checked turned either way, as the headers are:
    64x112 within a 112x64 limit is no refusal, and the file fails for what it is."""
    with pytest.raises(CorruptVideoError, match="no decodable keyframe"):
        read_frames(claims["swapped"], 3, size=32, limits=DecodeLimits(max_width=112, max_height=64))


def test_the_time_limit(small_videos):
    with pytest.raises(DecodeTimeoutError) as raised:
        read_frames(small_videos["v0.mp4"], 3, size=32, timeout=1e-9)
    assert (raised.value.source, raised.value.cause) == (str(small_videos["v0.mp4"]),
                                                         "time limit exceeded while decoding")
    assert read_frames(small_videos["v0.mp4"], 3, size=32, timeout=None).frames.shape[0] == 3  # no limit


def test_decoder_threads_give_the_same_pixels(small_videos):
    """The tuning reaches the decoder along with the pixel limit: threaded decoding, same frames."""
    default = read_frames(small_videos["v0.mp4"], 3, size=32)
    for tuning in (DecoderTuning(thread_count=2, thread_type="SLICE"),
                   DecoderTuning(thread_count=2, thread_type="FRAME")):
        assert np.array_equal(read_frames(small_videos["v0.mp4"], 3, size=32, tuning=tuning).frames, default.frames)


def test_limits_reach_every_sampler(small_videos):
    """The uniform sampler and fill="seek" decode more frames than the keyframes: each is checked."""
    small = DecodeLimits(max_width=112, max_height=64)
    for options in ({"sampler": "uniform"}, {"fill": "seek"}, {"fill": "near"}):
        assert refusal(small_videos["v1.mp4"], limits=small, **options) == "a frame is 64x112: over the 112x64 limit"
