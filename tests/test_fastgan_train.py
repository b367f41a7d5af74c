"""FastGAN training on the repository's real image sample: learning, exact resume, export,
generation through the CLI with PNG provenance, config errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from dishgen.config import ConfigError, resolve_config
from dishgen.errors import DishgenError
from dishgen.families import fastgan as family
from dishgen.generation import ModelReferenceError, load_generator
from dishgen.models import cgan, fastgan
from dishgen.train import fastgan as trainer
from dishgen.train.common import RunDirError
from dishgen.train.fastgan import PRESETS, FastGANTrainConfig, train

TINY = dict(resolution=32, g_channels=8, d_channels=8, max_channels=32, decoder_channels=16, z_dim=16, cond_dim=16,
            batch_size=4, mismatch_weight=0.5, r1_gamma=1.0, r1_every=2, log_every=1, sample_every=3,
            checkpoint_every=3, keep_checkpoints=0, max_steps=6, noise=True)


def tiny(**overrides) -> FastGANTrainConfig:
    return resolve_config(FastGANTrainConfig, overrides={**TINY, **overrides})


class Killed(BaseException):
    """Stands for a kill -9 in the middle of a step."""


@pytest.fixture(scope="module")
def run_a(tiny_dataset, tmp_path_factory) -> Path:
    """An uninterrupted 6-step run (checkpoints at 3 and 6, export)."""
    return train(tiny(), tiny_dataset, tmp_path_factory.mktemp("fastgan") / "run_a")


def states(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint: networks, optimizers, scalers, keyed by file."""
    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        if file.stem != "rng":
            out.update({f"{file.stem}/{k}": v for k, v in load_file(str(file)).items()})
    return out


