"""The bundled default model: the main job out of the box, offline, on a CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from dishgen.cli import cli
from dishgen.families.cvae import CVAEModelError, load_model
from dishgen.generation import WEIGHTS_DIR, default_model_path, load_generator, resolve_model


def test_default_model_is_bundled_small_and_safetensors_only():
    path = default_model_path()
    family, _ = resolve_model("default")
    assert family in ("cgan", "cvae", "fastgan")
    assert (path / "model.safetensors").is_file() and (path / "README.md").is_file()
    assert (path / "LICENSE-FFML.txt").read_text().startswith("MIT License")
    assert "Fülöp Bettina-Elena" in (path / "README.md").read_text(encoding="utf-8")
    total = sum(f.stat().st_size for f in WEIGHTS_DIR.rglob("*") if f.is_file())
    assert total < 20e6, f"bundled weights are {total / 1e6:.1f} MB"
    assert not [f for f in WEIGHTS_DIR.rglob("*") if f.suffix in (".pt", ".pth", ".bin", ".ckpt", ".pkl")]
    assert json.loads((path / "config.json").read_text())["text_encoder"]["id"] == "minilm"


def test_main_job_writes_a_png_of_a_dish_on_white(tmp_path):
    result = CliRunner().invoke(cli, ["generate", "ćevapi with onions and flatbread", "--seed", "0",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    png = tmp_path / result.stdout.strip().splitlines()[-1].split("/")[-1]
    # what it drew: the training dish whose caption names ćevapi (the word term of anchoring finds it)
    assert "anchored 'ćevapi with onions and flatbread' on training dishes: MICI" in result.stderr
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] >= 64 and im.size == (im.size[0], im.size[0])
        pixels = np.asarray(im.convert("RGB"), dtype=np.float32)
    border = np.concatenate([pixels[:4].reshape(-1, 3), pixels[-4:].reshape(-1, 3),
                             pixels[:, :4].reshape(-1, 3), pixels[:, -4:].reshape(-1, 3)])
    centre = pixels[pixels.shape[0] // 4 : -pixels.shape[0] // 4, pixels.shape[1] // 4 : -pixels.shape[1] // 4]
    # FFML dishes sit on a white background: a bright border around a darker, coloured centre.
    assert border.mean() > 200
    assert centre.mean() < border.mean() - 30
    assert centre.std(axis=-1).mean() > 5  # coloured, not grey


def test_captions_and_seeds_change_the_picture():
    generator = load_generator("default")
    a, b = generator.generate(["Sarma, cabbage rolls in a clay pot", "A fresh green salad with cucumbers"], seed=1)
    again = generator.generate(["Sarma, cabbage rolls in a clay pot"], seed=1)[0]
    other_seed = generator.generate(["Sarma, cabbage rolls in a clay pot"], seed=2)[0]
    as_array = lambda im: np.asarray(im, dtype=np.float32)  # noqa: E731
    # Made alone, the same caption and seed give the same picture up to the rounding of batched
    # arithmetic (README: at most 1 of 255 in a rare pixel value).
    assert np.abs(as_array(a) - as_array(again)).max() <= 1
    assert (as_array(a) != as_array(again)).mean() < 1e-3
    assert np.abs(as_array(a) - as_array(b)).mean() > 3
    assert np.abs(as_array(a) - as_array(other_seed)).mean() > 3


def test_bundled_model_refuses_to_reconstruct_without_its_encoder():
    """The bundled cVAE drops the image encoder; using it says so instead of returning noise."""
    cvae = WEIGHTS_DIR / "cvae-ffml64"  # by name: the default may become another family
    generator = load_generator(cvae)
    model, text = generator.model, generator.text_inputs(["a bowl of soup"])
    with pytest.raises(CVAEModelError, match="generation-only export.*not encode or reconstruct"):
        model.reconstruct(torch.zeros(1, 3, 64, 64), text)
    assert model.generate(text, num_samples=1, seed=0).shape == (1, 3, 64, 64)
    assert load_model(cvae, attach_text_encoder=False).frozen_text_encoder is None


def test_bundled_models_load_by_name(tmp_path):
    """Every bundled model, the previous default included, is a ``--model NAME``."""
    from dishgen.generation import bundled_models

    names = bundled_models()
    assert "cvae-ffml64" in names
    for name in names:
        family, location = resolve_model(name)
        assert location == WEIGHTS_DIR / name and family == json.loads((location / "config.json").read_text())["family"]
    result = CliRunner().invoke(cli, ["generate", "sarma", "--model", "cvae-ffml64", "--seed", "0",
                                      "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    with Image.open(next(tmp_path.glob("*.png"))) as im:
        assert im.size == (64, 64)
    result = CliRunner().invoke(cli, ["generate", "sarma", "--model", "no-such-model", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "cvae-ffml64" in str(result.exception)
