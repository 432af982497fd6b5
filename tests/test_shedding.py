"""Shedding through HTTP (issue 19, point 1): the sequences that locked the service out for good,
reproduced against a real server with a real run; each must leave a service that admits when idle,
recovers, and says when and why it shed. ``Admission`` itself is tested in tests/test_admission.py.
"""

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from shortvid.infer.classifier import Classifier
from shortvid.synth.encode import EncodeSpec, encode_video

from serving import free_port, metric, running, wait_ready

OCTET = {"content-type": "application/octet-stream"}


class SlowToDecode(Classifier):
    """A real run whose decoding takes ``delay`` more seconds for an upload named slow*: what a huge
    legal upload costs."""

    delay = 1.5

    def read(self, source, timeout=10.0, limits=None):
        if str(getattr(source, "name", "")).startswith("slow"):
            time.sleep(self.delay)
        return super().read(source, timeout, limits)


@pytest.fixture(scope="module")
def video(small_videos) -> bytes:
    return small_videos["v0.mp4"].read_bytes()


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> bytes:
    """A legal 4K upload: three 3840x2160 keyframes, a few hundred ms to decode."""
    y, x = np.mgrid[0:2160, 0:3840]
    frames = [np.stack([(x + 40 * i) % 256, y % 256, np.full_like(x, 90)], -1).astype(np.uint8) for i in range(3)]
    path = tmp_path_factory.mktemp("4k") / "4k.mp4"
    encode_video(path, frames, EncodeSpec(fps=10, gop=1, scenecut=False, audio=False), keyframes=(0, 1, 2))
    return path.read_bytes()


def post(client, data: bytes, name: str = "clip.mp4") -> httpx.Response:
    return client.post("/v1/classify", content=data, headers={**OCTET, "x-filename": name})


@pytest.mark.slow
def test_one_slow_request_does_not_lock_the_service_out(trained_run, video):
    """The report's first sequence, with the default settings: a 1.5 s upload beside a fast one (and,
    before it, alone), then requests to the idle service."""
    with running(SlowToDecode.load(trained_run, device="cpu")) as client:
        assert post(client, video, "slow.mp4").status_code == 200
        assert [post(client, video).status_code for _ in range(5)] == [200] * 5
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda name: post(client, video, name), ["slow.mp4", "fast.mp4"]))
        assert [answer.status_code for answer in answers] == [200, 200]
        text = client.get("/metrics").text
        assert metric(text, "shortvid_queue_depth") == 0 and metric(text, "shortvid_expected_wait_seconds") == 0
        assert [post(client, video).status_code for _ in range(5)] == [200] * 5  # all five were refused before


def test_a_legal_4k_upload_beside_real_ones_at_a_small_budget(trained_run, video, big):
    """The report's second sequence: --max-queue-seconds 0.05, a real 4K upload beside a few real
    ones, then requests to the idle service; and the service says it shed and why."""
    with running(Classifier.load(trained_run, device="cpu"), max_queue_seconds=0.05) as client:
        with ThreadPoolExecutor(4) as pool:
            statuses = list(pool.map(lambda data: post(client, data).status_code, [big, video, video, video]))
        assert set(statuses) <= {200, 503} and statuses[0] == 200, statuses
        assert [post(client, video).status_code for _ in range(5)] == [200] * 5
        with ThreadPoolExecutor(16) as pool:  # far more than fits 0.05 s: some are shed
            statuses = list(pool.map(lambda _: post(client, video).status_code, range(48)))
        assert set(statuses) == {200, 503}, statuses
        shedding = client.get("/readyz").json()["shedding"]
        assert client.get("/readyz").status_code == 200
        assert shedding["reason"] == "Overloaded" and "budget" in shedding["message"]
        text = client.get("/metrics").text
        assert metric(text, 'shortvid_shedding{reason="Overloaded"}') == 1
        assert metric(text, 'shortvid_rejected_total{reason="Overloaded"}') >= 1


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs SIGSTOP")
def test_a_stalled_process_recovers(trained_run, video, big):
    """The report's third sequence: the process frozen (SIGSTOP, as a VM freeze or a CPU throttle)
    with requests in flight, at a 0.2 s budget; then an idle service admits, and concurrent load is
    served again once the stall has faded from the estimate (the default 10 s window)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "shortvid.cli", "serve", str(trained_run), "--port", str(port),
                                "--device", "cpu", "--max-queue-seconds", "0.2",
                                "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            wait_ready(client, 120, process)
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda _: post(client, video), range(8)))  # measured while healthy
                in_flight = [pool.submit(post, client, big) for _ in range(4)]  # decoding for a while
                deadline = time.monotonic() + 30
                while metric(client.get("/metrics").text, "shortvid_queue_depth") < 1:
                    assert time.monotonic() < deadline, "the 4K uploads never got in"
                os.kill(process.pid, signal.SIGSTOP)
                time.sleep(4.0)
                os.kill(process.pid, signal.SIGCONT)
                assert {future.result().status_code for future in in_flight} <= {200, 503}
            assert [post(client, video).status_code for _ in range(5)] == [200] * 5
            deadline = time.monotonic() + 60
            while True:  # concurrent requests are all served again once the stall has faded
                with ThreadPoolExecutor(3) as pool:
                    statuses = list(pool.map(lambda _: post(client, video).status_code, range(3)))
                if statuses == [200] * 3:
                    break
                assert time.monotonic() < deadline, "concurrent requests still shed a minute after the stall"
                time.sleep(0.5)
            assert metric(client.get("/metrics").text, "shortvid_throughput_requests_per_second") > 5
    finally:
        process.kill()
        process.wait(timeout=30)
