"""``dishgen generate``: prompts, prompt files, interactive input, grids, knobs, errors.

Runs the shared command on a tiny exported cGAN (random weights, MiniLM text encoder).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from dishgen.cli import cli, main
from dishgen.families.cgan import save_model
from dishgen.image_grid import LABEL_WIDTH
from dishgen.models.cgan import CGANConfig, Generator


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """A tiny exported cGAN at 32 px (random seeded weights)."""
    torch.manual_seed(0)
    config = CGANConfig(resolution=32, z_dim=16, c_dim=384, cond_dim=16, base_channels=8, max_channel_mult=4)
    G = Generator(config).eval()
    return save_model(tmp_path_factory.mktemp("cgan") / "model", G, config, {"id": "minilm", "dim": 384}, step=0)


def invoke(*args, input=None):
    return CliRunner().invoke(cli, ["generate", *map(str, args)], input=input)


def pngs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.png") if not p.name.startswith("grid-"))


def test_prompts_write_one_png_each_and_a_grid(model, tmp_path):
    out = tmp_path / "out"
    result = invoke("Sarma, cabbage rolls", "ćevapi with onions", "-n", 2, "--seed", 0, "--model", model, "--out", out)
    assert result.exit_code == 0, result.output
    files = pngs(out)
    assert len(files) == 4 and all(Image.open(f).size == (32, 32) for f in files)
    assert files[0].name.startswith("cevapi-with-onions") or files[0].name.startswith("sarma")
    grids = list(out.glob("grid-*.png"))
    # prompts x images, with a caption column on the left
    assert len(grids) == 1 and Image.open(grids[0]).size == (LABEL_WIDTH + 2 * 32, 2 * 32)
    assert str(files[0]) in result.output


def test_grid_flags(model, tmp_path):
    result = invoke("burek", "-n", 3, "--no-grid", "--model", model, "--out", tmp_path / "a")
    assert result.exit_code == 0 and not list((tmp_path / "a").glob("grid-*")) and len(pngs(tmp_path / "a")) == 3
    result = invoke("burek", "--grid", "--model", model, "--out", tmp_path / "b")
    assert result.exit_code == 0 and len(list((tmp_path / "b").glob("grid-*"))) == 1


def test_seed_makes_results_repeatable_and_knobs_reach_the_model(model, tmp_path):
    for name in ("a", "b"):
        assert invoke("ajvar", "-n", 2, "--seed", 5, "--model", model, "--out", tmp_path / name).exit_code == 0
    a, b = pngs(tmp_path / "a"), pngs(tmp_path / "b")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    result = invoke("ajvar", "-n", 2, "--seed", 5, "--truncation", 0, "--batch-size", 1, "--model", model,
                    "--out", tmp_path / "c")
    assert result.exit_code == 0, result.output
    c = pngs(tmp_path / "c")
    pixels = [Image.open(path).tobytes() for path in (c[0], c[1], a[0])]
    assert pixels[0] == pixels[1] != pixels[2]  # zero noise: identical images (their PNG chunks differ: index)


def test_prompts_file(model, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# dishes\nsarma\n\n  gibanica  \nproja\n", encoding="utf-8")
    result = invoke("--prompts-file", prompts, "--model", model, "--out", tmp_path / "out", "--no-grid")
    assert result.exit_code == 0, result.output
    assert [p.name.split("-")[0] for p in pngs(tmp_path / "out")] == ["gibanica", "proja", "sarma"]


@pytest.mark.parametrize("content, message", [(b"# only a comment\n\n", "holds no prompts"),
                                              (b"sarma\n\xff\xfe kupus\n", "is not UTF-8")])
def test_bad_prompts_files(model, tmp_path, content, message):
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(content)
    result = invoke("--prompts-file", prompts, "--model", model, "--out", tmp_path / "out")
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "out").exists()


def test_interactive_reads_prompts_until_an_empty_line(model, tmp_path):
    result = invoke("--interactive", "--model", model, "--out", tmp_path / "out", "--seed", 1,
                    input="pljeskavica\nkajmak\n\nnever read\n")
    assert result.exit_code == 0, result.output
    names = [p.name.split("-")[0] for p in pngs(tmp_path / "out")]
    assert sorted(names) == ["kajmak", "pljeskavica"]


def test_no_prompt_is_a_usage_error(model):
    result = invoke("--model", model)
    assert result.exit_code == 2 and "give a prompt" in result.output


def run_main(monkeypatch, capsys, *args) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["dishgen", "generate", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


def test_unknown_knob_and_option_are_one_line_errors(model, tmp_path, monkeypatch, capsys):
    code, err = run_main(monkeypatch, capsys, "sarma", "--temperature", 0.7, "--model", model, "--out", tmp_path)
    assert code == 2
    assert err.strip() == "Error: the cgan family does not take temperature; it takes: truncation, anchor, batch_size"
    code, err = run_main(monkeypatch, capsys, "sarma", "--lora", "x.safetensors", "--model", model)
    assert code == 2 and "takes no loader options" in err and "Traceback" not in err
    assert not pngs(tmp_path)


def test_python_api_imports_as_the_readme_shows_in_a_fresh_interpreter():
    # A fresh interpreter: the lazy package attribute once recursed forever on first import.
    code = ("from dishgen import generate, load_generator\n"
            "import dishgen\n"
            "images = generate('sarma', num_images=2, seed=0)\n"
            "assert dishgen.generate is generate and callable(load_generator)\n"
            "print(len(images), images[0].size)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["2", "(128,", "128)"]  # the bundled FastGAN


def test_knob_aliases_are_one_vocabulary():
    from dishgen.generation import UnknownKnobError, check_knobs, normalize_knobs

    allowed = ("negative_prompt", "guidance_scale", "num_inference_steps")
    assert check_knobs("diffusion", allowed, {"steps": 5, "guidance": 2.0, "negative": "x"}) == {
        "num_inference_steps": 5, "guidance_scale": 2.0, "negative_prompt": "x"}
    assert normalize_knobs({"num_inference_steps": 5}) == {"num_inference_steps": 5}
    with pytest.raises(UnknownKnobError, match="same knob"):
        normalize_knobs({"steps": 5, "num_inference_steps": 6})
    with pytest.raises(UnknownKnobError, match="does not take"):
        check_knobs("cvae", ("temperature",), {"steps": 5})


def test_from_png_with_a_trained_cgan_keeps_its_knobs_and_takes_overrides(model, tmp_path):
    import numpy as np

    from dishgen.generation_io import read_provenance

    result = invoke("ajvar od paprike", "-n", 3, "--seed", 5, "--truncation", 0.5, "--model", model, "--out", tmp_path / "a")
    assert result.exit_code == 0, result.output
    files = pngs(tmp_path / "a")
    again = invoke("--from-png", files[2], "--out", tmp_path / "b")
    assert again.exit_code == 0, again.output
    (remade,) = pngs(tmp_path / "b")
    record = read_provenance(remade)
    assert record == read_provenance(files[2])
    assert (record["model"], record["family"], record["seed"], record["index"], record["knobs"]) == (
        str(model), "cgan", 5, 2, {"truncation": 0.5, "anchor": 0.0})  # saved without training captions
    diff = np.abs(np.asarray(Image.open(remade), dtype=np.int16) - np.asarray(Image.open(files[2]), dtype=np.int16))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # image 2 of 3 made alone: batched kernels may round

    # Another model: the caption, seed and index stay; knobs it does not take are left out.
    other = invoke("--from-png", files[2], "--model", "cvae-ffml64", "--out", tmp_path / "c")
    assert other.exit_code == 0, other.output
    record = read_provenance(pngs(tmp_path / "c")[0])
    assert (record["model"], record["family"], record["seed"], record["index"], record["knobs"]) == (
        "cvae-ffml64", "cvae", 5, 2, {"temperature": 1.0})
