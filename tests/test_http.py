"""`shortvid serve`: a real uvicorn server on a free port, spoken to over HTTP."""

import dataclasses
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from shortvid.data.annotations import load_dataset
from shortvid.infer.classifier import Classifier
from shortvid.serve.batcher import Batcher
from shortvid.serve.metrics import Metrics

from serving import free_port, metric, running, wait_ready


@pytest.fixture(scope="module")
def classifier(trained_run):
    return Classifier.load(trained_run, device="cpu")


@pytest.fixture(scope="module")
def videos(tiny_corpus):
    return [sample.path for sample in load_dataset(tiny_corpus, "val").samples[:6]]


@pytest.fixture(scope="module")
def root(tmp_path_factory, videos):
    """An allowed root holding one video, a symlink out of it, and a video beside it (outside)."""
    base = tmp_path_factory.mktemp("serve")
    inside = base / "allowed"
    inside.mkdir()
    (inside / "clip.mp4").write_bytes(videos[0].read_bytes())
    (base / "secret.mp4").write_bytes(videos[1].read_bytes())
    (inside / "escape.mp4").symlink_to(base / "secret.mp4")
    return inside


@pytest.fixture(scope="module")
def server(classifier, root):
    with running(classifier, allow_root=root, max_wait_ms=5) as client:
        yield client


def same_prediction(answer: dict, expected):
    assert [label["id"] for label in answer["labels"]] == expected.ids
    assert [label["id"] for label in answer["top5"]] == [label.id for label in expected.top]
    for got, want in zip(answer["top5"], expected.top, strict=True):
        assert abs(got["score"] - want.score) <= 1e-5


def test_health_ready_metrics_and_docs(server):
    assert server.get("/healthz").json() == {"status": "ok"}
    assert server.get("/readyz").status_code == 200
    text = server.get("/metrics").text
    assert metric(text, "shortvid_ready") == 1
    assert metric(text, "shortvid_queue_depth") == 0
    assert metric(text, "shortvid_batch_size_count") >= 1  # the warm-up
    info = re.search(r'^shortvid_model_info\{model="(\w+)",run="[^"]*",'
                     r'backend="(\w+)",precision="fp32",device="cpu"\} 1$', text, re.M)
    assert info and info.group(2) == "onnx"  # auto's choice
    assert info.group(1) == server.get("/v1/model").json()["id"]
    assert "# TYPE shortvid_request_duration_seconds histogram" in text
    assert server.get("/openapi.json").json()["paths"]["/v1/classify"]["post"]
    assert server.get("/docs").status_code == 200


def test_classify_by_upload_and_raw_body_matches_predict(server, classifier, videos):
    expected = classifier.predict(videos[0])
    data = videos[0].read_bytes()
    upload = server.post("/v1/classify", files={"file": (videos[0].name, data, "video/mp4")})
    assert upload.status_code == 200, upload.text
    answer = upload.json()
    same_prediction(answer, expected)
    assert answer["request_id"] and upload.headers["x-request-id"] == answer["request_id"]
    assert set(answer["timings_ms"]) >= {"queue", "decode", "batch_wait", "model", "total"}
    assert answer["keyframes"] == expected.keyframes
    raw = server.post("/v1/classify", content=data, headers={"content-type": "application/octet-stream",
                                                             "x-request-id": "abc"})
    assert raw.status_code == 200, raw.text
    same_prediction(raw.json(), expected)
    assert raw.json()["request_id"] == "abc"
    same_prediction(server.post("/v1/classify", content=data, headers={"content-type": "video/mp4"}).json(), expected)


# Bad input over HTTP, all of it here (how requests.py reads a body, unit by unit: test_requests.py; the
# connection layer, smuggling and oversized heads: test_http_edges.py; fuzzed uploads: test_fuzz.py).
OCTET = {"content-type": "application/octet-stream"}
JSON = {"content-type": "application/json"}
TEXT = b"not a video\n"
# Bad requests (httpx's post arguments), each with the status, the error's type and a piece of its message.
BAD_REQUESTS = {
    "text-upload": ({"files": {"file": ("notes.mp4", TEXT, "video/mp4")}}, 422, "InvalidVideoError", "notes.mp4"),
    "text-raw-named": ({"content": TEXT, "headers": {**OCTET, "x-filename": "clip.mp4"}}, 422, "InvalidVideoError",
                       "clip.mp4"),
    "empty-raw": ({"content": b"", "headers": OCTET}, 422, "InvalidVideoError", "empty"),
    "text-plain": ({"content": b"x", "headers": {"content-type": "text/plain"}}, 415, "UnsupportedMediaType",
                   "text/plain"),
    "multipart-without-file": ({"files": {"other": ("a", b"x")}}, 400, "BadRequest", 'field "file"'),
    "json-torn": ({"content": b"{", "headers": JSON}, 400, "BadRequest", "invalid JSON"),
    "json-deep": ({"content": b"[" * 100_000 + b"]" * 100_000, "headers": JSON}, 400, "BadRequest", "deeply"),
    "json-path-with-nul": ({"json": {"path": "clip\0.mp4"}}, 400, "BadRequest", "NUL"),
}
# The damaged uploads of issue 10 (conftest.py), each with the error's type.
DAMAGED = {"stsd": "CorruptVideoError", "hdlr": "CorruptVideoError", "swapped": "CorruptVideoError",
           "sps_16000x16000": "VideoTooLargeError"}


