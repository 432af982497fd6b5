"""Idle connections (issue 19): N connections that never send a byte, against the service's HTTP layer
as `shortvid serve` configures it now (`shortvid.serve.server.uvicorn_config`: `--max-connections 1000`,
`--header-timeout 10`, the defaults).

Baseline, in the same run: uvicorn configured by default (how `shortvid serve` ran before issue 19),
and the same with uvicorn's own `limit_concurrency`. Prints the machine, the server's limit on open
files, then a Markdown table: per server, the idle connections still open 1 s after and after
`--seconds`, the server's file descriptors (before / peak / 1 s / at the end), its RSS, the "Too many
open files" errors it logged, and real requests' statuses and median latency before the flood,
1 s after it and at the end.

Each variant is a fresh server subprocess serving the CPU student (tsn_mobilenetv3 at 160 px, random
weights written as a run) with the default `ServeSettings`; the app is the same in all three
(`create_app`, batching on its own thread), only the uvicorn configuration differs. This process
then opens `--connections` connections that send nothing. A connection counts as closed once the
server's FIN or reset has reached the client; file descriptors are read from /proc/PID/fd, the peak
sampled every 2 ms during the first second; a real request is a POST of one video of `--corpus`,
each on a new connection, `--requests` times at each point.

Both processes raise their soft limit on open files to the hard limit first (2,000 sockets are over
the common default of 1,024); `--server-fd-limit 1024` starts the server with that soft limit instead,
as a default Linux login would (`shortvid serve` raises it itself, `ensure_fd_limit`).

    python bench/connections.py [--connections 2000] [--seconds 30] [--server-fd-limit N] [--json out.json]
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from common import add_corpus_argument, corpus, free_port, launch, machine, make_parser, make_run, stop, write_json

VARIANTS = {
    "before": "uvicorn defaults (shortvid serve before issue 19)",
    "limit": "uvicorn limit_concurrency=1000",
    "after": "shortvid serve now (uvicorn_config)",
}


def raise_fd_limit() -> int:
    """Raise this process's soft limit on open files to the hard limit (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def run_server(variant: str, run: str, port: int, fd_limit: int) -> None:
    """The server subprocess: the default app under one uvicorn configuration, until SIGTERM."""
    import uvicorn

    if fd_limit:
        resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    from shortvid.infer.classifier import Classifier
    from shortvid.serve.http import ServeSettings, create_app
    from shortvid.serve.server import descriptors_needed, ensure_fd_limit, uvicorn_config

    settings = ServeSettings()
    app = create_app(Classifier.load(run, device="cpu"), settings)
    if variant == "after":  # as serve() runs it
        config = uvicorn_config(app, settings, port=port, log_level="warning")
        ensure_fd_limit(descriptors_needed(settings, config))
    else:  # serve()'s configuration before issue 19, with or without uvicorn's concurrency limit
        limit = {"limit_concurrency": settings.max_connections} if variant == "limit" else {}
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", workers=1,
                                timeout_graceful_shutdown=settings.shutdown_grace, **limit)
    uvicorn.Server(config).run()


def process_facts(pid: int) -> dict:
    """Open file descriptors and RSS (MiB) of a process."""
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return {"fds": len(os.listdir(f"/proc/{pid}/fd")), "rss_mb": round(rss / 1024)}


class PeakFds(threading.Thread):
    """The most file descriptors a process has open while this samples (every 2 ms) until ``stop``."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, len(os.listdir(f"/proc/{self.pid}/fd")))
            time.sleep(0.002)

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.peak


def still_open(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the server has not closed (no FIN or reset received)."""
    count = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            count += bool(sock.recv(1))  # data: open (the server answered something)
        except BlockingIOError:
            count += 1
        except OSError:
            pass
    return count


def real_requests(port: int, body: bytes, n: int) -> dict:
    """``n`` classify requests, each on a new connection: the statuses and the median latency (ms)."""
    statuses, latencies = Counter(), []
    for _ in range(n):
        started = time.perf_counter()
        try:
            status = httpx.post(f"http://127.0.0.1:{port}/v1/classify", content=body, timeout=30,
                                headers={"content-type": "application/octet-stream"}).status_code
        except httpx.HTTPError as error:
            status = type(error).__name__
        latencies.append((time.perf_counter() - started) * 1000)
        statuses[str(status)] += 1
    return {"statuses": dict(statuses), "median_ms": round(float(np.median(latencies)), 1)}


