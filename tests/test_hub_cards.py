"""What every family's training run leaves for the hub and for the trackers: a model card that
round-trips through huggingface_hub with the metadata the hub reads (and no local path or token),
and, with ``log_with=tensorboard``, an events file holding the same scalars as ``log.jsonl``."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

from dishgen.config import ConfigError, resolve_config

SECRET = "hf_dishgen_card_secret_0123456789"
TRACKING = "tensorboard" if importlib.util.find_spec("tensorboard") else "none"
GAN = dict(resolution=32, z_dim=16, cond_dim=16, batch_size=4, log_every=1, sample_every=2, checkpoint_every=2,
           keep_checkpoints=0, max_steps=2, sample_prompts=["sarma in a clay pot", "ćevapi with onions"])


def hub_snapshot(folder: Path, root: Path, kind: str, repo: str) -> Path:
    """A copy of ``folder`` where ``hf download`` leaves a hub repository (``kind``: models/datasets)."""
    owner, name = repo.split("/")
    snapshot = root / "hub" / f"{kind}--{owner}--{name}" / "snapshots" / "0123abcd"
    shutil.copytree(folder, snapshot)
    return snapshot


def train_family(family: str, data32: Path, data64: Path, base: Path, out: Path) -> Path:
    """A two-step run of ``family``; returns the folder that holds its card."""
    overrides = {"log_with": TRACKING}
    if family == "cgan":
        from dishgen.train.cgan import CGANTrainConfig, train

        train(resolve_config(CGANTrainConfig, overrides={**GAN, "base_channels": 8, "max_channel_mult": 4,
                                                         **overrides}), data32, out)
        return out / "model"
    if family == "fastgan":
        from dishgen.train.fastgan import FastGANTrainConfig, train

        train(resolve_config(FastGANTrainConfig, overrides={**GAN, "g_channels": 8, "d_channels": 8,
                                                            "max_channels": 32, "decoder_channels": 16,
                                                            **overrides}), data32, out)
        return out / "model"
    if family == "cvae":
        from dishgen.train.cvae import CVAETrainConfig, train

        train(resolve_config(CVAETrainConfig, overrides={
            "base_channels": 8, "max_channels": 32, "z_dim": 16, "cond_dim": 32, "batch_size": 8, "log_every": 1,
            "samples_per_prompt": 2, "num_recon_images": 4, "max_steps": 2, "sample_every": 2,
            "checkpoint_every": 2, **overrides}), data64, out)
        return out / "model"
    from dishgen.train.lora import resolve_train_config, train

    config = resolve_train_config(out, base=str(base), preset="tiny", overrides=[
        "max_steps=2", "checkpoint_every=2", "sample_every=2", "validation_steps=2",
        *[f"{k}={v}" for k, v in overrides.items()]])
    train(config, data64, out, device="cpu")
    return out


@pytest.fixture(scope="module", params=["cgan", "cvae", "fastgan", "lora"])
def trained(request, tiny_dataset, tiny_dataset_64, tiny_sd_dir, tmp_path_factory):
    """``(family, run directory, card folder, root of every local path)`` of a run trained from a dataset
    and (LoRA) a base model that lie where ``hf download`` puts hub repositories, with HF_TOKEN set."""
    root = tmp_path_factory.mktemp(f"card-{request.param}")
    data32 = hub_snapshot(tiny_dataset, root, "datasets", "dishgen/serbian-dishes")
    data64 = hub_snapshot(tiny_dataset_64, root / "64", "datasets", "dishgen/serbian-dishes")
    base = hub_snapshot(tiny_sd_dir, root, "models", "dishgen/tiny-sd") if request.param == "lora" else None
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_TOKEN", SECRET)
        folder = train_family(request.param, data32, data64, base, root / "run")
    return request.param, root / "run", folder, root


def test_each_familys_card_round_trips_with_the_hub_metadata(trained):
    from huggingface_hub import ModelCard

    family, run, folder, root = trained
    card = ModelCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "text-to-image" and data["datasets"] == ["dishgen/serbian-dishes"]
    assert {"dishgen", "text-to-image", family} <= set(data["tags"])
    assert data["license"] == "other"  # no base model licence to follow: the author chooses at push
    if family == "lora":
        assert data["base_model"] == "dishgen/tiny-sd" and data["library_name"] == "diffusers"
        assert data["instance_prompt"] == "sarma in a clay pot" and "stable-diffusion" in data["tags"]
    else:
        assert "base_model" not in data and data["library_name"] == "dishgen"
        assert (folder / "model.safetensors").is_file()
    # the widget shows the run's newest sample grid, at a path that exists beside the card
    widget = data["widget"][0]
    assert widget["text"] and (folder / widget["output"]["url"]).is_file()
    assert f"![samples]({widget['output']['url']})" in card.text
    # the training config, as the run saved it (local paths shortened)
    shown = json.loads(card.text.split("## Training configuration")[1].split("```json")[1].split("```")[0])
    saved = json.loads((run / "config.json").read_text())
    assert shown["max_steps"] == saved["max_steps"] == 2 and shown["log_with"] == TRACKING
    if family == "cvae":  # its measured reconstruction error on the held-out split
        metrics = json.loads((folder / "metrics.json").read_text())
        assert f"| test/recon | {metrics['test']['recon']:.4g} |" in card.text
    text = (folder / "README.md").read_text(encoding="utf-8")
    assert str(root) not in text and not re.search(r"(?<![\w<])/(tmp|home|root|Users)/", text)
    assert SECRET not in text
    assert not [p for p in run.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


@pytest.mark.skipif(TRACKING != "tensorboard", reason="tensorboard is not installed (pip install 'dishgen[tensorboard]')")
def test_tensorboard_holds_the_log_scalars_under_the_same_names(trained):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    family, run, _, _ = trained
    logs = run / f"dishgen-{family}"
    assert list(logs.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(logs))
    events.Reload()
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    expected: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                expected.setdefault(key, []).append((row["step"], value))
    assert set(events.Tags()["scalars"]) == set(expected)
    for key, points in expected.items():
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        assert [s for s, _ in logged] == [s for s, _ in points], key
        assert [v for _, v in logged] == pytest.approx([v for _, v in points], rel=1e-5, abs=1e-6), key
    # the names shared by every family
    assert "images_per_s" in expected and any(k.startswith("lr") for k in expected)


def test_log_with_names_the_missing_package_and_the_extra(tiny_dataset, tmp_path, monkeypatch):
    from dishgen.train.cgan import CGANTrainConfig, train

    with pytest.raises(ConfigError, match="log_with='tensorbord' must be one of 'none', 'tensorboard', 'wandb'"):
        train(resolve_config(CGANTrainConfig, overrides={**GAN, "log_with": "tensorbord"}), tiny_dataset,
              tmp_path / "typo")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "wandb") else real(name, *a))
    with pytest.raises(ConfigError, match=r"log_with=tensorboard needs the tensorboard package.*"
                                          r"pip install 'dishgen\[tensorboard\]'.*log_with=none"):
        train(resolve_config(CGANTrainConfig, overrides={**GAN, "log_with": "tensorboard"}), tiny_dataset,
              tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written
    with pytest.raises(ConfigError, match="log_with=wandb needs the wandb package"):
        train(resolve_config(CGANTrainConfig, overrides={**GAN, "log_with": "wandb"}), tiny_dataset,
              tmp_path / "run")


FAKE_WANDB = '''"""A stand-in for wandb: records what accelerate's WandBTracker asks of it."""
CALLS = []


