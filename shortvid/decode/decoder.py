"""Decoding: ``read_frames`` reads a ``FrameSpec``'s frames from a short video with PyAV, decoding as little
as possible.

The keyframe sampler never decodes a non-key frame: it finds the keyframes without decoding
(``shortvid.decode.keyframes``), chooses one per TSN segment (``shortvid.decode.sampling``), and decodes
each chosen keyframe packet on its own. Scaling and pixel conversion happen in swscale
(``shortvid.decode.scaling``); rotation metadata is applied so frames come out upright. See
``docs/decoding.md`` for the measured reasons.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Literal

import av
import numpy as np

from ..errors import (
    CorruptVideoError,
    DecodeError,
    DecodeTimeoutError,
    InvalidVideoError,
    NoVideoStreamError,
    UnexpectedDecodeError,
    VideoTooLargeError,
)
from .audio import AudioSpec, Sound, sound_of
from .keyframes import KeyframeIndex, Provenance, demuxing, packet_time
from .opening import Source, open_container, resolve
from .options import DEFAULT_LIMITS, DEFAULT_TUNING, DecodeLimits, DecoderTuning, FrameSpec
from .sampling import (
    Mode,
    match_to_targets,
    match_within_reach,
    near_reach,
    place_times,
    segment_targets,
)
from .scaling import center_crop, output_size, scale_frame

# motion_order="shown": packets demuxed past a keyframe beyond the frames taken, to find the next frames in
# presentation order where B-frames are decoded after the P-frame shown after them (x264 puts up to 3 in a row).
_MOTION_REORDER = 4
# motion_order="decoded": packets demuxed past the frames taken, for an open GOP's leading pictures (decoded after
# the keyframe, shown before it: not motion frames)
_MOTION_LEADING = 2


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a video, each from where it was measured (index or packets, not header counts).

    ``sources`` says where each measured value came from: ``"header"`` (the stream parameters FFmpeg
    reports), ``"index"`` (the MP4/MOV sample table), ``"packets"`` (one pass over the demuxed
    packets) or ``"decoded"`` (the decoded frames), keyed by ``fps``, ``start``, ``duration``,
    ``keyframes`` (count and times), ``width``, ``height`` and ``rotation``. A field it leaves out was
    not measured: ``fps`` is then None, and ``keyframes`` 0 (the uniform sampler does not look for
    keyframes where the index or the header gives the span).
    """

    source: str
    container: str
    codec: str
    width: int  # upright, after rotation
    height: int
    rotation: int  # counter-clockwise degrees applied to make frames upright
    fps: float | None  # the headers' nominal frame rate; None when they give none
    start: float  # presentation time of the first frame, seconds
    duration: float  # seconds, from packet timestamps where known
    keyframes: int  # keyframes found in the video stream
    keyframe_times: tuple[float, ...]
    index: Literal["container", "packets", "none"]  # where the keyframes were found
    sources: dict[str, Provenance] = field(hash=False)  # field -> where its value came from

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "container": self.container,
            "codec": self.codec,
            "width": self.width,
            "height": self.height,
            "rotation": self.rotation,
            "fps": None if self.fps is None else round(self.fps, 3),
            "start": round(self.start, 4),
            "duration": round(self.duration, 4),
            "keyframes": self.keyframes,
            "keyframe_times": [round(t, 4) for t in self.keyframe_times],
            "index": self.index,
            "sources": dict(self.sources),
        }


