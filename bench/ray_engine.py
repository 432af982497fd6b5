"""The Ray engine against the local pipeline, on the same videos in one run, and a job spread over two
Ray nodes.

Baseline: the local pipeline (`shortvid.distributed.predict_local`) on the same videos, in the same
run. Prints each engine's summary as it ends, the report as JSON (videos/s, the ratio to local, Ray's
start-up and memory, the two-node run's rows per node, and the cross-over: the job size from which
2-16 machines like this one on Ray finish sooner than this one alone), then a Markdown table.

Corpus: `--videos` (default 520) videos of the `small` preset's shapes (180x320 and 216x384 portrait,
4-8 s, H.264 + AAC), generated once. Model: the CPU-fast student (tsn_mobilenetv3 at 160 px, random
weights written as a run).

1. local: `predict_local` (classify_many: decode threads ahead of batched model calls, batch 16), rows
   to a folder;
2. ray: a private local Ray (`ray.init`, timed apart: the start-up), then `predict_ray` with one actor
   per CPU on the same videos, rows to another folder; the extra memory is the resident memory of
   every Ray process (raylet, GCS, workers) at the end of the job;
3. two nodes: `ray start --head --num-cpus 1` and a second `ray start --address ... --num-cpus 1` on
   this machine (the closest thing to a cluster a single machine allows), then the job with
   `--address` and 2 actors: rows per node from the output's `node` column.

Ray pays a fixed start-up and some throughput per machine, and wins once several machines share a
job large enough to repay the start-up.

    python bench/ray_engine.py [--videos 520] [--json out.json]
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psutil

from shortvid.distributed import RayOptions, predict_local, predict_ray
from shortvid.infer.store import PredictionStore
from shortvid.machine import describe
from shortvid.synth.corpus import preset

from common import free_port, generated, make_parser, make_run, write_json


def corpus(count: int) -> list[str]:
    """``count`` videos of the `small` preset's shapes."""
    spec = dataclasses.replace(preset("small"), num_videos=count, seed=5)
    return [str(path) for path in generated(f"ray-corpus/{count}", spec)]


def ray_memory_mb() -> float:
    """Resident memory of every Ray process on this machine (not this driver)."""
    total = 0
    for process in psutil.process_iter(["cmdline", "memory_info"]):
        command = " ".join(process.info["cmdline"] or [])
        if process.pid != os.getpid() and ("ray::" in command or "/ray/" in command or "raylet" in command
                                           or "gcs_server" in command):
            total += process.info["memory_info"].rss if process.info["memory_info"] else 0
    return total / 2**20


def two_nodes(run: Path, videos: list[str], out: Path) -> dict:
    """The job on a head of 1 CPU and a second node of 1 CPU, both started with `ray start`."""
    ray_cli = str(Path(sys.executable).parent / "ray")
    environment = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="ray", dir="/tmp")}
    port = free_port()
    common = ["--num-cpus", "1", "--block", "--disable-usage-stats"]
    head = subprocess.Popen([ray_cli, "start", "--head", "--port", str(port), "--include-dashboard", "false", *common],
                            env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    nodes = [head]
    try:
        time.sleep(8)
        address = f"{socket.gethostbyname(socket.gethostname())}:{port}"
        nodes.append(subprocess.Popen([ray_cli, "start", "--address", address, *common], env=environment,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
        time.sleep(8)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "shortvid", "predict", str(run), "--manifest",
                                 str(out.parent / "videos.txt"), "--engine", "ray", "--address", address,
                                 "--actors", "2", "--out", str(out), "--batch-size", "16", "--device", "cpu"],
                                capture_output=True, text=True, env=environment, timeout=1800, check=False)
        seconds = time.perf_counter() - started
        if result.returncode:
            raise RuntimeError(result.stderr[-2000:])
        per_node = Counter(row["node"] for row in PredictionStore(out).rows())
        return {"seconds": round(seconds, 1), "videos_per_s": round(len(videos) / seconds, 2),
                "rows_per_node": dict(per_node), "summary": result.stderr.strip().splitlines()[-1]}
    finally:
        for node in reversed(nodes):
            try:
                os.killpg(node.pid, signal.SIGTERM)
                node.wait(timeout=60)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(node.pid, signal.SIGKILL)
        shutil.rmtree(environment["RAY_TMPDIR"], ignore_errors=True)


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--videos", type=int, default=520)
    args = parser.parse_args()
    import ray

    videos = corpus(args.videos)
    report: dict = {"machine": describe(), "videos": len(videos)}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        run = make_run(folder / "student")
        (folder / "videos.txt").write_text("\n".join(videos) + "\n")
        predict_local(run, videos[:16], folder / "warm", device="cpu", batch_size=16)  # page cache, model files

        local = predict_local(run, videos, folder / "local", device="cpu", batch_size=16)
        report["local"] = local.to_dict()
        print("local:", local.format(), flush=True)

        baseline_mb = ray_memory_mb()
        started = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, configure_logging=False)
        startup = time.perf_counter() - started
        try:
            remote = predict_ray(run, videos, folder / "ray", options=RayOptions(), device="cpu", batch_size=16)
            memory = ray_memory_mb() - baseline_mb
        finally:
            ray.shutdown()
        report["ray"] = {**remote.to_dict(), "startup_s": round(startup, 1), "ray_processes_mb": round(memory)}
        print(f"ray: {remote.format()}; start-up {startup:.1f} s, Ray processes {memory:.0f} MB", flush=True)

        report["two_nodes"] = two_nodes(run, videos, folder / "two-nodes")
        print("two nodes:", report["two_nodes"], flush=True)

    local_rate, ray_rate = report["local"]["videos_per_s"], report["ray"]["videos_per_s"]
    ray_total = report["ray"]["seconds"] + report["ray"]["startup_s"]
    report["ratio_ray_to_local"] = round(ray_rate / local_rate, 3)
    # Machines like this one running the job on Ray, against this machine alone: Ray costs its
    # start-up once, then serves `machines * ray_rate` videos/s.
    report["crossover"] = {}
    for machines in (1, 2, 4, 8, 16):
        rate = machines * ray_rate
        needed = None if rate <= local_rate else report["ray"]["startup_s"] * rate * local_rate / (rate - local_rate)
        report["crossover"][machines] = None if needed is None else round(needed)
    print(json.dumps(report, indent=2))
    print("\n| engine | videos | seconds | videos/s | x local | start-up s | extra memory |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    print(f"| local (classify_many, batch 16) | {len(videos)} | {report['local']['seconds']} | {local_rate} | 1.00 | "
          "0 | 0 |")
    print(f"| ray, private local, {report['ray']['actors']} actors | {len(videos)} | {report['ray']['seconds']} | "
          f"{ray_rate} | {report['ratio_ray_to_local']:.2f} | {report['ray']['startup_s']} | "
          f"{report['ray']['ray_processes_mb']} MB |")
    print(f"(ray end to end with start-up: {ray_total:.1f} s)")
    write_json(args.json, report)


if __name__ == "__main__":
    main()
