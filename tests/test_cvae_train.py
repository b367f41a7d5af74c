"""Training, resume, export, loading and generation of the conditional VAE on the real sample."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from dishgen.config import ConfigError, resolve_config
from dishgen.train.cvae import PRESETS, CVAETrainConfig, train

TINY = {
    "base_channels": 8, "max_channels": 32, "z_dim": 16, "cond_dim": 32, "batch_size": 8,
    "lr": 2e-3, "lr_warmup_steps": 2, "log_every": 2, "samples_per_prompt": 2, "num_recon_images": 4,
    "lstm_embed_dim": 16, "lstm_hidden_dim": 16, "lstm_out_dim": 16,
}


def tiny_config(**overrides) -> CVAETrainConfig:
    return resolve_config(CVAETrainConfig, overrides={**TINY, **overrides})


@pytest.fixture(scope="module")
def minilm_run(tmp_path_factory, tiny_dataset_64):
    """One short run on the default text encoder, shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("cvae") / "run"
    train(tiny_config(max_steps=12, checkpoint_every=6, sample_every=6), tiny_dataset_64, out)
    return out


def test_run_directory_log_and_grids(minilm_run):
    rows = [json.loads(line) for line in (minilm_run / "log.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "recon" in r]
    val_rows = [r for r in rows if "val_recon" in r]
    assert [r["step"] for r in train_rows] == [2, 4, 6, 8, 10, 12]
    for key in ("recon", "kl", "total", "active_units", "images_per_s", "lr", "kl_weight"):
        assert all(isinstance(r[key], float | int) for r in train_rows), key
    # the training reconstruction error falls, and the test split is scored each epoch (35 // 8 = 4 steps)
    assert train_rows[-1]["recon"] < train_rows[0]["recon"]
    assert [r["step"] for r in val_rows] == [4, 8, 12]
    assert all(r["val_recon"] > 0 and r["train_eval_recon"] > 0 for r in val_rows)
    config = json.loads((minilm_run / "config.json").read_text())
    assert config["family"] == "cvae" and config["max_steps"] == 12
    assert {p.name for p in (minilm_run / "samples").iterdir()} == {
        "recon-000006.png", "recon-000012.png", "step-000006.png", "step-000012.png"}
    from PIL import Image

    with Image.open(minilm_run / "samples" / "recon-000012.png") as im:
        assert im.size == (8 * 64, 64)  # 4 (original, reconstruction) pairs in one row
    assert (minilm_run / "plots" / "reconstruction.png").is_file()
    metrics = json.loads((minilm_run / "model" / "metrics.json").read_text())
    assert metrics["test"]["recon"] > 0 and metrics["train"]["recon"] > 0


def test_checkpoint_and_export_follow_the_contract(minilm_run):
    for folder in (minilm_run / "checkpoint-12", minilm_run / "model"):
        config = json.loads((folder / "config.json").read_text())
        assert config["family"] == "cvae"
        assert config["text_encoder"] == {"id": "minilm", "dim": 384}
        assert config["model"]["z_dim"] == 16 and config["model"]["resolution"] == 64
    ckpt = minilm_run / "checkpoint-12"
    for name in ("optimizer", "scheduler", "rng"):
        assert (ckpt / f"{name}.safetensors").is_file() and (ckpt / f"{name}.json").is_file()
    assert json.loads((ckpt / "trainer_state.json").read_text())["step"] == 12
    assert not list(minilm_run.rglob("*.pt")) and not list(minilm_run.rglob("*.bin"))
    a, b = load_file(str(ckpt / "model.safetensors")), load_file(str(minilm_run / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_reload_is_bit_exact_and_every_location_form_loads(minilm_run):
    from dishgen.families.cvae import load_model, resolve_model_folder
    from dishgen.generation import load_generator

    saved = load_file(str(minilm_run / "model" / "model.safetensors"))
    model = load_model(minilm_run / "model")
    state = model.state_dict()
    assert all(torch.equal(state[k], saved[k]) for k in saved)
    assert resolve_model_folder(minilm_run) == minilm_run / "model"
    images = {}
    for location in (minilm_run, minilm_run / "checkpoint-6", minilm_run / "model"):
        gen = load_generator(str(location))
        assert gen.family == "cvae" and set(gen.knobs) == {"temperature", "batch_size"}
        images[location.name] = gen.generate(["A photo of sarma", "burek"], num_images=2, seed=3)
    pics = images["run"]
    assert len(pics) == 4 and pics[0].size == (64, 64)
    assert list(pics[0].getdata()) == list(images["model"][0].getdata())  # run dir -> its export
    assert list(pics[0].getdata()) != list(images["checkpoint-6"][0].getdata())


def test_generator_knobs_and_options(minilm_run):
    from dishgen.families.cvae import CVAEModelError, load_generator

    gen = load_generator(minilm_run)
    a = gen.generate(["sarma"], num_images=3, seed=0, temperature=0.5, batch_size=1)
    b = gen.generate(["sarma"], num_images=3, seed=0, temperature=0.5)
    import numpy as np

    for x, y in zip(a, b, strict=True):  # same noise; conv kernels may round differently per batch size
        assert np.abs(np.asarray(x, dtype=int) - np.asarray(y, dtype=int)).max() <= 2
    with pytest.raises(TypeError, match="truncation"):
        gen.generate(["sarma"], truncation=0.5)
    with pytest.raises(ValueError, match="non-empty"):
        gen.generate([""])
    with pytest.raises(CVAEModelError, match="lora"):
        load_generator(minilm_run, lora=["x"])


def test_exact_resume_matches_an_uninterrupted_run(tmp_path, tiny_dataset_64, monkeypatch):
    """Killed after checkpoint 4, resumed to 8: the weights equal those of a run that never stopped."""
    import dishgen.train.common as common

    config = tiny_config(max_steps=8, checkpoint_every=4, sample_every=100, text_encoder="lstm")
    train(config, tiny_dataset_64, tmp_path / "straight")

    class Killed(Exception):
        pass

    real_check = common.check_finite

    def kill_at_step_6(step, losses, run):
        if step == 6:
            raise Killed
        real_check(step, losses, run)

    monkeypatch.setattr(common, "check_finite", kill_at_step_6)
    with pytest.raises(Killed):
        train(config, tiny_dataset_64, tmp_path / "resumed")
    monkeypatch.setattr(common, "check_finite", real_check)
    assert not (tmp_path / "resumed" / "checkpoint-8").exists()
    train(config, tiny_dataset_64, tmp_path / "resumed", resume=True)

    for folder in ("checkpoint-8", "model"):
        a = load_file(str(tmp_path / "straight" / folder / "model.safetensors"))
        b = load_file(str(tmp_path / "resumed" / folder / "model.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), folder
    a = load_file(str(tmp_path / "straight" / "checkpoint-8" / "optimizer.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoint-8" / "optimizer.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert steps == [json.loads(line)["step"] for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]


def test_lstm_path_trains_and_saves_its_vocabulary(tmp_path, tiny_dataset_64):
    from dishgen.data.dataset import load_split
    from dishgen.families.cvae import load_generator
    from dishgen.text.lstm import WordTokenizer

    out = tmp_path / "run"
    train(tiny_config(max_steps=8, checkpoint_every=8, sample_every=8, text_encoder="lstm"), tiny_dataset_64, out)
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["text_encoder"] == {"id": "lstm", "dim": 16}
    vocab = WordTokenizer.load(out / "model")
    captions = [r.text for r in load_split(tiny_dataset_64, "train")]
    assert vocab.vocab == WordTokenizer.build(captions).vocab
    state = load_file(str(out / "model" / "model.safetensors"))
    assert state["text_model.embedding.weight"].shape == (len(vocab), 16)
    first = load_file(str(out / "checkpoint-8" / "model.safetensors"))["text_model.embedding.weight"]
    assert torch.equal(first, state["text_model.embedding.weight"])
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if '"recon"' in line]
    assert rows[-1]["recon"] < rows[0]["recon"]
    generator = load_generator(out)
    pics = generator.generate(["a photo of apple cake", "unknown words only"], seed=0)
    assert len(pics) == 2
    # the loader tokenizes (as it encodes captions for the frozen encoders); the network takes the ids
    assert generator.text_encoder is None
    assert torch.equal(generator.text_inputs(["a photo of apple cake"]), vocab.encode(["a photo of apple cake"], 32))


def test_divergence_stops_with_step_and_last_checkpoint(tmp_path, tiny_dataset_64, monkeypatch):
    import dishgen.models.cvae as cvae
    from dishgen.train.common import TrainingDiverged

    real = cvae.reconstruction_error
    calls = {"n": 0}

    def nan_after_five(x, x_hat, kind="mse"):
        calls["n"] += 1
        out = real(x, x_hat, kind)
        return out * float("nan") if calls["n"] > 5 and x_hat.requires_grad else out

    monkeypatch.setattr(cvae, "reconstruction_error", nan_after_five)
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=r"step \d+.*checkpoint-4"):
        train(tiny_config(max_steps=20, checkpoint_every=4, sample_every=100, text_encoder="lstm",
                          validate_every_epochs=100), tiny_dataset_64, out)
    assert (out / "checkpoint-4" / "COMPLETE").is_file()


def test_bad_inputs_fail_clearly(tmp_path, tiny_dataset_64):
    from dishgen.data.dataset import DatasetError
    from dishgen.families.cvae import CVAEModelError, load_generator
    from dishgen.text import TextEncoderNotAvailable

    with pytest.raises(DatasetError, match="does not exist"):
        train(tiny_config(max_steps=1, text_encoder="lstm"), tmp_path / "nothing", tmp_path / "r1")
    with pytest.raises(TextEncoderNotAvailable, match="unknown text encoder"):
        train(tiny_config(max_steps=1, text_encoder="bert"), tiny_dataset_64, tmp_path / "r2")
    with pytest.raises(ConfigError, match="did you mean 'z_dim'"):
        resolve_config(CVAETrainConfig, overrides=["zdim=3"])
    with pytest.raises(ValueError, match="resolution=100"):
        resolve_config(CVAETrainConfig, overrides=["resolution=100"])
    with pytest.raises(CVAEModelError, match="no cvae weights"):
        load_generator(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"junk")
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"family": "cgan"}))
    with pytest.raises(CVAEModelError, match="not a cvae"):
        load_generator(tmp_path / "bad")


def test_presets_resolve():
    paper = resolve_config(CVAETrainConfig, preset="paper", presets=PRESETS)
    assert (paper.resolution, paper.z_dim, paper.beta, paper.kl_warmup_epochs, paper.lr, paper.weight_decay,
            paper.batch_size) == (64, 128, 0.5, 10.0, 2e-4, 1e-5, 64)
    assert paper.text_encoder == "clip:openai/clip-vit-base-patch32"
    cpu = resolve_config(CVAETrainConfig, preset="cpu", presets=PRESETS, overrides=["max_steps=5"])
    assert cpu.text_encoder == "minilm" and cpu.max_steps == 5 and cpu.resolution == 64
    net = cpu.model_config(c_dim=384)  # the training config names the network shape, like the GANs'
    assert (net.resolution, net.z_dim, net.c_dim, net.res_block_resolution) == (64, 128, 384, 8)


def test_old_config_name_still_imports():
    from dishgen.train.cvae import CVAEConfig

    assert CVAEConfig is CVAETrainConfig  # until dishgen 0.2.0


def test_cli_train_resume_and_generate(tmp_path, tiny_dataset_64):
    from click.testing import CliRunner

    from dishgen.cli import cli

    out = tmp_path / "run"
    common = ["train", "cvae", "--data", str(tiny_dataset_64), "--out", str(out)]
    tiny = [f"{k}={v}" for k, v in TINY.items()] + ["text_encoder=lstm", "checkpoint_every=4", "sample_every=100"]
    runner = CliRunner()
    result = runner.invoke(cli, [*common, *tiny, "max_steps=4"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "model written to" in result.output
    result = runner.invoke(cli, common + tiny + ["max_steps=4"])
    assert result.exit_code != 0 and "--resume" in str(result.exception)
    result = runner.invoke(cli, [*common, "--resume", "max_steps=6"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "model" / "config.json").read_text())["training"]["max_steps"] == 6
    assert (out / "checkpoint-6").is_dir()
    images = tmp_path / "images"
    result = runner.invoke(cli, ["generate", "A photo of baklava", "--model", str(out), "-n", "2", "--seed", "1",
                                 "--temperature", "0.8", "--out", str(images)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(list(images.glob("*.png"))) >= 2


def test_clip_text_encoder_path(tmp_path, tiny_dataset_64, tiny_clip_dir):
    """The paper preset's kind of encoder (CLIP), here a tiny local CLIP: trained, saved, reloaded."""
    from dishgen.families.cvae import load_generator
    from dishgen.text import load_text_encoder

    encoder_id = f"clip:{tiny_clip_dir}"
    out = tmp_path / "run"
    train(tiny_config(max_steps=2, text_encoder=encoder_id, validate_every_epochs=100), tiny_dataset_64, out)
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["text_encoder"] == {"id": encoder_id, "dim": load_text_encoder(encoder_id).dim}
    pics = load_generator(out).generate(["A photo of baklava"], num_images=2, seed=0)
    assert len(pics) == 2 and pics[0].size == (64, 64)


def test_unreadable_checkpoint_refuses_resume_clearly(tmp_path, tiny_dataset_64):
    from dishgen.train.cvae import CVAETrainingError

    out = tmp_path / "run"
    config = tiny_config(max_steps=2, checkpoint_every=2, sample_every=100, text_encoder="lstm")
    train(config, tiny_dataset_64, out)
    (out / "checkpoint-2" / "optimizer.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CVAETrainingError, match="cannot resume from .*checkpoint-2"):
        train(tiny_config(max_steps=4, checkpoint_every=2, sample_every=100, text_encoder="lstm"),
              tiny_dataset_64, out, resume=True)
