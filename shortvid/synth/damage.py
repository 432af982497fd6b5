"""Damaged and crafted copies of a good MP4, for hardening tests and ``bench/fuzz.py``.

A platform's uploads include truncated transfers, flipped bits, broken or reordered MP4 boxes and
files crafted to claim huge frames. ``damaged_copies(data, count, seed)`` makes such copies of one
good file, each named by what was done to it; ``with_coded_size`` rewrites the H.264 sequence
parameter set (SPS) in the ``avcC`` box so the stream claims another frame size while the headers
and the slices stay as they were (the 1.7 KB file that decodes into a 65520x16 frame), and
``with_header_size`` changes only what the ``tkhd`` and ``stsd`` headers claim.

The MP4 is parsed into a box tree and written back with sizes recomputed; chunk offsets (``stco``,
``co64``) follow the media data when a box before it changes size, so a rewritten file is a valid
file with exactly the one change asked for.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from typing import Callable, Iterator

# Boxes whose payload is a list of boxes.
_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"dinf", b"edts", b"udta", b"mvex", b"moof",
               b"traf", b"mfra"}
# Sample entries (inside stsd) whose payload is a fixed prefix then boxes (avcC, pasp, btrt, esds...).
_VISUAL_ENTRIES = {b"avc1", b"avc3", b"hvc1", b"hev1", b"mp4v", b"vp09", b"av01"}
_VISUAL_PREFIX = 78  # SampleEntry (8) + VisualSampleEntry fields (70)
_AUDIO_ENTRIES = {b"mp4a", b"Opus", b"ac-3"}
_AUDIO_PREFIX = 28


@dataclass
class Box:
    """One MP4 box: its type, the bytes before its children (or all its payload), and its children."""

    kind: bytes
    prefix: bytes = b""  # the payload, or for boxes with children the part before them
    children: list["Box"] | None = None
    offset: int = 0  # where it started in the parsed file
    size: int = 0  # its size there, header included

    def serialise(self) -> bytes:
        payload = self.prefix + b"".join(child.serialise() for child in self.children or ())
        size = 8 + len(payload)
        if size > 0xFFFFFFFF:
            return struct.pack(">I4sQ", 1, self.kind, size + 8) + payload
        return struct.pack(">I4s", size, self.kind) + payload

    def walk(self) -> Iterator["Box"]:
        yield self
        for child in self.children or ():
            yield from child.walk()


def parse_boxes(data: bytes, start: int = 0, end: int | None = None) -> list[Box]:
    """The box tree of ``data[start:end]``; ``ValueError`` where a size runs past its parent."""
    end = len(data) if end is None else end
    boxes, offset = [], start
    while offset + 8 <= end:
        size, kind = struct.unpack(">I4s", data[offset:offset + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8:offset + 16])[0]
            header = 16
        elif size == 0:
            size = end - offset
        if size < header or offset + size > end:
            raise ValueError(f"box {kind!r} at {offset} claims {size} bytes")
        body_start, body_end = offset + header, offset + size
        box = Box(kind, offset=offset, size=size)
        prefix = _child_prefix(kind)
        if prefix is not None and body_end - body_start >= prefix:
            box.prefix = data[body_start:body_start + prefix]
            box.children = parse_boxes(data, body_start + prefix, body_end)
        else:
            box.prefix = data[body_start:body_end]
        boxes.append(box)
        offset = body_end
    return boxes


def _child_prefix(kind: bytes) -> int | None:
    if kind in _CONTAINERS:
        return 0
    if kind == b"stsd":
        return 8  # version, flags, entry count
    if kind in _VISUAL_ENTRIES:
        return _VISUAL_PREFIX
    if kind in _AUDIO_ENTRIES:
        return _AUDIO_PREFIX
    return None


def serialise_boxes(boxes: list[Box]) -> bytes:
    """Write a (changed) tree back, moving chunk offsets by however much the boxes before the media
    data grew or shrank."""
    out = [box.serialise() for box in boxes]
    positions, where = [], 0
    for raw in out:
        positions.append(where)
        where += len(raw)
    media = [(box, positions[i]) for i, box in enumerate(boxes) if box.kind == b"mdat"]
    if media:
        mdat, new_offset = media[0]
        shift = new_offset - mdat.offset
        if shift:
            for box in boxes:
                for inner in box.walk():
                    _shift_chunk_offsets(inner, shift)
            out = [box.serialise() for box in boxes]
    return b"".join(out)


def _shift_chunk_offsets(box: Box, shift: int) -> None:
    if box.kind not in (b"stco", b"co64") or len(box.prefix) < 8:
        return
    count = struct.unpack(">I", box.prefix[4:8])[0]
    width, code = (4, ">I") if box.kind == b"stco" else (8, ">Q")
    body = bytearray(box.prefix)
    for i in range(min(count, (len(body) - 8) // width)):
        at = 8 + i * width
        value = struct.unpack(code, body[at:at + width])[0]
        body[at:at + width] = struct.pack(code, max(0, value + shift))
    box.prefix = bytes(body)


def find(boxes: list[Box], kind: bytes) -> list[Box]:
    return [box for top in boxes for box in top.walk() if box.kind == kind]


# --- H.264 sequence parameter sets -------------------------------------------------------------------

class _Bits:
    def __init__(self, data: bytes):
        self.data, self.position = data, 0

    def bit(self) -> int:
        byte = self.data[self.position >> 3]
        value = byte >> (7 - (self.position & 7)) & 1
        self.position += 1
        return value

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = value << 1 | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("invalid exp-Golomb code")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        value = self.ue()
        return (value + 1) // 2 if value & 1 else -(value // 2)


class _Writer:
    def __init__(self):
        self.bits: list[int] = []

    def put(self, value: int, n: int) -> None:
        self.bits.extend(value >> (n - 1 - i) & 1 for i in range(n))

    def ue(self, value: int) -> None:
        code = value + 1
        length = code.bit_length()
        self.put(0, length - 1)
        self.put(code, length)

    def copy(self, reader: _Bits, start: int, end: int) -> None:
        saved = reader.position
        reader.position = start
        self.bits.extend(reader.bit() for _ in range(end - start))
        reader.position = saved

    def finish(self) -> bytes:
        bits = self.bits + [1]  # rbsp_stop_one_bit, then zeros to a byte
        bits += [0] * (-len(bits) % 8)
        return bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8))


def _unescape(nal: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for byte in nal:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def _escape(rbsp: bytes) -> bytes:
    out, zeros = bytearray(), 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


def rewrite_sps(nal: bytes, width: int, height: int) -> bytes:
    """The SPS NAL unit ``nal`` claiming a ``width`` x ``height`` frame (multiples of 16; cropping
    removed), every other field kept."""
    if width % 16 or height % 16 or width < 16 or height < 16:
        raise ValueError("the coded size is whole macroblocks: width and height multiples of 16")
    header, rbsp = nal[:1], _unescape(nal[1:])
    reader = _Bits(rbsp)
    profile = reader.bits(8)
    reader.bits(16)  # constraint flags, level
    reader.ue()  # seq_parameter_set_id
    if profile in _HIGH_PROFILES:
        if reader.ue() == 3:  # chroma_format_idc
            reader.bit()
        reader.ue()
        reader.ue()
        reader.bit()
        if reader.bit():  # seq_scaling_matrix_present_flag
            for index in range(8):
                if reader.bit():
                    last = next_scale = 8
                    for _ in range(16 if index < 6 else 64):
                        if next_scale:
                            next_scale = (last + reader.se() + 256) % 256
                        last = next_scale or last
    reader.ue()  # log2_max_frame_num_minus4
    order = reader.ue()
    if order == 0:
        reader.ue()
    elif order == 1:
        reader.bit()
        reader.se()
        reader.se()
        for _ in range(reader.ue()):
            reader.se()
    reader.ue()  # max_num_ref_frames
    reader.bit()  # gaps_in_frame_num_value_allowed_flag
    size_at = reader.position
    reader.ue()
    reader.ue()
    frame_mbs_only = reader.bit()
    if not frame_mbs_only:
        reader.bit()
    reader.bit()  # direct_8x8_inference_flag
    if reader.bit():  # frame_cropping_flag
        for _ in range(4):
            reader.ue()
    rest_at = reader.position
    # The rest (VUI) up to the rbsp_stop_one_bit: the last 1 bit of the payload.
    last_one = max(i for i in range(len(rbsp) * 8) if rbsp[i >> 3] >> (7 - (i & 7)) & 1)
    writer = _Writer()
    writer.copy(reader, 0, size_at)
    writer.ue(width // 16 - 1)
    writer.ue(height // 16 // (2 - frame_mbs_only) - 1)
    writer.put(frame_mbs_only, 1)
    if not frame_mbs_only:
        writer.put(0, 1)
    writer.put(1, 1)  # direct_8x8_inference_flag (required when frame_mbs_only is 0)
    writer.put(0, 1)  # no cropping
    writer.copy(reader, rest_at, last_one)
    return header + _escape(writer.finish())


def with_coded_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` (an H.264 MP4) whose SPS claims ``width`` x ``height``; headers and slices unchanged."""
    boxes = parse_boxes(data)
    configs = find(boxes, b"avcC")
    if not configs:
        raise ValueError("no avcC box: not an H.264 MP4")
    for config in configs:
        body = config.prefix
        count = body[5] & 0x1F
        at, parameter_sets = 6, []
        for _ in range(count):
            length = struct.unpack(">H", body[at:at + 2])[0]
            parameter_sets.append(rewrite_sps(body[at + 2:at + 2 + length], width, height))
            at += 2 + length
        rewritten = b"".join(struct.pack(">H", len(sps)) + sps for sps in parameter_sets)
        config.prefix = body[:6] + rewritten + body[at:]
    return serialise_boxes(boxes)