def test_run_dir_layout_and_log(run_a):
    assert json.loads((run_a / "config.json").read_text())["family"] == "fastgan"
    rows = [json.loads(line) for line in (run_a / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["images_seen"] for r in rows] == [4, 8, 12, 16, 20, 24]
    for key in ("loss_D", "loss_G", "loss_recon", "loss_D_mismatch", "logits_real", "logits_fake", "grad_norm_D",
                "grad_norm_G", "r1", "images_per_s"):
        assert key in rows[-1]
    assert rows[0]["r1"] is None and rows[-1]["r1"] > 0 and rows[0]["loss_recon"] > 0
    assert (run_a / "samples" / "step-0000003.png").is_file() and (run_a / "plots" / "reconstruction.png").is_file()
    ckpt = run_a / "checkpoint-6"
    for name in ("G", "D", "G_ema", "optimizer_G", "optimizer_D", "scaler_G", "scaler_D", "rng"):
        assert (ckpt / f"{name}.safetensors").is_file(), name
    meta = json.loads((ckpt / "config.json").read_text())
    assert meta["family"] == "fastgan" and meta["step"] == 6 and meta["text_encoder"] == {"id": "minilm", "dim": 384}
    assert any(k.startswith("decoder_part.") for k in load_file(str(ckpt / "D.safetensors")))
    assert any(k.startswith("sle.") for k in load_file(str(ckpt / "G_ema.safetensors")))


def test_training_teaches_D_to_rebuild_and_judge_a_fixed_batch(tiny_dataset, tmp_path):
    from dishgen.data.dataset import load_split
    from dishgen.images_tensor import load_images_uint8
    from dishgen.text import load_text_encoder

    config = tiny(batch_size=8, max_steps=12, checkpoint_every=12, sample_every=100, augment="", mismatch_weight=0.0,
                  r1_gamma=0.0)
    run = train(config, tiny_dataset, tmp_path / "run")
    rows = load_split(tiny_dataset, "train")[:16]
    real = load_images_uint8([r.path for r in rows], 32).float() / 127.5 - 1
    c = load_text_encoder("minilm").encode([r.text for r in rows])
    z = torch.randn(16, 16, generator=torch.Generator().manual_seed(0))
    model_config = config.model_config(c_dim=384)
    torch.manual_seed(config.seed)  # the trainer's initial weights
    initial = fastgan.Generator(model_config), fastgan.Discriminator(model_config)
    trained = fastgan.Generator(model_config), fastgan.Discriminator(model_config)
    trained[0].load_state_dict(load_file(str(run / "checkpoint-12" / "G.safetensors")))
    trained[1].load_state_dict(load_file(str(run / "checkpoint-12" / "D.safetensors")))

    def losses(G, D):
        with torch.no_grad():
            h, maps = D.features(real)
            hinge = sum(cgan.d_hinge_loss(D.logits(h, c), D(G(z, c), c))).item()
            return hinge, fastgan.reconstruction_loss(*D.reconstruct(maps, 1), real, 1).item()

    (hinge0, recon0), (hinge1, recon1) = losses(*initial), losses(*trained)
    assert hinge1 < 0.8 * hinge0, (hinge0, hinge1)
    assert recon1 < 0.8 * recon0, (recon0, recon1)


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
    train(trainer.resolve_train_config(out, resume=True), tiny_dataset, out, resume=True)

    a, b = states(run_a / "checkpoint-6"), states(out / "checkpoint-6")
    assert a.keys() == b.keys() and len(a) > 50
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_another_network_shape(run_a, tmp_path, tiny_dataset):
    out = tmp_path / "run_d"
    shutil.copytree(run_a, out)
    with pytest.raises(DishgenError, match=r"g_channels=8 \(now 16\)"):
        train(tiny(g_channels=16, max_steps=7), tiny_dataset, out, resume=True)


def test_init_from_starts_a_noise_bilinear_run_from_an_older_run(run_a, tiny_dataset, tmp_path, capsys):
    old = train(tiny(noise=False, max_steps=3), tiny_dataset, tmp_path / "old")
    saved = json.loads((old / "checkpoint-3" / "config.json").read_text())
    del saved["model"]["noise"], saved["model"]["upsample"]  # as runs saved before these options wrote it
    (old / "checkpoint-3" / "config.json").write_text(json.dumps(saved))

    new = train(tiny(init_from=str(old), upsample="bilinear", max_steps=1, sample_every=1), tiny_dataset,
                tmp_path / "new")
    assert json.loads((new / "config.json").read_text())["upsample"] == "bilinear"
    out = capsys.readouterr().out
    assert f"networks initialised from {old / 'checkpoint-3'}" in out and "ema_rampup=false keeps it" in out
    before = load_file(str(old / "checkpoint-3" / "G.safetensors"))
    after = load_file(str(new / "checkpoint-1" / "G.safetensors"))
    noise_keys = {k for k in after if ".noise" in k}
    assert noise_keys and after.keys() - before.keys() == noise_keys
    weights = [k for k in before if before[k].is_floating_point() and "running" not in k]
    moved = [k for k in weights if not torch.equal(before[k], after[k])]
    assert moved and max((before[k] - after[k]).abs().max() for k in moved) < 1e-2  # one step from there
    assert any(after[k].abs().max() > 0 for k in noise_keys)  # the noise weights learn from zero

    with pytest.raises(DishgenError, match=r"g_channels=8 \(now 16\)"):
        train(tiny(init_from=str(old), g_channels=16), tiny_dataset, tmp_path / "wide")
    with pytest.raises(DishgenError, match="neither a fastgan run, a checkpoint folder, an exported model"):
        train(tiny(init_from=str(tmp_path / "nowhere")), tiny_dataset, tmp_path / "bad")


def test_a_run_saved_with_the_old_precision_key_resumes(run_a, tmp_path, tiny_dataset, capsys):
    out = tmp_path / "old_key"
    shutil.copytree(run_a, out)
    saved = json.loads((out / "config.json").read_text())
    assert saved.pop("mixed_precision") == "no"
    (out / "config.json").write_text(json.dumps({**saved, "precision": "fp32"}))  # as earlier releases saved it

    config = trainer.resolve_train_config(out, overrides=["max_steps=7"], resume=True)
    assert config.mixed_precision == "no"
    assert "deprecated" not in capsys.readouterr().err  # a saved run is read silently
    train(config, tiny_dataset, out, resume=True)
    rewritten = json.loads((out / "config.json").read_text())
    assert (rewritten["mixed_precision"], "precision" in rewritten) == ("no", False)
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()][-1] == 7


