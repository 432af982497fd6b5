"""Where a batch job's videos come from: manifests (text, CSV, Parquet, local or by URI) and videos by
URI (fsspec's memory filesystem, and a real HTTP server on loopback), through the local engine."""

import functools
import http.server
import json
import threading

import fsspec
import pytest

from shortvid.cli import main
from shortvid.data.sources import expand_inputs, read_manifest
from shortvid.decode import VideoNotFoundError, read_frames
from shortvid.errors import DatasetError
from shortvid.serve.store import PredictionStore


def test_manifests_in_every_format(tmp_path, small_videos):
    good, other = str(small_videos["v0.mp4"]), str(small_videos["v1.mp4"])
    (tmp_path / "list.txt").write_text(f"# videos\n{good}\n\nrelative.mp4\ns3://bucket/x.mp4\n")
    assert read_manifest(tmp_path / "list.txt") == [good, str(tmp_path / "relative.mp4"), "s3://bucket/x.mp4"]
    (tmp_path / "list.csv").write_text(f"path,label\n{good},1\n{other},2\n")
    assert read_manifest(tmp_path / "list.csv") == [good, other]
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"path": [good, other], "size": [1, 2]}), tmp_path / "list.parquet")
    assert read_manifest(tmp_path / "list.parquet") == [good, other]
    (tmp_path / "bad.csv").write_text("file\nx.mp4\n")
    with pytest.raises(DatasetError, match="'path' column"):
        read_manifest(tmp_path / "bad.csv")
    with pytest.raises(DatasetError, match="no such manifest"):
        read_manifest(tmp_path / "absent.txt")


def test_videos_and_manifests_by_uri(small_videos):
    data = small_videos["v0.mp4"].read_bytes()
    with fsspec.open("memory://shortvid-test/clips/a.mp4", "wb") as handle:
        handle.write(data)
    with fsspec.open("memory://shortvid-test/list.txt", "w") as handle:
        handle.write("clips/a.mp4\nmemory://shortvid-test/clips/missing.mp4\n")
    listed = read_manifest("memory://shortvid-test/list.txt")
    assert listed == ["memory://shortvid-test/clips/a.mp4", "memory://shortvid-test/clips/missing.mp4"]
    clip = read_frames(listed[0], 3, size=32)
    assert clip.info.source == listed[0] and clip.frames.shape[0] == 3
    assert (clip.frames == read_frames(small_videos["v0.mp4"], 3, size=32).frames).all()
    with pytest.raises(VideoNotFoundError, match="missing.mp4"):
        read_frames(listed[1], 3)
    assert expand_inputs([listed[0], "memory://x/*.mp4"])[0] == [listed[0], "memory://x/*.mp4"]


@pytest.fixture
def http_folder(small_videos):
    """A real HTTP server on loopback serving the small videos' folder."""
    pytest.importorskip("aiohttp")
    folder = small_videos["v0.mp4"].parent
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_predict_reads_a_manifest_of_urls(http_folder, small_videos, trained_run, tmp_path, capsys):
    manifest = tmp_path / "urls.txt"
    manifest.write_text(f"{http_folder}/v0.mp4\n{http_folder}/v1.mp4\n{http_folder}/nothing.mp4\n")
    assert main(["predict", str(trained_run), "--manifest", str(manifest), "--device", "cpu"]) == 0
    lines = {line["path"]: line for line in map(json.loads, capsys.readouterr().out.splitlines())}
    assert set(lines) == {f"{http_folder}/v0.mp4", f"{http_folder}/v1.mp4", f"{http_folder}/nothing.mp4"}
    assert "labels" in lines[f"{http_folder}/v0.mp4"] and "labels" in lines[f"{http_folder}/v1.mp4"]
    assert lines[f"{http_folder}/nothing.mp4"]["error"]["type"] in {"VideoNotFoundError", "InvalidVideoError"}
    local = main(["predict", str(trained_run), str(small_videos["v0.mp4"]), "--device", "cpu"])
    assert local == 0
    here = json.loads(capsys.readouterr().out.splitlines()[0])
    assert [label["id"] for label in here["top5"]] == [label["id"] for label in lines[f"{http_folder}/v0.mp4"]["top5"]]


def test_predict_out_writes_rows_and_resumes(trained_run, small_videos, tmp_path, capsys):
    videos = [str(small_videos[name]) for name in ("v0.mp4", "v1.mp4", "text.mp4")]
    out = tmp_path / "rows"
    assert main(["predict", str(trained_run), *videos[:2], "--out", str(out), "--format", "jsonl", "--device", "cpu"]) == 0
    assert "2 videos: 2 done" in capsys.readouterr().err
    assert main(["predict", str(trained_run), *videos, str(tmp_path / "none-*.mp4"), "--out", str(out),
                 "--format", "jsonl", "--batch-size", "2", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "1 done" in err and "2 skipped" in err
    rows = {row["path"]: row for row in PredictionStore(out, "jsonl").rows()}
    assert set(rows) == {*videos, str(tmp_path / "none-*.mp4")}
    assert rows[videos[2]]["error"]["type"] == "InvalidVideoError" and rows[videos[0]]["error"] is None