def with_header_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` whose video ``tkhd`` and ``stsd`` sample entry claim ``width`` x ``height``."""
    boxes = parse_boxes(data)
    for entry in (box for kind in _VISUAL_ENTRIES for box in find(boxes, kind)):
        prefix = bytearray(entry.prefix)
        prefix[24:28] = struct.pack(">HH", min(width, 0xFFFF), min(height, 0xFFFF))
        entry.prefix = bytes(prefix)
    for header in find(boxes, b"tkhd"):
        prefix = bytearray(header.prefix)
        at = len(prefix) - 8
        if struct.unpack(">I", prefix[at:at + 4])[0]:  # a video track: it has a width
            prefix[at:] = struct.pack(">II", min(width, 0xFFFF) << 16, min(height, 0xFFFF) << 16)
            header.prefix = bytes(prefix)
    return serialise_boxes(boxes)


# --- damage --------------------------------------------------------------------------------------

def _offsets(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of every box, parents first; empty for a file that does not parse."""
    try:
        boxes = parse_boxes(data)
    except (ValueError, struct.error):
        return []
    spans = []
    for top in boxes:
        for box in top.walk():
            spans.append((box.kind, box.offset, box.size))
    return spans


def _truncate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    cut = rng.choice([rng.randrange(1, max(2, len(data))), rng.randrange(1, min(len(data), 4096)),
                      len(data) - rng.randrange(1, min(len(data), 4096))])
    return f"truncate@{cut}", data[:cut]


def _flip(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    damaged = bytearray(data)
    flips = rng.choice([1, 4, 32])
    header = rng.random() < 0.7 and len(data) > 64  # the boxes before the media are what most breaks
    limit = min(len(data), _header_end(data)) if header else len(data)
    for _ in range(flips):
        at = rng.randrange(limit)
        damaged[at] ^= 1 << rng.randrange(8)
    return f"flip{flips}{'-header' if header else ''}", bytes(damaged)


def _header_end(data: bytes) -> int:
    spans = [(kind, offset, size) for kind, offset, size in _offsets(data) if kind == b"mdat"]
    if not spans:
        return len(data)
    mdat = spans[0][1]
    return mdat if mdat > 64 else len(data)


def _box_field(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    spans = _offsets(data)
    if not spans:
        return _flip(data, rng)
    kind, offset, size = rng.choice(spans)
    damaged = bytearray(data)
    what = rng.choice(["type", "size", "payload", "zero"])
    if what == "type":
        damaged[offset + 4:offset + 8] = bytes(rng.randrange(97, 123) for _ in range(4))
    elif what == "size":
        value = rng.choice([0, 1, 7, 9, 0xFFFFFFFF, 0x7FFFFFFF, max(8, size - 1), size + 1, size * 16])
        damaged[offset:offset + 4] = struct.pack(">I", value & 0xFFFFFFFF)
    elif what == "payload":
        end = min(len(damaged), offset + size)
        for _ in range(rng.choice([1, 8, 64])):
            if end > offset + 8:
                damaged[rng.randrange(offset + 8, end)] = rng.randrange(256)
    else:
        end = min(len(damaged), offset + size)
        start = offset + 8
        damaged[start:end] = bytes(end - start)
    return f"box-{what}-{kind.decode('latin-1')}", bytes(damaged)


def _counts(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """An entry count claiming billions of entries (stsz, stco, stts, stss, ctts, stsc, elst)."""
    spans = [s for s in _offsets(data) if s[0] in (b"stsz", b"stco", b"stts", b"stss", b"ctts", b"stsc", b"elst")]
    if not spans:
        return _flip(data, rng)
    kind, offset, _ = rng.choice(spans)
    damaged = bytearray(data)
    at = offset + 8 + (8 if kind == b"stsz" else 4)  # after version/flags (and stsz's sample size)
    damaged[at:at + 4] = struct.pack(">I", rng.choice([0xFFFFFFFF, 0x10000000, 0]))
    return f"count-{kind.decode()}", bytes(damaged)


def with_boxes_swapped(data: bytes, first: bytes = b"moov", second: bytes = b"mdat") -> bytes:
    """``data`` with two top-level boxes swapped and the offsets into them left as they were: by
    default moov and mdat, a file whose index points at the wrong bytes (the hardening reports' case)."""
    boxes = parse_boxes(data)
    raw = [data[box.offset:box.offset + box.size] for box in boxes]
    kinds = [box.kind for box in boxes]
    a, b = kinds.index(first), kinds.index(second)
    raw[a], raw[b] = raw[b], raw[a]
    return b"".join(raw)


def _reorder(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """Top-level boxes moved without fixing the offsets into them (swapped moov and mdat), or one
    dropped or doubled."""
    try:
        boxes = parse_boxes(data)
    except (ValueError, struct.error):
        return _truncate(data, rng)
    raw = [data[box.offset:box.offset + box.size] for box in boxes]
    kinds = [box.kind for box in boxes]
    how = rng.choice(["swap", "drop", "double"])
    if how == "swap" and b"moov" in kinds and b"mdat" in kinds:
        return "swap-moov-mdat", with_boxes_swapped(data)
    index = rng.randrange(len(raw))
    if how == "drop" and len(raw) > 1:
        return f"drop-{kinds[index].decode('latin-1')}", b"".join(raw[:index] + raw[index + 1:])
    return f"double-{kinds[index].decode('latin-1')}", b"".join(raw[:index + 1] + raw[index:])


def _inner_drop(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """A box inside the sample table removed, sizes fixed (a consistent file missing a piece)."""
    try:
        boxes = parse_boxes(data)
    except (ValueError, struct.error):
        return _flip(data, rng)
    parents = [box for top in boxes for box in top.walk() if box.children]
    parent = rng.choice(parents) if parents else None
    if not parent:
        return _flip(data, rng)
    dropped = parent.children.pop(rng.randrange(len(parent.children)))
    return f"remove-{dropped.kind.decode('latin-1')}", serialise_boxes(boxes)


def _claims(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """Frame sizes claimed by the headers or by the stream that are far from the real one."""
    width, height = rng.choice([(65520, 16), (16, 65520), (16000, 16000), (8192, 8192), (4096, 16), (16, 16)])
    try:
        if rng.random() < 0.5:
            return f"sps-{width}x{height}", with_coded_size(data, width, height)
        return f"header-{width}x{height}", with_header_size(data, width, height)
    except (ValueError, struct.error, IndexError):
        return _flip(data, rng)


MUTATIONS: dict[str, Callable[[bytes, random.Random], tuple[str, bytes]]] = {
    "truncate": _truncate,
    "flip": _flip,
    "box": _box_field,
    "count": _counts,
    "reorder": _reorder,
    "remove": _inner_drop,
    "claim": _claims,
}


def damaged_copies(data: bytes, count: int, seed: int = 0,
                   kinds: tuple[str, ...] = tuple(MUTATIONS)) -> Iterator[tuple[str, bytes]]:
    """``count`` damaged copies of ``data``, kinds in turn, each named ``NNNN-what``; by ``seed``."""
    rng = random.Random(seed)
    for index in range(count):
        name, damaged = MUTATIONS[kinds[index % len(kinds)]](data, rng)
        yield f"{index:04d}-{name}", damaged


__all__ = ["Box", "MUTATIONS", "damaged_copies", "find", "parse_boxes", "rewrite_sps", "serialise_boxes",
           "with_boxes_swapped", "with_coded_size", "with_header_size"]
