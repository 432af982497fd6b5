"""Model control (issue 19, point 4): a new model goes live without a restart and without a failed
request; every answer names the model that produced it; a run that fails to load changes nothing.

Two real runs that answer differently (the trained run, and a copy whose class biases are shifted),
a real server, real clients.
"""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch

from shortvid.data.annotations import load_dataset
from shortvid.infer.classifier import Classifier
from shortvid.run import RunDir
from shortvid.serve.batcher import Batcher
from shortvid.serve.http import ServeSettings
from shortvid.serve.metrics import Metrics

from serving import free_port, metric, running, wait_ready

TOKEN = "a-long-admin-token-for-the-tests"
AUTH = {"authorization": f"Bearer {TOKEN}"}
OCTET = {"content-type": "application/octet-stream"}


@pytest.fixture(scope="module")
def runs(trained_run, tmp_path_factory):
    """Run A (the trained run) and run B (its copy with the class biases shifted: other answers)."""
    folder = tmp_path_factory.mktemp("reload")
    a = shutil.copytree(trained_run, folder / "a", ignore=shutil.ignore_patterns("*.onnx"))
    b = shutil.copytree(trained_run, folder / "b", ignore=shutil.ignore_patterns("*.onnx"))
    path = RunDir(b).best
    state = torch.load(path, weights_only=False)
    bias = state["model"]["classifier.fc.bias"]
    state["model"]["classifier.fc.bias"] = bias + torch.linspace(-3, 3, len(bias))
    RunDir(b).save_checkpoint(state, path)
    return a, b


@pytest.fixture(scope="module")
def videos(tiny_corpus):
    return [sample.path for sample in load_dataset(tiny_corpus, "val").samples[:4]]


@pytest.fixture(scope="module")
def expected(runs, videos):
    """Per model id: the top-5 scores each video gets offline."""
    answers = {}
    for run in runs:
        classifier = Classifier.load(run, device="cpu")
        answers[RunDir(run).fingerprint()[:12]] = {path.name: [(label.id, label.score) for label in
                                                            classifier.predict(path).top] for path in videos}
    assert len(answers) == 2 and list(answers.values())[0] != list(answers.values())[1]
    return answers


def top5(answer: dict) -> list[tuple[int, float]]:
    return [(label["id"], label["score"]) for label in answer["top5"]]


def matches(got: list, want: list) -> bool:
    return [i for i, _ in got] == [i for i, _ in want] and np.allclose([s for _, s in got], [s for _, s in want],
                                                                          atol=1e-4)


@pytest.mark.slow
def test_five_reloads_under_sixteen_clients_lose_no_request(runs, videos, expected):
    a, b = runs
    id_a, id_b = (RunDir(run).fingerprint()[:12] for run in runs)
    answers, stop = [], threading.Event()
    # The time budget is off so that a 503 can only come from the swap (the count bound still holds).
    with running(Classifier.load(a, device="cpu"), admin_token=TOKEN, max_queue_seconds=None) as client:
        assert client.get("/v1/model").json()["id"] == id_a

        def hammer(worker: int) -> None:
            turn = worker
            while not stop.is_set():
                video = videos[turn % len(videos)]
                response = client.post("/v1/classify", content=video.read_bytes(),
                                       headers={**OCTET, "x-filename": video.name})
                answers.append((video.name, response.status_code, response.json(), response.headers.get("x-model")))
                turn += 1

        reloads = []
        with ThreadPoolExecutor(16) as pool:
            workers = [pool.submit(hammer, worker) for worker in range(16)]
            time.sleep(0.5)
            for turn in range(5):
                run = b if turn % 2 == 0 else a
                reply = client.post("/admin/reload", json={"run": str(run)}, headers=AUTH)
                assert reply.status_code == 200, reply.text
                reloads.append(reply.json())
                time.sleep(0.5)
            stop.set()
            for worker in workers:
                worker.result()
        assert [reply["model"]["id"] for reply in reloads] == [id_b, id_a, id_b, id_a, id_b]
        assert [reply["previous"] for reply in reloads] == [id_a, id_b, id_a, id_b, id_a]
        described = client.get("/v1/model").json()
        assert described["id"] == id_b and described["reloads"] == {"ok": 5, "failed": 0}
        text = client.get("/metrics").text
        counted = sum(metric(text, f'shortvid_model_answers_total{{model="{model}",status="200"}}')
                      for model in (id_a, id_b))
        assert metric(text, 'shortvid_model_reloads_total{result="ok"}') == 5
    statuses = [status for _, status, _, _ in answers]
    assert len(answers) > 100 and set(statuses) == {200}, [a for a in answers if a[1] != 200][:3]
    assert counted == len(answers)
    seen = set()
    for name, _, body, header in answers:
        model = body["model"]
        assert header == model and model in expected
        assert matches(top5(body), expected[model][name]), (model, name)  # produced by the model it names
        seen.add(model)
    assert seen == {id_a, id_b}


