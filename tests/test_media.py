"""Media parts from DataFrame columns, through the unmodified SDK and the emulator.

Every answer of the emulator names the parts its request carried (``[image/png 1234 bytes
sha256:<hex>]`` before the text), so these tests prove that each row got its own file.
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import wave
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from PIL import Image as PIL

import gemini_batch_magic as gbm


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def png(seed: int, size: int = 16) -> bytes:
    buf = io.BytesIO()
    PIL.new("RGB", (size, size), (seed % 256, (seed * 7) % 256, 90)).save(buf, "PNG")
    return buf.getvalue()


def noisy_jpeg(seed: int, side: int = 200) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    PIL.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "JPEG",
                                                                             quality=95)
    return buf.getvalue()


def pdf(pages: int, label: str) -> bytes:
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    objs = ["<< /Type /Catalog /Pages 2 0 R >>",
            f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>"]
    objs += [f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >> % {label}"] * pages
    body = b"%PDF-1.4\n" + b"".join(
        f"{i + 1} 0 obj\n{o}\nendobj\n".encode() for i, o in enumerate(objs))
    return body + b"trailer << /Root 1 0 R >>\n%%EOF\n"


def wav(seconds: float, tone: int) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes((np.sin(np.arange(int(8000 * seconds)) * tone / 100) * 3000)
                      .astype("<i2").tobytes())
    return buf.getvalue()


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def media_uploads(emu: Any) -> list[dict[str, Any]]:
    """The media files uploaded to the emulator (not the JSONL request files)."""
    return [f for f in emu.files() if f["source"] == "UPLOADED"
            and not f["mimeType"].startswith(("jsonl", "application/jsonl"))]


def service_calls(emu: Any) -> list[tuple[str, str]]:
    """Calls that upload, register or create anything."""
    return [c for c in emu.calls if c[0] == "POST"]


@pytest.mark.parametrize("transport", ["inline", "file"])
def test_every_answer_names_its_own_rows_files(emu: Any, tmp_path: Path, transport: str
                                               ) -> None:
    gbm.configure(media_inline_bytes=20_000)  # the big JPEGs go through the File API
    if transport == "file":
        gbm.configure(inline_limit_bytes=1)  # a JSONL request file, uploaded
    rng = np.random.default_rng(7)
    files: dict[str, bytes] = {}
    cells: list[Any] = []
    for i in range(24):
        kind = i % 6
        if kind == 0:
            data = png(i)
            cells.append(str(write(tmp_path, f"p{i}.png", data)))
        elif kind == 1:
            data = noisy_jpeg(i)
            cells.append(write(tmp_path, f"j{i}.jpg", data))  # a pathlib.Path
        elif kind == 2:
            data = pdf(1 + i % 3, f"doc {i}")
            cells.append(str(write(tmp_path, f"d{i}.pdf", data)))
        elif kind == 3:
            data = wav(0.25, i)
            cells.append(str(write(tmp_path, f"a{i}.wav", data)))
        elif kind == 4:
            data = png(1000 + i)
            cells.append(data)  # bytes cell
        else:
            data = b""
            cells.append(None if i % 12 == 5 else float("nan"))
        files[f"r{i}"] = data
    index = [f"r{i}" for i in range(24)]
    df = pd.DataFrame({"q": [f"question {i}" for i in range(24)], "photo": cells},
                      index=index)
    df.loc["r11", "photo"] = "https://example.com/pics/cat.png"
    order = rng.permutation(len(df))
    df = df.iloc[order]
    est = gbm.estimate(df, "q", media="photo")
    assert est.media["media_parts"] == 21 and est.media["upload_files"] == 4
    assert est.media["upload_bytes"] == sum(len(files[f"r{i}"]) for i in range(1, 24, 6))
    run = df.gembatch.submit("q", media="photo")
    assert run.record.source == transport
    out = run.wait(progress=False).result()
    assert out.index.equals(df.index)
    assert out["error"].isna().all(), out["error"].dropna().tolist()
    mimes = {0: "image/png", 1: "image/jpeg", 2: "application/pdf", 3: "audio/wav",
             4: "image/png"}
    for label, answer in out["response"].items():
        i = int(str(label)[1:])
        text = f"question {i}"
        if label == "r11":
            assert answer == f"[image/png url https://example.com/pics/cat.png] {text}"
        elif i % 6 == 5:
            assert answer == text  # no file: the text alone
        else:
            data = files[str(label)]
            assert answer == f"[{mimes[i % 6]} {len(data)} bytes sha256:{sha(data)}] {text}"
    assert len(media_uploads(emu)) == 4  # only the big JPEGs were uploaded
    prog = run.media_uploads
    assert prog is not None and prog.finished and (prog.files, prog.done_files) == (4, 4)


def test_several_media_columns_go_in_the_order_named(emu: Any, tmp_path: Path) -> None:
    scans = [write(tmp_path, f"s{i}.png", png(i)) for i in range(3)]
    charts = [pdf(2, f"chart {i}") for i in range(3)]
    df = pd.DataFrame({"q": ["a", "b", "c"], "scan": scans, "chart": charts},
                      index=[30, 10, 20])
    out = df.gembatch.run("q", media=["chart", "scan"])
    for i, (label, answer) in enumerate(out["response"].items()):
        assert label == df.index[i]
        tags = answer.split("] ")
        assert tags[0].startswith("[application/pdf") and sha(charts[i]) in tags[0]
        assert tags[1].startswith("[image/png") and sha(scans[i].read_bytes()) in tags[1]
        assert tags[2] == df["q"].iloc[i]


def test_the_same_image_in_50_rows_is_uploaded_once_and_reused_by_the_next_run(
        emu: Any, tmp_path: Path) -> None:
    logo = write(tmp_path, "logo.jpg", noisy_jpeg(1, 150))  # ~60 KB, x 50 rows > 1 MB
    df = pd.DataFrame({"q": [f"row {i}" for i in range(50)], "img": [str(logo)] * 50},
                      index=pd.Index(np.random.default_rng(2).permutation(50)))
    run = df.gembatch.submit("q", media="img")
    out = run.wait(progress=False).result()
    tag = f"[image/jpeg {logo.stat().st_size} bytes sha256:{sha(logo.read_bytes())}]"
    assert (out["response"] == tag + " " + df["q"]).all()
    assert len(media_uploads(emu)) == 1
    emu.reset_calls()
    again = df.assign(q=df["q"] + "?").gembatch.submit("q", media="img")
    out2 = again.wait(progress=False).result()
    assert again.run_id != run.run_id
    assert (out2["response"] == tag + " " + df["q"] + "?").all()
    assert len(media_uploads(emu)) == 1  # reused: no second upload
    uploads = [c for c in emu.calls if c[1].startswith("/upload/")]
    assert uploads == []  # nothing uploaded at all: 50 requests go inline
    # a file deleted on the service by hand is noticed, and uploaded again
    client = gbm._backend.get_client()  # the engine's own client (its key sees its files)
    client.files.delete(name=media_uploads(emu)[0]["name"])
    third = df.assign(q=df["q"] + "!").gembatch.submit("q", media="img")
    assert (third.wait(progress=False).result()["response"].str.startswith(tag)).all()
    assert len(media_uploads(emu)) == 1


def test_an_expired_upload_is_sent_again_on_retry(emulator_factory: Any, tmp_path: Path
                                                  ) -> None:
    emu = emulator_factory(file_ttl=2.0, fail_rate=0.4, seed=5)
    gbm.configure(media_inline_bytes=0)  # every file through the File API
    paths: list[Any] = [write(tmp_path, f"i{i}.png", png(i)) for i in range(12)]
    paths[1::2] = [png(i) for i in range(1, 12, 2)]  # bytes cells: kept for re-sending
    df = pd.DataFrame({"q": [f"q{i}" for i in range(12)], "img": paths},
                      index=[f"k{i}" for i in range(12)])
    run = df.gembatch.submit("q", media="img")
    out = run.wait(progress=False).result()
    failed = out.index[out["error"].notna()]
    assert 0 < len(failed) < 12
    assert len(media_uploads(emu)) == 12
    time.sleep(2.2)  # every upload has expired on the service now
    assert media_uploads(emu) == []
    emu.configure(fail_rate=0.0)
    from gemini_batch_magic._state import state

    state.reset()  # a fresh kernel: the bytes cells are gone from memory
    run = gbm.attach(run.run_id)
    child = run.retry_failed()
    assert child is not None
    child.wait(progress=False)
    assert len(media_uploads(emu)) == len(failed)  # the failed rows' files, sent again
    merged = run.result()
    assert merged["error"].isna().all(), merged["error"].dropna().tolist()
    for label in failed:
        cell = df.loc[label, "img"]
        data = cell if isinstance(cell, bytes) else Path(cell).read_bytes()
        assert merged.loc[label, "response"].startswith(f"[image/png {len(data)} bytes "
                                                        f"sha256:{sha(data)}]")


def test_the_emulator_refuses_parts_naming_an_unknown_deleted_or_expired_file(
        emulator_factory: Any) -> None:
    from google import genai
    from google.genai import types

    emu = emulator_factory()
    client = genai.Client(api_key="k", http_options=types.HttpOptions(base_url=emu.url))

    def upload(data: bytes) -> Any:
        return client.files.upload(file=io.BytesIO(data), config={"mime_type": "image/png"})

    kept, gone = upload(png(1)), upload(png(2))
    emu.configure(file_ttl=0.5)
    expired = upload(png(3))
    client.files.delete(name=gone.name)
    time.sleep(0.7)  # the emulator answers when the batch is created: gone and expired now
    lines = [{"key": k, "request": {"contents": [{"role": "user", "parts": [
        {"text": "hi"}, {"fileData": {"mimeType": "image/png", "fileUri": uri}}]}]}}
        for k, uri in (("kept", kept.uri), ("gone", gone.uri), ("expired", expired.uri),
                       ("unknown", kept.uri.rsplit("/", 1)[0] + "/nosuchfile1"))]
    src = client.files.upload(
        file=io.BytesIO(b"".join(orjson.dumps(x) + b"\n" for x in lines)),
        config={"mime_type": "jsonl"})
    job = client.batches.create(model="gemini-2.5-flash", src=src.name)
    while not client.batches.get(name=job.name).done:
        time.sleep(0.05)
    job = client.batches.get(name=job.name)
    results = {o["key"]: o for o in map(orjson.loads, client.files.download(
        file=job.dest.file_name).splitlines())}
    text = results["kept"]["response"]["candidates"][0]["content"]["parts"][0]["text"]
    assert text == f"[image/png {len(png(1))} bytes sha256:{sha(png(1))}] hi"
    for key, fid in (("gone", gone.name), ("expired", expired.name),
                     ("unknown", "files/nosuchfile1")):
        assert results[key]["error"] == {
            "code": 7, "message": f"You do not have permission to access the File "
                                  f"{fid.removeprefix('files/')} or it may not exist."}


def test_gs_uris_are_registered_once_and_files_names_are_looked_up(emu: Any) -> None:
    client = gbm._backend.get_client()  # a file of the engine's own key
    existing = client.files.upload(file=io.BytesIO(pdf(2, "x")),
                                   config={"mime_type": "application/pdf"})
    df = pd.DataFrame({"q": ["one", "two", "three"],
                       "doc": ["gs://bucket/a/report.pdf", existing.name, None]},
                      index=["x", "y", "z"])
    out = df.gembatch.run("q", media="doc")
    assert out.loc["x", "response"] == "[application/pdf registered gs://bucket/a/report.pdf] one"
    assert out.loc["y", "response"] == (f"[application/pdf {len(pdf(2, 'x'))} bytes "
                                        f"sha256:{sha(pdf(2, 'x'))}] two")
    assert out.loc["z", "response"] == "three"
    registers = [c for c in emu.calls if c[1].endswith("files:register")]
    assert len(registers) == 1
    df.assign(q=df["q"] + ".").gembatch.run("q", media="doc")
    assert len([c for c in emu.calls if c[1].endswith("files:register")]) == 1  # reused


def test_structured_output_and_templates_work_with_media(emu: Any, tmp_path: Path) -> None:
    from pydantic import BaseModel

    class Product(BaseModel):
        name: str
        price: float

    photos = [write(tmp_path, f"p{i}.png", png(i)) for i in range(4)]
    df = pd.DataFrame({"shop": ["A", "B", "C", "D"], "photo": photos}, index=list("dcba"))
    out = df.gembatch.run(template="What product is in this photo? Shop: {shop}",
                          media="photo", response_schema=Product)
    assert out["error"].isna().all()
    for label, row in out.iterrows():
        parsed = row["parsed"]
        assert isinstance(parsed, Product)
        data = Path(df.loc[label, "photo"]).read_bytes()
        assert parsed.name.startswith(f"[image/png {len(data)} bytes sha256:{sha(data)[:20]}")


def test_estimate_counts_media_tokens_and_max_cost_applies(emu: Any, tmp_path: Path) -> None:
    from gemini_batch_magic import _pricing

    big = write(tmp_path, "big.png", png(3, 1000))  # 1000x1000: 2x2 tiles
    small = write(tmp_path, "small.png", png(4, 100))
    doc = write(tmp_path, "doc.pdf", pdf(5, "five pages"))
    sound = write(tmp_path, "s.wav", wav(2.0, 3))
    df = pd.DataFrame({"q": ["a", "b", "c", "d"], "f": [big, small, doc, sound]})
    est = gbm.estimate(df, "q", media="f")
    rate = _pricing.MEDIA_TOKENS
    assert est.media["media_tokens"] == (4 * rate["image"] + rate["image"] + 5 * rate["page"]
                                         + 2 * rate["audio_second"])
    assert "media parts" in str(est)
    with pytest.raises(gbm.CostLimitError):
        df.gembatch.submit("q", media="f", max_cost=1e-9)
    assert service_calls(emu) == [] and len(gbm.runs()) == 0


def test_dedupe_covers_the_media_content(emu: Any, tmp_path: Path) -> None:
    paths = [write(tmp_path, f"p{i}.png", png(i)) for i in range(3)]
    df = pd.DataFrame({"q": ["a", "b", "c"], "p": [str(p) for p in paths]})
    first = df.gembatch.submit("q", media="p")
    assert df.gembatch.submit("q", media="p").run_id == first.run_id  # same files: same run
    paths[1].write_bytes(png(99))  # one changed image
    changed = df.gembatch.submit("q", media="p")
    assert changed.run_id != first.run_id
    assert sha(png(99)) in changed.wait(progress=False).result()["response"].iloc[1]


def _refused(emu: Any, df: pd.DataFrame, match: str, **kwargs: Any) -> gbm.InputError:
    emu.reset_calls()
    with pytest.raises(gbm.InputError, match=match) as info:
        df.gembatch.submit("q", **kwargs)
    assert service_calls(emu) == [], "something was uploaded, registered or created"
    assert len(gbm.runs()) == 0
    return info.value


@pytest.mark.parametrize("case", ["missing", "directory", "unsupported", "int", "huge",
                                  "empty", "http", "unreadable"])
def test_bad_media_is_refused_before_anything_is_sent(emu: Any, tmp_path: Path,
                                                      case: str) -> None:
    good = str(write(tmp_path, "ok.png", png(1)))
    bad: Any
    match = {"missing": "missing files", "directory": "directories",
             "unsupported": "image/gif files", "int": "int values", "huge": "files over",
             "empty": "empty files", "http": "http:// URL", "unreadable": "unreadable"}[case]
    if case == "missing":
        bad = str(tmp_path / "nowhere.png")
    elif case == "directory":
        bad = str(tmp_path)
    elif case == "unsupported":
        buf = io.BytesIO()
        PIL.new("RGB", (4, 4)).save(buf, "GIF")
        bad = str(write(tmp_path, "x.gif", buf.getvalue()))
    elif case == "int":
        bad = 42
    elif case == "huge":  # a sparse 3 GB file: nothing is read, its size refuses it
        bad = str(tmp_path / "huge.mp4")
        with open(bad, "wb") as f:
            f.truncate(3_000_000_000)
    elif case == "empty":
        bad = str(write(tmp_path, "empty.png", b""))
    elif case == "http":
        bad = "http://example.com/a.png"
    else:
        if os.geteuid() == 0:
            pytest.skip("root reads files whatever their mode")
        bad = str(write(tmp_path, "locked.png", png(2)))
        os.chmod(bad, 0)
    df = pd.DataFrame({"q": ["a", "b", "c"], "img": [good, bad, None]},
                      index=["first", "the-bad-row", "third"])
    err = _refused(emu, df, match, media="img")
    assert "'the-bad-row'" in str(err) and err.rows == ["the-bad-row"]


def test_the_upload_limits_are_checked_before_anything_is_sent(emu: Any, tmp_path: Path
                                                               ) -> None:
    paths = [write(tmp_path, f"j{i}.jpg", noisy_jpeg(i, 120)) for i in range(3)]
    df = pd.DataFrame({"q": ["a", "b", "c"], "img": paths}, index=["x", "y", "z"])
    gbm.configure(media_inline_bytes=0, media_max_total_bytes=2 * paths[0].stat().st_size)
    err = _refused(emu, df, "media_max_total_bytes", media="img")
    assert err.rows == ["x", "y", "z"]
    gbm.configure(media_max_total_bytes=20_000_000_000, media_max_file_bytes=1000)
    _refused(emu, df, "files over 1,000 bytes", media="img")


def test_an_unknown_files_name_is_refused_before_anything_is_uploaded(emu: Any, tmp_path: Path
                                                                      ) -> None:
    gbm.configure(media_inline_bytes=0)
    df = pd.DataFrame({"q": ["a", "b"], "f": [str(write(tmp_path, "a.png", png(1))),
                                              "files/doesnotexist"]})
    emu.reset_calls()
    with pytest.raises(gbm.InputError, match="files/doesnotexist does not exist"):
        df.gembatch.submit("q", media="f")
    assert media_uploads(emu) == []
    assert not [c for c in emu.calls if ":batchGenerateContent" in c[1]]


def test_mime_type_overrides_and_bad_options(emu: Any, tmp_path: Path) -> None:
    raw = write(tmp_path, "notes.bin", b"plain words, no magic bytes")
    df = pd.DataFrame({"q": ["a"], "f": [raw]})
    with pytest.raises(gbm.InputError, match="unknown type"):
        df.gembatch.estimate("q", media="f")
    out = df.gembatch.run("q", media="f", mime_type={"f": "text/plain"})
    assert out["response"].iloc[0].startswith("[text/plain 27 bytes")
    with pytest.raises(gbm.InputError, match="not a type Gemini reads"):
        df.gembatch.estimate("q", media="f", mime_type="application/zip")
    with pytest.raises(gbm.ColumnError, match="media column 'nope'"):
        df.gembatch.estimate("q", media="nope")


def test_magic_and_cli_take_media_columns(emu: Any, tmp_path: Path) -> None:
    from IPython.testing.globalipapp import get_ipython

    from gemini_batch_magic import cli

    paths = [str(write(tmp_path, f"p{i}.png", png(i))) for i in range(2)]
    df = pd.DataFrame({"name": ["x", "y"], "photo": paths})
    ip = get_ipython()
    ip.run_line_magic("load_ext", "gemini_batch_magic")
    ip.user_ns["photos"] = df
    ip.run_cell_magic("gembatch", "out --df photos --media photo --wait",
                      "What is in this photo? {name}")
    out = ip.user_ns["out"]
    assert out["response"].iloc[1].startswith(f"[image/png {len(png(1))} bytes "
                                              f"sha256:{sha(png(1))}] What is in")
    table = tmp_path / "photos.csv"
    df.to_csv(table, index=False)
    dest = tmp_path / "answers.parquet"
    assert cli.main(["submit", str(table), "--template", "Describe {name}", "--media",
                     "photo", "--wait", "--out", str(dest), "--force"]) == 0
    got = pd.read_parquet(dest)
    assert got["response"].iloc[0].startswith(f"[image/png {len(png(0))} bytes")
