"""The evaluation report: ``report.json``, ``report.md``, charts and a grid of samples.

``report.md`` keeps the original project's table layout (component, step, FID, CLIPScore, CLIP
cosine) and adds KID, the original "(cos + 1) / 2 * 100" score, memorization, the backbone-free
spectral distance, edge ratio, grid excess and dish retrieval, N and a 95% bootstrap interval for every
number. Every number in the Markdown is a rounding of the JSON.
"""

from __future__ import annotations

import math
import textwrap
import time
from pathlib import Path
from typing import Any

from dishgen.fileio import atomic_path, atomic_save_image, atomic_write_json, atomic_write_text

# (json key, column title, scale, decimals, better): the report table, left to right after step.
COLUMNS = (
    ("fid", "FID ↓", 1.0, 2, "lower"),
    ("clip_score", "CLIPScore ↑", 1.0, 2, "higher"),
    ("clip_cosine", "CLIP cosine ↑", 1.0, 4, "higher"),
    ("kid", "KID ×10³ ↓", 1000.0, 2, "lower"),
    ("clip_score_rescaled", "orig. score", 1.0, 2, "higher"),
    ("memorization", "memorization", 1.0, 3, "about 1"),
    ("spectral_distance", "spectral ↓", 1.0, 3, "lower"),
    ("edge_ratio", "edge ratio", 1.0, 3, "about 1"),
    ("grid_excess", "grid excess", 1.0, 3, "about 0"),
    ("dish_retrieval", "dish top-1 ↑", 1.0, 3, "higher"),
)
CHART_METRICS = ("fid", "kid", "clip_score", "memorization", "spectral_distance", "edge_ratio", "grid_excess",
                 "dish_retrieval")
TITLES = {"fid": "FID (lower is better)", "kid": "KID ×10³ (lower is better)",
          "clip_score": "CLIPScore (higher is better)", "memorization": "memorization ratio (about 1 is healthy)",
          "clip_cosine": "CLIP cosine", "clip_score_rescaled": "(cos + 1) / 2 × 100",
          "spectral_distance": "spectral distance (lower is better)", "edge_ratio": "edge-energy ratio (1 is ideal)",
          "grid_excess": "grid excess (about 0 is ideal)",
          "dish_retrieval": "dish retrieval top-1 (higher is better)"}


def new_report(*, config: dict, metrics: list[str], feature: dict, clip_model: str | None, dataset: dict) -> dict:
    """An empty report: settings now, rows appended as models are scored."""
    from dishgen import __version__

    return {
        "dishgen_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "complete": False, "config": config, "metrics": metrics, "feature": feature, "clip_model": clip_model,
        "dataset": dataset, "bootstrap": {"resamples": config.get("bootstrap"), "confidence": 0.95},
        "references": [], "results": [],
    }


def row_label(row: dict) -> str:
    """``component`` or ``component@step``."""
    return row["component"] if row.get("step") is None else f"{row['component']}@{row['step']}"


def format_cell(metric: dict | None, scale: float, decimals: int, with_ci: bool = True) -> str:
    """``value [low, high]`` rounded for the table; ``—`` when the metric was not computed."""
    if not metric or metric.get("value") is None or not math.isfinite(metric["value"]):
        return "—"
    value = metric["value"] * scale
    # Small values (tiny test networks, KID) keep three significant digits instead of 0.00.
    if 0 < abs(value) < 10 ** (1 - decimals):
        decimals = min(8, 2 - math.floor(math.log10(abs(value))))
    text = f"{value:.{decimals}f}"
    ci = metric.get("ci")
    if with_ci and ci:
        text += f" [{ci[0] * scale:.{decimals}f}, {ci[1] * scale:.{decimals}f}]"
    return text