def assert_refused(server, response, status: int, kind: str, message: str) -> None:
    """``response`` is ``status`` with a ``kind`` error whose message holds ``message``, and the service goes on
    (no answer of this server so far was a 500)."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == kind and message in error["message"], error
    assert server.get("/healthz").status_code == 200
    assert 'status="500"' not in server.get("/metrics").text


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_a_bad_request_is_a_4xx_saying_why(server, case):
    request, status, kind, message = BAD_REQUESTS[case]
    assert_refused(server, server.post("/v1/classify", **request), status, kind, message)


@pytest.mark.parametrize("key", DAMAGED)
def test_a_damaged_upload_is_422_naming_the_file(server, damaged, key):
    response = server.post("/v1/classify", content=damaged[key].read_bytes(),
                           headers={**OCTET, "x-filename": f"{key}.mp4"})
    assert_refused(server, response, 422, DAMAGED[key], f"{key}.mp4")


def test_paths_only_inside_the_allowed_root(server, classifier, root, videos):
    inside = server.post("/v1/classify", json={"path": str(root / "clip.mp4")})
    assert inside.status_code == 200, inside.text
    same_prediction(inside.json(), classifier.predict(videos[0]))
    assert server.post("/v1/classify", json={"path": "clip.mp4"}).status_code == 200  # relative to the root
    for path in (str(root / ".." / "secret.mp4"), "../secret.mp4", str(root / "escape.mp4"), "/etc/passwd"):
        response = server.post("/v1/classify", json={"path": path})
        assert response.status_code == 403, path
        assert response.json()["error"]["type"] == "PathNotAllowed"
    missing = server.post("/v1/classify", json={"path": "nothing.mp4"})
    assert missing.status_code == 422 and missing.json()["error"]["type"] == "VideoNotFoundError"


def test_paths_refused_without_allow_root(classifier, videos):
    with running(classifier) as client:
        response = client.post("/v1/classify", json={"path": str(videos[0])})
        assert response.status_code == 403 and response.json()["error"]["type"] == "PathNotAllowed"


def test_oversized_bodies_are_413(classifier):
    with running(classifier, max_body_mb=0.01) as client:  # 10 KiB
        big = b"\0" * 50_000
        declared = client.post("/v1/classify", content=big, headers={"content-type": "application/octet-stream"})
        assert declared.status_code == 413 and declared.json()["error"]["type"] == "BodyTooLarge"
        streamed = client.post("/v1/classify", content=iter([big[:8000]] * 6),  # chunked: no Content-Length
                               headers={"content-type": "application/octet-stream"})
        assert streamed.status_code == 413
        upload = client.post("/v1/classify", files={"file": ("big.mp4", big, "video/mp4")})
        assert upload.status_code == 413
        assert client.get("/healthz").status_code == 200


class SlowClassifier(Classifier):
    """The real classifier with a slow model call (and optionally a failing one)."""

    delay = 1.0
    fail = False

    def scores_many(self, clips):
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("model exploded")
        return super().scores_many(clips)


@pytest.mark.slow
def test_full_queue_is_503_with_retry_after(trained_run, videos):
    slow = SlowClassifier.load(trained_run, device="cpu")
    with running(slow, max_queue=1, retry_after=3) as client:
        data = videos[0].read_bytes()
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(client.post, "/v1/classify", content=data,
                                headers={"content-type": "application/octet-stream"})
            deadline = time.monotonic() + 30
            while metric(client.get("/metrics").text, "shortvid_queue_depth") < 1:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            refused = client.post("/v1/classify", content=data, headers={"content-type": "application/octet-stream"})
            assert refused.status_code == 503
            assert refused.headers["retry-after"] == "3"
            assert refused.json()["error"]["type"] == "QueueFull"
            assert first.result().status_code == 200
        assert metric(client.get("/metrics").text, 'shortvid_rejected_total{reason="QueueFull"}') == 1


@pytest.mark.slow
def test_timeout_is_504(trained_run, videos):
    slow = SlowClassifier.load(trained_run, device="cpu")
    with running(slow, timeout=0.5) as client:
        late = client.post("/v1/classify", content=videos[0].read_bytes(),
                           headers={"content-type": "application/octet-stream"})
        assert late.status_code == 504 and late.json()["error"]["type"] == "Timeout"
        assert client.get("/healthz").status_code == 200
        assert 'path="/v1/classify",status="504"' in client.get("/metrics").text


def test_a_crash_is_500_and_the_server_goes_on(trained_run, videos):
    slow = SlowClassifier.load(trained_run, device="cpu")
    slow.delay = 0.0
    with running(slow) as client:
        data = videos[0].read_bytes()
        slow.fail = True
        crashed = client.post("/v1/classify", content=data, headers={"content-type": "application/octet-stream"})
        assert crashed.status_code == 500 and "model exploded" in crashed.json()["error"]["message"]
        slow.fail = False
        assert client.get("/healthz").status_code == 200
        ok = client.post("/v1/classify", content=data, headers={"content-type": "application/octet-stream"})
        assert ok.status_code == 200
        statuses = client.get("/metrics").text
        for status in (200, 500):
            assert f'path="/v1/classify",status="{status}"' in statuses


class BrokenWarmupClassifier(Classifier):
    """The real classifier, failing to read the service's warm-up video."""

    def read(self, source, timeout=10.0, limits=None):
        if getattr(source, "name", None) == "<warmup>":
            raise RuntimeError("no decoder for the warm-up")
        return super().read(source, timeout, limits)