def test_export_reloads_bit_exactly_and_generates(run_a):
    exported = load_file(str(run_a / "model" / "model.safetensors"))
    checkpoint = load_file(str(run_a / "checkpoint-6" / "G_ema.safetensors"))
    assert exported.keys() == checkpoint.keys() and all(torch.equal(exported[k], checkpoint[k]) for k in exported)
    gen = load_generator(run_a)
    assert gen.family == "fastgan" and set(gen.knobs) == {"truncation", "anchor", "batch_size"}
    loaded = gen.G.state_dict()
    assert all(torch.equal(loaded[k].contiguous(), exported[k]) for k in exported)
    images = gen.generate(["a photo of sarmale", "apple cake"], num_images=3, seed=7, batch_size=4)
    assert len(images) == 6 and all(im.size == (32, 32) and im.mode == "RGB" for im in images)
    again = gen.generate(["a photo of sarmale", "apple cake"], num_images=3, seed=7, batch_size=1)
    assert [im.tobytes() for im in images] == [im.tobytes() for im in again]  # batch size does not matter
    alone = gen.generate(["apple cake"], num_images=1, seed=7, first_index=5)
    assert alone[0].tobytes() == images[5].tobytes()  # image k made again alone
    with pytest.raises(TypeError, match="fastgan family does not take temperature"):
        gen.generate(["x"], temperature=0.5)


def test_the_run_keeps_its_training_captions_and_generation_anchors_on_them(run_a, tiny_dataset, tmp_path):
    """Unseen captions move onto the nearest training captions (dishgen.caption_bank); a training
    caption stays nearly itself; the bank travels with the export and serves a checkpoint too."""
    from dishgen.caption_bank import CAPTION_BANK_FILE, CaptionBank, CaptionBankError
    from dishgen.data.dataset import load_split

    rows = load_split(tiny_dataset, "train")
    bank = CaptionBank.load(run_a / "model" / CAPTION_BANK_FILE)
    assert bank.texts == list(dict.fromkeys(r.text for r in rows)) and len(bank.dishes) == len(bank.texts)
    assert (run_a / CAPTION_BANK_FILE).read_bytes() == (run_a / "model" / CAPTION_BANK_FILE).read_bytes()

    gen = load_generator(run_a)
    fed = []  # the caption embeddings G is given
    gen.G.register_forward_pre_hook(lambda module, args: fed.append(args[1].clone()))
    seen, unseen = bank.texts[0], "Pasulj prebranac, baked beans in a clay dish"
    raw_c = gen.text_encoder.encode([seen, unseen]).clone()
    gen.generate([seen, unseen], num_images=1, seed=3)  # anchor=1, the default with a bank
    own = gen.last_neighbours[seen]
    assert own[0] == (bank.dishes[0], pytest.approx(own[0][1])) and own[0][1] > 0.5  # itself, heaviest
    assert sum(w for _, w in gen.last_neighbours[unseen]) == pytest.approx(1.0)

    def nearest_bank_cosine(c):
        return torch.nn.functional.normalize(c, dim=1) @ torch.nn.functional.normalize(bank.embeddings, dim=1).T

    anchored, moved = fed[-1], (fed[-1] - raw_c).norm(dim=1)
    assert moved[0] < 0.5 * moved[1]  # the training caption moves least
    assert nearest_bank_cosine(anchored)[1].max() > nearest_bank_cosine(raw_c)[1].max() + 0.05
    gen.generate([seen, unseen], num_images=1, seed=3, anchor=0.0)
    assert torch.equal(fed[-1], raw_c) and gen.last_neighbours == {}  # anchor=0: the raw caption, no neighbours
    raw = gen.generate([seen, unseen], num_images=2, seed=3, anchor=0.0)
    gen.generate([unseen], num_images=1, seed=3, anchor=0.5)
    assert torch.allclose(fed[-1][0], (anchored[1] + raw_c[1]) / 2, atol=1e-5)
    with pytest.raises(ValueError, match="between 0"):
        gen.generate([unseen], anchor=1.5)

    # A checkpoint folder finds its run's bank; a folder saved without one generates as before.
    assert load_generator(run_a / "checkpoint-6").bank is not None
    bare = tmp_path / "bare"
    shutil.copytree(run_a / "model", bare)
    (bare / CAPTION_BANK_FILE).unlink()
    old = load_generator(bare)
    assert old.bank is None and old.defaults["anchor"] == 0.0
    assert [im.tobytes() for im in old.generate([seen, unseen], num_images=2, seed=3)] == [im.tobytes() for im in raw]
    with pytest.raises(ValueError, match="saved without them: use anchor=0"):
        old.generate([unseen], anchor=1.0)
    (bare / CAPTION_BANK_FILE).write_bytes(b"not safetensors")
    with pytest.raises(CaptionBankError, match="cannot be read"):
        load_generator(bare)


