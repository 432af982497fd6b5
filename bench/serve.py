"""Service under load: `shortvid serve` driven by concurrent clients, against offline batching.

Baseline: the same videos, from the same bytes, through `Classifier.read` + `Classifier.scores_many`
in batches of `--max-batch`, no HTTP, one thread, measured before the service starts and again after
it stops (the mean of the two). Prints each level and the offline measurements as they come, the
report as JSON, then a Markdown table: per concurrency level, videos/s and its ratio to offline,
client-side p50/p99 latency, mean batch, model ms per call, decode ms per video, non-200 answers.

Starts a real `shortvid serve` (a subprocess: its own process and GIL, as deployed) for the CPU-fast
student (`tsn_mobilenetv3` at 160 px, random weights written as a run) on a free local port, with
--max-batch 8 --max-wait-ms 5 --decode-workers 2 (this script's defaults). Clients (asyncio + httpx,
in this process) POST the raw bytes of a generated corpus (`--corpus`, default realistic-720:
portrait 720x1280, 10-15 s) to /v1/classify, `concurrency` requests in flight at a time, until
`--requests` answers per level, after `concurrency` unmeasured warm-up requests. The mean batch size
and model-call time come from the deltas of /metrics. Clients and server share the machine's cores,
as they would in a single-box load test.

`--spin` serves a classifier whose ONNX Runtime threads spin (`Classifier.load(spin=True)`, as
`shortvid predict` loads it for one video at a time; `shortvid serve` loads one whose threads sleep
and has no option for it): the server subprocess is then this script, running what `shortvid serve`
runs (`shortvid.serve.server.serve`, the same settings) on that classifier. The offline baseline
keeps shortvid's default session either way.

    python bench/serve.py [--videos 24] [--requests 160] [--concurrency 1,8,32] [--spin] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

from shortvid.infer.classifier import Classifier
from shortvid.machine import describe

from common import (
    add_corpus_argument,
    corpus,
    free_port,
    launch,
    machine,
    make_parser,
    make_run,
    metric,
    percentiles,
    start_server,
    stop,
    write_json,
)

METRICS = ("shortvid_batch_size_sum", "shortvid_batch_size_count", "shortvid_model_seconds_sum",
           "shortvid_decode_seconds_sum", "shortvid_decode_seconds_count")


def offline(classifier: Classifier, bodies: list[bytes], batch: int, passes: int) -> dict:
    """Videos/s through read + scores_many in batches of ``batch``, one thread, no HTTP."""
    done = 0
    started = time.perf_counter()
    decode_s = model_s = 0.0
    for _ in range(passes):
        for i in range(0, len(bodies), batch):
            t0 = time.perf_counter()
            clips = [classifier.read(io.BytesIO(body)) for body in bodies[i:i + batch]]
            t1 = time.perf_counter()
            classifier.scores_many(clips)
            model_s += time.perf_counter() - t1
            decode_s += t1 - t0
            done += len(clips)
    wall = time.perf_counter() - started
    return {"videos": done, "seconds": round(wall, 3), "videos_per_s": round(done / wall, 2),
            "decode_ms_per_video": round(decode_s * 1000 / done, 2),
            "model_ms_per_video": round(model_s * 1000 / done, 2)}


def metric_sums(text: str) -> dict[str, float]:
    values = {name: metric(text, name) for name in METRICS}
    # 503s of every reason (uploads full, queue full, overloaded)
    values["shortvid_rejected_total"] = sum(float(n) for n in re.findall(r"^shortvid_rejected_total\{[^}]*\} (\S+)$",
                                                                         text, re.MULTILINE))
    return values


async def load(base: str, bodies: list[bytes], concurrency: int, requests: int) -> dict:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        async def post(i: int) -> tuple[int, float]:
            body = bodies[i % len(bodies)]
            t0 = time.perf_counter()
            r = await client.post("/v1/classify", content=body,
                                  headers={"Content-Type": "application/octet-stream", "X-Filename": f"{i}.mp4"})
            return r.status_code, time.perf_counter() - t0

        async def run(total: int, offset: int) -> list[tuple[int, float]]:
            results: list[tuple[int, float]] = []
            counter = iter(range(total))

            async def worker():
                for i in counter:  # shared iterator: each worker takes the next request number
                    results.append(await post(offset + i))

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return results

        await run(concurrency, 0)  # warm-up: connections opened, pools busy
        before = metric_sums((await client.get("/metrics")).text)
        started = time.perf_counter()
        results = await run(requests, concurrency)
        wall = time.perf_counter() - started
        after = metric_sums((await client.get("/metrics")).text)
    delta = {k: after[k] - before[k] for k in after}
    ok = sum(1 for status, _ in results if status == 200)
    batches, decodes = delta["shortvid_batch_size_count"], delta["shortvid_decode_seconds_count"]
    return {"concurrency": concurrency, "requests": len(results), "ok": ok, "non_200": len(results) - ok,
            "seconds": round(wall, 3), "videos_per_s": round(ok / wall, 2),
            **percentiles([seconds for _, seconds in results]),
            "mean_batch": round(delta["shortvid_batch_size_sum"] / batches, 2) if batches else None,
            "model_calls": int(batches),
            "model_ms_per_call": round(delta["shortvid_model_seconds_sum"] * 1000 / batches, 1) if batches else None,
            "decode_ms_per_video": round(delta["shortvid_decode_seconds_sum"] * 1000 / decodes, 1) if decodes else None,
            "rejected": int(delta["shortvid_rejected_total"])}


def serve_spinning(run: str, port: int, args: argparse.Namespace) -> None:
    """`shortvid serve RUN --port PORT` with this script's settings, ONNX Runtime's threads spinning."""
    from shortvid.serve.http import ServeSettings
    from shortvid.serve.server import serve

    classifier = Classifier.load(run, device="cpu", backend=args.backend, spin=True)
    settings = ServeSettings(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                             decode_workers=args.decode_workers)
    serve(classifier, settings, port=port, log_level="warning")


def main() -> None:
    parser = make_parser(__doc__)
    add_corpus_argument(parser)
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--requests", type=int, default=160, help="measured requests per concurrency level")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--offline-passes", type=int, default=2, help="passes over the videos per offline measurement")
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--decode-workers", type=int, default=2)
    parser.add_argument("--backend", default="auto", help="auto (the default: ONNX Runtime where it runs), torch, onnx")
    parser.add_argument("--spin", action="store_true",
                        help="serve with ONNX Runtime's pool threads spinning (Classifier.load(spin=True)); "
                             "default: threads that sleep, as `shortvid serve` loads them")
    parser.add_argument("--child-serve", nargs=2, metavar=("RUN", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_serve:
        serve_spinning(args.child_serve[0], int(args.child_serve[1]), args)
        return
    levels = [int(c) for c in args.concurrency.split(",")]
    paths = corpus(args.corpus, args.videos)
    bodies = [path.read_bytes() for path in paths]
    report: dict = {"machine": machine(), "describe": describe(), "corpus": args.corpus, "videos": len(paths),
                    "mean_video_mb": round(sum(map(len, bodies)) / len(bodies) / 1e6, 2),
                    "settings": {"max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
                                 "decode_workers": args.decode_workers, "backend": args.backend, "spin": args.spin},
                    "requests_per_level": args.requests}
    with tempfile.TemporaryDirectory() as folder:
        run = make_run(Path(folder) / "student")
        classifier = Classifier.load(run, device="cpu", backend=args.backend)
        offline(classifier, bodies[:2], args.max_batch, 1)  # warm-up
        before = offline(classifier, bodies, args.max_batch, args.offline_passes)
        print("offline before:", before, flush=True)

        port = free_port()
        base = f"http://127.0.0.1:{port}"
        settings = ["--backend", args.backend, "--max-batch", str(args.max_batch),
                    "--max-wait-ms", str(args.max_wait_ms), "--decode-workers", str(args.decode_workers)]
        if args.spin:
            server = launch([sys.executable, __file__, "--child-serve", str(run), str(port), *settings], port)
        else:
            server = start_server(run, port, *settings)
        try:
            levels_out = []
            for concurrency in levels:
                result = asyncio.run(load(base, bodies, concurrency, args.requests))
                print(result, flush=True)
                levels_out.append(result)
        finally:
            stop(server)
        after = offline(classifier, bodies, args.max_batch, args.offline_passes)
        print("offline after:", after, flush=True)
    baseline = (before["videos_per_s"] + after["videos_per_s"]) / 2
    for result in levels_out:
        result["vs_offline"] = round(result["videos_per_s"] / baseline, 3)
    report.update({"torch_threads_bench_process": torch.get_num_threads(), "offline_before": before,
                   "offline_after": after, "offline_videos_per_s": round(baseline, 2), "levels": levels_out})
    print(json.dumps(report, indent=2))
    write_json(args.json, report)
    print("\n| | requests | videos/s | × offline | p50 ms | p99 ms | mean batch | model ms/call | decode ms/video "
          "| non-200 |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(f"| offline: read + scores_many, batches of {args.max_batch}, 1 thread (mean of before/after) | "
          f"{before['videos'] + after['videos']} | {baseline:.1f} | 1.00 | | | {args.max_batch} | | "
          f"{(before['decode_ms_per_video'] + after['decode_ms_per_video']) / 2:.1f} | |")
    for r in levels_out:
        print(f"| service, concurrency {r['concurrency']} | {r['requests']} | **{r['videos_per_s']:.1f}** | "
              f"**{r['vs_offline']:.2f}** | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['mean_batch']} | "
              f"{r['model_ms_per_call']} | {r['decode_ms_per_video']} | {r['non_200']} |")


if __name__ == "__main__":
    main()
