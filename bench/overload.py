"""Overload: `shortvid serve` offered 1x, 2x and 4x its measured capacity, shedding load at the door
(`--max-queue-seconds 1`, the default, and each budget of `--budgets`) against bounding the queue by
count only (`--max-queue-seconds 0`, how the service admitted requests before issue 10).

Baseline: the count-only policy, and with `--baseline-rev REV` the shedding of the package at that
git revision, in the same run. Prints a line per row as it ends, the measured capacity and the
machine, then a Markdown table: per policy and load, requests sent, share served, served/s, what the
service's capacity gauge read at the row's end, client-side p50/p99, the server's own p99, the bound
the shedding promises (the budget plus one batch: `--max-batch` clips at the measured capacity;
admitted requests' p99 should stay within it), 503s, other 5xx (goal: none) and client errors.

The server is a real `shortvid serve` subprocess, default settings otherwise, for the CPU-fast
student (tsn_mobilenetv3 at 160 px) or, `--model seed`, the seed's ResNet50 at 224 px (random
weights written as a run): the student's capacity on 2 cores is tens of videos/s, so 64 requests in
progress are a second or two of work; the ResNet50's is a few videos/s, the regime where a queue
bounded by count alone turns into 10-second waits and 504s. Clients (asyncio, in this process) POST
the raw bytes of a generated corpus (`--corpus`: portrait 540x960 or 720x1280, 10-15 s), each
request on a new connection with `Expect: 100-continue` (see `post`): a lean client, so that at 4x
the load generator, which shares the machine's cores with the server, is not what saturates.

1. Capacity: a closed loop of 16 clients for `--seconds` (after a warm-up); the served rate is the
   capacity the multiples refer to.
2. For each admission policy, a fresh server, then:
   - the report's scenario: a closed loop of 64 clients for `--seconds` (a client waits the
     Retry-After of a 503 before its next request);
   - open loops: Poisson arrivals at 1x, 2x and 4x capacity for `--seconds` each (a request is sent
     when it is due, whatever the answers so far: how uploads arrive at a platform).
   Latencies of the requests answered 200: client-side, and the server's own time for them (its
   answers' `receive` + `total` timings, which leave out what the load generator, sharing the cores,
   adds).

    python bench/overload.py [--corpus realistic-540] [--model student|seed] [--seconds 20]
                             [--budgets 1,0.2] [--baseline-rev REV] [--json out.json]
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

import httpx

from shortvid.machine import describe

from common import (
    SEED,
    STUDENT,
    add_corpus_argument,
    baseline_tree,
    corpus,
    free_port,
    make_parser,
    make_run,
    metric,
    percentiles,
    start_server,
    stop,
    write_json,
)

MAX_BATCH = 8  # shortvid serve's default --max-batch


def policies(budgets: str) -> dict[str, str]:
    """Policy name: --max-queue-seconds, for each budget and count only."""
    named = {f"shed (--max-queue-seconds {budget})": budget for budget in budgets.split(",")}
    return {**named, "count only (--max-queue-seconds 0)": "0"}


def gauge(port: int) -> float:
    """The capacity the service measures (shortvid_throughput_requests_per_second)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return metric(text, "shortvid_throughput_requests_per_second", float("nan"))


async def post(port: int, body: bytes, index: int) -> tuple[int | str, float]:
    """One request on a new connection, as a lean HTTP/1.1 client: the headers first with
    `Expect: 100-continue`, the body only once the server asks for it (what curl does for large
    uploads), so a request refused at the door costs neither side its body. Returns the status (or
    the client-side error), the seconds to the whole answer, and the server's own seconds for it (its
    answer's receive + total timings; None but for a 200)."""
    started = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"POST /v1/classify HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\n"
                         f"X-Filename: {index}.mp4\r\nContent-Length: {len(body)}\r\nExpect: 100-continue\r\n"
                         f"Connection: close\r\n\r\n".encode())
            await writer.drain()
            status, length = await _response_head(reader)
            if status == 100:
                writer.write(body)
                await writer.drain()
                status, length = await _response_head(reader)
            answer = await reader.readexactly(length)
        finally:
            writer.close()
    except (OSError, asyncio.IncompleteReadError) as error:
        return type(error).__name__, time.perf_counter() - started, None
    server = None
    if status == 200:  # the server's own time for it: receiving the body, then admission to answer
        timings = json.loads(answer)["timings_ms"]
        server = (timings["receive"] + timings["total"]) / 1000
    return status, time.perf_counter() - started, server