def test_float16_weights_load(run_a, tmp_path):
    from safetensors.torch import save_file

    half = tmp_path / "half"
    shutil.copytree(run_a / "model", half)
    weights = load_file(str(half / "model.safetensors"))
    save_file({k: v.half() if v.is_floating_point() else v for k, v in weights.items()}, str(half / "model.safetensors"))
    G, _ = family.load_G_ema(half)
    assert next(G.parameters()).dtype == torch.float32
    full = family.load_G_ema(run_a)[0]
    z, c = torch.randn(2, 16), torch.randn(2, 384)
    assert (G(z, c) - full(z, c)).abs().max() < 0.02


def test_generate_cli_writes_pngs_with_provenance(run_a, tmp_path):
    from dishgen.cli import cli

    result = CliRunner().invoke(cli, ["generate", "Pasulj", "--model", str(run_a), "-n", "2", "--seed", "3",
                                      "--truncation", "0.7", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    files = sorted(p for p in (tmp_path / "out").glob("*.png") if not p.name.startswith("grid-"))
    assert len(files) == 2
    assert "anchored 'Pasulj' on training dishes: " in result.stderr  # which dishes it was drawn as
    assert all(line.endswith(".png") for line in result.stdout.splitlines())
    from PIL import Image

    with Image.open(files[0]) as im:
        record = json.loads(im.text["dishgen"])
    assert record["seed"] == 3 and record["knobs"] == {"truncation": 0.7, "anchor": 1.0} and "fastgan" in json.dumps(record)
    # Image 1 made again alone from its PNG's record (seed, index, caption, knobs).
    again = CliRunner().invoke(cli, ["generate", "--from-png", str(files[1]), "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    (remade,) = [p for p in (tmp_path / "again").glob("*.png") if not p.name.startswith("grid-")]
    with Image.open(remade) as a, Image.open(files[1]) as b:
        assert json.loads(a.text["dishgen"])["index"] == json.loads(b.text["dishgen"])["index"] == 1
        assert np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max() <= 1


def test_loader_accepts_run_checkpoint_export_and_rejects_others(run_a, tmp_path):
    assert family.find_weights(run_a)[1] == run_a / "model" / "model.safetensors"
    assert family.find_weights(run_a / "checkpoint-3")[1] == run_a / "checkpoint-3" / "G_ema.safetensors"
    assert load_generator(run_a / "checkpoint-3").meta["step"] == 3
    with pytest.raises(ModelReferenceError, match="no loader options"):
        family.load_generator(run_a, lora=["x.safetensors"])
    other = tmp_path / "gan"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"family": "cgan"}))
    with pytest.raises(ModelReferenceError, match="'cgan' model, not a fastgan"):
        family.load_generator(other)
    empty = tmp_path / "empty_run"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"family": "fastgan"}))
    with pytest.raises(ModelReferenceError, match="without an export"):
        load_generator(empty)


