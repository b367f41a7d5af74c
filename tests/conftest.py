"""Shared fixtures: the repository's real image sample, tiny datasets, offline settings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("MPLBACKEND", "Agg")

SAMPLE_DIR = Path(__file__).parent / "data" / "ffml_sample"
SAMPLE_IMAGES = SAMPLE_DIR / "images"
FFML_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ffml"


@pytest.fixture(scope="session")
def sample_images() -> Path:
    """The repository's real FFML sample: ``<dish>/<nn>.jpg``, 16 dishes, 44 photos (MIT)."""
    return SAMPLE_IMAGES


@pytest.fixture(scope="session")
def ffml_images() -> Path:
    """The full FFML set beside the repository; the test is skipped when it is absent."""
    path = FFML_DIR / "images"
    if not path.is_dir():
        pytest.skip("../shared/data/ffml is not present")
    return path


def write_tiny_dataset(root: Path, size: int = 32, test_dishes: int = 3) -> Path:
    """Write an imagefolder dataset from the sample, directly (no pipeline), split by dish.

    Captions are simple sentences from the dish name, so the tests of the model families do not
    depend on the data pipeline.
    """
    from PIL import Image

    dishes = sorted(p for p in SAMPLE_IMAGES.iterdir() if p.is_dir())
    splits = {"test": dishes[:test_dishes], "train": dishes[test_dishes:]}
    for split, folders in splits.items():
        out = root / split
        out.mkdir(parents=True, exist_ok=True)
        rows = []
        for folder in folders:
            for index, image_path in enumerate(sorted(folder.glob("*.jpg"))):
                name = f"{folder.name.lower().replace(' ', '_').replace('(', '').replace(')', '').replace('&', 'and')}_{index}.png"
                with Image.open(image_path) as im:
                    im.convert("RGB").resize((size, size), Image.Resampling.LANCZOS).save(out / name)
                rows.append({"file_name": name, "text": f"a photo of {folder.name.lower()} on a white background",
                             "dish": folder.name.lower(), "source": "ffml", "license": "MIT"})
        (out / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (root / "dataset.json").write_text(json.dumps({"size": size, "counts": {k: len(v) for k, v in splits.items()}}))
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A 32 px imagefolder dataset (train/test by dish) built from the real sample."""
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny_dataset"), size=32)


@pytest.fixture(scope="session")
def tiny_dataset_64(tmp_path_factory) -> Path:
    """A 64 px imagefolder dataset built from the real sample."""
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny_dataset_64"), size=64)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A tiny CLIP model + real CLIP tokenizer + image processor, saved with ``save_pretrained``."""
    from tiny_models import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    """A tiny ``StableDiffusionPipeline`` folder (random seeded weights, 8x VAE, real CLIP vocab)."""
    from tiny_models import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd"))


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory) -> Path:
    """A tiny ``StableDiffusionXLPipeline`` folder (two text encoders, ``text_time`` UNet)."""
    from tiny_models import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny_sdxl"))


def run_dishgen_torchrun(args: list[str], nproc: int = 2, timeout: int = 300):
    """Run ``dishgen ARGS`` under ``torchrun --nproc_per_node NPROC`` on CPU (gloo); skip if unavailable."""
    import shutil
    import subprocess
    import sys

    torchrun = Path(sys.executable).parent / "torchrun"
    dishgen = shutil.which("dishgen", path=str(Path(sys.executable).parent))
    if not torchrun.is_file() or dishgen is None:
        pytest.skip("torchrun or the dishgen script is not installed beside this Python")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", str(nproc), "--no-python", dishgen, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
