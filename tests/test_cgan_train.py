"""cGAN training on the repository's real image sample: loss, exact resume, export, failures."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from dishgen.config import ConfigError, resolve_config
from dishgen.errors import DishgenError
from dishgen.families import cgan as family
from dishgen.generation import ModelReferenceError, load_generator
from dishgen.models import cgan
from dishgen.train import cgan as trainer
from dishgen.train.cgan import PRESETS, CGANTrainConfig, train
from dishgen.train.common import RunDirError, TrainingDiverged

TINY = dict(resolution=32, base_channels=8, max_channel_mult=4, z_dim=16, cond_dim=16, batch_size=4, mismatch_weight=0.5,
            r1_every=2, log_every=1, sample_every=3, checkpoint_every=3, keep_checkpoints=0, max_steps=6)


def tiny(**overrides) -> CGANTrainConfig:
    return resolve_config(CGANTrainConfig, overrides={**TINY, **overrides})


class Killed(BaseException):
    """Stands for a kill -9 in the middle of a step."""


@pytest.fixture(scope="module")
def run_a(tiny_dataset, tmp_path_factory) -> Path:
    """An uninterrupted 6-step run (checkpoints at 3 and 6, export)."""
    return train(tiny(), tiny_dataset, tmp_path_factory.mktemp("cgan") / "run_a")


def states(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint: networks, optimizers, scalers, keyed by file."""
    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        if file.stem != "rng":
            out.update({f"{file.stem}/{k}": v for k, v in load_file(str(file)).items()})
    return out


