"""The keyframe index: what the container says about the video stream without decoding it.

The headers give the frame rate and a first span; the keyframes come from the container's sample index
(MP4/MOV: free, built at open) or from one pass over the demuxed packets (other containers: no
decoding), and each value is recorded with where it came from. A chosen keyframe's packet, or the first
packets of its GOP, are then found by seeking, still without decoding.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, Iterator, Literal

import av

# Where a value of ``VideoInfo`` came from, cheapest first: the stream headers as FFmpeg reports
# them, the container's sample index (MP4/MOV), one pass over the demuxed packets, decoded frames.
Provenance = Literal["header", "index", "packets", "decoded"]
_LAST_KEYFRAME_SLACK = 1.0  # seconds past the last keyframe's decode time to aim its seek at


@dataclass
class Keyframe:
    """One keyframe of the video stream: its presentation time (seconds) and, once read, its packet."""

    time: float
    packet: av.Packet | None  # None: listed by the container's index, not read yet
    dts: int | None = None  # where the index lists it (decode time, stream time base)
    following: int | None = None  # the next listed keyframe's decode time


class KeyframeIndex:
    """The keyframes and span of one open video stream, each value's source in ``sources`` (the dict the
    caller reports). Made from the headers alone; ``find`` lists the keyframes. ``check_time`` is called
    while packets are demuxed, to end a call past its deadline."""

    def __init__(self, container: av.container.InputContainer, stream: av.video.stream.VideoStream,
                 sources: dict[str, Provenance], check_time: Callable[[], None]):
        self.container = container
        self.stream = stream
        self.sources = sources
        self.check_time = check_time
        self.tb = float(stream.time_base) if stream.time_base else 1 / 90000
        self.keyframes: list[Keyframe] = []
        self.kind: Literal["container", "packets", "none"] = "none"  # where the keyframes were found
        self.fps = frame_rate(stream.average_rate, stream.codec_context.framerate, stream.base_rate,
                              stream.time_base)
        if self.fps is not None:
            sources["fps"] = "header"
        self.start, self.end = self._header_span()
        sources["start"] = "header"
        if self.end > self.start:
            sources["duration"] = "header"

    def _header_span(self) -> tuple[float, float]:
        s = self.stream
        start = s.start_time * self.tb if s.start_time is not None else 0.0
        if s.duration:
            return start, start + s.duration * self.tb
        if self.container.duration:
            return start, start + self.container.duration / 1e6
        return start, start

    # -- finding keyframes ----------------------------------------------------------------
    def find(self) -> None:
        """List the keyframes: from the container's sample index where it has one, else from the packets."""
        if not self._from_sample_index():
            self.from_packets()

    def _from_sample_index(self) -> bool:
        """MP4/MOV keep a full sample table with sync flags: list its keyframes without reading them.

        A keyframe's presentation time is its decode time plus the stream's reorder delay; only
        the packets chosen are read (``indexed_packet``), and one listed but cut off or unreadable is
        dropped then, so the choice is made again without it."""
        key_dts = self.read_sample_index()
        if not key_dts:
            return False
        for position, dts in enumerate(key_dts):
            following = key_dts[position + 1] if position + 1 < len(key_dts) else None
            self.keyframes.append(Keyframe((dts + self.reorder) * self.tb, None, dts, following))
        self.kind = "container"
        self.sources["keyframes"] = "index"
        return True

    def read_sample_index(self) -> list[int] | None:
        """Where the demuxer's sample index is complete (MP4/MOV build it whole at open): set the
        video's span from it and return the keyframes' decode times; else None."""
        if "mov" not in self.container.format.name:
            return None
        entries = self.stream.index_entries
        key_dts, first, last, count = [], None, None, 0
        for entry in entries:  # in decode order
            last = entry.timestamp
            if first is None:
                first = last
            count += 1
            if entry.is_keyframe and not entry.is_discard:
                key_dts.append(last)
        if not count:
            return None
        # Presentation is later than decoding by the reorder delay, which the stream's start
        # time (the first presentation time) gives. The span comes from every sample, not from
        # header counts.
        self.reorder = (self.stream.start_time or 0) - first
        frame = (last - first) / (count - 1) if count > 1 else (1 / self.fps / self.tb if self.fps else 0)
        self.start = (first + self.reorder) * self.tb
        self.end = (last + self.reorder + frame) * self.tb
        self.sources.update(start="index", duration="index")
        return key_dts

    def from_packets(self) -> None:
        """Demux every packet of the video stream (no decoding) and keep the keyframe ones; the span
        from the packets' times."""
        first = last = None
        count = 0
        try:
            with demuxing(self.container, self.stream) as packets:
                for packet in packets:
                    if packet.size == 0:
                        continue
                    ts = packet_time(packet)
                    if ts is None:
                        continue
                    count += 1
                    if count % 64 == 0:
                        self.check_time()
                    first = ts if first is None else min(first, ts)
                    end = ts + (packet.duration or 0)
                    last = end if last is None else max(last, end)
                    if packet.is_keyframe:
                        self.keyframes.append(Keyframe(ts * self.tb, packet))
        except av.FFmpegError:
            if not self.keyframes:
                raise
            # A damaged or cut file: keep the keyframes read so far.
        self.keyframes.sort(key=lambda kf: kf.time)
        self.kind = "packets"
        self.sources["keyframes"] = "packets"
        if first is not None:
            self.start = first * self.tb
            self.end = max(last * self.tb, self.start + (1 / self.fps if self.fps else 0))
            self.sources.update(start="packets", duration="packets")

    # -- reading a keyframe's packets -----------------------------------------------------
    def aim(self, ts: int, following: int | None) -> int:
        """Where to seek for the keyframe at stream time ``ts``, the next one at ``following``.

        Between the two, so demuxers that seek on decode time and those that seek on presentation
        time both land on it. The last keyframe has no next: aim past it by _LAST_KEYFRAME_SLACK, since
        MP4 seeks on presentation time, which B-frames and edit lists put after the decode time;
        aiming at the decode time lands a keyframe early and demuxes a whole GOP to reach it."""
        return int(ts + _LAST_KEYFRAME_SLACK / self.tb) if following is None else (ts + following) // 2

    def seeking(self, aim: int) -> Iterator[Iterator[av.Packet]]:
        """The stream's packets from a backward seek to ``aim``, then, if the caller asks for more (the
        rare fallback), from the start; each pass closed when the caller moves on or stops."""
        for target in (aim, None):
            if target is None:
                self.container.seek(0, backward=True, any_frame=False)
            else:
                self.container.seek(target, stream=self.stream, backward=True, any_frame=False)
            with demuxing(self.container, self.stream) as packets:
                yield packets

    def indexed_packet(self, dts: int, following: int | None) -> av.Packet | None:
        """Seek to the keyframe with decode time ``dts`` and return its packet, reading no other frame."""
        aim = self.aim(dts, following)
        try:
            with contextlib.closing(self.seeking(aim)) as passes:  # closed however the loop ends
                for packets in passes:
                    for packet in packets:
                        self.check_time()
                        if packet.dts is None or packet.size == 0:
                            continue
                        if packet.dts == dts:
                            return packet
                        if packet.dts > dts:
                            break
        except av.FFmpegError:
            pass
        return None

    def prefix_packets(self, index: int, limit: int) -> list[av.Packet]:
        """The first ``limit`` packets (decode order) of keyframe ``index``'s GOP, its own first; fewer
        where the next keyframe or the end comes sooner; none if the seek cannot find the keyframe.
        Only demuxed: nothing is decoded here."""
        keyframe = self.keyframes[index]
        if keyframe.dts is not None:  # MP4/MOV: the index entry, found as indexed_packet finds it
            aim = self.aim(keyframe.dts, keyframe.following)

            def is_it(packet: av.Packet) -> bool:
                return packet.dts == keyframe.dts

            def past_it(packet: av.Packet) -> bool:
                return packet.dts is not None and packet.dts > keyframe.dts
        else:  # other containers: the keyframe's packet, read in the packet pass, and its time
            key_ts = packet_time(keyframe.packet)
            following = self.keyframes[index + 1].time / self.tb if index + 1 < len(self.keyframes) else None
            aim = self.aim(key_ts, None if following is None else int(following))

            def is_it(packet: av.Packet) -> bool:
                return packet.is_keyframe and packet_time(packet) == key_ts

            def past_it(packet: av.Packet) -> bool:
                return packet.is_keyframe and packet_time(packet) > key_ts
        found: list[av.Packet] = []
        try:
            with contextlib.closing(self.seeking(aim)) as passes:  # closed however the loop ends
                for packets in passes:
                    for packet in packets:
                        self.check_time()
                        if packet.size == 0 or (packet.dts is None and packet.pts is None):
                            continue
                        if found:
                            if packet.is_keyframe or len(found) >= limit:
                                return found
                            found.append(packet)
                        elif is_it(packet):
                            found.append(packet)
                        elif past_it(packet):
                            break
                    if found:
                        return found  # the end of the stream
        except av.FFmpegError:
            pass  # a damaged file: the packets read so far
        return found


