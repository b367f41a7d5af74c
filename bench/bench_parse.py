"""Score the recipe-page parser on a folder of saved real pages with their expected fields.

The folder holds, anywhere below it, pairs ``NAME.testhtml`` (or ``NAME.html``) + ``NAME.json``:
the layout of recipe-scrapers' test data (``tests/test_data/<host>/<name>.testhtml`` and
``.json``), which a user can fetch with ``git clone https://github.com/hhursev/recipe-scrapers``
and point this script at; it is never committed here. The JSON keys used:

- ``canonical_url`` (else ``https://<host>/``): the page's URL;
- ``title``, ``ingredients`` (a list), ``image`` (the main photo's URL) and, when present,
  ``instructions_list``: what the parser must find. A key that is missing is not scored.

Printed: pages parsed, first photo right, expected photo among the candidates, title,
ingredients and steps right (each compared after dishgen's ``clean_text``), pages skipped with
their reasons, crashes (any error other than ``ParseError``: there must be none), and ms per page.

    python bench/bench_parse.py tests/fixtures/pages
    python bench/bench_parse.py ~/recipe-scrapers/tests/test_data --misses 20 --json scores.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from pathlib import Path

from _common import LoadWatch

from dishgen.data.records import clean_text
from dishgen.data.scrape.parse import ParseError, parse_recipe


def load_cases(folder: Path) -> list[tuple[Path, dict]]:
    """``(page, expected)`` for every page with a JSON of expected fields beside it."""
    cases = []
    for page in sorted([*folder.rglob("*.testhtml"), *folder.rglob("*.html")]):
        expected_file = page.with_suffix(".json")
        if expected_file.is_file():
            cases.append((page, json.loads(expected_file.read_text(encoding="utf-8"))))
    return cases


def _same_text(found, expected) -> bool:
    return clean_text(found).casefold() == clean_text(expected).casefold()


def _same_lines(found: list[str], expected) -> bool:
    expected = expected if isinstance(expected, list) else str(expected).splitlines()
    expected = [clean_text(line) for line in expected if clean_text(line)]
    return [clean_text(line) for line in found] == expected


def score_folder(folder: Path, *, limit: int | None = None, time_budget: float | None = 10.0) -> dict:
    """Parse every page of ``folder`` and compare with its expected fields.

    Returns:
        A dict of counts (``pages``, ``parsed``, ``photo_first``, ``photo_listed``, ``title``,
        ``ingredients``, ``steps`` with their ``*_scored`` denominators, ``crashes``), ``ms``
        (per page), ``skips`` (reason -> count) and ``misses`` (page -> what differed).
    """
    cases = load_cases(Path(folder))[:limit]
    counts: Counter = Counter()
    ms, skips, misses = [], Counter(), {}
    for page, expected in cases:
        url = expected.get("canonical_url") or f"https://{expected.get('host', 'example.com')}/"
        html = page.read_text(encoding="utf-8", errors="replace")
        counts["pages"] += 1
        start = time.perf_counter()
        try:
            recipe = parse_recipe(html, url, time_budget=time_budget)
        except ParseError as err:
            skips[str(err)[:80]] += 1
            misses[str(page)] = {"skipped": str(err)}
            continue
        except Exception as err:  # noqa: BLE001 (what the bench is there to find)
            counts["crashes"] += 1
            misses[str(page)] = {"crash": f"{type(err).__name__}: {err}"}
            continue
        finally:
            ms.append((time.perf_counter() - start) * 1000)
        counts["parsed"] += 1
        wrong = {}
        if expected.get("image"):
            counts["photo_scored"] += 1
            first = recipe.images[0] if recipe.images else None
            counts["photo_first"] += first == expected["image"]
            counts["photo_listed"] += expected["image"] in recipe.images
            if first != expected["image"]:
                wrong["image"] = {"expected": expected["image"], "first": first}
        for key, field, same in (("title", "name", _same_text), ("ingredients", "ingredients", _same_lines),
                                 ("instructions_list", "preparation", _same_lines)):
            if expected.get(key) is None:
                continue
            name = "steps" if key == "instructions_list" else key
            counts[f"{name}_scored"] += 1
            if same(getattr(recipe, field), expected[key]):
                counts[name] += 1
            else:
                wrong[name] = {"expected": expected[key], "found": getattr(recipe, field)}
        if wrong:
            misses[str(page)] = wrong
    return {"counts": dict(counts), "ms": ms, "skips": dict(skips), "misses": misses}


def report(scores: dict) -> list[str]:
    """The scores as printable lines."""
    c = Counter(scores["counts"])

    def pct(num: str, den: str) -> str:
        return f"{100 * c[num] / c[den]:.1f}% ({c[num]}/{c[den]})" if c[den] else "n/a"

    ms = scores["ms"] or [0.0]
    lines = [
        f"pages {c['pages']}, parsed {pct('parsed', 'pages')}, crashes {c['crashes']}",
        f"first photo right   {pct('photo_first', 'photo_scored')}",
        f"photo among candidates {pct('photo_listed', 'photo_scored')}",
        f"title right         {pct('title', 'title_scored')}",
        f"ingredients right   {pct('ingredients', 'ingredients_scored')}",
        f"steps right         {pct('steps', 'steps_scored')}",
        f"ms/page: mean {statistics.fmean(ms):.1f}, median {statistics.median(ms):.1f}, max {max(ms):.0f}",
    ]
    lines += [f"  skipped {n:>4} x {reason}" for reason, n in Counter(scores["skips"]).most_common(10)]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, nargs="?", default=Path(__file__).resolve().parents[1] / "tests" / "fixtures"
                        / "pages", help="folder of NAME.testhtml + NAME.json pairs (default: the tests' saved pages)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N pages")
    parser.add_argument("--misses", type=int, default=10, help="print this many pages that differ")
    parser.add_argument("--budget", type=float, default=10.0, help="parse time budget per page, s")
    parser.add_argument("--json", type=Path, default=None, help="also write the scores here")
    args = parser.parse_args()
    if not args.folder.is_dir():
        parser.error(f"{args.folder} is not a folder")
    with LoadWatch() as load:  # ms/page has no peer: the load says how far to trust it
        scores = score_folder(args.folder, limit=args.limit, time_budget=args.budget)
    print("\n".join(report(scores)))
    print(load.report())
    for page, wrong in list(scores["misses"].items())[:args.misses]:
        print(f"- {page}: {json.dumps(wrong, ensure_ascii=False)[:400]}")
    if args.json:
        args.json.write_text(json.dumps(scores, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