def test_run_dir_layout_and_log(run_a):
    assert json.loads((run_a / "config.json").read_text())["family"] == "cgan"
    rows = [json.loads(line) for line in (run_a / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for key in ("loss_D", "loss_G", "logits_real", "logits_fake", "grad_norm_D", "grad_norm_G", "lr_G", "lr_D",
                "r1", "images_per_s", "loss_D_mismatch"):
        assert key in rows[-1]
    assert rows[-1]["r1"] > 0 and rows[0]["r1"] is None  # lazy R1 first ran at step 2
    assert (run_a / "samples" / "step-0000003.png").is_file() and (run_a / "plots" / "losses.png").is_file()
    ckpt = run_a / "checkpoint-6"
    for name in ("G", "D", "G_ema", "optimizer_G", "optimizer_D", "scaler_G", "scaler_D", "rng"):
        assert (ckpt / f"{name}.safetensors").is_file(), name
    meta = json.loads((ckpt / "config.json").read_text())
    assert meta["family"] == "cgan" and meta["step"] == 6
    assert meta["text_encoder"] == {"id": "minilm", "dim": 384} and meta["model"]["c_dim"] == 384
    # G_ema holds batch-norm statistics that moved away from their initial values.
    ema = load_file(str(ckpt / "G_ema.safetensors"))
    assert ema["out_norm.running_var"].sub(1).abs().max() > 1e-3
    # Spectral-norm power-iteration vectors are part of D's saved state (needed for exact resume).
    assert any(k.endswith("parametrizations.weight.original") for k in load_file(str(ckpt / "D.safetensors")))


def test_training_lowers_the_discriminator_loss_on_a_fixed_batch(tiny_dataset, tmp_path):
    from dishgen.data.dataset import load_split
    from dishgen.images_tensor import load_images_uint8
    from dishgen.text import load_text_encoder

    run = train(tiny(batch_size=8, max_steps=12, checkpoint_every=1, sample_every=100, augment=""),
                tiny_dataset, tmp_path / "run")
    rows = load_split(tiny_dataset, "train")[:16]
    real = load_images_uint8([r.path for r in rows], 32).float() / 127.5 - 1
    c = load_text_encoder("minilm").encode([r.text for r in rows])
    z = torch.randn(16, 16, generator=torch.Generator().manual_seed(0))

    def d_loss(step):
        folder = run / f"checkpoint-{step}"
        config = cgan.CGANConfig(**json.loads((folder / "config.json").read_text())["model"])
        G, D = cgan.Generator(config), cgan.Discriminator(config)
        G.load_state_dict(load_file(str(folder / "G.safetensors")))
        D.load_state_dict(load_file(str(folder / "D.safetensors")))
        with torch.no_grad():
            return sum(cgan.d_hinge_loss(D.eval()(real, c), D(G.eval()(z, c), c))).item()

    first, last = d_loss(1), d_loss(12)
    assert last < 0.6 * first, (first, last)


def test_killed_run_resumes_exactly(run_a, tiny_dataset, tmp_path, monkeypatch):
    out = tmp_path / "run_b"
    real_check = trainer.check_finite

    def kill_at_step_5(step, losses, run):
        if step == 5:
            raise Killed()
        real_check(step, losses, run)

    monkeypatch.setattr(trainer, "check_finite", kill_at_step_5)
    with pytest.raises(Killed):
        train(tiny(), tiny_dataset, out)
    monkeypatch.setattr(trainer, "check_finite", real_check)
    assert not (out / "checkpoint-6").exists() and (out / "checkpoint-3" / "COMPLETE").is_file()

    with pytest.raises(RunDirError, match="--resume"):
        train(tiny(), tiny_dataset, out)
    train(tiny(), tiny_dataset, out, resume=True)

    a, b = states(run_a / "checkpoint-6"), states(out / "checkpoint-6")
    assert a.keys() == b.keys() and len(a) > 50
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    assert torch.equal(load_file(str(run_a / "model" / "model.safetensors"))["fc.weight"],
                       load_file(str(out / "model" / "model.safetensors"))["fc.weight"])
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # rows after the checkpoint were dropped, none duplicated
    # The optimizer state really is restored: Adam's step counter continues from 3 to 6.
    from dishgen.train.state import load_state

    assert float(load_state(out / "checkpoint-6" / "optimizer_G")["state"][0]["step"]) == 6


def test_resume_extends_a_finished_run(run_a, tmp_path, tiny_dataset):
    out = tmp_path / "run_c"
    shutil.copytree(run_a, out)
    config = trainer.resolve_train_config(out, overrides=["max_steps=7"], resume=True)
    assert config.base_channels == 8 and config.max_steps == 7  # the saved config, plus the override
    train(config, tiny_dataset, out, resume=True)
    assert json.loads((out / "model" / "config.json").read_text())["step"] == 7


def test_resume_refuses_another_network_shape_or_encoder(run_a, tmp_path, tiny_dataset):
    out = tmp_path / "run_d"
    shutil.copytree(run_a, out)
    with pytest.raises(DishgenError, match=r"base_channels=8 \(now 16\)"):
        train(tiny(base_channels=16, max_steps=7), tiny_dataset, out, resume=True)
    meta = json.loads((out / "checkpoint-6" / "config.json").read_text())
    meta["text_encoder"]["id"] = "clip:/elsewhere"
    (out / "checkpoint-6" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(DishgenError, match="trained with text_encoder='clip:/elsewhere'"):
        train(tiny(max_steps=7), tiny_dataset, out, resume=True)


def test_export_reloads_bit_exactly_and_generates_the_configured_size(run_a):
    exported = load_file(str(run_a / "model" / "model.safetensors"))
    checkpoint = load_file(str(run_a / "checkpoint-6" / "G_ema.safetensors"))
    assert exported.keys() == checkpoint.keys()
    assert all(torch.equal(exported[k], checkpoint[k]) for k in exported)
    gen = load_generator(run_a)
    assert gen.family == "cgan" and set(gen.knobs) == {"truncation", "anchor", "batch_size"}
    loaded = gen.G.state_dict()
    assert all(torch.equal(loaded[k].contiguous(), exported[k]) for k in exported)
    images = gen.generate(["a photo of sarmale", "apple cake"], num_images=3, seed=7, batch_size=4)
    assert len(images) == 6 and all(im.size == (32, 32) and im.mode == "RGB" for im in images)
    again = gen.generate(["a photo of sarmale", "apple cake"], num_images=3, seed=7, batch_size=1)
    assert [im.tobytes() for im in images] == [im.tobytes() for im in again]  # batch size does not matter
    other = gen.generate(["a photo of sarmale"], num_images=1, seed=8)
    assert other[0].tobytes() != images[0].tobytes()
    still = gen.generate(["a photo of sarmale"], num_images=2, seed=7, truncation=0.0)
    assert still[0].tobytes() == still[1].tobytes()  # no noise left: one image per caption


def test_loader_accepts_run_checkpoint_and_export_folders(run_a, tmp_path):
    assert family.find_weights(run_a)[1] == run_a / "model" / "model.safetensors"
    assert family.find_weights(run_a / "checkpoint-3")[1] == run_a / "checkpoint-3" / "G_ema.safetensors"
    no_export = tmp_path / "no_export"
    shutil.copytree(run_a, no_export, ignore=shutil.ignore_patterns("model"))
    assert family.find_weights(no_export)[1] == no_export / "checkpoint-6" / "G_ema.safetensors"
    gen = load_generator(run_a / "checkpoint-3")
    assert gen.meta["step"] == 3
    with pytest.raises(ModelReferenceError, match="no loader options.*lora.*diffusion"):
        family.load_generator(run_a, lora=["x.safetensors"])
    with pytest.raises(TypeError, match="does not take temperature"):
        gen.generate(["x"], temperature=0.5)


def test_loader_rejects_another_family_and_a_missing_encoder(run_a, tmp_path):
    from dishgen.text import TextEncoderNotAvailable

    vae = tmp_path / "vae"
    vae.mkdir()
    (vae / "config.json").write_text(json.dumps({"family": "cvae"}))
    with pytest.raises(ModelReferenceError, match="'cvae' model, not a cgan"):
        family.load_generator(vae)
    moved = tmp_path / "moved"
    shutil.copytree(run_a / "model", moved)
    meta = json.loads((moved / "config.json").read_text())
    meta["text_encoder"] = {"id": "clip:/no/such/clip-folder", "dim": 384}
    (moved / "config.json").write_text(json.dumps(meta))
    with pytest.raises(TextEncoderNotAvailable, match="trained with text encoder 'clip:/no/such/clip-folder'"):
        load_generator(moved)
    empty = tmp_path / "empty_run"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"family": "cgan"}))
    with pytest.raises(ModelReferenceError, match="without an export"):
        load_generator(empty)