@contextlib.contextmanager
def demuxing(container: av.container.InputContainer,
             stream: av.video.stream.VideoStream) -> Iterator[Iterator[av.Packet]]:
    """``container.demux(stream)``, closed on leaving. PyAV frees the generator's read packet only
    when the generator is closed or exhausted; one dropped after a ``break`` or ``return`` leaks it.
    Before they were closed, a failed decode of a file with ``moov`` and ``mdat`` swapped leaked a
    few hundred bytes of heap a call, and those small blocks pinned the decoder's freed buffers, so
    RSS grew far more (tests/test_hardening.py holds both; BENCHMARKS.md, "Hostile input", has the
    numbers)."""
    packets = container.demux(stream)
    try:
        yield packets
    finally:
        packets.close()


def frame_rate(average, codec, base, time_base) -> float | None:
    """The nominal frame rate the headers give, or None: the container's average rate, else the
    codec's own (e.g. H.264 timing info), else FFmpeg's base rate unless that is only the inverse of
    the time base (FFmpeg's stand-in when it knows no rate, e.g. 1000 for Matroska's millisecond clock)."""
    for rate in (average, codec):
        if rate:
            return float(rate)
    if base and not (time_base and base == 1 / time_base):
        return float(base)
    return None


def packet_time(packet: av.Packet) -> int | None:
    """A packet's presentation time (stream time base), its decode time where it has none."""
    return packet.pts if packet.pts is not None else packet.dts