def test_presets_and_config_errors():
    cpu = resolve_config(FastGANTrainConfig, preset="cpu", presets=PRESETS, overrides=["max_steps=5"])
    assert (cpu.resolution, cpu.text_encoder, cpu.batch_size, cpu.max_steps, cpu.noise) == (128, "minilm", 8, 5, True)
    gpu = resolve_config(FastGANTrainConfig, preset="gpu", presets=PRESETS)  # the bundled model's caption terms
    assert (gpu.batch_size, gpu.r1_gamma, gpu.mismatch_weight, gpu.colour_weight) == (32, 0.1, 0.2, 5.0)
    with pytest.raises(ConfigError, match="did you mean 'recon_weight'"):
        resolve_config(FastGANTrainConfig, overrides=["recon_weigth=1"])
    with pytest.raises(ConfigError, match="resolution=16 must be a power of two between 32 and 512"):
        resolve_config(FastGANTrainConfig, overrides=["resolution=16"])
    with pytest.raises(ValueError, match="unknown DiffAugment"):
        resolve_config(FastGANTrainConfig, overrides=["augment=color,zoom"])


def test_cli_trains_with_overrides(tiny_dataset, tmp_path):
    from dishgen.cli import cli

    out = tmp_path / "cli_run"
    args = ["train", "fastgan", "--data", str(tiny_dataset), "--out", str(out)]
    args += [f"{k}={v}" for k, v in {**TINY, "max_steps": 2, "checkpoint_every": 2}.items()]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (out / "model" / "model.safetensors").is_file()
    assert json.loads((out / "config.json").read_text())["max_steps"] == 2
    rerun = CliRunner().invoke(cli, args)
    assert rerun.exit_code != 0 and "--resume" in str(rerun.exception)
    assert np.isfinite([json.loads(r)["loss_D"] for r in (out / "log.jsonl").read_text().splitlines()]).all()


def fakes_after_training(dataset, out, z, c, steps: int, term: str, weight: float) -> torch.Tensor:
    """Train a tiny run for ``steps`` with ``{term}_weight=weight`` (fast G, no augmentation), check
    that the log shows the term exactly when it is on, and return its G's fakes for ``(z, c)``."""
    config = tiny(max_steps=steps, checkpoint_every=steps, sample_every=100, augment="", g_lr=2e-3,
                  **{f"{term}_weight": weight})
    run = train(config, dataset, out)
    G = fastgan.Generator(config.model_config(c_dim=384)).eval()
    G.load_state_dict(load_file(str(run / f"checkpoint-{steps}" / "G.safetensors")))
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert all((row[f"loss_G_{term}"] > 0) == (weight > 0) for row in log if f"loss_G_{term}" in row)
    with torch.no_grad():
        return G(z, c, [torch.zeros_like(n) for n in G.draw_noise(len(z), torch.Generator().manual_seed(0), "cpu")])


def test_mode_seeking_loss_falls_as_pairs_differ():
    z_a, z_b = torch.zeros(2, 4), torch.ones(2, 4)
    same = fastgan.mode_seeking_loss(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8), z_a, z_b)
    apart = fastgan.mode_seeking_loss(torch.zeros(2, 3, 8, 8), torch.full((2, 3, 8, 8), 0.5), z_a, z_b)
    assert same.item() == pytest.approx(1e5) and apart.item() == pytest.approx(1 / (0.5 + 1e-5))


def test_diversity_weight_makes_one_caption_vary_more_with_the_seed(tiny_dataset, tmp_path):
    """Mode seeking (MSGAN) on the same run, same seed: fakes of one caption spread further apart."""
    from dishgen.text import load_text_encoder

    c = load_text_encoder("minilm").encode(["A photo of sarma"]).expand(8, -1)
    z = torch.randn(8, 16, generator=torch.Generator().manual_seed(1))

    def spread(weight: float) -> float:
        x = fakes_after_training(tiny_dataset, tmp_path / f"run-{weight}", z, c, 8, "diversity", weight)
        return float(torch.cdist(x.flatten(1), x.flatten(1)).mean())

    base, pushed = spread(0.0), spread(20.0)
    assert pushed > 1.5 * base, (base, pushed)


