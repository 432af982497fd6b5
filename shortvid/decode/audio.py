"""Sound: ``read_audio`` reads a video's audio track with PyAV, in-process, as a fixed-length mono waveform.

What is read is an ``AudioSpec``: ``seconds`` of audio (1 by default) at ``sample_rate`` (16 kHz mono float32),
taken from the start of the track or spread over it in ``windows`` equal windows centred in equal time
segments (as the TSN segments place frames). Only the packets needed are decoded: "start" stops reading
once the window and the low-pass filter's last taps are covered; "spread" seeks to each window and skips
the packets before it undecoded. The demuxer skips the other streams' packets (``Discard.all``) meanwhile.

Downmixing and resampling: where the source rate is a whole multiple of the output's (48 kHz to 16 kHz is
3:1) and the decoded samples are mono or stereo float or 16-bit, in NumPy (``_Decimator``): the channels
summed as FFmpeg's rematrixing sums them (stereo: ``(L + R) / sqrt(2)``), then a windowed-sinc low-pass
(Kaiser, beta 9, cut-off at 0.97 of the output's Nyquist frequency: FFmpeg's resampler's defaults, with
``2 * _HALF_TAPS * ratio + 1`` taps) evaluated only at every ``ratio``-th input sample. Each window's output
samples sit on its own time grid, to half an input sample. Otherwise (44.1 kHz, surround layouts, other
sample formats) FFmpeg's (``av.AudioResampler``: flt, mono, the spec's rate), fed decoded frames joined
into ~16384-sample frames rather than one call per decoded frame. The NumPy path skips FFmpeg's per-call
set-up (its filter graph) and calls; docs/decoding.md, "Sound", has what each path costs and how far apart
their samples are.

A video's sound never fails the video: no audio stream, silence, audio shorter than asked, a damaged
or refused stream all give a ``Sound`` whose ``status`` and ``mask`` say so (a model masks what is not
real sound). Only a file that cannot be opened at all raises, the usual ``DecodeError`` of
``shortvid.decode.opening``. ``DecodeLimits`` bounds what a crafted audio header can cost: its sample rate
and channel count (checked in the headers and on every decoded frame) and the seconds decoded per call.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Literal, get_args

import av
import numpy as np

from ..errors import InvalidVideoError
from .keyframes import demuxing, packet_time
from .melspec import matmul_pieces
from .opening import Source, open_container, resolve
from .options import DEFAULT_LIMITS, DecodeLimits

Placement = Literal["start", "spread"]
Status = Literal["ok", "none", "silent", "broken"]
MAX_AUDIO_SECONDS = 30.0  # an AudioSpec's longest: half the seconds a call may decode by default (DecodeLimits)
SILENCE = 1e-4  # peak amplitude (-80 dBFS) under which real samples count as silent
_PREROLL = 0.1  # seconds decoded before a spread window: the decoder's priming after a seek
_GIVE_UP = 64  # packets in a row that will not decode, after which a window stops reading (1.4 s of AAC)
_MARGIN = 0.01  # FFmpeg's path: seconds decoded past a window's end, what the resampler's filter holds back there
_PAD = 0.02  # FFmpeg's path: seconds of silence pushed after each run, more than the resampler's filter spans
_CHUNK = 16384  # input samples a resampler push: 2 s at 48 kHz cost FFmpeg ~2.5 ms in one frame, ~0.7 ms in these
# NumPy's path: the low-pass spans 2 * _HALF_TAPS output samples (97 taps at 3:1); _CUTOFF and _BETA are FFmpeg's
# resampler's defaults (cutoff 0.97, Kaiser window, beta 9)
_HALF_TAPS = 16
_BAND = 16  # output samples a row of the banded filter matrix: the filter as one matrix product (see _banded)
_CUTOFF = 0.97
_BETA = 9.0
_DECIMATED = {"fltp", "flt", "s16", "s16p"}  # decoded sample formats NumPy's path takes
# the layouts it takes, by name -> channels (PCM in Matroska decodes to "1 channels", an unspecified order)
_CHANNELS = {"mono": 1, "1 channels": 1, "stereo": 2, "2 channels": 2}
_STEREO_GAIN = math.sqrt(0.5)  # FFmpeg's stereo-to-mono rematrixing for float output: (L + R) / sqrt(2)


@dataclass(frozen=True)
class AudioSpec:
    """How sound is read, checked when made (a ``ValueError`` naming the option) and passed whole, as
    ``FrameSpec`` is for frames; ``to_dict`` is its stored form."""

    sample_rate: int = field(default=16000, metadata={"help": "output sample rate in Hz (8000 to 48000)"})
    # 1 s by default: with its log-mel, on top of read_frames, ~1.8 ms a video on a shared 2-core machine (1.5 when
    # quiet), 2 s ~3 ms, 4 s ~5 ms (BENCHMARKS.md, "Sound"); the audio encoders need about 1 s
    seconds: float = field(default=1.0, metadata={
        "help": f"seconds of audio per video, the output's length (above 0, at most {MAX_AUDIO_SECONDS:g})"})
    placement: Placement = field(default="start", metadata={
        "help": "start: the track's first seconds (one read, no seek); spread: `windows` windows centred in "
                "equal segments of the track (a seek each)", "choices": get_args(Placement)})
    windows: int = field(default=4, metadata={"help": "placement spread: how many windows (1 to 16)"})

    def __post_init__(self) -> None:
        if not _int_in(self.sample_rate, 8000, 48000):
            raise ValueError(f"sample_rate must be an integer from 8000 to 48000 Hz, got {self.sample_rate!r}")
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, (int, float)) \
                or not 0 < self.seconds <= MAX_AUDIO_SECONDS:
            raise ValueError(f"seconds must be above 0 and at most {MAX_AUDIO_SECONDS:g}, got {self.seconds!r}")
        if self.placement not in get_args(Placement):
            raise ValueError(f"placement must be one of {', '.join(map(repr, get_args(Placement)))}, "
                             f"got {self.placement!r}")
        if not _int_in(self.windows, 1, 16):
            raise ValueError(f"windows must be an integer from 1 to 16, got {self.windows!r}")
        if round(self.sample_rate * self.seconds) < self.windows:
            raise ValueError(f"{self.seconds} s at {self.sample_rate} Hz is under one sample a window")

    @property
    def length(self) -> int:
        """Samples in a ``Sound`` read with this spec."""
        return round(self.sample_rate * self.seconds)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AudioSpec":
        return cls(**{option.name: data[option.name] for option in dataclasses.fields(cls) if option.name in data})


@dataclass(frozen=True)
class Sound:
    """The audio read from one video: ``samples`` float32 mono ``[spec.length]`` at ``sample_rate``, zero
    where ``mask`` (bool, same shape) says no real sample was read. ``status``: "ok"; "none" (no audio
    stream); "silent" (real samples, all under ``SILENCE``); "broken" (nothing usable: a damaged or
    refused stream, or the time limit; ``mask`` all False), with ``reason`` saying why (and, for "ok",
    damaged packets skipped). ``starts``: each window's start in the track, seconds. The source's
    ``codec``, ``source_rate``, ``channels`` and ``duration`` come from its headers (None: no stream)."""

    samples: np.ndarray
    mask: np.ndarray
    sample_rate: int
    status: Status
    reason: str
    source: str
    codec: str | None = None
    source_rate: int | None = None
    channels: int | None = None
    duration: float | None = None
    starts: tuple[float, ...] = ()
    decode_ms: float = 0.0

    @property
    def valid(self) -> int:
        """How many samples are real."""
        return int(self.mask.sum())

    def to_dict(self) -> dict:
        """The JSON form (without the samples)."""
        return {"source": self.source, "status": self.status, "reason": self.reason, "valid": self.valid,
                "length": len(self.samples), "sample_rate": self.sample_rate, "codec": self.codec,
                "source_rate": self.source_rate, "channels": self.channels,
                "duration": None if self.duration is None else round(self.duration, 4),
                "starts": [round(t, 4) for t in self.starts], "decode_ms": round(self.decode_ms, 2)}


class _Unusable(Exception):
    """The audio stream cannot give samples: the reason becomes a "broken" Sound."""


def read_audio(source: Source, spec: AudioSpec | None = None, *, limits: DecodeLimits | None = None,
               timeout: float | None = 10.0) -> Sound:
    """The sound ``spec`` asks for from ``source`` (a path, bytes, a binary file or a URI, opened as
    ``read_frames`` opens it). Never raises for the audio: see ``Sound.status``. A source that cannot be
    opened raises the ``DecodeError`` ``read_frames`` would (``VideoNotFoundError``,
    ``InvalidVideoError``). ``limits``: the audio limits of ``DecodeLimits`` (sample rate, channels,
    seconds decoded); ``timeout``: seconds for the call, past which the Sound is "broken"."""
    spec = spec or AudioSpec()
    limits = limits or DEFAULT_LIMITS
    started = time.perf_counter()
    name, opened = resolve(source)
    try:
        try:
            container = open_container(name, opened, limits)
        except OSError as error:  # raised by a caller's file object while FFmpeg reads it
            raise InvalidVideoError(name, f"reading failed: {type(error).__name__}: {error}") from error
        with container:
            sound = sound_of(name, container, spec, limits, started + timeout if timeout else None)
    finally:
        if opened is not source and not isinstance(opened, str):
            opened.close()  # our own BytesIO; a caller's file stays open
    return dataclasses.replace(sound, decode_ms=(time.perf_counter() - started) * 1000)


def sound_of(name: str, container: av.container.InputContainer, spec: AudioSpec, limits: DecodeLimits,
             deadline: float | None, *, rewind: bool = False) -> Sound:
    """The ``Sound`` of an open container: ``read_audio``'s work, and ``read_frames(audio=...)``'s on the
    container it has just read frames from (``rewind``: seek to the track's start first, as the video's
    packets moved the demuxer). Never raises for the audio."""
    started = time.perf_counter()
    sound = _AudioReader(name, container, spec, limits, deadline, rewind).read()
    return dataclasses.replace(sound, decode_ms=(time.perf_counter() - started) * 1000)


class _AudioReader:
    """The state of one ``read_audio`` call on an open container."""

    def __init__(self, name: str, container: av.container.InputContainer, spec: AudioSpec, limits: DecodeLimits,
                 deadline: float | None, rewind: bool = False):
        self.name, self.container, self.spec, self.limits, self.deadline = name, container, spec, limits, deadline
        self.rewind = rewind
        self.samples = np.zeros(spec.length, dtype=np.float32)
        self.mask = np.zeros(spec.length, dtype=bool)
        self.decoded = 0.0  # seconds of source audio decoded
        self.skipped = 0  # packets that would not decode
        self.unseekable = 0  # windows whose seek failed
        # one converter a decoded kind (sample format, layout, rate), for the whole call
        self.converters: dict[tuple[str, str, int], _Decimator | _Resampler] = {}
        self.meta: dict = {}

    def sound(self, status: Status, reason: str, starts: tuple[float, ...] = ()) -> Sound:
        if status == "broken":
            self.samples[:] = 0
            self.mask[:] = False
        return Sound(self.samples, self.mask, self.spec.sample_rate, status, reason, self.name,
                     starts=starts, **self.meta)

    def read(self) -> Sound:
        if not self.container.streams.audio:
            return self.sound("none", "no audio stream")
        self.stream = self.container.streams.audio[0]
        self.ctx = self.stream.codec_context
        if self.ctx is None:
            return self.sound("broken", "the audio stream has no decoder (damaged header or unknown codec)")
        # the demuxer skips the other streams' packets while the sound is read (read_frames has read its own)
        others = [(stream, stream.discard) for stream in self.container.streams if stream is not self.stream]
        try:
            for stream, _ in others:
                stream.discard = av.stream.Discard.all
            return self._read()
        finally:
            for stream, discard in others:
                stream.discard = discard

    def _read(self) -> Sound:
        starts: tuple[float, ...] = ()
        try:
            self.tb = float(self.stream.time_base) if self.stream.time_base else 1 / (self.ctx.sample_rate or 48000)
            start, end = self._span()
            self.meta = {"codec": self.ctx.name, "source_rate": self.ctx.sample_rate or None,
                         "channels": self.ctx.layout.nb_channels if self.ctx.layout else None,
                         "duration": end - start if end > start else None}
            self._check(self.ctx.sample_rate or 0, self.meta["channels"] or 0, "the headers claim")
            self.ctx.skip_frame = "DEFAULT"  # the fast open skips every frame of its probe
            starts = self._window_starts(start, end)
            width = self.spec.length // len(starts)
            for i, at in enumerate(starts):
                last = i == len(starts) - 1
                slot = slice(i * width, self.spec.length if last else (i + 1) * width)
                got, real = self._read_window(at, slot.stop - slot.start,
                                              seek=self.spec.placement == "spread" or self.rewind)
                self.samples[slot.start:slot.start + len(got)] = got
                self.mask[slot.start:slot.start + len(got)] = real
        except _Unusable as error:
            return self.sound("broken", str(error), starts)
        except MemoryError:
            return self.sound("broken", "out of memory while decoding the audio", starts)
        except Exception as error:  # noqa: BLE001 - a damaged stream fails its sound alone, never the video
            return self.sound("broken", f"{type(error).__name__}: {error}", starts)
        note = "; ".join(text for count, text in ((self.skipped, f"{self.skipped} damaged audio packets skipped"),
                                                  (self.unseekable, f"{self.unseekable} windows could not be "
                                                                    "sought (masked)")) if count)
        if not self.mask.any():
            return self.sound("broken", note or "no audio decoded", starts)
        if max(float(self.samples.max()), -float(self.samples.min())) < SILENCE:
            return self.sound("silent", note, starts)
        return self.sound("ok", note, starts)

    def _span(self) -> tuple[float, float]:
        """The track's start and end, seconds: the stream's headers, else the container's duration."""
        start = self.stream.start_time * self.tb if self.stream.start_time is not None else 0.0
        if self.stream.duration:
            return start, start + self.stream.duration * self.tb
        if self.container.duration:
            return start, start + self.container.duration / av.time_base
        return start, start

    def _window_starts(self, start: float, end: float) -> tuple[float, ...]:
        """Where each window begins: the track's start, or with "spread", windows centred in equal
        segments of a track longer than ``seconds`` (one window from the start otherwise)."""
        seconds, windows = self.spec.seconds, self.spec.windows
        if self.spec.placement == "start" or end - start <= seconds:
            return (start,)
        width = seconds / windows
        segment = (end - start) / windows
        return tuple(min(max(start + (i + 0.5) * segment - width / 2, start), end - width) for i in range(windows))

    def _check(self, rate: int, channels: int, where: str) -> None:
        problem = self.limits.audio_problem(rate, channels)
        if problem:
            raise _Unusable(f"refused by the decode limits: {where} {problem}")

    def _check_time(self) -> None:
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise _Unusable("time limit exceeded while decoding the audio")

    def _read_window(self, at: float, want: int, *, seek: bool) -> tuple[np.ndarray, np.ndarray]:
        """``want`` output samples from ``at`` seconds on, and which are real: decode from the packet before it
        (seeking there with ``seek``) until the decoded audio covers the window and the converter's filter past
        its end, or the stream ends; each contiguous run of frames converted as one stream. Packets that will not
        decode end a run: the gap stays masked zeros and later samples keep their time."""
        rate = self.spec.sample_rate
        samples, real = np.zeros(want, dtype=np.float32), np.zeros(want, dtype=bool)
        if seek:
            try:
                # from the track start, no clamp at 0: the priming packets before it (negative times) decode
                target = int((at - _PREROLL) / self.tb)
                self.container.seek(target if self.rewind and self.spec.placement == "start" else max(0, target),
                                    stream=self.stream, backward=True)
            except av.FFmpegError:  # a damaged index: this window stays masked
                self.unseekable += 1
                return samples, real
            self.ctx.flush_buffers()
        runs: list[_Run] = []
        end = None  # the time the decoded audio must reach: the window's end and the converter's filter past it
        failures = 0  # packets in a row that would not decode
        decode, take, check_time = self.ctx.decode, self._take, self._check_time
        before = (at - _PREROLL) / self.tb  # packets ending before this (stream time base) are skipped undecoded
        with demuxing(self.container, self.stream) as packets:
            while end is None or runs[-1].clock < end:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.FFmpegError:
                    self.skipped += 1
                    break  # the file cannot be read further: what came out so far
                check_time()
                stamp = packet_time(packet)
                if stamp is not None and packet.duration and stamp + packet.duration < before:
                    continue  # before the window
                if packet.size == 0:  # the demuxer's final flush packet
                    break
                try:
                    frames = decode(packet)
                except av.FFmpegError:
                    self.skipped += 1
                    failures += 1
                    if failures >= _GIVE_UP:
                        break
                    continue
                failures = 0
                for frame in frames:
                    take(frame, runs, at)
                if end is None and runs:
                    end = max(at, runs[0].start) + want / rate + runs[0].converter.margin
        try:
            for frame in decode(None):  # the decoder's last frames (a damaged tail is dropped)
                self._take(frame, runs, at)
        except av.FFmpegError:
            self.skipped += 1
        finally:
            self.ctx.flush_buffers()
        if not runs:
            return samples, real
        runs[-1].finish()
        origin = max(at, runs[0].start)  # a track starting after ``at`` fills the window from its first sample
        for run in runs:
            offset, got = run.converter.place(run, origin, want)
            first = max(0, -offset)
            got = got[first:first + max(0, want - offset - first)]
            samples[offset + first:offset + first + len(got)] = got
            real[offset + first:offset + first + len(got)] = True
        return samples, real

    def _take(self, frame: av.AudioFrame, runs: list[_Run], at: float) -> None:
        """Add a decoded frame to the last run, or start a run after a gap (packets lost or refused) or at a
        change of sample format, layout or rate, checking the new kind against the limits."""
        count = frame.samples
        if not count:
            return
        source_rate = frame.sample_rate
        kind = (frame.format.name, frame.layout.name, source_rate)
        run = runs[-1] if runs else None
        if run is None or run.kind != kind:
            self._check(source_rate, frame.layout.nb_channels, "a decoded frame has")
        seconds = count / max(source_rate, 1)
        self.decoded += seconds
        if self.decoded > self.limits.max_audio_seconds:
            raise _Unusable(f"decoded over {self.limits.max_audio_seconds:g} s of audio without filling the window "
                            "(the limit of seconds decoded)")
        pts = frame.pts
        when = None if pts is None else pts * self.tb
        if run is None or run.kind != kind or (when is not None and when - run.clock > seconds / 2):
            if run is not None:
                run.finish()
            start = when if when is not None else (run.clock if run else at)
            converter = self.converters.get(kind)
            if converter is None:
                rate = self.spec.sample_rate
                converter = self.converters[kind] = (_Decimator(kind, rate) if _Decimator.takes(kind, rate)
                                                     else _Resampler(kind, rate))
            run = _Run(kind, start, start, converter, converter.taken)
            runs.append(run)
        run.converter.add(run, frame)
        run.clock = (when if when is not None else run.clock) + seconds


