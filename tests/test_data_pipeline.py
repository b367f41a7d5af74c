"""The dataset pipeline: import -> validate -> dedupe -> crop -> caption -> split, on real photos."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from dishgen.cli import cli
from dishgen.data.build import BuildError, BuildOptions, build_dataset
from dishgen.data.dataset import load_split
from dishgen.data.importer import import_caption_table, import_photo_folder
from dishgen.fileio import read_jsonl


def _first_jpg(sample_images: Path, dish: str = "SARMALE (PORK MEAT)") -> Path:
    return sorted((sample_images / dish).glob("*.jpg"))[0]


def _bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header announcing a huge image, with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")


def _distinct_pictures(n: int, size: int = 120) -> list[Image.Image]:
    """Smooth random pictures with clearly different perceptual hashes."""
    import numpy as np

    rng = np.random.default_rng(0)
    return [
        Image.fromarray((rng.random((6, 6, 3)) * 255).astype("uint8")).resize((size, size), Image.Resampling.BICUBIC)
        for _ in range(n)
    ]


@pytest.fixture()
def planted(tmp_path: Path, sample_images: Path) -> Path:
    """A photo folder: the real sample plus planted duplicates and every kind of bad file."""
    root = tmp_path / "photos"
    shutil.copytree(sample_images, root)
    src = _first_jpg(sample_images)
    base = Image.open(src).convert("RGB")
    bad = root / "BAD FILES"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "not_image.jpg").write_bytes(b"<html>this is not an image</html>")
    (bad / "truncated.jpg").write_bytes(src.read_bytes()[:600])
    (bad / "bomb.png").write_bytes(_bomb_png(20000, 20000))
    Image.new("RGB", (20, 20), "red").save(bad / "tiny.png")
    frames = [Image.new("RGB", (100, 100), c) for c in ("red", "blue")]
    frames[0].save(bad / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    # Odd but usable images (each a distinct picture, so none is a near duplicate of another):
    # converted, not dropped.
    odd = root / "ODD MODES"
    odd.mkdir()
    pictures = iter(_distinct_pictures(7))
    next(pictures).convert("CMYK").save(odd / "cmyk.jpg")
    rgba = next(pictures).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    rgba.save(odd / "rgba.png")
    next(pictures).convert("P", palette=Image.Palette.ADAPTIVE).save(odd / "palette.png")
    next(pictures).convert("L").point(lambda v: v * 200).convert("I;16").save(odd / "grey16.png")
    next(pictures).convert("L").save(odd / "grey.jpg")
    next(pictures).resize((100, 140)).save(odd / "png_named.jpg", format="PNG")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    next(pictures).resize((100, 140)).save(odd / "exif_rotated.jpg", exif=exif)
    # Planted duplicates of a real photo: an exact copy, and a resized, re-encoded copy.
    dup = root / "SARMALE (PORK MEAT)"
    shutil.copy(src, dup / "exact_copy.jpg")
    buffer = io.BytesIO()
    base.resize((130, 130), Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=70)
    (dup / "resized_copy.jpg").write_bytes(buffer.getvalue())
    return root


def test_import_build_report_every_bad_file_and_merge_duplicates(planted: Path, tmp_path: Path):
    raw = tmp_path / "raw"
    result = import_photo_folder(planted, raw, source="test")
    assert result["added"] == 44 + 6 + 7 + 2
    summary = build_dataset([raw], tmp_path / "ds", BuildOptions(size=32, min_size=32, workers=2, test_fraction=0.2))

    kinds = summary["dropped_by_reason"]
    assert kinds["empty"] == 1
    assert kinds["not_an_image"] == 1
    assert kinds["truncated"] + kinds.get("corrupt", 0) >= 1
    assert kinds["too_large"] == 1
    assert kinds["too_small"] == 1
    assert kinds["animated"] == 1
    assert kinds["exact_duplicate"] == 1
    assert kinds["near_duplicate"] == 1
    by_image = {Path(d["image"]).name: d for d in summary["dropped"] if d.get("image")}
    assert all(d["reason"] for d in summary["dropped"])
    assert len(by_image) == len(summary["dropped"])

    converted = summary["converted"]
    for fix in ("CMYK->RGB", "RGBA->RGB", ("I;16->L", "I->L"), "wrong extension (format detected from bytes)"):
        assert any(k.startswith(fix) for k in converted), (fix, converted)
    assert any(k.startswith("EXIF orientation") for k in converted)
    assert summary["merged"] and summary["merged"][0]["merged"]

    # Odd images made it in, as 3-channel squares of the requested size.
    train = load_split(tmp_path / "ds", "train")
    test = load_split(tmp_path / "ds", "test")
    assert len(train) + len(test) == 44 + 7  # real photos + odd-but-usable
    for row in train + test:
        with Image.open(row.path) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
    assert not {r.dish for r in train} & {r.dish for r in test}
    # The EXIF-rotated 100x140 green image was recorded with its displayed size.
    exif_row = next(r for r in train + test if "EXIF" in r.extra["fixes"])
    assert exif_row.extra["original_size"] == [140, 100]


def test_build_output_loads_with_hf_datasets(tmp_path: Path, sample_images: Path):
    datasets = pytest.importorskip("datasets")
    raw = tmp_path / "raw"
    import_photo_folder(sample_images, raw)
    build_dataset([raw], tmp_path / "ds", BuildOptions(size=32, workers=1))
    loaded = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "ds"))
    assert set(loaded) == {"train", "test"}
    assert "text" in loaded["train"].column_names
    assert loaded["train"][0]["image"].size == (32, 32)
    assert loaded["train"][0]["text"].startswith("A photo of")


def test_split_is_deterministic_by_dish_and_single_photo_dish_goes_to_train(tmp_path: Path, sample_images: Path):
    photos = tmp_path / "photos"
    shutil.copytree(sample_images, photos)
    (photos / "LONELY DISH").mkdir()
    shutil.copy(_first_jpg(sample_images, "APPLE CAKE"), photos / "LONELY DISH" / "only.png")
    # Give it different pixels, so it is not merged as a duplicate of the apple cake.
    Image.linear_gradient("L").convert("RGB").resize((100, 100)).save(photos / "LONELY DISH" / "only.png")
    raw = tmp_path / "raw"
    import_photo_folder(photos, raw)
    a = build_dataset([raw], tmp_path / "a", BuildOptions(size=16, test_fraction=0.5, seed=3, workers=1))
    build_dataset([raw], tmp_path / "b", BuildOptions(size=16, test_fraction=0.5, seed=3, workers=1))

    def names(ds, split):
        return sorted(r["file_name"] for r in read_jsonl(ds / split / "metadata.jsonl"))

    assert names(tmp_path / "a", "test") == names(tmp_path / "b", "test")
    assert abs(a["counts"]["test"]["images"] - 45 / 2) <= 3
    train_dishes = {r["dish"] for r in read_jsonl(tmp_path / "a" / "train" / "metadata.jsonl")}
    assert "LONELY DISH" in train_dishes
    c = build_dataset([raw], tmp_path / "c", BuildOptions(size=16, test_fraction=0.5, seed=4, workers=1))
    assert names(tmp_path / "c", "test") != names(tmp_path / "a", "test")
    assert c["counts"]["train"]["images"] + c["counts"]["test"]["images"] == 45


def test_existing_output_is_refused_then_overwritten(tmp_path: Path, sample_images: Path):
    raw = tmp_path / "raw"
    import_photo_folder(sample_images, raw)
    build_dataset([raw], tmp_path / "ds", BuildOptions(size=16, workers=1))
    with pytest.raises(BuildError, match="already exists"):
        build_dataset([raw], tmp_path / "ds", BuildOptions(size=16, workers=1))
    summary = build_dataset([raw], tmp_path / "ds", BuildOptions(size=24, workers=1, overwrite=True))
    assert summary["options"]["size"] == 24
    assert Image.open(next((tmp_path / "ds" / "train").glob("*.png"))).size == (24, 24)


def test_interrupted_build_leaves_no_dataset_and_resumes_without_redecoding(tmp_path, sample_images, monkeypatch):
    import dishgen.data.build as build_module
    import dishgen.data.caption as caption_module

    raw = tmp_path / "raw"
    import_photo_folder(sample_images, raw)
    calls = []
    real = build_module.process_image

    def counting(path, staging, settings):
        calls.append(path)
        return real(path, staging, settings)

    monkeypatch.setattr(build_module, "process_image", counting)

    class Exploding(caption_module.TemplateCaptioner):
        def caption_many(self, items):
            raise KeyboardInterrupt  # the user pressed Ctrl-C while captioning

    monkeypatch.setattr(build_module, "get_captioner", lambda name, **kw: Exploding())
    with pytest.raises(KeyboardInterrupt):
        build_dataset([raw], tmp_path / "ds", BuildOptions(size=16, workers=1))
    assert not (tmp_path / "ds").exists()  # nothing that looks complete
    assert len(calls) == 44

    monkeypatch.setattr(build_module, "get_captioner", caption_module.get_captioner)
    summary = build_dataset([raw], tmp_path / "ds", BuildOptions(size=16, workers=1))
    assert len(calls) == 44  # no image decoded twice
    assert summary["counts"]["train"]["images"] + summary["counts"]["test"]["images"] == 44
    assert not (tmp_path / "ds.partial").exists()


def test_reimport_adds_nothing(tmp_path: Path, sample_images: Path):
    raw = tmp_path / "raw"
    first = import_photo_folder(sample_images, raw)
    second = import_photo_folder(sample_images, raw)
    assert first["added"] == 44 and second["added"] == 0 and second["already_present"] == 44
    assert len(read_jsonl(raw / "recipes.jsonl")) == 44
    record = read_jsonl(raw / "recipes.jsonl")[0]
    assert record["license"] == "MIT" and record["source"] == "ffml_sample"
    assert (raw / record["image"]).is_file()


def test_import_flickr_style_caption_table(tmp_path: Path, sample_images: Path):
    images = tmp_path / "flickr" / "flickr30k_images"
    images.mkdir(parents=True)
    photos = sorted(sample_images.rglob("*.jpg"))[:3]
    lines = ["image_name| comment_number| comment"]
    for i, photo in enumerate(photos):
        shutil.copy(photo, images / f"{i}.jpg")
        lines += [f"{i}.jpg| 0| A plate of food number {i} .", f"{i}.jpg| 1| Another caption for {i} ."]
    lines.append("broken row without delimiters")
    table = tmp_path / "flickr" / "results.csv"
    table.write_text("\n".join(lines) + "\n", encoding="utf-8")
    raw = tmp_path / "raw"
    result = import_caption_table(table, raw)
    assert result["added"] == 3
    records = read_jsonl(raw / "recipes.jsonl")
    assert [len(r["captions"]) for r in records] == [2, 2, 2]
    summary = build_dataset([raw], tmp_path / "ds", BuildOptions(size=16, workers=1, test_fraction=0.0))
    rows = read_jsonl(tmp_path / "ds" / "train" / "metadata.jsonl")
    assert summary["counts"]["train"]["images"] == 3
    assert {r["text"] for r in rows} == {f"A plate of food number {i} ." for i in range(3)}
    assert all(len(r["captions"]) == 2 for r in rows)


def test_jsonl_caption_table(tmp_path: Path, sample_images: Path):
    photo = sorted(sample_images.rglob("*.jpg"))[0]
    shutil.copy(photo, tmp_path / "a.jpg")
    table = tmp_path / "captions.jsonl"
    table.write_text(json.dumps({"file_name": "a.jpg", "text": ["one", "two"]}) + "\n", encoding="utf-8")
    import_caption_table(table, tmp_path / "raw")
    assert read_jsonl(tmp_path / "raw" / "recipes.jsonl")[0]["captions"] == ["one", "two"]


def test_cli_import_build_stats_and_clear_errors(tmp_path: Path, sample_images: Path):
    runner = CliRunner()
    raw, ds = tmp_path / "raw", tmp_path / "ds"
    result = runner.invoke(cli, ["data", "import", str(sample_images), "--out", str(raw)])
    assert result.exit_code == 0, result.output
    assert "imported 44 images" in result.output
    result = runner.invoke(cli, ["data", "build", str(raw), "--out", str(ds), "--size", "16", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "44 input images" in result.output
    result = runner.invoke(cli, ["data", "build", str(raw), "--out", str(tmp_path / "ex"), "--size", "16",
                                 "--workers", "1", "--exclude", "^apple", "--exclude", "KEBAP"])
    assert result.exit_code == 0, result.output
    built = json.loads((tmp_path / "ex" / "dataset.json").read_text())
    assert built["dropped_by_reason"] == {"excluded": 6}
    assert not any("APPLE" in r["dish"] or "KEBAP" in r["dish"] for r in read_jsonl(tmp_path / "ex" / "train" / "metadata.jsonl"))
    result = runner.invoke(cli, ["data", "stats", str(ds), "--json"])
    stats = json.loads(result.output)
    assert stats["splits"]["train"]["images"] + stats["splits"]["test"]["images"] == 44
    assert stats["dishes_in_both_train_and_test"] == 0
    assert stats["splits"]["train"]["image_sizes"] == {"16x16": stats["splits"]["train"]["images"]}

    result = runner.invoke(cli, ["data", "build", str(tmp_path / "nope"), "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "nope" in str(result.exception or result.output)
    result = runner.invoke(cli, ["data", "build", str(raw), "--out", str(tmp_path / "x"), "--size", "0"])
    assert result.exit_code == 2 and "--size" in result.output and "0 is not in the range 8<=x<=8192" in result.output
    result = runner.invoke(cli, ["data", "build", str(raw), "--out", str(tmp_path / "x"), "--size", "big"])
    assert result.exit_code == 2 and "big" in result.output
    empty = tmp_path / "empty_raw"
    empty.mkdir()
    (empty / "recipes.jsonl").write_text("")
    result = runner.invoke(cli, ["data", "build", str(empty), "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "empty" in str(result.exception)
    result = runner.invoke(cli, ["data", "import", str(tmp_path / "missing"), "--out", str(raw)])
    assert "does not exist" in str(result.exception)