@dataclass(frozen=True)
class Clip:
    """The frames read from one video and how they were obtained."""

    frames: np.ndarray  # [k, H, W, 3] uint8 RGB
    times: tuple[float, ...]  # presentation time of each frame, seconds
    keyframe: tuple[bool, ...]  # whether each frame was a keyframe
    info: VideoInfo
    decode_ms: float
    decoded: int = field(default=0)  # frames the decoder produced, all calls included
    # FrameSpec.motion > 0: the frames after each frame's keyframe (FrameSpec.motion_order says which), in
    # presentation order, [k, motion, H, W, 3]
    # uint8; where its GOP has fewer, the last one read (the keyframe where none) is repeated and
    # motion_valid says how many are real. None with motion=0.
    motion: np.ndarray | None = None
    motion_times: tuple[tuple[float, ...], ...] | None = None  # [k][motion] seconds
    motion_valid: tuple[int, ...] | None = None  # [k] real motion frames of each frame
    sound: Sound | None = None  # read_frames(audio=...): the video's sound, read from the same open file

    def to_dict(self) -> dict:
        """The JSON form ``shortvid probe`` prints; with motion frames each frame lists their times and
        how many are real."""
        frames = [{"time": round(t, 4), "keyframe": k} for t, k in zip(self.times, self.keyframe, strict=True)]
        if self.motion_times is not None and self.motion_valid is not None:
            for entry, times, valid in zip(frames, self.motion_times, self.motion_valid, strict=True):
                entry.update(motion=[round(t, 4) for t in times], motion_valid=valid)
        out = {
            "path": self.info.source,
            "keyframes": self.info.keyframes,
            "frames": frames,
            "decode_ms": round(self.decode_ms, 2),
            "decoded": self.decoded,
            "info": self.info.to_dict(),
        }
        if self.sound is not None:
            out["sound"] = self.sound.to_dict()
        return out