def test_readyz_is_503_with_the_reason_when_the_warm_up_fails(trained_run):
    broken = BrokenWarmupClassifier.load(trained_run, device="cpu")
    with running(broken, ready=False) as client:
        deadline = time.monotonic() + 60
        while (readyz := client.get("/readyz")).json()["reason"] == "warming up":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert readyz.status_code == 503
        assert readyz.json() == {"status": "not ready",
                                 "reason": "warm-up failed: RuntimeError: no decoder for the warm-up"}
        assert metric(client.get("/metrics").text, "shortvid_ready") == 0


def test_a_clip_that_breaks_the_model_fails_only_its_own_request(classifier, videos):
    clips = [classifier.read(path) for path in videos[:3]]
    clips[1] = dataclasses.replace(clips[1], frames=clips[1].frames[..., None])  # no model takes this shape
    metrics = Metrics(max_batch=3)
    batcher = Batcher(max_batch=3, max_wait_ms=2000, metrics=metrics)
    futures = [batcher.submit(clip, classifier) for clip in clips]  # queued before the thread starts: one batch
    batcher.start()
    try:
        results = [futures[i].result(timeout=60) for i in (0, 2)]
        with pytest.raises((RuntimeError, ValueError)):  # the clip's own error (preprocess or model), its request only
            futures[1].result(timeout=60)
    finally:
        batcher.stop()
    for clip, result in zip((clips[0], clips[2]), results, strict=True):
        assert result.batch_size == 1  # retried alone after the batch of 3 failed
        np.testing.assert_allclose(result.scores, classifier.scores(clip)[0], atol=1e-5)
    assert metrics.batch_size.count == metrics.model.count == 2  # observed per successful model call
    assert metrics.batch_wait.count == 2


@pytest.mark.slow
def test_concurrent_requests_are_batched(classifier, videos):
    expected = {path.name: classifier.predict(path) for path in videos}
    # A long wait after the first clip makes a batch of several certain; max_batch ends the wait early.
    with running(classifier, max_batch=len(videos), max_wait_ms=2000, decode_workers=2) as client:
        def post(path):
            return path.name, client.post("/v1/classify", files={"file": (path.name, path.read_bytes(), "video/mp4")})

        with ThreadPoolExecutor(len(videos)) as pool:
            answers = list(pool.map(post, videos))
        for name, response in answers:
            assert response.status_code == 200, response.text
            same_prediction(response.json(), expected[name])
        assert max(response.json()["batch_size"] for _, response in answers) > 1
        text = client.get("/metrics").text
        singles = metric(text, 'shortvid_batch_size_bucket{le="1"}')
        assert metric(text, "shortvid_batch_size_count") > singles  # some model call had more than one clip
        classified = 'shortvid_http_requests_total{method="POST",path="/v1/classify",status="200"}'
        assert metric(text, classified) == len(videos)


def test_cli_has_serve():
    from shortvid.cli import build_parser

    args = build_parser().parse_args(["serve", "runs/x", "--port", "0", "--max-batch", "4", "--allow-root", "/tmp"])
    assert args.handler.__name__ == "cmd_serve" and args.max_batch == 4 and args.max_wait_ms == 5.0


@pytest.mark.slow
def test_shortvid_serve_command(trained_run, root, classifier, videos):
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "shortvid.cli", "serve", str(trained_run), "--port", str(port),
                                "--device", "cpu", "--allow-root", str(root), "--decode-workers", "1",
                                "--log-level", "warning"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            wait_ready(client, 120, process)
            response = client.post("/v1/classify", json={"path": "clip.mp4"})
            assert response.status_code == 200, response.text
            same_prediction(response.json(), classifier.predict(videos[0]))
        with socket.socket() as taken:  # a second server on a port in use fails, and says so
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = subprocess.run([sys.executable, "-m", "shortvid.cli", "serve", str(trained_run), "--device", "cpu",
                                   "--port", str(taken.getsockname()[1]), "--log-level", "warning"],
                                  capture_output=True, text=True, timeout=300)
        assert busy.returncode == 2 and "could not serve" in busy.stderr
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode == 0, process.stdout.read()  # SIGTERM stops it cleanly