def measure(variant: str, run: Path, body: bytes, connections: int, seconds: float, requests: int,
            fd_limit: int) -> dict:
    port = free_port()
    log = run.parent / f"{variant}.log"
    socks: list[socket.socket] = []
    row: dict = {"variant": VARIANTS[variant]}
    with log.open("wb") as output:
        server = launch([sys.executable, __file__, "--server", variant, str(run), str(port), str(fd_limit)], port,
                        stdout=output, stderr=subprocess.STDOUT)
    try:
        row["before"] = {**process_facts(server.pid), **real_requests(port, body, requests)}
        started = time.monotonic()
        peak = PeakFds(server.pid)
        peak.start()
        refused = 0
        for _ in range(connections):
            try:
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            except OSError:
                refused += 1
        row["opened"], row["refused"] = len(socks), refused
        row["open_seconds"] = round(time.monotonic() - started, 2)
        time.sleep(max(0.0, started + 1.0 - time.monotonic()))
        row["peak_fds"] = peak.stop()
        row["meanwhile"] = {"at_s": round(time.monotonic() - started, 1), "still_open": still_open(socks),
                            **process_facts(server.pid),
                            **real_requests(port, body, requests)}
        time.sleep(max(0.0, started + seconds - time.monotonic()))
        row["after"] = {"at_s": round(time.monotonic() - started, 1), "still_open": still_open(socks),
                        **process_facts(server.pid),
                        **real_requests(port, body, requests)}
    finally:
        for sock in socks:
            sock.close()
        stop(server)
    with log.open("rb") as output:
        row["emfile_errors"] = sum(b"Too many open files" in line for line in output)
    return row


def report(rows: list[dict], connections: int, seconds: float) -> str:
    def statuses(part: dict) -> str:
        return " ".join(f"{n}x{status}" for status, n in sorted(part["statuses"].items()))

    header = (f"| server | open 1 s after | open after {seconds:g} s | server FDs: before / peak / 1 s / "
              f"{seconds:g} s | RSS MiB: before / 1 s | EMFILE errors | real request before | 1 s after | "
              f"after {seconds:g} s |")
    lines = [header, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        before, meanwhile, after = row["before"], row["meanwhile"], row["after"]
        answers = " | ".join(f"{statuses(part)}, {part['median_ms']} ms" for part in (before, meanwhile, after))
        late = f" (at {after['at_s']:g} s)" if after["at_s"] > seconds + 1 else ""
        lines.append(f"| {row['variant']} | {meanwhile['still_open']} of {row['opened']} | "
                     f"{after['still_open']}{late} | "
                     f"{before['fds']} / {row['peak_fds']} / {meanwhile['fds']} / {after['fds']} | "
                     f"{before['rss_mb']} / {meanwhile['rss_mb']} | {row['emfile_errors']} | {answers} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--server":
        run_server(*sys.argv[2:4], int(sys.argv[4]), int(sys.argv[5]))
        return
    parser = make_parser(__doc__)
    parser.add_argument("--connections", type=int, default=2000, help="idle connections to open (default: 2000)")
    parser.add_argument("--seconds", type=float, default=30.0, help="when to count them again (default: 30)")
    parser.add_argument("--requests", type=int, default=5, help="real requests at each point (default: 5)")
    parser.add_argument("--server-fd-limit", type=int, default=0, metavar="N",
                        help="the server's soft limit on open files (default: this process's, raised to the hard "
                             "limit)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    add_corpus_argument(parser, default="realistic-540")
    args = parser.parse_args()

    limit = raise_fd_limit()
    if limit < args.connections + 256:
        raise SystemExit(f"open files are limited to {limit}: too few for {args.connections} connections")
    body = corpus(args.corpus, 4)[0].read_bytes()
    with tempfile.TemporaryDirectory() as folder:
        run = make_run(Path(folder) / "model")
        rows = [measure(variant, run, body, args.connections, args.seconds, args.requests, args.server_fd_limit)
                for variant in args.variants.split(",")]
    server_limit = args.server_fd_limit or limit
    print(f"{machine()}; server's open-file limit {server_limit}; {args.connections} idle connections, "
          f"{args.requests} real requests at each point")
    print(report(rows, args.connections, args.seconds))
    write_json(args.json, {"machine": machine(), "server_fd_limit": server_limit, "connections": args.connections,
                           "seconds": args.seconds, "rows": rows})


if __name__ == "__main__":
    main()