def table(rows: list[dict]) -> str:
    """The Markdown table of ``rows`` (results or references)."""
    head = ["component", "step"] + [c[1] for c in COLUMNS] + ["N"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["component"], "—" if row.get("step") is None else str(row["step"])]
        cells += [format_cell(row["metrics"].get(key), scale, dec) for key, _, scale, dec, _ in COLUMNS]
        cells.append(str(row.get("n_generated", "")))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def write_per_image(path: Path, image_set, per_image: dict, train_set=None) -> str:
    """One JSON line per scored image: file, caption, CLIP cosine, nearest training photo, the
    rank of its caption's dish by colour and the dish its colours are nearest to.

    Sorted by CLIP cosine (worst first) when there is one, so the captions a model fails on
    come first.

    Returns:
        The path written, as a string (recorded in the report).
    """
    import json

    rows = []
    for i, image in enumerate(image_set.paths):
        row = {"image": str(image), "text": image_set.captions[i] if image_set.captions else None}
        if "clip_cosine" in per_image:
            row["clip_cosine"] = round(float(per_image["clip_cosine"][i]), 6)
        if "nearest_train_distance" in per_image and train_set is not None:
            row["nearest_train_distance"] = round(float(per_image["nearest_train_distance"][i]), 6)
            row["nearest_train_image"] = str(train_set.paths[int(per_image["nearest_train_index"][i])])
            row["near_copy"] = bool(per_image["near_copy"][i])
            row["detail_cosine"] = round(float(per_image["detail_cosine"][i]), 4)
            row["copy_match_image"] = str(train_set.paths[int(per_image["copy_match_index"][i])])
        if "dish_rank" in per_image:
            names, label, nearest = per_image["dish_names"], int(per_image["dish_label"][i]), \
                int(per_image["nearest_dish_label"][i])
            rank = int(per_image["dish_rank"][i])
            row.update(dish=names[label] if label >= 0 else None, dish_rank=rank if rank >= 0 else None,
                       nearest_dish=names[nearest] if nearest >= 0 else None)
        rows.append(row)
    if "clip_cosine" in per_image:
        rows.sort(key=lambda r: r["clip_cosine"])
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return str(path)


def write_json(report: dict, out: Path) -> Path:
    """Write ``report.json`` (atomically; also called after every model, so a long run shows progress)."""
    path = Path(out) / "report.json"
    atomic_write_json(path, report)
    return path