@dataclass
class _Run:
    """Decoded frames of one kind (sample format, layout, rate) without a gap, from ``start`` to ``clock``
    (seconds), given to ``converter``: NumPy's keeps views of their planes in ``pieces``; FFmpeg's resamples them
    as they come, from its input sample ``first`` on, and holds the output in ``samples`` once finished."""

    kind: tuple[str, str, int]
    start: float
    clock: float
    converter: _Decimator | _Resampler
    first: int
    pieces: list[np.ndarray] = field(default_factory=list)
    samples: np.ndarray | None = None

    def finish(self) -> None:
        self.converter.finish(self)


class _Decimator:
    """NumPy's downmix and integer-ratio decimation for one input kind (``takes`` says which): each frame's
    samples kept as they were decoded (views of its planes, no copy), then, for the window, the run's channels
    summed to mono once and the low-pass evaluated only at the input samples the window's output samples fall
    on, every ``ratio``-th."""

    @staticmethod
    def takes(kind: tuple[str, str, int], rate: int) -> bool:
        sample_format, layout, source_rate = kind
        return (sample_format in _DECIMATED and layout in _CHANNELS and source_rate >= rate
                and source_rate % rate == 0)

    def __init__(self, kind: tuple[str, str, int], rate: int):
        sample_format, layout, self.source_rate = kind
        self.ratio = self.source_rate // rate
        self.taps = _lowpass(self.ratio)
        self.centre = len(self.taps) // 2
        self.margin = (len(self.taps) - 1 - self.centre) / self.source_rate  # seconds of filter past a sample
        self.channels = _CHANNELS[layout]
        self.planes = self.channels if sample_format.endswith("p") else 1  # planes a frame holds, each a view
        self.dtype = np.int16 if sample_format.startswith("s16") else np.float32
        self.taken = 0  # each run's pieces are its own (FFmpeg's path counts one stream's input samples)

    def add(self, run: _Run, frame: av.AudioFrame) -> None:
        """Keep views of the frame's planes (interleaved: one plane of all its channels)."""
        count = frame.samples * (self.channels // self.planes)
        run.pieces.append(np.frombuffer(frame.planes[0], self.dtype, count))
        if self.planes == 2:
            run.pieces.append(np.frombuffer(frame.planes[1], self.dtype, count))

    def finish(self, run: _Run) -> None:
        pass

    def mono(self, run: _Run) -> np.ndarray:
        """The run's samples as one float32 mono array: 16-bit ones scaled by 1/32768 and stereo summed with
        FFmpeg's gain, as its sample conversion and rematrixing do."""
        pieces = run.pieces
        if self.planes == 2:
            left, right = np.concatenate(pieces[0::2]), np.concatenate(pieces[1::2])
            samples = np.add(left, right, dtype=np.float32)
        else:
            samples = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
            if self.channels == 2:  # interleaved
                samples = samples.reshape(-1, 2).sum(axis=1, dtype=np.float32)
        scale = (1 / 32768 if self.dtype is np.int16 else 1.0) * (_STEREO_GAIN if self.channels == 2 else 1.0)
        if scale != 1.0 or samples.dtype != np.float32:
            samples = np.multiply(samples, np.float32(scale), dtype=np.float32)
        return samples

    def place(self, run: _Run, origin: float, want: int) -> tuple[int, np.ndarray]:
        """The run's share of a window of ``want`` output samples from ``origin`` seconds: the index of its first
        output sample and those samples, each the low-pass at the input sample nearest its time. Only samples
        the run holds from their time on are given: the filter's last taps must lie in the run (zeros stand
        before its start, as FFmpeg's resampler starts a stream)."""
        empty = (0, np.zeros(0, dtype=np.float32))
        if not run.pieces:
            return empty
        samples = self.mono(run)
        ratio, taps, centre = self.ratio, self.taps, self.centre
        first_input = round((origin - run.start) * self.source_rate)  # the input sample at the window's output 0
        first = max(0, -(first_input // ratio))  # the run's first output sample
        last = min(want - 1, (len(samples) - len(taps) + centre - first_input) // ratio)
        if last < first:
            return empty
        count = last - first + 1
        low = first_input + ratio * first - centre
        segment = samples[max(low, 0):first_input + ratio * last - centre + len(taps)]
        if len(taps) == 1:
            return first, np.array(segment, dtype=np.float32)  # a copy: the pieces may be the frames' own memory
        # rows of _BAND outputs: row q holds the inputs of outputs q * _BAND on, stepping ratio * _BAND
        rows = -(-count // _BAND)
        needed = ratio * _BAND * rows + len(taps) - ratio
        segment = np.concatenate([np.zeros(max(0, -low), dtype=np.float32), segment,
                                  np.zeros(needed - len(segment) - max(0, -low), dtype=np.float32)])
        banded = _banded(ratio)
        inputs = np.lib.stride_tricks.as_strided(segment, shape=(rows, banded.shape[0]),
                                                 strides=(ratio * _BAND * segment.itemsize, segment.itemsize),
                                                 writeable=False)
        out = matmul_pieces(inputs, banded, np.empty((rows, _BAND), dtype=np.float32))
        return first, out.reshape(-1)[:count]


@functools.lru_cache(maxsize=8)
def _lowpass(ratio: int) -> np.ndarray:
    """The decimation filter for ``ratio``: a Kaiser-windowed sinc of ``2 * _HALF_TAPS * ratio + 1`` taps cut off
    at ``_CUTOFF`` of the output's Nyquist frequency, summing to 1 (a single tap of 1 for ``ratio`` 1)."""
    if ratio == 1:
        return np.ones(1, dtype=np.float32)
    half = _HALF_TAPS * ratio
    offsets = np.arange(-half, half + 1)
    taps = np.sinc(offsets * _CUTOFF / ratio) * np.kaiser(2 * half + 1, _BETA)
    taps = (taps / taps.sum()).astype(np.float32)
    taps.flags.writeable = False
    return taps


@functools.lru_cache(maxsize=8)
def _banded(ratio: int) -> np.ndarray:
    """The low-pass for ``ratio`` as a banded matrix ``[ratio * (_BAND - 1) + taps, _BAND]``, column ``b`` the
    taps shifted down ``ratio * b`` rows: a row of inputs times it gives ``_BAND`` output samples. One BLAS
    product then filters a window (1 s at 48 kHz: ~0.07 ms, against ~0.24 ms for an einsum of the same taps)."""
    taps = _lowpass(ratio)
    banded = np.zeros((ratio * (_BAND - 1) + len(taps), _BAND), dtype=np.float32)
    for column in range(_BAND):
        banded[ratio * column:ratio * column + len(taps), column] = taps
    banded.flags.writeable = False
    return banded


class _Resampler:
    """FFmpeg's resampler (flt, mono, the output rate) for one input kind, fed as one continuous stream:
    decoded frames are pushed as they come, joined into frames of about ``_CHUNK`` samples (one copy of their
    planes; a few held at a time), and each run is followed by ``_PAD`` of silence that keeps the next
    run's first samples clean, so a run's output is exactly where its input began in the stream. A run keeps
    only the samples the resampler gave before its silence: the last few, filtered partly over that silence,
    are dropped (masked), as a stream cut there gives them."""

    margin = _MARGIN

    def __init__(self, kind: tuple[str, str, int], rate: int):
        self.format, self.layout, self.source_rate = kind
        self.rate = rate
        audio_format = av.AudioFormat(self.format)
        self.size = audio_format.bytes * (1 if audio_format.is_planar else av.AudioLayout(self.layout).nb_channels)
        self.resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        self.queue: list[av.AudioFrame] = []  # frames added, not yet pushed
        self.queued = 0  # their samples
        self.fed = 0  # input samples pushed
        self.out: list[np.ndarray] = []  # output samples not yet handed out, from ``base`` on
        self.base = 0

    @property
    def taken(self) -> int:
        """Input samples added so far: where the next run begins."""
        return self.fed + self.queued

    def add(self, run: _Run, frame: av.AudioFrame) -> None:
        self.queue.append(frame)
        self.queued += frame.samples
        if self.queued >= _CHUNK:
            self._push()

    def finish(self, run: _Run) -> None:
        """The output of the run, whose input began at sample ``run.first`` and ends with the frames added."""
        if run.samples is not None:
            return
        self._push()
        start = round(run.first * self.rate / self.source_rate)
        length = round((self.fed - run.first) * self.rate / self.source_rate)
        length = min(length, self.base + sum(map(len, self.out)) - start)  # made with the run's samples all round
        self._push(silence=round(self.source_rate * _PAD))
        pending = np.concatenate(self.out) if self.out else np.zeros(0, dtype=np.float32)
        begin = min(len(pending), max(0, start - self.base))
        cut = min(len(pending), begin + max(0, length))
        self.out, self.base = [pending[cut:]], self.base + cut
        run.samples = pending[begin:cut]

    def place(self, run: _Run, origin: float, want: int) -> tuple[int, np.ndarray]:
        """The run's output and the index in the window (from ``origin`` seconds) of its first sample."""
        return round((run.start - origin) * self.rate), run.samples

    def _push(self, *, silence: int = 0) -> None:
        """Resample the queued frames joined into one frame, or ``silence`` samples of it; keep the output."""
        samples = silence or self.queued
        if not samples:
            return
        joined = av.AudioFrame(format=self.format, layout=self.layout, samples=samples)
        for index, plane in enumerate(joined.planes):
            plane.update(bytes(samples * self.size) if silence else b"".join(
                [memoryview(frame.planes[index])[:frame.samples * self.size] for frame in self.queue]))
        joined.sample_rate = self.source_rate
        self.out.extend(piece.to_ndarray().reshape(-1) for piece in self.resampler.resample(joined))
        self.fed += samples
        if not silence:
            self.queue, self.queued = [], 0


def _int_in(value: object, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
