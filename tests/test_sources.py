"""Where a batch job's videos come from: manifests (text, CSV, Parquet, local or by URI) and videos by
URI (fsspec's memory filesystem, and a real HTTP server on loopback), through the local engine."""

import functools
import http.server
import json
import sys
import threading

import fsspec
import pytest

from shortvid.cli import main
from shortvid.data.annotations import VIDEO_EXTENSIONS
from shortvid.data.sources import expand_inputs, read_manifest
from shortvid.decode import InvalidVideoError, VideoNotFoundError, read_frames
from shortvid.errors import DatasetError
from shortvid.extras import MissingExtraError
from shortvid.infer.store import PredictionStore


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


def test_a_text_manifest_lists_one_video_a_line(tmp_path):
    """Blank lines and comments (indented too) are skipped, entries stripped; a byte-order mark (as
    Windows editors write) is not part of the first line; relative entries are the manifest's folder's."""
    text = ("\ufeff# uploads\n  a.mp4  \n\n   \n\t# indented comment\n"
            "sub/b.mp4\n/abs/c.mp4\ns3://bucket/d.mp4\nnot#a comment.mp4\n")
    (tmp_path / "uploads").write_bytes(text.encode())  # no suffix: a text manifest
    assert read_manifest(tmp_path / "uploads") == [str(tmp_path / "a.mp4"), str(tmp_path / "sub" / "b.mp4"),
                                                   "/abs/c.mp4", "s3://bucket/d.mp4",
                                                   str(tmp_path / "not#a comment.mp4")]
    assert read_manifest(str(tmp_path / "uploads")) == read_manifest(tmp_path / "uploads")


def test_a_csv_manifest_takes_its_path_column(tmp_path):
    (tmp_path / "LIST.CSV").write_bytes("\ufeffpath,label\n a.mp4 ,1\n,2\n   ,3\n/abs/b.mp4,4\n".encode())
    assert read_manifest(tmp_path / "LIST.CSV") == [str(tmp_path / "a.mp4"), "/abs/b.mp4"]
    (tmp_path / "short.csv").write_text("label,path\n1\n2,c.mp4\n")  # a short row: no path at all
    assert read_manifest(tmp_path / "short.csv") == [str(tmp_path / "c.mp4")]
    (tmp_path / "file.csv").write_text("file\nx.mp4\n")
    with pytest.raises(DatasetError) as raised:
        read_manifest(tmp_path / "file.csv")
    assert raised.value.source == str(tmp_path / "file.csv")
    assert raised.value.cause == "a CSV manifest needs a 'path' column (columns: ['file'])"
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DatasetError, match=r"needs a 'path' column \(columns: None\)"):
        read_manifest(tmp_path / "empty.csv")


def test_a_parquet_manifest_takes_its_path_column(tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"path": ["a.mp4", None, "", "/abs/b.mp4"]}), tmp_path / "list.Parquet")
    assert read_manifest(tmp_path / "list.Parquet") == [str(tmp_path / "a.mp4"), "/abs/b.mp4"]
    pq.write_table(pa.table({"file": ["a.mp4"], "size": [1]}), tmp_path / "file.parquet")
    with pytest.raises(DatasetError) as raised:
        read_manifest(tmp_path / "file.parquet")
    assert raised.value.source == str(tmp_path / "file.parquet")
    assert raised.value.cause == "a Parquet manifest needs a 'path' column (columns: ['file', 'size'])"
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # not installed
    with pytest.raises(MissingExtraError) as raised:
        read_manifest(tmp_path / "list.Parquet")
    assert raised.value.source == "Parquet manifests" and "pip install 'shortvid[parquet]'" in raised.value.cause


def test_a_manifest_by_uri_is_read_by_its_suffix_before_any_query():
    with fsspec.open("memory://shortvid-sources/lists/list.csv?version=2", "w") as handle:
        handle.write("path\na.mp4\n/abs/b.mp4\nmemory://elsewhere/c.mp4\n")
    assert read_manifest("memory://shortvid-sources/lists/list.csv?version=2") == [
        "memory://shortvid-sources/lists/a.mp4", "/abs/b.mp4", "memory://elsewhere/c.mp4"]