def read_frames(
    source: Source,
    spec: FrameSpec | int | None = None,
    *,
    mode: Mode = "test",
    rng: np.random.Generator | None = None,
    timeout: float | None = 10.0,
    limits: DecodeLimits | None = None,
    tuning: DecoderTuning | None = None,
    audio: AudioSpec | None = None,
    **options,
) -> Clip:
    """The frames ``spec`` asks for from ``source`` (a path, bytes, a binary file or a URI): ``k`` upright
    RGB frames, exactly ``k`` unless ``fill="none"``.

    spec: a ``FrameSpec``, passed whole; or ``k`` with the other options of a ``FrameSpec`` as keywords
        (``read_frames(path, 3, size=224)``), which make one. The options:
    sampler: ``"keyframes"`` takes, in each of ``k`` equal time segments, the keyframe nearest the
        segment centre (``mode="test"``) or a random keyframe of the segment (``mode="train"``),
        decoding only those keyframe packets. ``"uniform"`` takes the frame on screen at each
        segment's centre (or a random time in it), seeking and decoding forward: the usual TSN way.
    fill: when the video has fewer keyframes than ``k``: ``"repeat"`` (default) repeats keyframes,
        costing nothing; ``"seek"`` decodes a frame at the centre of each segment left without a
        keyframe, costing a decode from the previous keyframe (docs/decoding.md); ``"near"`` gives
        each such segment the frame nearest its centre among the cheap ones: those at most
        ``max_decode`` frames (decode order) past the keyframe before it, ``i * max_decode`` for the
        ``i``-th segment filled after the same keyframe, which one forward decode of that GOP's prefix
        serves; ``"none"`` returns each keyframe once, so fewer than ``k`` frames (the adaptive model: a
        TSN averages over however many frames it gets, and the model runs on no repeated frame).
        With at least ``k`` keyframes every policy gives the keyframe sampler's frames.
    max_decode: the cap of ``fill="near"`` (``DEFAULT_MAX_DECODE``): a video with ``n`` keyframes
        decodes at most ``(k - n) * max_decode`` frames more than ``"repeat"``, whatever the file holds
        (again for the others when a keyframe will not decode and the choice is made without it).
        Each keyframe of the video is placed first, as with ``"seek"``; each segment left over gets a
        frame of the prefix of the keyframe before it, read by seeking to that keyframe (by its index
        entry in MP4/MOV, by its time in other containers, whose keyframes came from the packet pass)
        and demuxing at most the cap's packets, whose presentation times pick the frames before any is
        decoded; then the prefix is decoded once, up to the last frame picked, skipping the frames no
        later frame refers to (FFmpeg's ``NONREF``) unless picked. Train mode draws each
        segment's reach within its last ``max_decode`` frames (``near_reach``). A segment that gets no
        frame this way (none before the first keyframe, a GOP shorter than the segments it fills, a
        prefix that would not demux or decode) repeats its neighbour's, as ``"repeat"`` would.
        ``Clip.keyframe`` says which frames are keyframes.
    size: an int resizes the short side to it, keeping the aspect ratio; ``(height, width)``
        resizes to exactly that; ``None`` keeps the video's size. ``crop`` then takes a centre
        square of that side.
    skip_loop_filter: skip the codec's in-loop (deblocking) filter (FFmpeg ``skip_loop_filter=all``):
        a faster decode whose pixels differ slightly from the default (mean absolute difference well
        under 1 on H.264 keyframes); with ``sampler="uniform"`` or ``fill="seek"`` the difference
        grows along the frames decoded from the keyframe. Off by default; a ``FrameSpec`` records it.
    motion: also read ``motion`` frames after each chosen keyframe (0-4; 0, the default, reads none):
        ``Clip.motion`` ``[k, motion, H, W, 3]``, scaled, turned and cropped as the keyframes are,
        ``Clip.motion_times`` (each frame's own presentation time) and ``Clip.motion_valid``, from one forward
        decode of the keyframe's GOP prefix under the same limits and time limit; a GOP with fewer repeats its
        last frame read and ``motion_valid`` counts the real ones (docs/decoding.md, "Motion frames"). With the
        keyframe sampler and ``fill`` "repeat" or "none".
    motion_order: which frames follow a keyframe, always returned in presentation order. ``"shown"`` (the
        default): the ``motion`` frames shown right after it, consecutive; with B-frames, the frames they are
        predicted from are decoded too (x264's pyramid decodes I0 P4 B2 b1, so frame 1 costs 3 more decodes).
        ``"decoded"``: the first ``motion`` frames decoded after it that are shown after it, and no other frame:
        with B-frames not consecutive (``motion=1`` is the P-frame, 4 frames on with x264's defaults;
        ``motion_times`` says when each was shown); without B-frames the same frames as ``"shown"``.

    mode: ``"test"`` (segment centres) or ``"train"`` (random in each segment, drawn from ``rng``).
    timeout: seconds for the whole call; a file that takes longer raises ``DecodeTimeoutError``.
    limits: the largest frames decoded (``DecodeLimits()`` by default); beyond them
        ``VideoTooLargeError``.
    tuning: how the decoder and the scaler run (``DEFAULT_TUNING``: the fastest settings that give the
        same pixels); for measuring other settings.
    audio: also read the sound this ``AudioSpec`` asks for, from the file already open (``Clip.sound``;
        what ``read_audio`` gives, without opening the file again). The sound never fails the video:
        ``Sound.status`` says what was found; it shares the call's time limit and ``limits``.

    Raises a subclass of ``DecodeError`` naming the source and the cause, whatever goes wrong with
    the file: a failure shortvid does not classify is an ``UnexpectedDecodeError``. Bad options are a
    ``ValueError`` (``FrameSpec``'s check), raised before the source is touched.
    """
    spec = _frame_spec(spec, options)
    started = time.perf_counter()
    deadline = started + timeout if timeout else None
    limits = limits or DEFAULT_LIMITS
    name, opened = resolve(source)
    tuning = tuning or DEFAULT_TUNING
    if spec.skip_loop_filter:
        tuning = dataclasses.replace(tuning, options=(*tuning.options, ("skip_loop_filter", "all")))
    reader = _Reader(name, deadline, spec, tuning, limits)
    try:
        with open_container(name, opened, limits) as container:
            reader.attach(container)
            if spec.sampler == "keyframes":
                frames, times, keys = reader.keyframe_frames(mode, rng)
            else:
                frames, times, keys = reader.uniform_frames(mode, rng)
            info = reader.info()
            sound = None if audio is None else sound_of(name, container, audio, limits, deadline, rewind=True)
    except DecodeError:
        raise
    except av.FFmpegError as error:
        raise CorruptVideoError(name, f"decoding failed: {error}") from error
    except MemoryError:
        raise CorruptVideoError(name, "out of memory while decoding") from None
    except OSError as error:  # raised by a caller's file object while FFmpeg reads it
        raise InvalidVideoError(name, f"reading failed: {type(error).__name__}: {error}") from error
    except Exception as error:  # a damaged file must fail alone, with a typed error
        raise UnexpectedDecodeError(name, f"{type(error).__name__}: {error}") from error
    finally:
        if opened is not source and not isinstance(opened, str):
            opened.close()  # our own BytesIO; a caller's file stays open
    motion = {}
    if reader.motion is not None:
        images, motion_times, valid = reader.motion
        motion = {"motion": np.stack(images), "motion_times": motion_times, "motion_valid": valid}
    return Clip(
        frames=np.stack(frames),
        times=tuple(times),
        keyframe=tuple(keys),
        info=info,
        decode_ms=(time.perf_counter() - started) * 1000,
        decoded=reader.decoded,
        sound=sound,
        **motion,
    )


