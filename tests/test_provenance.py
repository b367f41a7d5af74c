"""Provenance in every PNG: the ``parameters`` and ``dishgen`` chunks, ``--from-png``, per-image
seeds (``first_index``) and captioned grids. Runs the bundled model (the FastGAN at 128 px, CPU, offline)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from dishgen import __version__
from dishgen.cli import cli, main
from dishgen.generation_io import ProvenanceError, read_provenance

CAPTION = "Ćevapi, šopska salata i žito u zdeli"


def bundled_anchor() -> float:
    """The default ``anchor`` of the bundled model: 1 when it keeps its training captions."""
    weights = Path(__file__).resolve().parents[1] / "src" / "dishgen" / "weights"
    name = json.loads((weights / "default.json").read_text())["model"]
    return 1.0 if (weights / name / "captions.safetensors").is_file() else 0.0


def invoke(*args):
    result = CliRunner().invoke(cli, ["generate", *map(str, args)])
    assert result.exit_code == 0, result.output
    return [Path(line) for line in result.stdout.split()]


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def bundled():
    from dishgen.generation import load_generator

    return load_generator("default")


def test_generated_pngs_carry_both_chunks_as_itxt_and_serbian_letters_survive(tmp_path):
    *files, grid = invoke(CAPTION, "-n", 2, "--seed", 3, "--truncation", 0.8, "--out", tmp_path)
    assert len(files) == 2 and grid.name.startswith("grid-")
    for index, path in enumerate(files):
        raw = path.read_bytes()
        assert b"iTXtdishgen\x00" in raw and b"iTXtparameters\x00" in raw  # UTF-8 chunks, not Latin-1 tEXt
        with Image.open(path) as im:
            text = dict(im.text)
        record = json.loads(text["dishgen"])
        assert record == {
            "caption": CAPTION, "schema": 1, "dishgen_version": __version__, "model": "default", "family": "fastgan",
            "seed": 3, "knobs": {"truncation": 0.8, "anchor": bundled_anchor()}, "device": None, "dtype": None, "index": index, "size": [128, 128],
        }
        assert read_provenance(path) == record
        index_field = f"Image index: {index}, " if index else ""
        assert text["parameters"] == (
            f"{CAPTION}\nSeed: 3, {index_field}Size: 128x128, Model: default, Family: fastgan, Anchor: {bundled_anchor()}, Truncation: 0.8, "
            f"Version: dishgen {__version__}"
        )


def test_grid_is_captioned_and_lists_its_cells(tmp_path):
    from dishgen.image_grid import LABEL_WIDTH

    paths = invoke("Sarma u glinenom loncu", CAPTION, "-n", 3, "--seed", 4, "--out", tmp_path)
    grid = paths[-1]
    record = read_provenance(grid)
    assert record["grid"] == {"columns": 3, "cells": [
        {"caption": "Sarma u glinenom loncu", "index": i} for i in range(3)] + [
        {"caption": CAPTION, "index": i} for i in range(3, 6)]}
    assert record["seed"] == 4 and record["cell_size"] == [128, 128]
    with Image.open(grid) as im:
        assert list(im.size) == record["size"] == [LABEL_WIDTH + 3 * 128, 2 * 128]
        assert "Sarma u glinenom loncu\n" + CAPTION in im.text["parameters"]
        sheet = np.asarray(im.convert("L"))
    # The images sit right of the label column, unchanged; the label column holds dark text on white.
    np.testing.assert_array_equal(np.asarray(sheet[128:, LABEL_WIDTH + 128:LABEL_WIDTH + 256]),
                                  np.asarray(Image.open(paths[4]).convert("L")))
    for row in range(2):
        label = sheet[row * 128:(row + 1) * 128, :LABEL_WIDTH]
        assert (label < 100).sum() > 50 and np.median(label) == 255
    with pytest.raises(ProvenanceError, match="is a grid of 6 images"):
        read_and_rerun(grid, tmp_path / "again")


def read_and_rerun(path: Path, out: Path, *flags):
    """``dishgen generate --from-png PATH`` through main(): returns the written PNG, or raises the one-line error."""
    result = CliRunner().invoke(cli, ["generate", "--from-png", str(path), "--out", str(out), *map(str, flags)])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert result.exit_code == 0, result.output
    (png,) = [Path(line) for line in result.stdout.split()]
    return png


def test_from_png_remakes_the_image_from_its_chunk(tmp_path):
    # One image: the same call again, so the very same pixels.
    (single,) = invoke(CAPTION, "--seed", 21, "--truncation", 0.7, "--out", tmp_path / "one")
    again = read_and_rerun(single, tmp_path / "one-again")
    assert np.array_equal(pixels(again), pixels(single))
    assert read_provenance(again) == read_provenance(single)

    # Image 3 of a 2 x 2 call, made again alone from (seed, index): the same noise and caption; the
    # batched decoder may round a pixel value differently (as in the diffusion family).
    *files, _ = invoke("Sarma u glinenom loncu", CAPTION, "-n", 2, "--seed", 11, "--out", tmp_path / "four")
    alone = read_and_rerun(files[3], tmp_path / "four-again")
    assert read_provenance(alone) == read_provenance(files[3])
    diff = np.abs(pixels(alone) - pixels(files[3]))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    assert np.abs(pixels(alone) - pixels(files[2])).mean() > 3  # and not its neighbour

    # Flags given explicitly win over the chunk.
    closer = read_and_rerun(files[3], tmp_path / "closer", "--truncation", 0.0, "--seed", 5)
    record = read_provenance(closer)
    assert (record["seed"], record["index"], record["knobs"], record["caption"]) == (5, 0, {"truncation": 0.0, "anchor": bundled_anchor()}, CAPTION)
    other = read_and_rerun(files[3], tmp_path / "other", "Pasulj")
    assert read_provenance(other)["caption"] == "Pasulj" and read_provenance(other)["index"] == 3


def _png_with(path: Path, **chunks) -> Path:
    info = PngInfo()
    for key, value in chunks.items():
        info.add_itxt(key, value)
    Image.new("RGB", (8, 8), "red").save(path, pnginfo=info)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.png", "does not exist"),
    (lambda d: (Image.new("RGB", (8, 8)).save(d / "x.jpg"), d / "x.jpg")[1], "is a JPEG file, not a PNG"),
    (lambda d: ((d / "x.png").write_bytes(b"not an image at all"), d / "x.png")[1], "is not a readable image"),
    (lambda d: _png_with(d / "plain.png"), "has no 'dishgen' provenance chunk;"),
    (lambda d: _png_with(d / "a1111.png", parameters="sarma\nSeed: 1"), "'parameters' chunk from another program"),
    (lambda d: _png_with(d / "bad.png", dishgen="{not json"), "chunk is not valid JSON"),
    (lambda d: _png_with(d / "part.png", dishgen='{"caption": "sarma"}'), "lacks caption, seed or model"),
])
def test_from_png_without_a_good_chunk_is_a_one_line_error(tmp_path, monkeypatch, capsys, make, message):
    path = make(tmp_path)
    monkeypatch.setattr(sys, "argv", ["dishgen", "generate", "--from-png", str(path), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_noise_stream_keeps_old_seeds_and_serves_any_image_alone():
    from dishgen.models.layers import noise_rows

    # z_dim a multiple of 16 (all defaults): the same numbers as the one randn((N, z_dim)) draw of before.
    old = torch.randn((6, 128), generator=torch.Generator().manual_seed(9))
    assert torch.equal(noise_rows(6, 128, 9), old)
    for dim in (8, 20, 128):  # any z_dim: row k never depends on the number of rows asked for
        assert torch.equal(noise_rows(2, dim, 9, first_row=3), noise_rows(7, dim, 9)[3:5])


def test_first_index_makes_image_k_alone(bundled):
    prompts = ["Sarma u glinenom loncu", CAPTION]
    images = bundled.generate(prompts, num_images=3, seed=2)
    alone = bundled.generate([CAPTION], num_images=1, seed=2, first_index=4)[0]
    diff = np.abs(np.asarray(alone, dtype=np.int16) - np.asarray(images[4], dtype=np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    again = bundled.generate([CAPTION], num_images=1, seed=2, first_index=4)[0]
    assert np.array_equal(np.asarray(again), np.asarray(alone))  # same call shape: the same bits
    tail = bundled.generate([CAPTION], num_images=2, seed=2, first_index=4)  # a batch of 2: rounding only
    diff = np.abs(np.asarray(tail[0], dtype=np.int16) - np.asarray(alone, dtype=np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_evaluation_images_carry_provenance(bundled, tmp_path):
    from dishgen.evaluate.imagesets import generate_set

    captions = ["Sarma u glinenom loncu", CAPTION, "Pasulj prebranac", "Burek sa sirom"]
    rows = [0, 3, 4, 9]
    settings = {"model": "default", "family": bundled.family, "seed": 5, "images_per_caption": 2, "knobs": {}}
    image_set = generate_set(bundled, captions, rows, tmp_path / "set", settings=settings, images_per_caption=2,
                             seed=5, batch_size=4, knobs={}, progress=False, dtype="fp32")
    assert len(image_set) == 8
    record = read_provenance(tmp_path / "set" / "00004-1.png")  # second batch (rows 4, 9), seeded 5 + 4
    assert {k: record[k] for k in ("caption", "seed", "index", "row", "sample", "model", "family", "dtype", "size")} == {
        "caption": "Pasulj prebranac", "seed": 9, "index": 1, "row": 4, "sample": 1, "model": "default",
        "family": "fastgan", "dtype": "fp32", "size": [128, 128]}
    assert read_provenance(tmp_path / "set" / "00003-0.png")["caption"] == CAPTION
    alone = bundled.generate([record["caption"]], seed=record["seed"], first_index=record["index"], **record["knobs"])[0]
    diff = np.abs(np.asarray(alone, dtype=np.int16) - pixels(tmp_path / "set" / "00004-1.png"))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
