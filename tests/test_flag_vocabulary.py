"""One vocabulary for flags and config keys across commands; old spellings work for one release
and say so in one line."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import dishgen.deprecation
from dishgen.config import ConfigError, config_from_dict, resolve_config
from dishgen.train.cgan import CGANTrainConfig
from dishgen.train.fastgan import FastGANTrainConfig


@pytest.fixture(autouse=True)
def fresh_deprecations(monkeypatch):
    monkeypatch.setattr(dishgen.deprecation, "_said", set())


@pytest.mark.parametrize("config_class", [CGANTrainConfig, FastGANTrainConfig])
def test_gans_take_mixed_precision_and_their_old_precision_spelling(config_class, capsys):
    assert config_class().mixed_precision == "no"
    assert resolve_config(config_class, overrides=["mixed_precision=bf16"]).mixed_precision == "bf16"
    assert capsys.readouterr().err == ""
    assert resolve_config(config_class, overrides=["precision=fp32"]).mixed_precision == "no"
    assert resolve_config(config_class, overrides={"precision": "bf16"}).mixed_precision == "bf16"
    err = capsys.readouterr().err
    assert err == ("dishgen: precision=fp32 is deprecated; use mixed_precision=no (the old spelling is accepted "
                   f"until dishgen {dishgen.deprecation.REMOVED_IN})\n"
                   "dishgen: precision=bf16 is deprecated; use mixed_precision=bf16 (the old spelling is accepted "
                   f"until dishgen {dishgen.deprecation.REMOVED_IN})\n")
    with pytest.raises(ConfigError, match="'precision' is the old spelling of 'mixed_precision'"):
        resolve_config(config_class, overrides=["precision=bf16", "mixed_precision=no"])
    # A run saved by an earlier release resumes silently with the new name.
    assert config_from_dict(config_class, {"precision": "fp16"}).mixed_precision == "fp16"
    assert capsys.readouterr().err == ""
    with pytest.raises(ConfigError, match="mixed_precision"):
        resolve_config(config_class, overrides=["precision=fp64"])


@pytest.mark.parametrize("spelling", ["new", "old"])
def test_data_caption_takes_the_llm_flags_of_every_command(spelling, tiny_dataset, monkeypatch):
    import dishgen.data.caption
    from dishgen.cli import cli

    seen = {}

    class Stop(Exception):
        pass

    def get_captioner(name, **options):
        seen.update(options)
        raise Stop

    monkeypatch.setattr(dishgen.data.caption, "get_captioner", get_captioner)
    flags = {"new": ["--llm-base-url", "http://127.0.0.1:9/v1", "--llm-model", "chef", "--llm-concurrency", "2"],
             "old": ["--base-url", "http://127.0.0.1:9/v1", "--model", "chef", "--concurrency", "2"]}[spelling]
    result = CliRunner().invoke(cli, ["data", "caption", str(tiny_dataset), *flags])
    assert isinstance(result.exception, Stop), result.output
    assert (seen["base_url"], seen["model"], seen["concurrency"]) == ("http://127.0.0.1:9/v1", "chef", 2)
    deprecations = [line for line in result.output.splitlines() if "is deprecated" in line]
    if spelling == "new":
        assert deprecations == []
    else:
        assert deprecations == [f"dishgen: {old} is deprecated; use {new} (the old spelling is accepted until dishgen "
                                f"{dishgen.deprecation.REMOVED_IN})" for old, new in
                                (("--base-url", "--llm-base-url"), ("--model", "--llm-model"),
                                 ("--concurrency", "--llm-concurrency"))]


def test_data_caption_refuses_both_spellings_of_one_flag(tiny_dataset):
    from dishgen.cli import cli

    result = CliRunner().invoke(cli, ["data", "caption", str(tiny_dataset), "--model", "a", "--llm-model", "b"])
    assert result.exit_code == 2 and "--model is the old spelling of --llm-model; give --llm-model only" in result.output


def test_knob_flags_name_the_families_that_take_them_from_the_registry():
    from dishgen.cli import cli
    from dishgen.families import families_taking

    text = " ".join(CliRunner().invoke(cli, ["generate", "--help"]).output.split())
    assert f"--truncation FLOAT [{', '.join(families_taking('truncation'))}] Truncation" in text
    assert "--knob KEY=VALUE Any knob of the model's family" in text
    synth = " ".join(CliRunner().invoke(cli, ["data", "augment", "--help"]).output.split())
    assert "--num-inference-steps, --steps INTEGER RANGE" in synth and "--knob KEY=VALUE" in synth
    assert families_taking("temperature") == ["cvae"]