def test_a_run_that_fails_to_load_leaves_the_old_model_serving(runs, videos, tmp_path):
    a, _ = runs
    (tmp_path / "empty").mkdir()
    torn = shutil.copytree(a, tmp_path / "torn")
    (torn / "checkpoints" / "best.pt").write_bytes(b"torn by a kill")
    with running(Classifier.load(a, device="cpu"), admin_token=TOKEN) as client:
        before = client.get("/v1/model").json()
        for bad, kind in ((tmp_path / "empty", "RunError"), (torn, None)):
            reply = client.post("/admin/reload", json={"run": str(bad)}, headers=AUTH)
            assert reply.status_code == 422 and reply.json()["serving"] == before["id"], reply.text
            if kind:
                assert reply.json()["error"]["type"] == kind and str(bad) in reply.json()["error"]["message"]
            described = client.get("/v1/model").json()
            assert described["id"] == before["id"] and described["last_reload"]["ok"] is False
            answer = client.post("/v1/classify", content=videos[0].read_bytes(), headers=OCTET)
            assert answer.status_code == 200 and answer.json()["model"] == before["id"]
        assert described["reloads"] == {"ok": 0, "failed": 2}
        assert metric(client.get("/metrics").text, 'shortvid_model_reloads_total{result="failed"}') == 2


def test_model_control_is_off_without_a_token_and_checks_it(runs):
    a, _ = runs
    with running(Classifier.load(a, device="cpu")) as client:
        assert client.post("/admin/reload", headers=AUTH).status_code == 404
        assert "/admin/reload" not in client.get("/openapi.json").json()["paths"]
    with running(Classifier.load(a, device="cpu"), admin_token=TOKEN) as client:
        assert client.post("/admin/reload").status_code == 401
        wrong = client.post("/admin/reload", headers={"authorization": f"Bearer {TOKEN[:-1]}x"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert client.post("/admin/reload", headers={"authorization": TOKEN}).status_code == 401  # no scheme
        same = client.post("/admin/reload", headers=AUTH)  # no body: the served run, as it is on disk now
        assert same.status_code == 200 and same.json()["model"]["id"] == same.json()["previous"]
        assert client.post("/admin/reload", content=b"[1]", headers=AUTH).status_code == 400
    with pytest.raises(ValueError, match="at least 16"):
        ServeSettings(admin_token="short")


class SlowToLoad(Classifier):
    @classmethod
    def load(cls, *args, **kwargs):
        time.sleep(1.0)
        return super().load(*args, **kwargs)


@pytest.mark.slow
def test_one_reload_at_a_time(runs):
    a, _ = runs
    with running(SlowToLoad.load(a, device="cpu"), admin_token=TOKEN) as client:
        with ThreadPoolExecutor(2) as pool:
            replies = list(pool.map(lambda _: client.post("/admin/reload", headers=AUTH), range(2)))
        assert sorted(reply.status_code for reply in replies) == [200, 409]
        busy = next(reply for reply in replies if reply.status_code == 409).json()
        assert busy["error"]["type"] == "ReloadInProgress"


def test_the_model_endpoint_describes_what_is_served(runs):
    a, _ = runs
    classifier = Classifier.load(a, device="cpu")
    with running(classifier) as client:
        described = client.get("/v1/model").json()
    labels = classifier.labels
    assert described["run"] == str(a) and described["fingerprint"] == RunDir(a).fingerprint()
    assert described["id"] == described["fingerprint"][:12] and len(described["fingerprint"]) == 64
    assert described["backend"] == "onnx" and described["precision"] == "fp32" and described["device"] == "cpu"
    assert [c["name"] for c in described["classes"]] == [labels.name(i) for i in range(len(labels))]
    assert described["frames"]["k"] == classifier.preprocess.frames.k


@pytest.mark.slow
def test_a_batch_never_mixes_models(runs, videos):
    first, second = (Classifier.load(run, device="cpu") for run in runs)
    clips = [first.read(path) for path in videos[:3]]
    batcher = Batcher(max_batch=8, max_wait_ms=2000, metrics=Metrics(8))
    order = [first, first, second, second, first]
    futures = [batcher.submit(clips[i % 3], model) for i, model in enumerate(order)]  # queued, then started
    batcher.start()
    try:
        results = [future.result(timeout=60) for future in futures]
    finally:
        batcher.stop()
    assert [result.batch_size for result in results] == [2, 2, 2, 2, 1]
    for i, (model, result) in enumerate(zip(order, results, strict=True)):
        np.testing.assert_allclose(result.scores, model.scores(clips[i % 3])[0], atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="needs SIGHUP")
def test_sighup_reloads_the_run_the_service_was_started_with(runs, videos, tmp_path):
    """A platform points a link at the newest run and signals the service."""
    a, b = runs
    link = tmp_path / "current"
    link.symlink_to(a)
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "shortvid.cli", "serve", str(link), "--port", str(port),
                                "--device", "cpu", "--log-level", "info"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            wait_ready(client, 120, process)
            id_a = client.get("/v1/model").json()["id"]
            (tmp_path / "next").symlink_to(b)
            os.replace(tmp_path / "next", link)
            process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 120
            while client.get("/v1/model").json()["id"] == id_a:
                assert time.monotonic() < deadline and process.poll() is None, "SIGHUP did not reload"
                time.sleep(0.1)
            described = client.get("/v1/model").json()
            assert described["id"] == RunDir(b).fingerprint()[:12] and described["last_reload"]["ok"] is True
            answer = client.post("/v1/classify", content=videos[0].read_bytes(), headers=OCTET)
            assert answer.status_code == 200 and answer.json()["model"] == described["id"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
        output = process.stdout.read()
    assert "now serving" in output