class _Config:
    def update(self, values, allow_val_change=False):
        CALLS.append(("config", dict(values)))


config = _Config()


class _Run:
    def log(self, values, step=None, **kwargs):
        CALLS.append(("log", step, dict(values)))

    def finish(self):
        CALLS.append(("finish",))


def init(project=None, **kwargs):
    CALLS.append(("init", project, kwargs))
    return _Run()
'''


def test_log_with_wandb_sends_the_log_rows_and_keeps_its_files_in_the_run(tiny_dataset, tmp_path, monkeypatch):
    """Through accelerate's real WandBTracker, with a fake ``wandb`` package (the real one is not a
    dependency): every log.jsonl row under its names and step, and ``dir`` = the run directory."""
    import sys

    from accelerate import tracking
    from accelerate.utils import LoggerType

    from dishgen.train.cgan import CGANTrainConfig, train

    site = tmp_path / "site"
    (site / "wandb").mkdir(parents=True)
    (site / "wandb" / "__init__.py").write_text(FAKE_WANDB)
    (site / "wandb-0.0.0.dist-info").mkdir()
    (site / "wandb-0.0.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: wandb\nVersion: 0.0.0\n")
    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    monkeypatch.syspath_prepend(str(site))
    # accelerate lists the installed trackers once, when it is first imported
    monkeypatch.setattr(tracking, "_available_trackers", [*tracking.get_available_trackers(), LoggerType.WANDB])
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # wandb would write ./wandb here without dir=
    out = tmp_path / "run"
    train(resolve_config(CGANTrainConfig, overrides={**GAN, "base_channels": 8, "max_channel_mult": 4,
                                                     "log_with": "wandb"}), tiny_dataset, out)
    calls = sys.modules["wandb"].CALLS
    monkeypatch.delitem(sys.modules, "wandb")
    assert calls[0] == ("init", "dishgen-cgan", {"dir": str(out)})
    assert calls[1][0] == "config" and calls[1][1]["log_with"] == "wandb" and calls[1][1]["max_steps"] == 2
    assert calls[-1] == ("finish",)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [(c[1], c[2]) for c in calls if c[0] == "log"] == [
        (row["step"], {k: v for k, v in row.items() if k != "step" and isinstance(v, (int, float))})
        for row in rows]
    assert len(rows) == 2 and "loss_G" in rows[0]


def test_a_lora_run_saved_with_the_old_tensorboard_key_still_resumes(tiny_sd_dir, tmp_path):
    from dishgen.train.lora import resolve_train_config

    (tmp_path / "config.json").write_text(json.dumps({"family": "lora", "base": str(tiny_sd_dir),
                                                      "tensorboard": True, "max_steps": 7}))
    config = resolve_train_config(tmp_path, resume=True)
    assert config.max_steps == 7 and config.log_with == "none"
    with pytest.raises(ConfigError, match="tensorboard"):  # a new config naming it is told the keys
        resolve_train_config(tmp_path / "new", base=str(tiny_sd_dir), overrides=["tensorboard=true"])