def test_nan_loss_stops_with_step_and_last_checkpoint(tiny_dataset, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_loss = cgan.g_hinge_loss

    def nan_at_fifth_call(logits):
        calls["n"] += 1
        return real_loss(logits) * (float("nan") if calls["n"] == 5 else 1.0)

    monkeypatch.setattr(cgan, "g_hinge_loss", nan_at_fifth_call)
    out = tmp_path / "nan"
    with pytest.raises(TrainingDiverged, match=r"step 5: .*loss_G=nan.*checkpoint-3"):
        train(tiny(), tiny_dataset, out)
    assert (out / "checkpoint-3" / "COMPLETE").is_file() and not (out / "model").exists()


def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tiny_dataset, tmp_path, monkeypatch):
    import safetensors.torch

    real_save = safetensors.torch.save_file
    calls = {"n": 0}

    out = tmp_path / "full"

    def disk_full_on_second_checkpoint(tensors, filename, *args, **kwargs):
        # Count only the network weights written into the run's checkpoints (the caption-embedding
        # cache may or may not be written first, depending on which tests ran before).
        if str(out) in str(filename) and Path(filename).name in ("G.safetensors", "D.safetensors", "G_ema.safetensors"):
            calls["n"] += 1
            if calls["n"] == 5:  # G, D, G_ema of checkpoint-3, then G of checkpoint-6, then D: full
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full_on_second_checkpoint)
    with pytest.raises(trainer.CheckpointWriteError, match=r"checkpoint-6.*No space left.*checkpoint-3 is intact"):
        train(tiny(), tiny_dataset, out)
    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    assert sorted(p.name for p in out.iterdir() if "checkpoint" in p.name) == ["checkpoint-3"]
    assert family.find_weights(out)[1] == out / "checkpoint-3" / "G_ema.safetensors"
    assert load_generator(out).meta["step"] == 3


def test_dataset_without_captions_is_a_clear_error(tiny_dataset, tmp_path):
    from dishgen.data.dataset import DatasetError

    broken = tmp_path / "ds"
    shutil.copytree(tiny_dataset, broken)
    meta = broken / "train" / "metadata.jsonl"
    rows = [json.loads(line) for line in meta.read_text().splitlines()]
    del rows[2]["text"]
    meta.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DatasetError, match="no 'text' caption"):
        train(tiny(), broken, tmp_path / "run")


def test_presets_and_config_errors():
    paper = resolve_config(CGANTrainConfig, preset="paper", presets=PRESETS)
    assert (paper.resolution, paper.base_channels, paper.batch_size) == (128, 32, 4)
    assert (paper.g_lr, paper.d_lr, paper.g_betas, paper.r1_gamma, paper.grad_clip) == (5e-5, 1.5e-4, (0.0, 0.9), 2.0, 1.0)
    assert paper.text_encoder == "clip:laion/CLIP-ViT-L-14-laion2B-s32B-b82K" and paper.ema_decay == 0.999
    cpu = resolve_config(CGANTrainConfig, preset="cpu", presets=PRESETS, overrides=["max_steps=5", "seed=3"])
    assert (cpu.resolution, cpu.text_encoder, cpu.max_steps, cpu.seed) == (64, "minilm", 5, 3)
    assert cpu.compile and not paper.compile  # the cpu preset's 20,000 steps pay the build back
    with pytest.raises(ConfigError, match="did you mean 'r1_gamma'"):
        resolve_config(CGANTrainConfig, overrides=["r1_gama=1"])
    with pytest.raises(ConfigError, match="power of two"):
        resolve_config(CGANTrainConfig, overrides=["resolution=100"])
    with pytest.raises(ConfigError, match=r"mismatch_weight=1.0 must be in \[0, 1\)"):
        resolve_config(CGANTrainConfig, overrides=["mismatch_weight=1"])
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        resolve_config(CGANTrainConfig, overrides=["augment=color,zoom"])


