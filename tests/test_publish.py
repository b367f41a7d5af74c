"""Hub-ready runs: the model card round-trips through huggingface_hub, and `dishgen push` uploads the
final weights + card (no checkpoints, no secret) to a loopback hub."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from fake_hub import Hub

from dishgen.publish import PublishError, build_card, hub_base_model, run_files
from dishgen.train.lora import resolve_train_config, train

SECRET = "hf_dishgen_test_secret_0123456789"


@pytest.fixture(scope="module")
def lora_run(tiny_sd_dir, tiny_dataset_64, tmp_path_factory):
    out = tmp_path_factory.mktemp("publish") / "run"
    config = resolve_train_config(out, base=str(tiny_sd_dir), overrides=[
        "resolution=64", "batch_size=4", "lora_rank=4", "max_steps=2", "checkpoint_every=1", "sample_every=2",
        "validation_steps=2", "validation_prompts=[\"sarma in a clay pot\"]", "keep_checkpoints=0"])
    return train(config, tiny_dataset_64, out, device="cpu")


def test_hub_base_model_is_a_hub_id_never_a_local_path(tmp_path):
    assert hub_base_model("stabilityai/stable-diffusion-xl-base-1.0") == "stabilityai/stable-diffusion-xl-base-1.0"
    cached = "/home/u/.cache/huggingface/hub/models--stabilityai--sdxl-turbo/snapshots/abc123"
    assert hub_base_model(cached) == "stabilityai/sdxl-turbo"
    assert hub_base_model(str(tmp_path)) is None and hub_base_model(None) is None


def test_lora_card_round_trips_with_the_metadata_the_hub_reads(lora_run, tmp_path):
    from huggingface_hub import ModelCard

    run = tmp_path / "run"
    shutil.copytree(lora_run, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "base": "stable-diffusion-v1-5/stable-diffusion-v1-5"}))
    card = build_card(run, dataset_id="me/serbian-dishes", evaluation={"fid": 123.4, "note": "text"})
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    data = loaded.data.to_dict()
    assert data["base_model"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert data["datasets"] == ["me/serbian-dishes"] and data["license"] == "creativeml-openrail-m"
    assert data["pipeline_tag"] == "text-to-image" and data["library_name"] == "diffusers"
    assert {"lora", "dishgen"} <= set(data["tags"]) and data["instance_prompt"] == "sarma in a clay pot"
    assert data["widget"] == [{"text": "sarma in a clay pot", "output": {"url": "samples.png"}}]
    assert "| fid | 123.4 |" in loaded.text and "![samples](samples.png)" in loaded.text
    assert '"lora_rank": 4' in loaded.text  # the training config
    # a local base folder never becomes base_model
    local = build_card(lora_run)
    assert local.data.base_model is None and str(lora_run.parent) not in (local.data.to_yaml())


def test_push_uploads_final_weights_and_card_only_with_the_env_token(lora_run, tmp_path, monkeypatch):
    import huggingface_hub.constants

    from dishgen.cli import cli

    hub = Hub()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    evaluation = tmp_path / "eval.json"
    evaluation.write_text(json.dumps({"clip_score": 21.5}))
    try:
        result = CliRunner().invoke(cli, ["push", str(lora_run), "--repo-id", "me/dishes-lora", "--private",
                                          "--evaluation", str(evaluation)])
    finally:
        hub.close()
    assert result.exit_code == 0, result.output
    assert hub.repos["me/dishes-lora"]["visibility"] == "private"
    assert set(hub.files) == {"README.md", "config.json", "pytorch_lora_weights.safetensors", "samples.png",
                              "evaluation.json", "plots/loss.png", "plots/grad_norm.png", "plots/learning_rate.png"}
    assert hub.files["pytorch_lora_weights.safetensors"] == (lora_run / "pytorch_lora_weights.safetensors").read_bytes()
    assert b"clip_score | 21.5" in hub.files["README.md"]
    assert set(hub.auth) == {f"Bearer {SECRET}"}  # the token went in the header, from the environment
    # and nowhere else: not in an uploaded file, not in the run directory
    assert not [name for name, body in hub.files.items() if SECRET.encode() in body]
    assert not [p for p in lora_run.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


def test_unfinished_or_foreign_runs_are_refused(lora_run, tmp_path):
    with pytest.raises(PublishError, match="not a dishgen run directory"):
        run_files(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(lora_run, run, ignore=shutil.ignore_patterns("pytorch_lora_weights.safetensors"))
    with pytest.raises(PublishError, match="no final pytorch_lora_weights.safetensors.*--resume"):
        run_files(run)
    gan = tmp_path / "gan"
    (gan / "checkpoint-2").mkdir(parents=True)
    (gan / "config.json").write_text(json.dumps({"family": "cgan"}))
    with pytest.raises(PublishError, match="no final export model/model.safetensors.*train cgan --resume"):
        run_files(gan)
    (gan / "model").mkdir()
    for name in ("model.safetensors", "config.json"):
        (gan / "model" / name).write_text("{}")
    _, files = run_files(gan)
    assert set(files) == {"model.safetensors", "config.json", "training_config.json"}  # no checkpoint
    card = build_card(gan)
    assert card.data.library_name == "dishgen" and card.data.license == "other" and "cgan" in card.data.tags