def markdown(report: dict, charts: list[Path], grid: Path | None, pairs: Path | None = None) -> str:
    """``report.md`` text."""
    feature, data = report["feature"], report["dataset"]
    lines = [
        "# dishgen evaluation report", "",
        f"- data: `{data['path']}`, split `{data['split']}`: {data['n_real']} real images"
        + (f" (a seeded subset of {data['rows']})" if data["n_real"] != data["rows"] else "")
        + (f"; {data['n_train']} training images (memorization, reference row)" if data.get("n_train") else ""),
        *([f"- skipped, unreadable: {len(data['skipped_images'])} photo(s): "
           + "; ".join(f"`{s['path']}` ({s['split']}: {s['reason']})" for s in data["skipped_images"][:5])
           + (" ..." if len(data["skipped_images"]) > 5 else "")] if data.get("skipped_images") else []),
        (f"- features for FID, KID and memorization: **{feature['backbone']}**"
         + (f" (`{feature['model']}`)" if feature.get("model") else f" ({feature['network']})")
         + f", {feature['dim']}-d, images resized to {feature['image_size']} px") if feature.get("network") else
        "- features: **none** (no pretrained network; memorization searches 16 px thumbnails)",
        "- spectral distance, edge ratio, grid excess and the near-copy test: computed at each generated set's own size, "
        "the real photos resized to it (no network)",
        *(["- dish retrieval: 64-bin colour histograms of the dish at 64 px, each generated image against the mean of "
            "every dish's real photos of the split (no network)"] if "retrieval" in report["metrics"] else []),
        f"- CLIP for CLIPScore: `{report['clip_model']}`" if report.get("clip_model") else "- CLIP metrics: not computed",
        f"- intervals: 95% bootstrap, {report['bootstrap']['resamples']} resamples; seed {report['config'].get('seed')}",
        f"- created {report['created']} by dishgen {report['dishgen_version']}", "",
        "## Results", "", table(report["results"]), "",
    ]
    if report["references"]:
        lines += ["## Reference points", "", table(report["references"]), ""]
        lines += [f"- *{r['component']}*: {r['note']}" for r in report["references"]] + [""]
    warnings = sorted({w for r in report["results"] for w in r.get("warnings", [])})
    if warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in warnings] + [""]
    lines += [
        "## How to read this", "",
        "- FID and KID compare the generated set with the real photos in the feature space above; they are only "
        "comparable between rows that use the same features, split and N. A difference smaller than the intervals is noise.",
        "- CLIPScore is 100 × max(cos, 0) between each image and its caption (torchmetrics' scale); *orig. score* is "
        "the original project's (cos + 1) / 2 × 100, a rescaled cosine, kept to compare with its tables.",
        "- memorization is the median distance from a generated image to its nearest training image over the same "
        "for real test photos: about 1 is healthy, well below 1 means the model copies its training set. A *near "
        "copy* must also match one training photo's detail (see the detail table): a blurry average is never one.",
        "- spectral distance is the mean over radii of |log(P_generated / P_real)|, P the radially averaged power "
        "spectrum of the luma at the generated size; compare it with the *half vs half* reference row. The band "
        "columns are signed: negative high = blur, positive high = noise or checkerboard artefacts.",
        "- edge ratio is the mean gradient magnitude inside the dish (non-white pixels) of generated over real "
        "images: 1 is ideal, below 1 smoother than photos, above 1 busier.",
        "- grid excess is how much more power the generated images have on the axes of their spectrum (fx = 0 or "
        "fy = 0) than off them at the same radius, above 1/8 cycles per pixel, minus the same for the real photos (log "
        "ratio, per image, then averaged): about 0 is healthy; large and positive means a plaid of horizontal and "
        "vertical stripes aligned with the pixel grid, which the radial spectrum averages away (log 10 = 2.3: ten "
        "times the photos' axis power). A period-2 checkerboard lives in the spectrum's corners, not on its axes: "
        "the spectral distance's high band flags it.",
        "- dish top-1 is the share of generated images whose colours (a 64-bin RGB histogram of the dish, Hellinger "
        "distance) are nearer to the mean of the real photos of their caption's dish than to any other dish's; the "
        "detail table adds top-5 and the mean rank (0 = own dish nearest) beside their chance levels. It sees "
        "colour, not shape; the *leave one out* reference row is optimistic (a dish's photos are often the same "
        "plate from other angles).",
        "- see docs/evaluate.md for details.", "",
    ]
    pixel_rows = [r for r in report["references"] + report["results"]
                  if any(k in r["metrics"] for k in ("spectral_distance", "edge_ratio", "grid_excess"))]
    if pixel_rows:
        lines += ["## Spectrum and edges detail", "",
                  "| component | step | size | spectral | low band | mid band | high band | edge energy (generated / real) "
                  "| dish share (generated / real) | grid excess | axis log ratio (generated / real) | N |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in pixel_rows:
            spec, edge = r["metrics"].get("spectral_distance"), r["metrics"].get("edge_ratio")
            axis = r["metrics"].get("grid_excess")  # not "grid": that name is the sample grid's
            bands = spec["bands"] if spec else {}
            size = (spec or edge or axis)["image_size"]
            lines.append(" | ".join([
                f"| {r['component']}", "—" if r.get("step") is None else str(r["step"]), f"{size} px",
                format_cell(spec, 1.0, 3), *(f"{bands[b]:+.2f}" if b in bands else "—" for b in ("low", "mid", "high")),
                f"{edge['generated_edge_energy']:.4f} / {edge['real_edge_energy']:.4f}" if edge else "—",
                f"{edge['generated_foreground']:.2f} / {edge['real_foreground']:.2f}" if edge else "—",
                format_cell(axis, 1.0, 3),
                f"{axis['generated_grid']:+.2f} / {axis['real_grid']:+.2f}" if axis else "—",
                f"{r.get('n_generated', '')} |"]))
        lines += ["", "Bands are the signed mean log power ratio (generated − real) over frequencies up to 1/6, 1/3 and "
                  "above 1/3 cycles per pixel; `charts/spectrum.png` shows it per radius. The axis log ratio is each set's mean "
                  "log(power on the spectrum's axes / power off them at the same radius) above 1/8 cycles per pixel; "
                  "the grid excess is their difference.", ""]
    lines += retrieval_detail(report)
    mem_rows = [r for r in report["results"] if "memorization" in r["metrics"]]
    if mem_rows:
        lines += ["## Memorization detail", "",
                  "| component | step | near copies (rate) | real test photos called copies | closer than 95% of real "
                  "photos | median distance (generated / real) | search space |", "|---|---|---|---|---|---|---|"]
        for r in mem_rows:
            m = r["metrics"]["memorization"]
            lines.append(f"| {r['component']} | {'—' if r.get('step') is None else r['step']} | "
                         f"{m['near_copies']} ({m['near_copy_rate']:.3f}, ≈0 expected) | {m['real_near_copy_rate']:.3f} | "
                         f"{m['candidate_rate']:.3f} (≈0.05 expected) | "
                         f"{m['generated_median_distance']:.4f} / {m['real_median_distance']:.4f} | {m['space']} |")
        lines += ["", "A near copy passes the detail test against one of its 5 nearest training photos: the band-passed "
                  "luma inside the dish at 64 px matches that photo's at cosine ≥ 0.7 (best over shifts up to 3 px), "
                  "with at least half its detail energy. Being merely close in the search space is not enough: a "
                  "blurry average is close to everything there.", ""]
        if pairs:
            lines += ["Each model's generated images closest to a training photo, beside that photo:", "",
                      f"![closest pairs]({pairs.name})", ""]
    if charts or grid:
        lines += ["## Charts and samples", ""]
        lines += [f"![{p.stem}]({p.relative_to(p.parents[1]).as_posix()})" for p in charts]
        if grid:
            lines += ["", f"![samples]({grid.name})"]
        lines.append("")
    return "\n".join(lines)


def retrieval_detail(report: dict) -> list[str]:
    """The *dish retrieval detail* section of ``report.md`` (no lines when no row has the metric)."""
    rows = [r for r in report["references"] + report["results"]
            if (r["metrics"].get("dish_retrieval") or {}).get("value") is not None]
    if not rows:
        return []
    lines = ["## Dish retrieval detail", "",
             "| component | step | top-1 ↑ | top-5 ↑ | mean rank ↓ | chance (top-1 / top-5 / mean rank) | dishes "
             "| images ranked (skipped) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["metrics"]["dish_retrieval"]
        chance = m["chance"]
        skipped = m.get("skipped_images", m.get("left_out", 0))
        lines.append(" | ".join([
            f"| {r['component']}", "—" if r.get("step") is None else str(r["step"]), format_cell(m, 1.0, 3),
            format_cell(m["top5"], 1.0, 3), format_cell(m["mean_rank"], 1.0, 1),
            f"{chance['top1']:.3f} / {chance['top5']:.3f} / {chance['mean_rank']:.1f}", str(m["dishes"]),
            f"{m['n']} ({skipped}) |"]))
    return lines + ["", "Each image's colour histogram (the dish's pixels, 4 bins per RGB channel, at "
                    f"{rows[0]['metrics']['dish_retrieval']['image_size']} px) is compared with every dish's "
                    "prototype, the mean histogram of that dish's real photos; its rank is the number of other "
                    "dishes at least as near as its caption's dish. Skipped: images whose caption is no real "
                    "photo's (for the leave-one-out row: photos that are their dish's only one).", ""]


def write_report(report: dict, out: Path, *, captions: list[str] | None = None,
                 grid_columns: dict[str, list[Path | None]] | None = None) -> dict[str, Path]:
    """Write ``report.json``, charts, the sample grid and ``report.md`` into ``out``.

    Args:
        report: from :func:`dishgen.evaluate.harness.evaluate`.
        out: the report folder.
        captions: the real split's captions, aligned with each column of ``grid_columns``.
        grid_columns: column title -> one image path per caption (``None`` where missing).

    Returns:
        Name -> path of every file written.
    """
    out = Path(out)
    written = {"json": write_json(report, out)}
    charts = [p for p in (bar_chart(report, out / "charts" / "metrics.png"),
                          progress_chart(report, out / "charts" / "progress.png"),
                          spectrum_chart(report, out / "charts" / "spectrum.png")) if p]
    grid = None
    if captions and grid_columns:
        grid = sample_grid(captions, grid_columns, out / "samples.png")
    pairs = closest_pairs(report, out / "memorization.png")
    md = out / "report.md"
    atomic_write_text(md, markdown(report, charts, grid, pairs))
    written.update({"markdown": md, **{p.stem: p for p in charts}})
    written.update({k: v for k, v in (("samples", grid), ("memorization", pairs)) if v})
    return written


# -- charts -------------------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _value(row: dict, key: str) -> tuple[float, float, float] | None:
    metric = row["metrics"].get(key)
    if not metric or metric.get("value") is None or not math.isfinite(metric["value"]):
        return None
    scale = 1000.0 if key == "kid" else 1.0
    low, high = metric.get("ci") or (metric["value"], metric["value"])
    return metric["value"] * scale, low * scale, high * scale


def _reference_line(report: dict, key: str) -> tuple[float, str] | None:
    if key in ("memorization", "edge_ratio"):
        return 1.0, f"real {report.get('dataset', {}).get('split', 'test')} photos"
    for ref in report["references"]:
        v = _value(ref, key)
        if v is not None:
            return v[0], ref["component"]
    return None


def _chance_line(report: dict, key: str) -> float | None:
    """The chance level of a retrieval accuracy (the first row's; every row ranks the same dishes)."""
    for row in report["results"]:
        chance = (row["metrics"].get(key) or {}).get("chance")
        if chance:
            return chance["top1"]
    return None


def bar_chart(report: dict, path: Path) -> Path | None:
    """One panel per metric, one bar per row (a sweep's last step), 95% intervals as error bars."""
    latest: dict[str, dict] = {}
    for row in report["results"]:
        latest[row["component"]] = row  # rows of a sweep come in step order: the last one stays
    keys = [k for k in CHART_METRICS if any(_value(r, k) for r in latest.values())]
    if not keys:
        return None
    plt = _plt()
    rows = list(latest.values())
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys) + 1, 0.5 * len(rows) + 2.2), dpi=110, squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        labels, values, errors = [], [], [[], []]
        for row in rows:
            v = _value(row, key)
            labels.append(row_label(row))
            values.append(v[0] if v else 0.0)
            errors[0].append(max(v[0] - v[1], 0) if v else 0)
            errors[1].append(max(v[2] - v[0], 0) if v else 0)
        y = range(len(rows))
        ax.barh(list(y), values, xerr=errors, color=[f"C{i}" for i in y], alpha=0.85, capsize=3)
        for i, value in enumerate(values):
            ax.text(value + errors[1][i], i, f"  {value:.0f}" if abs(value) >= 100 else f"  {value:.3g}",
                    va="center", ha="left", fontsize=8)
        ref, chance = _reference_line(report, key), _chance_line(report, key)
        if ref:
            ax.axvline(ref[0], color="black", linestyle="--", linewidth=1, label=ref[1])
        if chance is not None:
            ax.axvline(chance, color="grey", linestyle=":", linewidth=1, label="chance")
        if ref or chance is not None:
            ax.legend(fontsize=7, loc="lower right")
        ax.set_yticks(list(y), labels if ax is axes[0][0] else [""] * len(rows), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(TITLES[key], fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.25)
    fig.suptitle(f"N = {rows[0].get('n_generated')} generated images per model, "
                 f"{report['feature']['backbone']} features; bars: 95% bootstrap intervals", fontsize=9)
    fig.tight_layout()
    return _save(fig, path, plt)


def progress_chart(report: dict, path: Path) -> Path | None:
    """Metric against training step for every component evaluated at two or more checkpoints."""
    series: dict[str, list[dict]] = {}
    for row in report["results"]:
        if row.get("step") is not None:
            series.setdefault(row["component"], []).append(row)
    series = {k: sorted(v, key=lambda r: r["step"]) for k, v in series.items() if len(v) >= 2}
    keys = [k for k in CHART_METRICS if any(_value(r, k) for rows in series.values() for r in rows)]
    if not series or not keys:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4), dpi=110, squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for i, (component, rows) in enumerate(series.items()):
            points = [(r["step"], _value(r, key)) for r in rows if _value(r, key)]
            if not points:
                continue
            steps = [p[0] for p in points]
            ax.plot(steps, [p[1][0] for p in points], marker="o", color=f"C{i}", label=component)
            ax.fill_between(steps, [p[1][1] for p in points], [p[1][2] for p in points], color=f"C{i}", alpha=0.15)
        if key in ("memorization", "edge_ratio") and all(
                v[1] > 0 for rows in series.values() for r in rows if (v := _value(r, key))):
            ax.set_yscale("log")  # a ratio: 0.1 and 10 are equally far from 1
        ref, chance = _reference_line(report, key), _chance_line(report, key)
        if ref:
            ax.axhline(ref[0], color="black", linestyle="--", linewidth=1, label=ref[1])
        if chance is not None:
            ax.axhline(chance, color="grey", linestyle=":", linewidth=1, label="chance")
        ax.set_title(TITLES[key], fontsize=9)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, plt)