def test_cli_trains_with_overrides(tiny_dataset, tmp_path):
    from click.testing import CliRunner

    from dishgen.cli import cli

    out = tmp_path / "cli_run"
    args = ["train", "cgan", "--data", str(tiny_dataset), "--out", str(out)]
    args += [f"{k}={v}" for k, v in {**TINY, "max_steps": 2, "checkpoint_every": 2}.items()]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (out / "model" / "model.safetensors").is_file()
    assert json.loads((out / "config.json").read_text())["max_steps"] == 2


def test_bf16_autocast_trains_close_to_fp32(run_a, tiny_dataset, tmp_path):
    run = train(tiny(precision="bf16", channels_last=False, max_steps=2, checkpoint_every=2), tiny_dataset,
                tmp_path / "bf16")
    bf16 = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    fp32 = [json.loads(line) for line in (run_a / "log.jsonl").read_text().splitlines()]
    # Step 1 starts from the same weights and batch: only bf16 rounding differs.
    for key in ("loss_D", "loss_G", "logits_real", "logits_fake"):
        assert bf16[0][key] == pytest.approx(fp32[0][key], rel=0.05, abs=0.02), key
    assert all(v == v for r in bf16 for v in r.values() if isinstance(v, float))
    with pytest.raises(DishgenError, match="fp16 needs a CUDA device"):
        train(tiny(precision="fp16"), tiny_dataset, tmp_path / "fp16")


def test_compiled_training_matches_eager_and_resumes(run_a, tiny_dataset, tmp_path, monkeypatch):
    """compile=true: G and D.features run as compiled graphs ("aot_eager" here: dynamo and AOTAutograd
    as with inductor, without the C++ build), R1 steps (2, 4, 6) eagerly; the run trains like the
    eager one and resumes from a checkpoint of its own."""
    monkeypatch.setattr(trainer, "COMPILE_BACKEND", "aot_eager")
    compiled = []
    real_compile = trainer.compile_networks
    monkeypatch.setattr(trainer, "compile_networks", lambda *a: compiled.append(real_compile(*a)) or compiled[-1])
    out = tmp_path / "compiled"
    train(tiny(compile=True, max_steps=3), tiny_dataset, out)
    train(tiny(compile=True), tiny_dataset, out, resume=True)
    assert compiled == [True, True]
    ours = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    eager = [json.loads(line) for line in (run_a / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in ours] == [1, 2, 3, 4, 5, 6] and ours[-1]["r1"] > 0
    for row, reference in zip(ours, eager, strict=True):  # the same math, to float rounding
        for key in ("loss_D", "loss_G", "logits_real", "logits_fake", "grad_norm_D", "grad_norm_G"):
            assert row[key] == pytest.approx(reference[key], rel=1e-3, abs=1e-4), (row["step"], key)
    a, b = states(run_a / "checkpoint-6"), states(out / "checkpoint-6")
    assert a.keys() == b.keys()  # compiling leaves the state-dict names alone
    bad = [k for k in a if not torch.allclose(a[k].double(), b[k].double(), rtol=1e-3, atol=1e-4)]
    # G's conv biases all feed a batch-norm, which cancels them: their true gradient is 0 and Adam
    # scales rounding noise up to full steps, so they (and the running means, and their Adam moments)
    # differ in both runs alike. What they compute does not: the exported generators agree.
    cancelled = (".conv1.bias", ".conv2.bias", ".shortcut.bias", "running_mean")
    assert not [k for k in bad if not (k.startswith(("G/", "G_ema/")) and k.endswith(cancelled))
                and not k.startswith("optimizer_G/")], bad
    z, c = torch.randn(4, 16, generator=torch.Generator().manual_seed(0)), torch.randn(4, 384)
    images = [family.load_G_ema(run / "model")[0](z, c) for run in (run_a, out)]
    torch.testing.assert_close(images[1], images[0], rtol=0, atol=2e-3)


def test_compile_falls_back_to_eager_with_a_warning(run_a, tiny_dataset, tmp_path, monkeypatch, caplog):
    def no_compiler(graph, example_inputs):
        raise RuntimeError("no C++ compiler found (stand-in)")

    monkeypatch.setattr(trainer, "COMPILE_BACKEND", no_compiler)
    with caplog.at_level("WARNING", logger="dishgen.train.cgan"):
        out = train(tiny(compile=True, max_steps=3), tiny_dataset, tmp_path / "fallback")
    assert "torch.compile does not work on this machine" in caplog.text and "no C++ compiler found" in caplog.text
    a, b = states(run_a / "checkpoint-3"), states(out / "checkpoint-3")
    assert all(torch.equal(a[k], b[k]) for k in a)  # eager: bit-identical to the eager run