def test_dish_colour_statistics_see_the_dish_not_the_white_background():
    white = torch.ones(2, 3, 16, 16)
    white[0, :, 4:12, 4:12] = torch.tensor([1.0, -1.0, -1.0])[:, None, None]  # a red square, a quarter
    white[1, :, :8] = torch.tensor([-1.0, 0.0, -1.0])[:, None, None]  # a green half
    stats = fastgan.dish_colour_statistics(white)
    assert stats[0, :3].tolist() == pytest.approx([1.0, -1.0, -1.0], abs=0.01)
    assert stats[1, :3].tolist() == pytest.approx([-1.0, 0.0, -1.0], abs=0.01)
    assert stats[:, 3:6].max() < 0.1  # one colour each (the white leaks in a little)
    assert stats[:, 6].tolist() == pytest.approx([0.25, 0.5], abs=0.01)
    assert torch.isfinite(fastgan.dish_colour_statistics(torch.ones(1, 3, 8, 8))).all()  # no dish at all


def test_colour_loss_is_zero_for_the_same_dish_and_pulls_a_fake_towards_its_photo():
    photo = torch.ones(1, 3, 16, 16)
    photo[:, :, 2:14, 2:14] = torch.tensor([0.6, 0.2, -0.6])[:, None, None]  # a golden crust
    assert fastgan.colour_loss(photo, photo).item() == pytest.approx(0.0, abs=1e-6)
    fake = torch.ones(1, 3, 16, 16)
    fake[:, :, 4:12, 4:12] = torch.tensor([-0.4, 0.5, -0.4])[:, None, None]  # a small green patch
    fake.requires_grad_(True)
    before = fastgan.colour_loss(fake, photo)
    before.backward()
    with torch.no_grad():
        after = fastgan.colour_loss(fake - 0.5 * fake.grad / fake.grad.abs().max(), photo)
    assert before.item() > 0.1 and after.item() < before.item()
    assert fake.grad[0, 1, 8, 8] > 0  # the green channel inside the dish goes down


def test_colour_weight_brings_the_fakes_colours_to_their_captions_photos(tiny_dataset, tmp_path):
    """The caption-colour term on the same run, same seed: G's dishes end nearer their photos' colours."""
    from PIL import Image

    from dishgen.data.dataset import load_split
    from dishgen.images_tensor import pil_to_tensor
    from dishgen.text import load_text_encoder

    rows = load_split(tiny_dataset, "train")[:8]
    photos = torch.stack([pil_to_tensor(Image.open(r.path), 32) for r in rows])
    c = load_text_encoder("minilm").encode([r.text for r in rows])
    z = torch.randn(len(rows), 16, generator=torch.Generator().manual_seed(1))

    def distance(weight: float) -> float:
        return float(fastgan.colour_loss(fakes_after_training(tiny_dataset, tmp_path / f"run-{weight}", z, c, 24,
                                                              "colour", weight), photos))

    base, pulled = distance(0.0), distance(100.0)
    assert pulled < 0.8 * base, (base, pulled)


def test_init_from_without_ema_rampup_keeps_the_inherited_average(tiny_dataset, tmp_path, capsys):
    old = train(tiny(max_steps=3), tiny_dataset, tmp_path / "old")
    inherited = load_file(str(old / "checkpoint-3" / "G_ema.safetensors"))

    def drift(rampup: bool) -> tuple[float, bool]:
        capsys.readouterr()
        new = train(tiny(init_from=str(old), max_steps=1, sample_every=1, ema_rampup=rampup), tiny_dataset,
                    tmp_path / f"new-{rampup}")
        ema = load_file(str(new / "checkpoint-1" / "G_ema.safetensors"))
        return max(float((ema[k] - inherited[k]).abs().max()) for k in ema if ema[k].is_floating_point()
                   and "running" not in k), "ema_rampup=false keeps it" in capsys.readouterr().out

    (kept, noted_kept), (ramped, noted_ramped) = drift(False), drift(True)
    assert kept < 0.01 * ramped, (kept, ramped)  # decay 0.999 against (1 + 1) / (10 + 1)
    assert noted_ramped and not noted_kept