def spectrum_chart(report: dict, path: Path) -> Path | None:
    """The signed log power ratio per radius of each model (a sweep's last step) against the real
    photos, with its 95% band; the half-vs-half reference rows in grey."""
    rows: dict[str, dict] = {}
    for row in report["results"]:
        if "profile" in row["metrics"].get("spectral_distance", {}):
            rows[row["component"]] = row
    if not rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for ref in report["references"]:
        spec = ref["metrics"].get("spectral_distance")
        if spec and "profile" in spec:
            ax.plot(spec["frequencies"], spec["profile"], color="grey", linestyle="--", linewidth=1,
                    label=ref["component"])
    for i, row in enumerate(rows.values()):
        spec = row["metrics"]["spectral_distance"]
        ax.plot(spec["frequencies"], spec["profile"], color=f"C{i}", label=f"{row_label(row)} ({spec['image_size']} px)")
        ax.fill_between(spec["frequencies"], *spec["profile_ci"], color=f"C{i}", alpha=0.15)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.axvline(0.5, color="black", linestyle=":", linewidth=0.8)
    ax.text(0.5, ax.get_ylim()[1], " Nyquist (axes)", fontsize=7, va="top")
    ax.set_xlabel("spatial frequency (cycles per pixel; beyond 0.5: the corners)")
    ax.set_ylabel("log power ratio, generated / real")
    ax.set_title("Radially averaged power spectrum vs real photos (below 0: blur; above: noise, artefacts)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path, plt)


def _save(fig, path: Path, plt) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def sample_grid(captions: list[str], columns: dict[str, list[Path | None]], path: Path,
                max_rows: int = 6, max_columns: int = 12, cell: int = 128) -> Path:
    """A grid: one row per caption (distinct captions only), a real photo then one column per model."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=13)
    picks, seen = [], set()
    for i, caption in enumerate(captions):
        if caption not in seen:
            seen.add(caption)
            picks.append(i)
        if len(picks) == max_rows:
            break
    names = list(columns)[:max_columns]
    label_w, head_h = 200, 40
    sheet = Image.new("RGB", (label_w + cell * len(names), head_h + cell * len(picks)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, name in enumerate(names):
        draw.text((label_w + c * cell + 4, 4), "\n".join(textwrap.wrap(name, 16)[:2]), fill="black", font=font)
        for r, i in enumerate(picks):
            source = columns[name][i] if i < len(columns[name]) else None
            if source is None:
                continue
            with Image.open(source) as im:
                sheet.paste(im.convert("RGB").resize((cell, cell), Image.Resampling.BICUBIC),
                            (label_w + c * cell, head_h + r * cell))
    for r, i in enumerate(picks):
        draw.text((4, head_h + r * cell + 4), "\n".join(textwrap.wrap(captions[i], 26)[:7]), fill="black", font=font)
    atomic_save_image(sheet, path)
    return path


def closest_pairs(report: dict, path: Path, pairs: int = 4, cell: int = 96) -> Path | None:
    """For each model (a sweep's last step), its generated images closest to a training image,
    each beside that training image: what memorization looks like, if it happens."""
    from PIL import Image, ImageDraw, ImageFont

    latest: dict[str, dict] = {}
    for row in report["results"]:
        if row["metrics"].get("memorization", {}).get("closest"):
            latest[row["component"]] = row
    if not latest:
        return None
    font = ImageFont.load_default(size=12)
    label_w, gap = 150, 8
    width = label_w + pairs * (2 * cell + gap)
    sheet = Image.new("RGB", (width, 20 + len(latest) * (cell + 18)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((label_w, 2), "generated | its training match (search distance d, detail cosine c; red: near copy)",
              fill="black", font=font)
    for r, row in enumerate(latest.values()):
        top = 20 + r * (cell + 18)
        draw.text((4, top + 4), "\n".join(textwrap.wrap(row_label(row), 18)[:3]), fill="black", font=font)
        for c, item in enumerate(row["metrics"]["memorization"]["closest"][:pairs]):
            left = label_w + c * (2 * cell + gap)
            for k, source in enumerate((item["image"], item["train_image"])):
                with Image.open(source) as im:
                    sheet.paste(im.convert("RGB").resize((cell, cell), Image.Resampling.BICUBIC), (left + k * cell, top))
            text = f"d = {item['distance']:.3g}" + (f", c = {item['detail_cosine']:.2f}" if "detail_cosine" in item else "")
            draw.text((left, top + cell + 2), text, fill="red" if item.get("near_copy") else "black", font=font)
    atomic_save_image(sheet, path)
    return path


def load_report(out: Path) -> dict[str, Any]:
    """Read ``report.json`` back."""
    import json

    return json.loads((Path(out) / "report.json").read_text(encoding="utf-8"))
