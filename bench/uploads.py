"""Upload memory: 64 clients each posting a 60 MiB body at once to `shortvid serve` with its default
settings; the server's peak RSS growth and the answers (issue 19, point 3).

Baseline: with `--baseline-rev REV`, the same against the package at git revision REV first (a git
worktree in the data folder), so both rows come from one run on one machine. Prints each row as it
ends, then the machine and a Markdown table: per code, the server's peak RSS growth, the answers to
the flood by status, and the statuses of five ordinary requests sent after it (goal: all 200).

The server is a real `shortvid serve` subprocess for the CPU student (random weights written as a
run). Each body is a real video (the realistic 540x960 corpus) followed by a `free` box that pads it
to the size asked: a valid MP4 the service classifies. The clients send their whole body without
waiting for `100 Continue` (the worst case: a refused body still crosses the wire and the server must
discard it). The server's RSS is sampled every 10 ms from before the flood (after warm-up) to its end.

    python bench/uploads.py [--clients 64] [--mib 60] [--baseline-rev REV] [--json out.json]
"""

from __future__ import annotations

import asyncio
import struct
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import psutil

from shortvid.machine import describe

from common import baseline_tree, corpus, free_port, make_parser, make_run, start_server, stop, write_json

MIB = 1 << 20


def padded(video: bytes, size: int) -> bytes:
    """``video`` followed by an MP4 `free` box, ``size`` bytes in all."""
    pad = size - len(video)
    return video + struct.pack(">I", pad) + b"free" + bytes(pad - 8)


async def post(port: int, body: bytes, index: int) -> int | str:
    """The whole body sent at once (no Expect: 100-continue), the answer read as soon as it comes
    (a refusal arrives before the body is through); the status, or the client-side error."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as error:
        return type(error).__name__

    async def send() -> None:
        writer.write(f"POST /v1/classify HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\n"
                     f"X-Filename: {index}.mp4\r\nContent-Length: {len(body)}\r\n\r\n".encode())
        view = memoryview(body)
        for start in range(0, len(view), MIB):
            writer.write(view[start:start + MIB])
            await writer.drain()

    sending = asyncio.create_task(send())
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1])
    except (OSError, asyncio.IncompleteReadError) as error:
        return type(error).__name__
    finally:
        sending.cancel()
        writer.close()


async def flood(port: int, body: bytes, clients: int) -> list:
    return list(await asyncio.gather(*(post(port, body, index) for index in range(clients))))


class Sampler(threading.Thread):
    """The peak RSS of a process, sampled every 10 ms."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.process, self.peak, self.stopping = psutil.Process(pid), 0, threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            time.sleep(0.01)


def measure(run: Path, body: bytes, ordinary: bytes, clients: int, tree: Path | None) -> dict:
    port = free_port()
    server = start_server(run, port, tree=tree)
    try:
        asyncio.run(flood(port, ordinary, 4))  # first requests' costs paid
        before = psutil.Process(server.pid).memory_info().rss
        sampler = Sampler(server.pid)
        sampler.start()
        started = time.perf_counter()
        statuses = asyncio.run(flood(port, body, clients))
        seconds = time.perf_counter() - started
        sampler.stopping.set()
        sampler.join()
        after = asyncio.run(flood(port, ordinary, 5))
        return {"rss_before_mib": round(before / MIB), "peak_growth_mib": round((sampler.peak - before) / MIB),
                "answers": dict(Counter(str(status) for status in statuses)), "seconds": round(seconds, 1),
                "then_ordinary": dict(Counter(str(status) for status in after))}
    finally:
        stop(server)


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--mib", type=float, default=60.0, help="body size in MiB (default: 60)")
    parser.add_argument("--baseline-rev", default=None, metavar="REV",
                        help="also measure the package at this git revision, first")
    args = parser.parse_args()
    video = corpus("realistic-540", 1)[0].read_bytes()
    body = padded(video, int(args.mib * MIB))
    report = {"machine": describe(), "clients": args.clients, "body_mib": args.mib, "rows": {}}
    with tempfile.TemporaryDirectory() as folder:
        run = make_run(Path(folder) / "model")
        trees = ([(f"revision {args.baseline_rev}", baseline_tree(args.baseline_rev))] if args.baseline_rev else [])
        for name, tree in [*trees, ("this code", None)]:
            row = measure(run, body, video, args.clients, tree)
            report["rows"][name] = row
            print(name, row, flush=True)
    write_json(args.json, report)
    print(f"\n{args.clients} clients x {args.mib:g} MiB, default settings ({report['machine']['cpu']}, "
          f"{report['machine']['cores']} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB)")
    print("\n| code | peak RSS growth | answers | then 5 ordinary requests |\n| --- | --- | --- | --- |")
    for name, row in report["rows"].items():
        print(f"| {name} | {row['peak_growth_mib']:,} MiB | {row['answers']} | {row['then_ordinary']} |")


if __name__ == "__main__":
    main()
