"""Issue 15, build side: no image file, raw record or setting can stop `data build` unexplained.

One bad image or record is dropped with its reason and the build goes on; dedupe settings
that make no sense are refused with a DishgenError that names the allowed range.
"""

from __future__ import annotations

import errno
import io
import json
import multiprocessing
import os
import shutil
import struct
import tempfile
import threading
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import dishgen.data.images as images_module
from dishgen.data.build import BuildOptions, build_dataset
from dishgen.data.dedupe import DedupeError, find_duplicates, near_duplicate_pairs
from dishgen.data.images import ImageSettings, process_image
from dishgen.data.importer import import_photo_folder
from dishgen.errors import DishgenError
from dishgen.fileio import read_jsonl

SAMPLE_JPGS = sorted((Path(__file__).parent / "data" / "ffml_sample" / "images").rglob("*.jpg"))
SETTINGS = ImageSettings(size=16, min_size=16)


def _png_header(width: int, height: int) -> bytes:
    """A valid PNG that announces ``width`` x ``height`` pixels and holds almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def test_a_fifo_is_never_opened(tmp_path: Path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    results = []
    worker = threading.Thread(target=lambda: results.append(process_image(str(fifo), str(tmp_path), SETTINGS)), daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():  # it blocked in open(): give it a writer so the thread can end, then fail
        with open(fifo, "wb"):
            pass
        pytest.fail("process_image opened a FIFO and blocked")
    assert results[0].error_kind == "unreadable" and "not a regular file" in results[0].error


@pytest.mark.parametrize(("width", "height", "why"), [
    (10_000, 10_000, "decompression bomb"),  # 100 Mpx: Pillow's DecompressionBombWarning, as an error
    (20_000, 20_000, "decompression bomb"),  # 400 Mpx: Pillow's DecompressionBombError
    (7_000, 7_000, "exceeds 40,000,000 pixels"),  # 49 Mpx: under Pillow's limit, over ours
])
def test_huge_dimensions_are_dropped_before_decoding(tmp_path: Path, width: int, height: int, why: str):
    path = tmp_path / "big.png"
    path.write_bytes(_png_header(width, height))
    result = process_image(str(path), str(tmp_path), SETTINGS)
    assert result.error_kind == "too_large" and why in result.error


def test_file_size_guard(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(images_module, "MAX_FILE_BYTES", 1000)
    result = process_image(str(SAMPLE_JPGS[0]), str(tmp_path), SETTINGS)
    assert result.error_kind == "too_large" and "file size guard" in result.error


def _tiff_whose_second_frame_has_no_size() -> bytes:
    """A two-frame TIFF whose second IFD lacks ImageWidth/ImageLength.

    Found by mutating the sample photos: Pillow raises ``TypeError: Missing dimensions`` when
    asked whether the file is animated, a type no image check expected.
    """
    frames = [Image.new("RGB", (40, 40), colour) for colour in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:])
    data = bytearray(buffer.getvalue())
    first = struct.unpack_from("<I", data, 4)[0]
    second = struct.unpack_from("<I", data, first + 2 + 12 * struct.unpack_from("<H", data, first)[0])[0]
    for entry in range(struct.unpack_from("<H", data, second)[0]):
        at = second + 2 + 12 * entry
        if struct.unpack_from("<H", data, at)[0] in (256, 257):  # ImageWidth, ImageLength
            struct.pack_into("<H", data, at, 65000)  # an unknown tag instead
    return bytes(data)


def test_any_error_of_one_image_is_recorded_and_the_build_goes_on(tmp_path: Path):
    photos = tmp_path / "photos" / "SARMA"
    photos.mkdir(parents=True)
    for i in range(2):
        shutil.copy(SAMPLE_JPGS[i], photos / f"{i}.jpg")
    (photos / "odd.tif").write_bytes(_tiff_whose_second_frame_has_no_size())
    raw = tmp_path / "raw"
    import_photo_folder(tmp_path / "photos", raw)
    summary = build_dataset([raw], tmp_path / "ds", BuildOptions(size=16, min_size=16, workers=1, test_fraction=0.0))
    assert summary["counts"]["train"]["images"] == 2
    [dropped] = summary["dropped"]
    assert dropped["kind"] == "corrupt" and dropped["reason"] == "cannot process it (TypeError: Missing dimensions)"


def test_a_full_disk_is_not_blamed_on_the_image(tmp_path: Path, monkeypatch):
    def no_space(image):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(images_module, "phash_hex", no_space)
    with pytest.raises(OSError, match="No space left"):
        process_image(str(SAMPLE_JPGS[0]), str(tmp_path), SETTINGS)


def _check_result(result, staging: Path) -> None:
    if result.error:
        assert result.error_kind and not result.staged
    else:
        with Image.open(staging / result.staged) as im:
            assert im.size == (16, 16) and im.mode == "RGB"


_MAGIC = st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\0", b"RIFF\0\0\0\0WEBPVP8 "])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(magic=_MAGIC, body=st.binary(max_size=300))
def test_fuzz_random_bytes_never_raise(magic, body):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.jpg"
        path.write_bytes(magic + body)
        _check_result(process_image(str(path), tmp, SETTINGS), Path(tmp))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, len(SAMPLE_JPGS) - 1), cut=st.floats(0, 1),
       flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 7)), max_size=8), fmt=st.sampled_from(["JPEG", "PNG"]))
def test_fuzz_truncated_and_bit_flipped_real_photos_never_raise(index, cut, flips, fmt):
    data = SAMPLE_JPGS[index].read_bytes()
    if fmt == "PNG":
        buffer = io.BytesIO()
        Image.open(io.BytesIO(data)).save(buffer, format="PNG")
        data = buffer.getvalue()
    data = bytearray(data[: max(1, int(len(data) * cut))])
    for where, bit in flips:
        data[min(len(data) - 1, int(len(data) * where))] ^= 1 << bit
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.jpg"
        path.write_bytes(bytes(data))
        _check_result(process_image(str(path), tmp, SETTINGS), Path(tmp))


def test_hostile_raw_records_are_dropped_with_a_reason_and_text_is_cleaned(tmp_path: Path):
    photos = tmp_path / "photos" / "PITA"
    photos.mkdir(parents=True)
    for i in range(3):
        shutil.copy(SAMPLE_JPGS[i], photos / f"{i}.jpg")
    raw = tmp_path / "raw"
    import_photo_folder(tmp_path / "photos", raw)
    good = read_jsonl(raw / "recipes.jsonl")
    hostile = [
        [1, 2],  # not an object
        {"name": 5, "image": good[0]["image"]},  # a number for a name
        {"name": "X", "image": "images/a\u0000b.jpg"},  # NUL in a path
        {"name": "\x1b[1mSARMA\x1b[0m\x00  u\tsosu", "image": good[1]["image"]},
        {"image": good[2]["image"], "captions": ["ok\x00 caption\x1b[2J", 7, ""]},
    ]
    lines = [json.dumps(row, ensure_ascii=False) for row in hostile]
    (raw / "recipes.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = build_dataset([raw], tmp_path / "ds", BuildOptions(size=16, min_size=16, workers=1, test_fraction=0.0,
                                                                 dedupe_threshold=-1))
    bad = {d["name"]: d["reason"] for d in summary["dropped"] if d["kind"] == "bad_record"}
    assert bad == {"recipes.jsonl:1": "not a JSON object (a list)", "recipes.jsonl:2": "its 'name' is a int, not text",
                   "recipes.jsonl:3": "its image path 'images/ab.jpg' is not a valid file name"}
    rows = read_jsonl(tmp_path / "ds" / "train" / "metadata.jsonl")
    assert sorted(r["dish"] for r in rows) == ["", "SARMA u sosu"]
    by_dish = {r["dish"]: r for r in rows}
    assert by_dish[""]["captions"] == ["ok caption", "7"]
    assert by_dish["SARMA u sosu"]["text"].startswith("A photo of sarma, cabbage rolls")
    for row in rows:
        assert not any(c in row["text"] for c in "\x00\x1b")


@pytest.mark.parametrize("threshold", [-2, 65, 2.5, True, "4", None])
def test_dedupe_refuses_thresholds_outside_minus_one_to_64(threshold):
    for call in (lambda: find_duplicates(["a", "b"], ["0", "1"], threshold),
                 lambda: near_duplicate_pairs(["0", "1"], threshold),
                 lambda: BuildOptions(dedupe_threshold=threshold).validate()):
        with pytest.raises(DedupeError, match=r"integer from -1 to 64") as info:
            call()
        assert isinstance(info.value, ValueError) and isinstance(info.value, DishgenError)
        assert repr(threshold) in str(info.value)


def test_dedupe_refuses_hashes_over_64_bits_and_mismatched_lists():
    with pytest.raises(DedupeError, match="not a 64-bit hex number"):
        find_duplicates(["a", "b"], ["1" * 17, "0"], 4)
    with pytest.raises(DedupeError, match="not a 64-bit hex number"):
        near_duplicate_pairs(["zz", "0"], 4)
    with pytest.raises(DedupeError, match="one pHash"):
        find_duplicates(["a", "b"], ["0"], 4)
    # The edges of the range are valid: 64 merges every pair, -1 only exact copies.
    assert find_duplicates(["a", "b", "a"], ["0", "f" * 16, "0"], 64) == {0: [(1, "near duplicate (pHash distance 64)"),
                                                                              (2, "exact duplicate (same bytes)")]}
    assert find_duplicates(["a", "b", "a"], ["0", "0", "0"], -1) == {0: [(2, "exact duplicate (same bytes)")]}


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="the crash is planted through fork")
def test_a_worker_process_that_dies_costs_only_its_image(tmp_path: Path, monkeypatch):
    photos = tmp_path / "photos" / "SARMA"
    photos.mkdir(parents=True)
    for i in range(6):
        shutil.copy(SAMPLE_JPGS[i], photos / f"{i}.jpg")
    Image.open(SAMPLE_JPGS[6]).convert("RGB").resize((200, 100)).save(photos / "killer.png")
    real_phash = images_module.phash_hex

    def phash_that_kills_its_process(image):  # stands for a segfault in a C decoder, or the OOM killer
        if image.size == (200, 100):
            os._exit(1)
        return real_phash(image)

    monkeypatch.setattr(images_module, "phash_hex", phash_that_kills_its_process)  # forked workers inherit it
    raw = tmp_path / "raw"
    import_photo_folder(tmp_path / "photos", raw)
    summary = build_dataset([raw], tmp_path / "ds", BuildOptions(size=16, min_size=16, workers=2, test_fraction=0.0))
    assert summary["counts"]["train"]["images"] == 6
    [dropped] = summary["dropped"]
    assert dropped["kind"] == "crashed" and "crashed the worker process" in dropped["reason"]