@pytest.mark.parametrize("manifest, cause", [
    ("{tmp}/absent.txt", "no such manifest"),
    ("memory://shortvid-sources/absent.txt", "no such manifest"),
    ("{tmp}", "cannot read the manifest: [Errno 21] Is a directory: '{tmp}'"),
    ("nope://bucket/list.txt", "cannot read the manifest: Protocol not known: nope"),
])
def test_a_manifest_that_cannot_be_read_is_a_dataset_error(manifest, cause, tmp_path):
    manifest, cause = manifest.format(tmp=tmp_path), cause.format(tmp=tmp_path)
    with pytest.raises(DatasetError) as raised:
        read_manifest(manifest)
    assert (raised.value.source, raised.value.cause) == (manifest, cause)


def test_a_manifest_whose_protocol_is_not_installed_is_a_dataset_error(monkeypatch):
    def missing(*args, **kwargs):
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec, "open", missing)
    with pytest.raises(DatasetError) as raised:
        read_manifest("s3://bucket/list.txt")
    assert raised.value.cause == "cannot read the manifest: Install s3fs to access S3"


def test_inputs_expand_to_videos_in_order_once_each(tmp_path):
    """Folders give their videos (any depth, any case of suffix, sorted), patterns their matches
    (``**`` recursive), URIs and plain paths stay as named (a missing file is reported when read, a
    file whose name looks like a pattern is that file); each video once, in the order named."""
    videos = tmp_path / "videos"
    (videos / "sub").mkdir(parents=True)
    (videos / "sub" / "deeper").mkdir()
    for name in ("b.mp4", "a.MP4", "sub/c.mkv", "sub/deeper/d.mkv", "notes.txt", "x.mp4", "[x].mp4"):
        (videos / name).write_bytes(b"")
    (tmp_path / "no-videos").mkdir()
    (tmp_path / "no-videos" / "readme.txt").write_text("")
    inputs = [str(videos / "b.mp4"), str(videos), "s3://bucket/*.mp4", str(videos / "[x].mp4"), str(videos / "?.mp4"),
              str(videos / "**" / "*.mkv"), str(tmp_path / "MISSING-X.mp4"), str(tmp_path / "no-videos"),
              str(tmp_path / "none-*.mp4"), str(tmp_path / "none-?.mp4"), str(tmp_path / "none-[ab].mp4")]
    found, empty = expand_inputs(inputs)
    assert found == [str(videos / "b.mp4"), str(videos / "[x].mp4"), str(videos / "a.MP4"),
                     str(videos / "sub" / "c.mkv"), str(videos / "sub" / "deeper" / "d.mkv"), str(videos / "x.mp4"),
                     "s3://bucket/*.mp4", str(tmp_path / "MISSING-X.mp4")]
    assert expand_inputs([str(videos / "**" / "*.mkv")])[0] == [str(videos / "sub" / "c.mkv"),
                                                                str(videos / "sub" / "deeper" / "d.mkv")]
    assert [(item, type(error), error.source, error.cause) for item, error in empty] == [
        (str(tmp_path / "no-videos"), InvalidVideoError, str(tmp_path / "no-videos"),
         f"a folder with no videos in it (searched for {', '.join(sorted(VIDEO_EXTENSIONS))})"),
        *[(item, VideoNotFoundError, item, "no file matches this pattern") for item in inputs[-3:]]]
    assert expand_inputs([]) == ([], [])


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
    assert main(["predict", str(trained_run), *videos[:2], "--out", str(out), "--format", "jsonl",
                 "--device", "cpu"]) == 0
    assert "2 videos: 2 done" in capsys.readouterr().err
    assert main(["predict", str(trained_run), *videos, str(tmp_path / "none-*.mp4"), "--out", str(out),
                 "--format", "jsonl", "--batch-size", "2", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "1 done" in err and "2 skipped" in err
    rows = {row["path"]: row for row in PredictionStore(out, "jsonl").rows()}
    assert set(rows) == {*videos, str(tmp_path / "none-*.mp4")}
    assert rows[videos[2]]["error"]["type"] == "InvalidVideoError" and rows[videos[0]]["error"] is None