def test_init_from_an_exported_model_takes_G_and_warms_a_fresh_D_up(run_a, tiny_dataset, tmp_path, capsys):
    """An export (a run's model/, or a bundled name) carries only the EMA generator: G and G_ema
    start from it, D fresh, and d_warmup trains D alone before G moves."""
    exported = load_file(str(run_a / "model" / "model.safetensors"))
    half = tmp_path / "half"  # an export stored in float16, as the bundled model is
    shutil.copytree(run_a / "model", half)
    from safetensors.torch import save_file
    save_file({k: v.half() if v.is_floating_point() else v for k, v in exported.items()}, str(half / "model.safetensors"))

    new = train(tiny(init_from=str(half), d_warmup=2, max_steps=3, checkpoint_every=1, sample_every=100,
                     ema_rampup=False), tiny_dataset, tmp_path / "new")
    assert "(G and G_ema; D starts fresh)" in capsys.readouterr().out
    weights = [k for k in exported if exported[k].is_floating_point() and "running" not in k]
    stored = {k: v.float() for k, v in load_file(str(half / "model.safetensors")).items()}
    for step, G_moved in ((1, False), (2, False), (3, True)):
        ckpt = new / f"checkpoint-{step}"
        G, G_ema = load_file(str(ckpt / "G.safetensors")), load_file(str(ckpt / "G_ema.safetensors"))
        assert all(torch.equal(G_ema[k], stored[k]) for k in weights) != G_moved, step  # EMA decay 0.999
        assert all(torch.equal(G[k], stored[k]) for k in weights) != G_moved, step
        assert G_moved or max(float((G[k] - exported[k]).abs().max()) for k in weights) < 1e-2  # float16's rounding
    D1, D2 = (load_file(str(new / f"checkpoint-{s}" / "D.safetensors")) for s in (1, 2))
    assert any(not torch.equal(D1[k], D2[k]) for k in D1 if D1[k].is_floating_point())  # D learns meanwhile
    rows = [json.loads(line) for line in (new / "log.jsonl").read_text().splitlines()]
    assert [(r["loss_G"] == 0.0, r["ema_decay"]) for r in rows] == [(True, None), (True, None), (False, 0.999)]

    train(tiny(init_from=str(run_a / "model"), max_steps=1, sample_every=100), tiny_dataset, tmp_path / "plain")
    assert "d_warmup=200 lets D learn" in capsys.readouterr().out
    with pytest.raises(DishgenError, match="holds a network with resolution=128"):
        train(tiny(init_from="fastgan-ffml128"), tiny_dataset, tmp_path / "bundled")  # found by name, other shape


def truncate(path: Path, keep: int = 1000) -> None:
    """Cut a file short, as a broken copy or a full disk leaves it."""
    path.write_bytes(path.read_bytes()[:keep])


def test_damaged_weights_are_one_line_errors_and_a_damaged_checkpoint_is_stepped_over(run_a, tiny_dataset, tmp_path,
                                                                                     monkeypatch, capsys):
    import sys

    from dishgen.cli import main
    from dishgen.errors import WeightsFileError

    model = tmp_path / "model"
    shutil.copytree(run_a / "model", model)
    truncate(model / "model.safetensors")
    monkeypatch.setattr(sys, "argv", ["dishgen", "generate", "Pasulj", "--model", str(model), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("Error: ") and len(err.strip().splitlines()) == 1, err
    assert "model.safetensors' is not a readable safetensors file" in err and "truncated or damaged" in err
    assert not list(tmp_path.glob("out/*.png"))
    with pytest.raises(WeightsFileError, match="truncated or damaged"):
        train(tiny(init_from=str(model)), tiny_dataset, tmp_path / "from-damaged")

    run = tmp_path / "run"
    shutil.copytree(run_a, run)
    truncate(run / "checkpoint-6" / "D.safetensors")
    with pytest.raises(WeightsFileError, match="Checkpoint checkpoint-6 is damaged: move it out of the run folder"):
        train(trainer.resolve_train_config(run, overrides=["max_steps=7"], resume=True), tiny_dataset, run, resume=True)
    shutil.move(run / "checkpoint-6", tmp_path / "checkpoint-6-damaged")
    train(trainer.resolve_train_config(run, overrides=["max_steps=7"], resume=True), tiny_dataset, run, resume=True)
    assert (run / "checkpoint-7").is_dir()  # steps 4-7 again from checkpoint-3
