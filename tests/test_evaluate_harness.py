"""The evaluation harness and report, with a tiny feature network, tiny CLIP and fake generators."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_metrics_evaluate import TinyFeatures

import dishgen.generation
from dishgen.errors import DishgenError
from dishgen.evaluate import EvaluationConfig, evaluate
from dishgen.evaluate.harness import EvaluationError, plan_entries
from dishgen.evaluate.imagesets import ImageSetError, load_batch
from dishgen.evaluate.report import COLUMNS


class FakeGenerator:
    """Follows the Generator protocol. ``mode``: ``noise`` (random pixels) or ``copy`` (training
    photos with a little noise); ``alpha`` blends copy (1) into noise (0)."""

    family = "cgan"
    knobs = ("truncation",)

    def __init__(self, train_images: list[Path], alpha: float, calls: list):
        self.train_images, self.alpha, self.calls = train_images, alpha, calls

    def generate(self, prompts, num_images=1, seed=None, **knobs):
        self.calls.append((list(prompts), num_images, seed, knobs))
        rng = np.random.default_rng(seed)
        out = []
        for p, prompt in enumerate(prompts):
            for k in range(num_images):
                noise = rng.integers(0, 256, (32, 32, 3)).astype(np.float64)
                with Image.open(self.train_images[(len(prompt) + p + k) % len(self.train_images)]) as im:
                    photo = np.asarray(im.convert("RGB").resize((32, 32)), dtype=np.float64)
                mix = self.alpha * photo + (1 - self.alpha) * noise + rng.normal(0, 2, photo.shape)
                out.append(Image.fromarray(mix.clip(0, 255).astype(np.uint8)))
        return out


@pytest.fixture
def fake_models(tmp_path, tiny_dataset, monkeypatch):
    """``make(name, alpha, steps=())`` writes a fake run dir; loading it gives a FakeGenerator."""
    calls: list = []
    train_images = sorted((tiny_dataset / "train").glob("*.png"))

    def load(model, device=None, dtype=None, **options):
        config = json.loads((Path(model) / "config.json").read_text())
        return FakeGenerator(train_images, config["alpha"], calls)

    monkeypatch.setattr(dishgen.generation, "load_generator", load)

    def make(name: str, alpha: float, steps=()):
        run = tmp_path / name
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"family": "cgan", "alpha": alpha}))
        for step in steps:
            ckpt = run / f"checkpoint-{step}"
            ckpt.mkdir()
            (ckpt / "config.json").write_text(json.dumps({"family": "cgan", "alpha": min(1.0, step / 100)}))
            (ckpt / "COMPLETE").write_text(str(step))
        return run

    make.calls = calls
    return make


def config(data, out, **kw) -> EvaluationConfig:
    kw.setdefault("metrics", ("fid", "kid", "memorization"))
    return EvaluationConfig(data=data, out=out, image_size=32, bootstrap=20, progress=False, **kw)


def test_harness_fid_and_kid_equal_torchmetrics_on_the_same_images(tiny_dataset, tmp_path, fake_models):
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    run = fake_models("noisy", alpha=0.3)
    report = evaluate(config(str(tiny_dataset), str(tmp_path / "out"), models=[run], images_per_caption=2),
                      feature_network=TinyFeatures(), write=False)
    (row,) = report["results"]
    real = load_batch(sorted((tiny_dataset / "test").glob("*.png")), 32)
    fake = load_batch(sorted(Path(row["images"]).glob("*.png")), 32)
    assert row["n_generated"] == fake.shape[0] == 2 * real.shape[0]
    fid = FrechetInceptionDistance(feature=TinyFeatures())
    fid.update(real, real=True)
    fid.update(fake, real=False)
    assert row["metrics"]["fid"]["value"] == pytest.approx(float(fid.compute()), rel=1e-4)
    kid = KernelInceptionDistance(feature=TinyFeatures(), subset_size=row["metrics"]["kid"]["subset_size"])
    kid.update(real, real=True)
    kid.update(fake, real=False)
    torch.manual_seed(0)
    assert row["metrics"]["kid"]["value"] == pytest.approx(float(kid.compute()[0]), rel=1e-4)
    assert row["metrics"]["kid"]["subset_size"] == real.shape[0]  # adapted to N (9 < 1000)
    low, high = row["metrics"]["fid"]["ci"]
    assert low <= row["metrics"]["fid"]["value"] <= high
    assert any("feature dimension" in w for w in row["warnings"]) and any("only 9" in w for w in row["warnings"])


def test_generation_is_batched_seeded_and_resumable(tiny_dataset, tmp_path, fake_models):
    run = fake_models("gan", alpha=0.5)
    cfg = config(tiny_dataset, tmp_path / "out", models=[str(run)], images_per_caption=2, batch_size=8, seed=7)
    evaluate(cfg, feature_network=TinyFeatures(), write=False)
    calls = list(fake_models.calls)
    assert [len(c[0]) for c in calls] == [4, 4, 1]  # 9 captions, 8 images (4 captions x 2) per call
    assert [c[2] for c in calls] == [7, 11, 15]  # seed + first row of the batch
    folder = tmp_path / "out" / "images" / "gan"
    files = sorted(folder.glob("*.png"))
    assert len(files) == 18
    meta = [json.loads(line) for line in (folder / "metadata.jsonl").read_text().splitlines()]
    assert [m["file_name"] for m in meta] == [f.name for f in files]
    stamps = {f.name: f.stat().st_mtime_ns for f in files}
    uninterrupted = {f.name: f.read_bytes() for f in files}
    # Interrupted run: two images lost. A re-run repeats only their batches, with the same seeds,
    # writes only those two files, and they are the uninterrupted run's images exactly.
    lost = ("00003-1.png", "00008-0.png")
    for name in lost:
        (folder / name).unlink()
    fake_models.calls.clear()
    evaluate(cfg, feature_network=TinyFeatures(), write=False)
    assert [(len(c[0]), c[2]) for c in fake_models.calls] == [(4, 7), (1, 15)]
    assert all(f.stat().st_mtime_ns == stamps[f.name] for f in folder.glob("*.png") if f.name not in lost)
    assert {f.name: f.read_bytes() for f in folder.glob("*.png")} == uninterrupted
    # Other settings into the same folder: refused, nothing generated.
    fake_models.calls.clear()
    cfg.seed = 8
    with pytest.raises(ImageSetError, match="other settings"):
        evaluate(cfg, feature_network=TinyFeatures(), write=False)
    assert fake_models.calls == []


def test_checkpoint_selection(tiny_dataset, tmp_path, fake_models):
    run = fake_models("sweep", alpha=1.0, steps=(10, 50))
    (run / "checkpoint-70").mkdir()  # incomplete: no COMPLETE marker
    (run / "checkpoint-70" / "config.json").write_text(json.dumps({"family": "cgan"}))

    def steps(which):
        return [e.step for e in plan_entries(config(tiny_dataset, tmp_path, models=[str(run)], checkpoints=which))]

    assert steps("all") == [10, 50]
    assert steps("latest") == [50]
    assert steps("50,10") == [50, 10]
    with pytest.raises(EvaluationError, match="it has 10, 50"):
        steps("70")
    entry = plan_entries(config(tiny_dataset, tmp_path, models=[str(run / "checkpoint-10")]))[0]
    assert (entry.component, entry.step) == ("sweep", 10)
    # --checkpoints sweeps the run directories; a bundled model beside them is evaluated as it is.
    for which in ("all", "10"):
        planned = plan_entries(config(tiny_dataset, tmp_path, models=["default", str(run)], checkpoints=which))
        assert [e.component for e in planned] == ["default"] + ["sweep"] * (2 if which == "all" else 1)
        assert [e.step for e in planned[1:]] == ([10, 50] if which == "all" else [10])


def _table_rows(markdown: str, heading: str) -> list[list[str]]:
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]


def _numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+\.\d+(?:e-?\d+)?", cell)]


def test_report_for_a_sweep_and_two_runs_matches_its_json(tiny_dataset, tmp_path, fake_models):
    sweep = fake_models("gan", alpha=0.0, steps=(20, 60, 100))
    other = fake_models("vae", alpha=0.8)
    out = tmp_path / "report"
    report = evaluate(config(tiny_dataset, out, models=[str(sweep), str(other)], checkpoints="all"),
                      feature_network=TinyFeatures())
    saved = json.loads((out / "report.json").read_text())
    assert saved["complete"] and saved["results"] == json.loads(json.dumps(report["results"]))
    assert [(r["component"], r["step"]) for r in saved["results"]] == [("gan", 20), ("gan", 60), ("gan", 100), ("vae", None)]
    md = (out / "report.md").read_text()
    rows = _table_rows(md, "Results")
    assert len(rows) == 4
    for row, result in zip(rows, saved["results"], strict=True):
        assert row[0] == result["component"]
        assert row[1] == ("—" if result["step"] is None else str(result["step"]))
        for cell, (key, _, scale, _, _) in zip(row[2:-1], COLUMNS, strict=True):
            metric = result["metrics"].get(key)
            if metric is None:
                assert cell == "—"
                continue
            value, low, high = _numbers(cell)
            decimals = len(cell.split()[0].split(".")[1])
            for shown, exact in zip((value, low, high), [metric["value"], *metric["ci"]], strict=True):
                assert shown == pytest.approx(exact * scale, abs=0.51 * 10**-decimals)
        assert int(row[-1]) == result["n_generated"]
    # The copying checkpoint (alpha 1 at step 100) is flagged, the noise one is not.
    mem = {r["step"]: r["metrics"]["memorization"]["value"] for r in saved["results"] if r["component"] == "gan"}
    assert mem[100] < 0.5 < 2 < mem[20]
    ref = {r["component"]: r for r in saved["references"]}
    assert ref["real train photos"]["metrics"]["fid"]["value"] < saved["results"][0]["metrics"]["fid"]["value"]
    for name in ("charts/metrics.png", "charts/progress.png", "samples.png", "memorization.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 300
        assert f"]({name})" in md
    with Image.open(out / "samples.png") as im:  # 3 distinct captions x (real + 4 columns)
        assert im.size == (200 + 5 * 128, 40 + 3 * 128)


def test_clip_metrics_in_the_harness_equal_the_direct_computation(tiny_dataset, tmp_path, fake_models, tiny_clip_dir):
    from dishgen.evaluate import metrics as M
    from dishgen.evaluate.features import load_clip

    run = fake_models("gan", alpha=0.5)
    report = evaluate(config(tiny_dataset, tmp_path / "out", models=[str(run)], clip_model=str(tiny_clip_dir),
                             metrics=("clip-score", "clip-cosine", "fid")),
                      feature_network=TinyFeatures(), write=False)
    row = report["results"][0]
    meta = [json.loads(x) for x in (Path(row["images"]) / "metadata.jsonl").read_text().splitlines()]
    clip = load_clip(tiny_clip_dir)
    images = load_batch([Path(row["images"]) / m["file_name"] for m in meta], 32)
    cos = M.clip_cosine(clip.encode_images(images), clip.encode_texts([m["text"] for m in meta]))
    assert row["metrics"]["clip_cosine"]["value"] == pytest.approx(float(cos.mean()), abs=1e-5)
    assert row["metrics"]["clip_score"]["value"] == pytest.approx(float(M.clip_score(cos).mean()), abs=1e-3)
    assert row["metrics"]["clip_score_rescaled"]["value"] == pytest.approx(float(((cos + 1) * 50).mean()), abs=1e-3)
    assert report["references"][0]["component"] == "real test photos"
    assert "clip_score" in report["references"][0]["metrics"]


def _write_images(folder: Path, sizes, captions=None):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, size in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    if captions:
        (folder / "metadata.jsonl").write_text(
            "".join(json.dumps({"file_name": f"{i}.png", "text": c}) + "\n" for i, c in enumerate(captions)))
    return folder


def test_scoring_existing_images(tiny_dataset, tmp_path, tiny_clip_dir):
    plain = _write_images(tmp_path / "plain", [48] * 6)
    captioned = _write_images(tmp_path / "captioned", [48] * 4, captions=["a photo of sarma"] * 4)
    report = evaluate(config(tiny_dataset, tmp_path / "out", images=[str(plain), str(captioned)],
                             clip_model=str(tiny_clip_dir), metrics=("fid", "clip-score")),
                      feature_network=TinyFeatures(), write=False)
    plain_row, captioned_row = report["results"]
    assert plain_row["n_generated"] == 6 and set(plain_row["metrics"]) == {"fid"}
    assert any("no captions" in w for w in plain_row["warnings"])
    assert {"fid", "clip_score", "clip_score_rescaled"} <= set(captioned_row["metrics"])


def _one_image_dataset(root: Path, tiny_dataset: Path) -> Path:
    shutil.copytree(tiny_dataset, root)
    lines = (root / "test" / "metadata.jsonl").read_text().splitlines()
    (root / "test" / "metadata.jsonl").write_text(lines[0] + "\n")
    return root


@pytest.mark.parametrize("case", ["mixed sizes", "one test image", "empty folder", "folder of folders", "unreadable image",
                                  "clip folder missing", "clip hub id offline", "inception missing", "bad metric"])
def test_bad_input_fails_clearly_before_any_generation(case, tiny_dataset, tmp_path, fake_models, monkeypatch):
    run = fake_models("gan", alpha=0.5)
    kw: dict = {"models": [str(run)]}
    data, network = tiny_dataset, TinyFeatures()
    if case == "mixed sizes":
        kw["images"] = [str(_write_images(tmp_path / "mixed", [32, 32, 64]))]
        match = "different sizes.*32x32.*64x64"
    elif case == "one test image":
        data = _one_image_dataset(tmp_path / "ds", tiny_dataset)
        match = "1 image"
    elif case == "empty folder":
        (tmp_path / "empty").mkdir()
        kw["images"] = [str(tmp_path / "empty")]
        match = "holds 0 image"
    elif case == "folder of folders":
        _write_images(tmp_path / "images" / "gan", [32, 32])
        _write_images(tmp_path / "images" / "vae", [32, 32])
        kw["images"] = [str(tmp_path / "images")]
        match = "sub-folders gan, vae hold images: pass each with --images"
    elif case == "unreadable image":
        folder = _write_images(tmp_path / "broken", [32, 32])
        (folder / "2.png").write_bytes(b"not a png")
        kw["images"] = [str(folder)]
        match = "cannot read image .*2.png"
    elif case == "clip folder missing":
        kw.update(metrics=("clip-score",), clip_model=str(tmp_path / "no-such-clip"))
        match = "cannot load the CLIP model"
    elif case == "clip hub id offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        kw.update(metrics=("clip-score",), clip_model="openai/clip-vit-large-patch14")
        match = "HF_HUB_OFFLINE is set.*hf download openai/clip-vit-large-patch14"
    elif case == "inception missing":
        if importlib.util.find_spec("torch_fidelity"):
            pytest.skip("torch-fidelity is installed here")
        network, kw["feature_backbone"] = None, "inception"
        match = "torch-fidelity"
    else:
        kw["metrics"] = ("fid", "sharpness")
        match = "unknown metric"
    with pytest.raises(DishgenError, match=match):
        evaluate(config(data, tmp_path / "out", **kw), feature_network=network, write=False)
    assert fake_models.calls == []
    assert not (tmp_path / "out").exists()


def test_dinov2_backbone_from_a_local_folder(tmp_path, tiny_clip_dir):
    from transformers import Dinov2Config, Dinov2Model

    from dishgen.evaluate.features import BackboneUnavailable, load_feature_network

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             image_size=32, patch_size=8)).save_pretrained(tmp_path / "dino")
    (tmp_path / "dino" / "preprocessor_config.json").write_text(json.dumps(
        {"crop_size": {"height": 32, "width": 32}, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}))
    network = load_feature_network("dinov2", tmp_path / "dino")
    images = torch.randint(0, 256, (3, 3, 48, 48), dtype=torch.uint8)
    features = network(images)
    assert features.shape == (3, 32) and network.num_features == 32 and network.image_size == 32
    assert torch.isfinite(features).all() and not torch.allclose(features[0], features[1])
    with pytest.raises(BackboneUnavailable, match="not a saved DINOv2 model folder"):
        load_feature_network("dinov2", tmp_path)
    with pytest.raises(BackboneUnavailable, match="holds a 'dinov2' model, not CLIP"):
        load_feature_network("clip", tmp_path / "dino")
    with pytest.raises(BackboneUnavailable, match="holds a 'clip' model, not DINOv2"):
        load_feature_network("dinov2", tiny_clip_dir)


def test_one_resize_path_centre_crops_and_subsets_nest(tmp_path, tiny_dataset):
    from dishgen.data.dataset import load_split
    from dishgen.evaluate.imagesets import real_set

    wide = np.zeros((20, 60, 3), dtype=np.uint8)
    wide[:, 20:40] = (200, 30, 30)  # the centre square is red, the sides black
    Image.fromarray(wide).save(tmp_path / "wide.png")
    batch = load_batch([tmp_path / "wide.png"], 16)
    assert batch.shape == (1, 3, 16, 16) and batch.dtype == torch.uint8
    assert batch[0, 0].float().mean() > 190 and batch[0, 1:].float().mean() < 40
    rows = load_split(tiny_dataset, "test")
    small, small_rows = real_set(rows, "test", num_samples=4, seed=3)
    large, large_rows = real_set(rows, "test", num_samples=7, seed=3)
    assert len(small) == 4 and set(small_rows) < set(large_rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fid_is_symmetric_and_fast_form_agrees_on_random_shapes(seed):
    from dishgen.evaluate import metrics as M

    g = torch.Generator().manual_seed(seed)
    n_real, n_fake, dim = (int(x) for x in torch.randint(3, 40, (3,), generator=g))
    real = torch.randn(n_real, dim, generator=g) * 2
    fake = torch.randn(n_fake, dim, generator=g) + torch.rand(dim, generator=g)
    forward, backward = M.fid(real, fake), M.fid(fake, real)
    assert forward == pytest.approx(backward, rel=1e-6) and forward > 0
    assert M.frechet_distance(real, fake) == pytest.approx(forward, rel=1e-5)


def test_unreadable_real_photos_are_skipped_named_and_keep_the_files_names(tiny_dataset, tmp_path, fake_models):
    """One broken photo in the split never ends an evaluation: it is left out of the real set (and
    its caption out of generation), listed with its reason in the report, and generated files keep
    the names of their rows in the whole split, so mending the photo later re-uses them."""
    import shutil

    from dishgen.data.dataset import load_split

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    test, train = load_split(data, "test"), load_split(data, "train")
    test[1].path.write_bytes(test[1].path.read_bytes()[:200])  # truncated: opens, fails to decode
    test[4].path.unlink()
    train[0].path.write_text("not an image")
    run = fake_models("gan", alpha=0.5)
    report = evaluate(config(data, tmp_path / "out", models=[str(run)], metrics=("memorization",),
                             feature_backbone="none"), write=True)
    skipped = report["dataset"]["skipped_images"]
    assert [(s["split"], Path(s["path"]).name) for s in skipped] == [
        ("test", test[1].path.name), ("test", test[4].path.name), ("train", train[0].path.name)]
    assert "truncated" in skipped[0]["reason"] and skipped[1]["reason"].startswith("FileNotFoundError")
    assert report["dataset"]["n_real"] == len(test) - 2 and report["dataset"]["n_train"] == len(train) - 1
    names = sorted(p.name for p in (tmp_path / "out" / "images" / "gan").glob("*.png"))
    assert names == [f"{i:05d}-0.png" for i in range(len(test)) if i not in (1, 4)]
    assert "skipped, unreadable: 3 photo(s)" in (tmp_path / "out" / "report.md").read_text()


def test_a_split_with_no_readable_photo_is_refused(tiny_dataset, tmp_path, fake_models):
    import shutil

    from dishgen.data.dataset import load_split

    data = tmp_path / "data"
    shutil.copytree(tiny_dataset, data)
    for row in load_split(data, "test"):
        row.path.write_text("no")
    with pytest.raises(EvaluationError, match="none of its images can be read .*cannot identify"):
        evaluate(config(data, tmp_path / "out", models=[str(fake_models("gan", alpha=0.5))], feature_backbone="none"))