def _frame_spec(spec: FrameSpec | int | None, options: dict) -> FrameSpec:
    """``read_frames``' spec: the ``FrameSpec`` given, else one made of ``k`` and the keyword options."""
    if isinstance(spec, FrameSpec):
        if options:
            raise TypeError(f"read_frames takes a FrameSpec or its options, not both: {sorted(options)}")
        return spec
    return FrameSpec(**options) if spec is None else FrameSpec(spec, **options)


class _Reader:
    """The state of one ``read_frames`` call on an open container."""

    def __init__(self, name: str, deadline: float | None, spec: FrameSpec, tuning: DecoderTuning = DEFAULT_TUNING,
                 limits: DecodeLimits = DEFAULT_LIMITS):
        self.name = name
        self.spec = spec
        self.tuning = tuning
        self.limits = limits
        self.deadline = deadline
        self.decoded = 0
        self.sources: dict[str, Provenance] = {}
        self.upright: tuple[int, int] | None = None  # (width, height) of the last decoded frame, upright
        # FrameSpec.motion > 0: per frame, its motion frames [motion, H, W, 3], their times and how many are real
        self.motion: tuple[list[np.ndarray], tuple[tuple[float, ...], ...], tuple[int, ...]] | None = None

    # -- set-up ---------------------------------------------------------------------------
    def attach(self, container: av.container.InputContainer) -> None:
        self.container = container
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            raise NoVideoStreamError(self.name, f"no video stream (streams: {', '.join(kinds)})")
        self.stream = container.streams.video[0]
        self.ctx = self.stream.codec_context
        if self.ctx is None:  # e.g. a damaged sample description (stsd) or handler (hdlr) box
            raise CorruptVideoError(self.name, "the video stream has no decoder (damaged header or unknown codec)")
        self._check_size(self.ctx.width, self.ctx.height, either_way=True, where="the headers claim frames of")
        self._tune(self.ctx)
        self.index = KeyframeIndex(container, self.stream, self.sources, self._check_time)
        self.tb = self.index.tb
        self.rotation = 0

    def _tune(self, ctx: av.CodecContext) -> None:
        """Apply the tuning and the pixel limit to a decoder not yet opened (PyAV opens it at its
        first decode)."""
        ctx.thread_count = self.tuning.thread_count
        if self.tuning.thread_type:
            ctx.thread_type = self.tuning.thread_type
        ctx.options = {**ctx.options, **dict(self.tuning.options), "max_pixels": str(self.limits.max_pixels)}

    def _check_size(self, width: int, height: int, *, either_way: bool = False, where: str = "a frame is") -> None:
        problem = self.limits.problem(width, height, either_way)
        if problem:
            raise VideoTooLargeError(self.name, f"{where} {width}x{height}: {problem}")

    def _check_decoder_size(self) -> None:
        """After a failed decode: the decoder refuses a picture over the pixel limit, and keeps the
        size the stream claimed."""
        self._check_size(self.ctx.width, self.ctx.height, either_way=True, where="the stream claims frames of")

    def _check_time(self) -> None:
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise DecodeTimeoutError(self.name, "time limit exceeded while decoding")

    # -- the keyframe sampler -------------------------------------------------------------
    def keyframe_frames(self, mode: Mode, rng: np.random.Generator | None) -> tuple[list, list, list]:
        """The keyframe sampler's frames, times and keyframe flags (``read_frames`` says how ``fill``
        completes them)."""
        k, fill, max_decode = self.spec.k, self.spec.fill, self.spec.max_decode
        index = self.index
        index.find()
        self.ctx.skip_frame = "NONKEY"
        if mode == "train" and rng is None and fill == "near":
            rng = np.random.default_rng()  # one generator for the targets and the reaches
        decoded: dict[int, tuple[np.ndarray, float]] = {}
        following: dict[int, list[tuple[np.ndarray, float]]] = {}  # motion: keyframe -> the frames after it
        while True:
            if not index.keyframes:
                raise CorruptVideoError(self.name, "no decodable keyframe")
            times = [kf.time for kf in index.keyframes]
            targets = segment_targets(index.start, index.end, k, mode, rng, candidates=times)
            if fill in ("seek", "near") and len(times) < k:
                placed = place_times(times, targets)
            elif fill == "none" and len(times) < k:
                placed = list(range(len(times)))  # each keyframe once: fewer than k frames
            else:
                placed = match_to_targets(times, targets)
            wanted = sorted({i for i in placed if i is not None})
            # fill="near": the empty segments after each keyframe, filled from its GOP's prefix
            gops = _segments_after(placed) if fill == "near" and len(times) < k else {}
            filled: dict[int, tuple[np.ndarray, float]] = {}
            failed = []
            for i in wanted:
                if i in gops:
                    reaches = near_reach(len(gops[i]), max_decode, mode, rng)
                    ok = self._decode_prefix(i, gops[i], [float(targets[s]) for s in gops[i]], reaches, decoded,
                                             filled)
                elif self.spec.motion:
                    ok = i in decoded or self._decode_motion(i, decoded, following)
                else:
                    ok = i in decoded or self._decode_keyframe(i, decoded)
                if not ok:
                    failed.append(i)
            if not failed:
                break
            # Drop keyframes that would not decode and choose again among the others.
            keep = [i for i in range(len(index.keyframes)) if i not in failed]
            decoded = {keep.index(i): v for i, v in decoded.items() if i in keep}
            following = {keep.index(i): v for i, v in following.items() if i in keep}
            index.keyframes = [index.keyframes[i] for i in keep]
        self.ctx.skip_frame = "DEFAULT"
        chosen: list[tuple[np.ndarray, float, bool] | None] = []
        for slot, position in enumerate(placed):
            if position is not None:
                chosen.append((*decoded[position], True))
            elif fill == "near":
                chosen.append((*filled[slot], False) if slot in filled else None)
            else:
                chosen.append((*self._frame_at(float(targets[slot])), False))
        if fill == "near":  # a segment left without a frame repeats its neighbour's, as "repeat" would
            chosen = _repeat_neighbours(chosen)
        frames = [image for image, _, _ in chosen]
        if self.spec.motion:
            self.motion = _motion_frames([decoded[i] for i in placed], [following[i] for i in placed],
                                         self.spec.motion)
        return frames, [t for _, t, _ in chosen], [key for _, _, key in chosen]

    def _decode_motion(self, index: int, decoded: dict, following: dict) -> bool:
        """Decode keyframe ``index`` and its ``spec.motion`` motion frames in one forward decode of its GOP's
        prefix: the keyframe's picture goes to ``decoded``, the others, in time order, to ``following`` (fewer
        where the GOP is shorter or a packet will not decode). Which frames (``spec.motion_order``): "decoded",
        the first ``motion`` packets after the keyframe in decode order that are shown after it (no other frame
        is decoded); "shown", the ``motion`` earliest shown after it among the first ``motion + _MOTION_REORDER``
        packets, so B-frames shown before the P-frame decoded ahead of them are found (frames no picked one
        refers to are skipped). Open GOPs: frames decoded after the keyframe but shown before it are not
        after it. False where the keyframe itself will not decode."""
        self._check_time()
        keyframe = self.index.keyframes[index]
        shown = self.spec.motion_order == "shown"
        spare = _MOTION_REORDER if shown else _MOTION_LEADING
        packets = self.index.prefix_packets(index, 1 + self.spec.motion + spare)
        if not packets:  # the seek did not find it: the keyframe alone, with no motion frames
            following[index] = []
            return self._decode_keyframe(index, decoded)
        key_ts = packet_time(packets[0])
        keyframe.packet, keyframe.time = packets[0], key_ts * self.tb
        later = [stamp for stamp in map(packet_time, packets[1:]) if stamp is not None and stamp > key_ts]
        wanted = sorted(sorted(later)[: self.spec.motion] if shown else later[: self.spec.motion])
        key, images = self._decode_from_keyframe(packets, set(wanted), keyframe.time)
        if key is None:
            return False
        decoded[index] = key
        following[index] = [(images[stamp], stamp * self.tb) for stamp in wanted if stamp in images]
        return True

    def _decode_prefix(self, index: int, slots: list[int], targets: list[float], reaches: list[int],
                       decoded: dict, filled: dict) -> bool:
        """fill="near": decode keyframe ``index`` and, from its GOP, the frame nearest each target within
        its reach (frames after the keyframe, decode order), in one forward decode of the GOP's prefix.
        The keyframe's picture goes to ``decoded``, each slot's to ``filled`` (a slot whose frame does
        not come out stays empty). False where the keyframe itself is missing or will not decode."""
        self._check_time()
        keyframes = self.index.keyframes
        keyframe = keyframes[index]
        packets = self.index.prefix_packets(index, max(reaches) + 1)
        if not packets:  # the seek did not find it: the keyframe alone, as the other policies read it
            return self._decode_keyframe(index, decoded)
        key_ts = packet_time(packets[0])
        keyframe.packet, keyframe.time = packets[0], key_ts * self.tb
        later = keyframes[index + 1].time if index + 1 < len(keyframes) else float("inf")
        # The prefix's presentation times come from its packets, before anything is decoded: the
        # index holds decode times only, and B-frames are shown in another order.
        stamps = [packet_time(packet) for packet in packets]  # (position: decode order, stamp) -> time order
        candidates = sorted((stamp, position) for position, stamp in enumerate(stamps)
                            if position and keyframe.time < stamp * self.tb < later)
        reachable = [[position <= reach for _, position in candidates] for reach in reaches]
        picks = match_within_reach([stamp * self.tb for stamp, _ in candidates], targets, reachable)
        # stamp -> slot
        wanted = {candidates[j][0]: slot for slot, j in zip(slots, picks, strict=True) if j is not None}
        key, images = self._decode_from_keyframe(packets, set(wanted), keyframe.time)
        if key is None:
            return False
        decoded[index] = key
        for stamp, image in images.items():
            filled[wanted[stamp]] = (image, stamp * self.tb)
        return True

    def _decode_from_keyframe(self, packets: list[av.Packet], wanted: set[int],
                              key_time: float) -> tuple[tuple[np.ndarray, float] | None, dict[int, np.ndarray]]:
        """Decode ``packets`` (a GOP's prefix, its keyframe first) up to the last one whose presentation
        time is in ``wanted``: the keyframe's picture and time (None where it will not decode) and the
        pictures of ``wanted``, by time (those that came out). Checks the time limit at each packet."""
        key_ts = packet_time(packets[0])
        stamps = [packet_time(packet) for packet in packets]
        last = max((position for position, stamp in enumerate(stamps) if position and stamp in wanted), default=0)
        key: tuple[np.ndarray, float] | None = None
        images: dict[int, np.ndarray] = {}

        def keep(frame: av.VideoFrame) -> None:
            nonlocal key
            self.decoded += 1
            if key is None and (frame.pts == key_ts or frame.pts is None):
                key = (self._to_rgb(frame), self._time_of(frame, key_time))
            elif frame.pts in wanted:
                images[frame.pts] = self._to_rgb(frame)

        try:
            for position, packet in enumerate(packets[: last + 1]):
                self._check_time()
                # A frame no later frame refers to (FFmpeg's NONREF) is skipped unless it is one of those
                # taken: the same pixels for the others, a third fewer frames decoded with B-frames.
                self.ctx.skip_frame = "DEFAULT" if not position or stamps[position] in wanted else "NONREF"
                for frame in self.ctx.decode(packet):
                    keep(frame)
            for frame in self.ctx.decode(None):
                keep(frame)
        except av.FFmpegError:
            self._check_decoder_size()  # damaged non-key packets: keep what came out
        finally:
            self.ctx.flush_buffers()
            self.ctx.skip_frame = "NONKEY"
        if key is None:
            self._check_decoder_size()
        return key, images

    def _decode_keyframe(self, index: int, decoded: dict) -> bool:
        """Decode one keyframe packet alone; False if it is damaged or missing."""
        self._check_time()
        keyframe = self.index.keyframes[index]
        if keyframe.packet is None:
            keyframe.packet = self.index.indexed_packet(keyframe.dts, keyframe.following)
            if keyframe.packet is None:  # listed but cut off or unreadable
                return False
            keyframe.time = packet_time(keyframe.packet) * self.tb
        try:
            frames = self.ctx.decode(keyframe.packet) + self.ctx.decode(None)
        except av.FFmpegError:
            self._check_decoder_size()
            return False
        finally:
            self.ctx.flush_buffers()
        self.decoded += len(frames)
        if not frames:
            self._check_decoder_size()
            return False
        frame = frames[0]
        t = self._time_of(frame, keyframe.time)
        decoded[index] = (self._to_rgb(frame), t)
        return True

    # -- seeking to a time ----------------------------------------------------------------
    def _frame_at(self, target: float) -> tuple[np.ndarray, float]:
        """Seek to the keyframe before ``target`` and decode forward to the frame on screen then."""
        self.container.seek(int(target / self.tb), stream=self.stream, backward=True, any_frame=False)
        self.ctx.flush_buffers()
        shown = None
        try:
            with demuxing(self.container, self.stream) as packets:
                for packet in packets:
                    self._check_time()
                    for frame in self.ctx.decode(packet):
                        self.decoded += 1
                        t = self._time_of(frame, target)
                        if shown is not None and t > target + 1e-6:
                            return self._to_rgb(shown[0]), shown[1]
                        shown = (frame, t)
        except av.FFmpegError:
            if shown is None:
                self._check_decoder_size()
                raise
        if shown is None:
            raise CorruptVideoError(self.name, f"no frame decodable at {target:.3f} s")
        return self._to_rgb(shown[0]), shown[1]

    def uniform_frames(self, mode: Mode, rng: np.random.Generator | None) -> tuple[list, list, list]:
        """The uniform sampler's frames, times and keyframe flags: the frame on screen at each target."""
        index = self.index
        index.read_sample_index()
        if index.end <= index.start:
            index.from_packets()  # no duration in the header: measure it
        targets = segment_targets(index.start, index.end, self.spec.k, mode, rng)
        frames, times, keys = [], [], []
        for target in targets:
            image, t = self._frame_at(float(target))
            frames.append(image)
            times.append(t)
            keys.append(False)
        return frames, times, keys

    def _time_of(self, frame: av.VideoFrame, fallback: float) -> float:
        # Frames from a bare codec context carry the packet's pts but no time base.
        return frame.pts * self.tb if frame.pts is not None else fallback

    # -- pixels ---------------------------------------------------------------------------
    def _to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """Scale and convert in swscale, then turn upright (a quarter turn is a numpy view copy)."""
        rotation = int(frame.rotation or 0) % 360
        self.rotation = rotation
        quarter = rotation in (90, 270)
        up_w, up_h = (frame.height, frame.width) if quarter else (frame.width, frame.height)
        self._check_size(up_w, up_h)
        self.upright = (up_w, up_h)
        self.sources.update(width="decoded", height="decoded", rotation="decoded")
        out_h, out_w = output_size(up_h, up_w, self.spec.size)
        if quarter:
            image = scale_frame(frame, out_h, out_w, self.tuning)
        else:
            image = scale_frame(frame, out_w, out_h, self.tuning)
        if rotation:
            image = np.rot90(image, k=rotation // 90)
        crop = self.spec.crop
        if crop:
            if crop > min(image.shape[:2]):  # only with size=None: the video's own size
                raise InvalidVideoError(self.name, f"frames of {image.shape[1]}x{image.shape[0]} are smaller than "
                                                   f"the crop of {crop}")
            image = center_crop(image, crop)
        return np.ascontiguousarray(image)

    def info(self) -> VideoInfo:
        """What was learnt about the video, each value with its source."""
        index = self.index
        if self.upright is not None:
            w, h = self.upright
        else:  # nothing decoded: the headers' size, as stored
            w, h = self.stream.codec_context.width, self.stream.codec_context.height
            self.sources.update(width="header", height="header")
        return VideoInfo(
            source=self.name,
            container=self.container.format.name,
            codec=self.stream.codec_context.name,
            width=w,
            height=h,
            rotation=self.rotation,
            fps=index.fps,
            start=index.start,
            duration=max(index.end - index.start, 0.0),
            keyframes=len(index.keyframes),
            keyframe_times=tuple(kf.time for kf in index.keyframes),
            index=index.kind,
            sources=dict(self.sources),
        )


def _motion_frames(keys: list[tuple[np.ndarray, float]], following: list[list[tuple[np.ndarray, float]]],
                   motion: int) -> tuple[list[np.ndarray], tuple[tuple[float, ...], ...], tuple[int, ...]]:
    """Each frame's ``motion`` frames as one array, their times and how many are real: a GOP with fewer
    repeats its last frame read (the keyframe where it has none), so every array has the same shape."""
    images, times, valid = [], [], []
    for (key_image, key_time), frames in zip(keys, following, strict=True):
        padded = frames + [frames[-1] if frames else (key_image, key_time)] * (motion - len(frames))
        images.append(np.stack([image for image, _ in padded]))
        times.append(tuple(t for _, t in padded))
        valid.append(len(frames))
    return images, tuple(times), tuple(valid)


def _segments_after(placed: list[int | None]) -> dict[int, list[int]]:
    """For each placed keyframe, the empty segments between it and the next placed one (fill="near")."""
    after: dict[int, list[int]] = {}
    last = None
    for slot, index in enumerate(placed):
        if index is not None:
            last = index
        elif last is not None:
            after.setdefault(last, []).append(slot)
    return after


def _repeat_neighbours(chosen: list) -> list:
    """Each empty slot takes the previous slot's entry (the next one's before the first), so the
    frames stay in time order."""
    out = list(chosen)
    for slot in range(len(out)):
        if out[slot] is None and slot:
            out[slot] = out[slot - 1]
    first = next(entry for entry in out if entry is not None)
    return [first if entry is None else entry for entry in out]
