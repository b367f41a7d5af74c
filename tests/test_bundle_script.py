"""scripts/bundle_model.py: a trained run becomes a float16 bundled model with a model card."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file

from dishgen.cli import cli
from dishgen.config import resolve_config
from dishgen.generation import load_generator
from dishgen.train.fastgan import FastGANTrainConfig, train

REPO = Path(__file__).resolve().parents[1]
TINY = dict(resolution=32, g_channels=8, d_channels=8, max_channels=32, decoder_channels=16, z_dim=16, cond_dim=16,
            batch_size=4, log_every=1, sample_every=2, checkpoint_every=2, keep_checkpoints=0, max_steps=2,
            noise=True, upsample="bilinear")


def bundle_script():
    spec = importlib.util.spec_from_file_location("bundle_model", REPO / "scripts" / "bundle_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def fastgan_run(tiny_dataset, tmp_path_factory) -> Path:
    return train(resolve_config(FastGANTrainConfig, overrides=TINY), tiny_dataset,
                 tmp_path_factory.mktemp("bundle") / "run")


def test_bundles_a_gan_checkpoint_with_its_measured_figures(fastgan_run, tiny_dataset, tmp_path):
    checkpoint = fastgan_run / "checkpoint-2"
    result = CliRunner().invoke(cli, ["evaluate", "--model", str(checkpoint), "--data", str(tiny_dataset),
                                      "--out", str(tmp_path / "eval"), "--feature-backbone", "none", "-k", "1",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    weights = tmp_path / "weights"
    bundle_script().main([str(checkpoint), "tiny-fastgan", "--dataset", str(tiny_dataset), "--default",
                          "--weights-dir", str(weights), "--evaluation", str(tmp_path / "eval" / "report.json"),
                          "--command", "dishgen train fastgan --data DS --out RUN"])
    out = weights / "tiny-fastgan"
    assert json.loads((weights / "default.json").read_text()) == {"model": "tiny-fastgan"}
    state = load_file(str(out / "model.safetensors"))
    assert state and all(str(v.dtype) == "torch.float16" for v in state.values() if v.is_floating_point())
    assert not (out / "G.safetensors").exists() and not list(out.glob("*optim*"))
    card = (out / "README.md").read_text(encoding="utf-8")
    train_rows = len((tiny_dataset / "train" / "metadata.jsonl").read_text().splitlines())
    assert f"{train_rows} training images" in card
    assert "## Measured figures" in card and "| this model (step 2) |" in card
    assert "real test photos, half vs half" in card  # the reference row sits beside it
    assert "| dish top-1 ↑ (colour) | dish mean rank ↓ |" in card and "test photos, leave one out" in card
    assert "test dishes by colour: chance is top-1" in card
    assert "dishgen train fastgan --data DS --out RUN" in card
    for picture in ("samples.png", "contact-sheet.jpg", "LICENSE-FFML.txt"):
        assert (out / picture).is_file()
    from PIL import Image

    from dishgen.image_grid import LABEL_WIDTH

    with Image.open(out / "contact-sheet.jpg") as sheet:  # label, caption's photo, gap, 4 samples, gap, 4 nearest
        assert sheet.size == (LABEL_WIDTH + 9 * 32 + 2 * 8, 16 * 32)
    generator = load_generator(str(out))
    image = generator.generate(["a bowl of beans"], seed=0)[0]
    assert image.size == (32, 32)
    # The run's training captions travel with it: generation anchors on them by default.
    assert (out / "captions.safetensors").read_bytes() == (fastgan_run / "captions.safetensors").read_bytes()
    assert generator.defaults["anchor"] == 1.0 and generator.last_neighbours["a bowl of beans"]
    assert f"It keeps its {len(generator.bank.texts)} training captions" in card


def test_refuses_a_report_without_a_row_for_the_run(fastgan_run, tiny_dataset, tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"results": [{"model": "/elsewhere/run"}], "references": [], "config": {}}))
    with pytest.raises(SystemExit, match="no row for .*checkpoint-2.*/elsewhere/run"):
        bundle_script().main([str(fastgan_run / "checkpoint-2"), "x", "--dataset", str(tiny_dataset),
                              "--weights-dir", str(tmp_path / "w"), "--evaluation", str(report)])
    assert not (tmp_path / "w").exists()


def test_the_card_counts_what_exclude_left_out(tiny_dataset, tmp_path):
    from dishgen.data.dataset import load_split

    rows = load_split(tiny_dataset, "train")
    dish = rows[0].dish
    gone = sum(r.dish == dish for r in rows)
    pattern = f"^{re.escape(dish)}$"
    run = train(resolve_config(FastGANTrainConfig, overrides={**TINY, "exclude": pattern}), tiny_dataset,
                tmp_path / "run")
    script = bundle_script()
    assert script.split_counts(tiny_dataset, pattern)["excluded"] == (gone, 1)
    script.main([str(run), "tiny", "--dataset", str(tiny_dataset), "--weights-dir", str(tmp_path / "w")])
    card = (tmp_path / "w" / "tiny" / "README.md").read_text(encoding="utf-8")
    assert f"left out {gone} training images of 1 dishes whose name matches `exclude={pattern}`" in card
    assert f"so it trained on {len(rows) - gone};" in card
    # A run saved without its captions (trained before they were kept) gets them from the dataset,
    # with the same exclude: the left-out dish is not among them.
    from dishgen.caption_bank import CaptionBank

    (run / "captions.safetensors").unlink()
    script.main([str(run), "tiny2", "--dataset", str(tiny_dataset), "--weights-dir", str(tmp_path / "w")])
    rebuilt = CaptionBank.load(tmp_path / "w" / "tiny2" / "captions.safetensors")
    assert dish not in rebuilt.dishes and len(rebuilt.texts) == len({r.text for r in rows if r.dish != dish})
