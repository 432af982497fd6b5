"""Reload under load: a new model goes live while clients keep classifying (issue 19, point 4).

Baseline: the same run's answers that overlapped no reload (steady state). Prints the report as JSON
(answers by status, answers naming neither run's model, the answers per model, each reload's status
and duration, p50/p99 during reloads and steady), then a one-row Markdown table.

A real `shortvid serve` subprocess (default settings, an admin token) serves the CPU student (random
weights written as a run); a second run is the same model with other weights. `--clients`
closed-loop clients (asyncio + httpx, in this process) classify the realistic 540x960 corpus for
`--seconds` in all; meanwhile `POST /admin/reload` alternates the two runs `--reloads` times, evenly
spaced. Goals: every answer 200, none naming a model that is neither run's. A reload's duration
covers the load, the ONNX export of a new run and the warm-up; latencies are client-side.

    python bench/reload.py [--clients 16] [--reloads 5] [--seconds 40] [--json out.json]
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from shortvid.machine import describe
from shortvid.run import RunDir

from common import corpus, free_port, make_parser, make_run, percentiles, start_server, stop, write_json

TOKEN = "bench-reload-admin-token-0123456789"


async def clients(base: str, bodies: list[bytes], count: int, seconds: float, answers: list) -> None:
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        deadline = time.perf_counter() + seconds

        async def one(worker: int) -> None:
            index = worker
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/classify", content=bodies[index % len(bodies)],
                                                 headers={"Content-Type": "application/octet-stream"})
                    model = response.json().get("model") if response.status_code == 200 else None
                    answers.append((started, time.perf_counter(), response.status_code, model))
                except httpx.HTTPError as error:
                    answers.append((started, time.perf_counter(), type(error).__name__, None))
                index += count

        await asyncio.gather(*(one(worker) for worker in range(count)))


async def reloads(base: str, runs: list[Path], count: int, seconds: float, windows: list) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        for turn in range(count):
            await asyncio.sleep(seconds / (count + 1))
            started = time.perf_counter()
            response = await client.post("/admin/reload", json={"run": str(runs[(turn + 1) % 2])},
                                         headers={"Authorization": f"Bearer {TOKEN}"})
            windows.append((started, time.perf_counter(), response.status_code))


async def scenario(base: str, bodies: list[bytes], runs: list[Path], args) -> tuple[list, list]:
    answers: list = []
    windows: list = []
    await asyncio.gather(clients(base, bodies, args.clients, args.seconds, answers),
                         reloads(base, runs, args.reloads, args.seconds, windows))
    return answers, windows


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--reloads", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--videos", type=int, default=24)
    args = parser.parse_args()
    bodies = [path.read_bytes() for path in corpus("realistic-540", args.videos)]
    with tempfile.TemporaryDirectory() as folder:
        runs = [make_run(Path(folder) / name) for name in ("a", "b")]  # random weights each
        ids = {RunDir(run).fingerprint()[:12] for run in runs}
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = start_server(runs[0], port, env={"SHORTVID_ADMIN_TOKEN": TOKEN})
        try:
            answers, windows = asyncio.run(scenario(base, bodies, runs, args))
        finally:
            stop(server)
    during = [end - start for start, end, status, _ in answers
              if status == 200 and any(start < w_end and end > w_start for w_start, w_end, _ in windows)]
    steady = [end - start for start, end, status, _ in answers
              if status == 200 and not any(start < w_end and end > w_start for w_start, w_end, _ in windows)]
    report = {"machine": describe(), "clients": args.clients, "seconds": args.seconds,
              "answers": len(answers), "statuses": dict(Counter(str(a[2]) for a in answers)),
              "unknown_model": sum(1 for a in answers if a[2] == 200 and a[3] not in ids),
              "models_seen": dict(Counter(a[3] for a in answers if a[2] == 200)),
              "reloads": [{"status": status, "seconds": round(end - start, 2)} for start, end, status in windows],
              "during_reloads": {"n": len(during), **percentiles(during)},
              "steady": {"n": len(steady), **percentiles(steady)}}
    print(json.dumps(report, indent=2))
    write_json(args.json, report)
    machine = report["machine"]
    print(f"\n{args.clients} clients for {args.seconds:g} s, {args.reloads} reloads ({machine['cpu']}, "
          f"{machine['cores']} cores)\n\n| answers | statuses | unknown model | reload s (each) | p50/p99 ms steady | "
          "p50/p99 ms during a reload |\n| --- | --- | --- | --- | --- | --- |")
    reload_seconds = ", ".join(f"{r['seconds']:.1f}" for r in report["reloads"])
    print(f"| {report['answers']} | {report['statuses']} | {report['unknown_model']} | {reload_seconds} | "
          f"{report['steady'].get('p50_ms')}/{report['steady'].get('p99_ms')} | "
          f"{report['during_reloads'].get('p50_ms')}/{report['during_reloads'].get('p99_ms')} |")


if __name__ == "__main__":
    main()
