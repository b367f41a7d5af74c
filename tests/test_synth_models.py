"""augment with a real tiny model and mix, both through the CLI; the trainers accept the result."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from test_synth import rows_of

from dishgen.cli import cli
from dishgen.data.dataset import load_split
from dishgen.data.synth import DEFAULT_NEGATIVE_PROMPT, DEFAULT_POSITIVE_SUFFIX, content_hash

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, tiny_dataset_64, tiny_sd_dir):
    """The first 6 training photos, 2 variations each, rendered by the tiny Stable Diffusion
    pipeline in 2 steps; mixed in at 20 % of train, without a validation split."""
    root = tmp_path_factory.mktemp("synth_models")
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "data",
            "augment",
            str(tiny_dataset_64),
            "--out",
            str(root / "synth"),
            "--model",
            str(tiny_sd_dir),
            "--variations",
            "2",
            "--limit",
            "6",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--seed",
            "3",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "12 synthetic images" in result.output
    result = runner.invoke(
        cli,
        [
            "data",
            "mix",
            str(tiny_dataset_64),
            str(root / "synth"),
            "--out",
            str(root / "mixed"),
            "--synthetic-fraction",
            "0.2",
            "--val-fraction",
            "0",
            "--seed",
            "1",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return root


def test_tiny_stable_diffusion_renders_variations_with_food_photography_prompts(mixed, tiny_sd_dir):
    rows = rows_of(mixed / "synth", "train")
    assert len(rows) == 12
    hashes = set()
    for row in rows:
        assert row["prompt"] == f"{row['text'].rstrip(' .')}, {DEFAULT_POSITIVE_SUFFIX}"
        assert row["generator"] == f"diffusion:{tiny_sd_dir}"
        settings = json.loads(row["generator_settings"])
        assert settings["knobs"] == {
            "num_inference_steps": 2,
            "negative_prompt": DEFAULT_NEGATIVE_PROMPT,
        }
        assert row["original_size"] == [64, 64]
        hashes.add(content_hash(mixed / "synth" / "train" / row["file_name"]))
    assert len(hashes) == 12  # every caption and seed gives its own picture


def test_mixed_dataset_has_the_share_asked_for_and_a_real_test_split(mixed, tiny_dataset_64):
    summary = json.loads((mixed / "mixed" / "dataset.json").read_text())
    train = load_split(mixed / "mixed", "train")
    synthetic = sum(r.extra["synthetic"] for r in train)
    real_train = len(load_split(tiny_dataset_64, "train"))
    assert synthetic == round(0.2 * real_train / 0.8) == summary["counts"]["train"]["synthetic"]
    assert abs(synthetic - 0.2 * len(train)) <= 1
    test = load_split(mixed / "mixed", "test")
    assert not any(r.extra["synthetic"] for r in test) and len(test) == len(
        load_split(tiny_dataset_64, "test")
    )
    assert not (mixed / "mixed" / "validation").exists()


def test_cvae_trainer_takes_a_step_on_the_mixed_dataset(mixed, tmp_path):
    from dishgen.config import resolve_config
    from dishgen.train.cvae import CVAETrainConfig, train

    config = resolve_config(
        CVAETrainConfig,
        overrides={
            "base_channels": 8,
            "max_channels": 32,
            "z_dim": 16,
            "cond_dim": 32,
            "batch_size": 8,
            "lstm_embed_dim": 16,
            "lstm_hidden_dim": 16,
            "lstm_out_dim": 16,
            "text_encoder": "lstm",
            "samples_per_prompt": 2,
            "num_recon_images": 4,
            "log_every": 1,
            "max_steps": 1,
            "sample_every": 100,
            "checkpoint_every": 100,
        },
    )
    exported = train(config, mixed / "mixed", tmp_path / "cvae")
    log = [json.loads(line) for line in (tmp_path / "cvae" / "log.jsonl").read_text().splitlines()]
    assert log and all(
        torch.isfinite(torch.tensor(v)) for row in log for v in row.values() if isinstance(v, float)
    )
    assert (exported / "config.json").is_file()


def test_cgan_trainer_takes_a_step_on_the_mixed_dataset(mixed, tmp_path, tiny_clip_dir):
    from dishgen.config import resolve_config
    from dishgen.train.cgan import CGANTrainConfig, train

    config = resolve_config(
        CGANTrainConfig,
        overrides={
            "resolution": 32,
            "base_channels": 8,
            "max_channel_mult": 4,
            "z_dim": 16,
            "cond_dim": 16,
            "batch_size": 4,
            "log_every": 1,
            "max_steps": 1,
            "sample_every": 100,
            "checkpoint_every": 100,
            "text_encoder": f"clip:{tiny_clip_dir}",
        },
    )
    train(config, mixed / "mixed", tmp_path / "cgan")
    assert (tmp_path / "cgan" / "model" / "config.json").is_file()


def test_cli_fails_before_work_on_a_model_that_cannot_load(tmp_path, tiny_dataset):
    from dishgen.generation import ModelReferenceError

    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "data",
            "augment",
            str(tiny_dataset),
            "--out",
            str(tmp_path / "s"),
            "--model",
            str(tmp_path / "missing"),
        ],
    )
    assert isinstance(result.exception, ModelReferenceError)
    result = runner.invoke(
        cli,
        ["data", "augment", str(tiny_dataset), "--out", str(tmp_path / "s"), "--llm-model", "x"],
    )
    assert result.exit_code == 2 and "only apply with --captioner llm" in result.output
    assert not any(tmp_path.iterdir())
