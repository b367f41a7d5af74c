"""``exclude=REGEX`` leaves dishes out of a GAN's training set without rebuilding the dataset, so its
train/test split (and the evaluation against it) stays as it was built."""

from __future__ import annotations

import re

import pytest

from dishgen.config import ConfigError, resolve_config, validate_config
from dishgen.data.dataset import DatasetError, DatasetRow, exclude_dishes, load_split
from dishgen.train.fastgan import FastGANTrainConfig, train

TINY = dict(resolution=32, z_dim=16, cond_dim=16, batch_size=4, max_steps=1, checkpoint_every=1, sample_every=1,
            log_every=1, keep_checkpoints=0, sample_per_prompt=1, g_channels=8, d_channels=8, max_channels=32,
            decoder_channels=16)


def test_exclude_dishes_matches_the_dish_name_case_insensitively(tmp_path):
    rows = [DatasetRow(tmp_path / f"{i}.png", "a photo", dish) for i, dish in
            enumerate(["MILKA ALPIN CHOCOLATE BAR", "Sarma", "Chocolate cake", "KITKAT", ""])]
    kept, excluded = exclude_dishes(rows, "chocolate bar|^kitkat")
    assert [r.dish for r in kept] == ["Sarma", "Chocolate cake", ""]
    assert [r.dish for r in excluded] == ["MILKA ALPIN CHOCOLATE BAR", "KITKAT"]
    assert exclude_dishes(rows, "") == (rows, [])


@pytest.mark.parametrize("config_class", ["cgan", "fastgan"])
def test_a_bad_pattern_is_refused_before_anything_runs(config_class):
    import importlib

    module = importlib.import_module(f"dishgen.train.{config_class}")
    cls = module.CGANTrainConfig if config_class == "cgan" else module.FastGANTrainConfig
    with pytest.raises(ConfigError, match=r"exclude='CHIPS\|\(' is not a valid regular expression"):
        validate_config(resolve_config(cls, overrides={"exclude": "CHIPS|("}))


def test_training_leaves_out_the_matching_dishes_and_keeps_the_split(tiny_dataset, tmp_path, capsys):
    rows = load_split(tiny_dataset, "train")
    dish = rows[0].dish
    gone = sum(r.dish == dish for r in rows)
    run = tmp_path / "run"
    train(resolve_config(FastGANTrainConfig, overrides={**TINY, "exclude": f"^{re.escape(dish.upper())}$"}),
          tiny_dataset, run)
    out = capsys.readouterr().out
    assert f"leaves out {gone} training images of 1 dishes; {len(rows) - gone} remain" in out
    assert (run / "model" / "model.safetensors").is_file()
    assert load_split(tiny_dataset, "train") == rows  # the dataset itself is untouched


def test_excluding_every_dish_is_refused(tiny_dataset, tmp_path):
    with pytest.raises(DatasetError, match="leaves no training image"):
        train(resolve_config(FastGANTrainConfig, overrides={**TINY, "exclude": "."}), tiny_dataset, tmp_path / "run")


def test_the_shipped_snack_pattern_leaves_out_snacks_and_keeps_dishes(tmp_path):
    from pathlib import Path

    config = resolve_config(FastGANTrainConfig, config_file=Path(__file__).parents[1] / "configs" / "ffml-no-snacks.yaml")
    validate_config(config)
    snacks = ["MILKA ALPIN MILK CHOCOLATE BAR", "RIFFLED POTATO CHIPS WITH SEA SALT", "BUBBLE MINT GUM",
              "OREO ICE CREAM CONE", "7 DAY's CROISSANT WITH OREO CREAM FILLING", "HONEY ROASTED PEANUTS"]
    dishes = ["SARMALE (PORK MEAT)", "CHOCOLATE CAKE WITH WALNUTS", "BAKED BEANS WITH SMOKED PORK KNUCKLE",
              "FRENCH FRIES", "BACLAVA", "KFC REAL BURGER", "CREPES WITH JAM"]
    rows = [DatasetRow(tmp_path / f"{i}.png", "a photo", d) for i, d in enumerate(snacks + dishes)]
    kept, excluded = exclude_dishes(rows, config.exclude)
    assert [r.dish for r in excluded] == snacks and [r.dish for r in kept] == dishes