async def _response_head(reader: asyncio.StreamReader) -> tuple[int, int]:
    """The status and Content-Length of the next response head."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    length = next((int(line.split(":", 1)[1]) for line in head[1:] if line.lower().startswith("content-length:")), 0)
    return status, length


async def closed_loop(port: int, bodies: list[bytes], clients: int, seconds: float) -> list[tuple]:
    """`clients` clients, each sending its next request when the last is answered; after a 503 a
    client waits the Retry-After (1 s) first, as a well-behaved client does."""
    results: list[tuple] = []
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**9))

    async def client():
        for index in counter:
            if time.perf_counter() >= deadline:
                return
            results.append(await post(port, bodies[index % len(bodies)], index))
            status = results[-1][0]
            if status == 503:
                await asyncio.sleep(1.0)

    await asyncio.gather(*(client() for _ in range(clients)))
    return results


async def open_loop(port: int, bodies: list[bytes], rate: float, seconds: float, seed: int) -> list[tuple]:
    rng = random.Random(seed)
    tasks, due, index = [], time.perf_counter(), 0
    end = due + seconds
    while due < end:
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(post(port, bodies[index % len(bodies)], index)))
        index += 1
        due += rng.expovariate(rate)
    return list(await asyncio.gather(*tasks))


def summarise(name: str, results: list[tuple], seconds: float, offered: float | None = None) -> dict:
    served = [s for status, s, _ in results if status == 200]
    server = [s for status, _, s in results if status == 200]
    statuses = [status for status, _, _ in results]
    row = {"scenario": name, "sent": len(results), "offered_per_s": round(offered or len(results) / seconds, 1),
           "served": len(served), "served_share": round(len(served) / max(1, len(results)), 3),
           "served_per_s": round(len(served) / seconds, 1),
           **percentiles(served, digits=0), "server_p99_ms": percentiles(server, digits=0)["p99_ms"],
           "503": statuses.count(503),
           "other_5xx": sum(1 for s in statuses if isinstance(s, int) and s >= 500 and s != 503),
           "other_4xx": sum(1 for s in statuses if isinstance(s, int) and 400 <= s < 500),
           "client_errors": sum(1 for s in statuses if not isinstance(s, int))}
    print(row, flush=True)
    return row


def main() -> None:
    parser = make_parser(__doc__)
    add_corpus_argument(parser, "realistic-540", choices=("realistic-540", "realistic-720"))
    parser.add_argument("--model", default="student", choices=["student", "seed"],
                        help=f"student: {STUDENT} (default); seed: {SEED}, about 8x slower on a CPU")
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--multiples", default="1,2,4")
    parser.add_argument("--budgets", default="1,0.2", help="--max-queue-seconds values to shed at (default: 1,0.2)")
    parser.add_argument("--capacity-window", default=None, metavar="S",
                        help="shortvid serve --capacity-window for this code's servers (default: the server's)")
    parser.add_argument("--baseline-rev", default=None, metavar="REV",
                        help="also shed with the package at this git revision (a git worktree in the data folder)")
    args = parser.parse_args()
    bodies = [path.read_bytes() for path in corpus(args.corpus, args.videos)]
    multiples = [float(m) for m in args.multiples.split(",")]
    report: dict = {"machine": describe(), "corpus": args.corpus, "model": args.model, "videos": len(bodies),
                    "seconds": args.seconds}
    with tempfile.TemporaryDirectory() as folder:
        run = make_run(Path(folder) / "model", STUDENT if args.model == "student" else SEED)
        port = free_port()
        server = start_server(run, port, "--max-queue-seconds", "1")
        try:
            asyncio.run(closed_loop(port, bodies, 16, 5))  # warm-up
            capacity_results = asyncio.run(closed_loop(port, bodies, 16, args.seconds))
        finally:
            stop(server)
        capacity = summarise("capacity: closed loop, 16 clients", capacity_results, args.seconds)["served_per_s"]
        report["capacity_per_s"] = capacity
        rows = []
        runs = [(policy, seconds, None) for policy, seconds in policies(args.budgets).items()]
        if args.baseline_rev:
            tree = baseline_tree(args.baseline_rev)
            runs = [(f"{policy} at {args.baseline_rev}", seconds, tree)
                    for policy, seconds in policies(args.budgets).items() if float(seconds)] + runs
        for policy, queue_seconds, tree in runs:
            extra = ("--capacity-window", args.capacity_window) if args.capacity_window and not tree else ()
            server = start_server(run, port, "--max-queue-seconds", queue_seconds, *extra, tree=tree)
            bound = float(queue_seconds) * 1000 + MAX_BATCH / capacity * 1000 if float(queue_seconds) else None
            try:
                asyncio.run(closed_loop(port, bodies, 16, 5))  # warm-up, and a first throughput estimate
                results = asyncio.run(closed_loop(port, bodies, 64, args.seconds))
                rows.append({"policy": policy, "bound_ms": bound, "gauge_per_s": gauge(port),
                             **summarise(f"{policy}: closed loop, 64 clients", results, args.seconds)})
                for multiple in multiples:
                    rate = capacity * multiple
                    results = asyncio.run(open_loop(port, bodies, rate, args.seconds, seed=int(multiple * 10)))
                    name = f"{policy}: open loop, {multiple:g}x capacity"
                    rows.append({"policy": policy, "multiple": multiple, "bound_ms": bound, "gauge_per_s": gauge(port),
                                 **summarise(name, results, args.seconds, rate)})
            finally:
                stop(server)
        report["rows"] = rows
    write_json(args.json, report)
    print(f"\ncapacity {capacity:.1f} videos/s ({report['machine']['cpu']}, {report['machine']['cores']} cores)")
    print("\n| policy | load | sent | served | served/s | gauge/s | p50 ms | p99 ms | server p99 ms | bound ms | 503 | "
          "other 5xx | client errors |\n" + "| --- " * 13 + "|")
    for row in rows:
        load = f"{row['multiple']:g}x ({row['offered_per_s']:.0f}/s)" if "multiple" in row else "64 clients"
        bound = f"{row['bound_ms']:.0f}" if row["bound_ms"] else "-"
        print(f"| {row['policy']} | {load} | {row['sent']} | {row['served_share']:.0%} | {row['served_per_s']} | "
              f"{row['gauge_per_s']:.1f} | {row['p50_ms']} | {row['p99_ms']} | {row['server_p99_ms']} | {bound} | "
              f"{row['503']} | {row['other_5xx']} | {row['client_errors']} |")


if __name__ == "__main__":
    main()
