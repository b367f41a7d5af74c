"""Every code block of README.md and docs/*.md is executed here, or listed with the reason it is not.

How it works (helpers in ``tests/docs_examples.py``):

- :data:`COVERAGE` has one entry per code block: the file, a stable fragment of the block, and how
  the block is checked. A block without an entry, or an entry without its block, fails
  ``test_every_doc_block_is_covered`` with the block printed: add (or fix) its entry here.
- Shell commands run in-process through click's ``CliRunner`` (``dishgen ...``), in one temporary
  working directory per scenario, in the order the docs give them, after the rewrites of
  ``docs_examples.SUBSTITUTIONS`` (hub models -> tiny local models, GPU flags dropped, step
  counts cut, web services -> loopback servers). Commands that cannot run here (package installs,
  several GPUs, a server that runs until stopped, benchmarks) match ``docs_examples.EXEMPT`` and get
  the check it names (``--help``, a parse of the command line, ``make -n``).
- Python blocks are ``exec``-uted, with the same rewrites, in the scenario's working directory.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from docs_examples import (
    REPO,
    Block,
    dishgen_args,
    exemption,
    extract_blocks,
    parse_only,
    run_dishgen,
    run_script_help,
    substitute,
)


@dataclass(frozen=True)
class Doc:
    """How one code block is checked.

    ``check`` is one of:
      ``run:SCENARIO``     every command runs (or gets its EXEMPT check) in the scenario's test;
      ``python:SCENARIO``  the snippet is exec-uted in the scenario's test;
      ``tree:SCENARIO``    a listing of files (``RUN/...``, ``runs/gan/...``) that the scenario's
                           run must have produced: each path is checked;
      ``synopsis``         a usage line with placeholders: every ``--option`` must exist in ``--help``;
      ``json``             a JSON example: it must parse;
      ``yaml-config``      a YAML config example: it must load with ``dishgen.config.load_config_file``;
      ``output``           sample output or a layout sketch, nothing to run (say what, in ``why``).
      ``console``          ``$ COMMAND`` lines with the ``Error: ...`` they print: each command runs
                           (``dataset`` and ``out`` are a tiny dataset and a folder of its images)
                           and must fail with that message (parts in parentheses may differ).
    """

    file: str
    fragment: str  # a stable piece of the block's text, unique among the blocks of that file
    check: str
    why: str = ""


# One entry per code block, in file order. A new example in the docs fails CI until it is added here.
COVERAGE: list[Doc] = [
    # README.md
    Doc("README.md", "make run     #", "run:readme", "`make -n`: installs a venv; CI runs `make test`"),
    Doc("README.md", "--out runs/fastgan-r10 init_from=runs/fastgan-r9", "run:readme",
        "the bundled model's five runs, tiny, on the sample"),
    Doc("README.md", "make lock    #", "run:readme", "`make -n`: re-resolves from PyPI and runs the suite"),
    Doc("README.md", "python -m venv .venv", "run:readme", "package installs: not run"),
    Doc("README.md", "dishgen data import flickr30k/results.csv", "run:readme"),
    Doc("README.md", "--variations 3 --model runs/lora --device cuda", "run:readme"),
    Doc("README.md", "dishgen train cgan --data datasets/dishes --out runs/gan", "run:readme"),
    Doc("README.md", "dishgen generate --interactive --model runs/vae", "run:readme"),
    Doc("README.md", "dishgen generate --from-png sarma/cevapi-with-onions-*-003.png --out again", "run:readme"),
    Doc("README.md", "Seed: 7, Image index: 3, Size: 128x128", "output", "the parameters text the block above prints"),
    Doc("README.md", "from dishgen import generate, load_generator", "python:readme"),
    Doc("README.md", "$ HF_HUB_OFFLINE=1 dishgen evaluate --images out", "console"),
    Doc("README.md", "--checkpoints all --data datasets/dishes", "run:readme"),
    Doc("README.md", "dishgen serve  ", "run:readme", "`dishgen serve` is parsed only: it serves until stopped"),
    Doc("README.md", "cli/          one click group", "output", "layout of src/dishgen"),
    # docs/cgan.md
    Doc("docs/cgan.md", "--out runs/gan-yaml --config my.yaml", "run:families"),
    Doc("docs/cgan.md", "# my.yaml", "yaml-config"),
    Doc("docs/cgan.md", "runs/gan/config.json            resolved config", "tree:families"),
    Doc("docs/cgan.md", "torchrun --standalone --nproc_per_node 2", "run:families", "parsed only: several processes"),
    Doc("docs/cgan.md", "--truncation 0.7 --batch-size 128 --no-grid", "run:families"),
    Doc("docs/cgan.md", 'gen = load_generator("runs/gan")', "python:families"),
    Doc("docs/cgan.md", "--seed 0 --anchor 0 --out outputs/raw", "run:families"),
    Doc("docs/cgan.md", "bench/bench_cgan.py --rounds 12", "run:families", "benchmark: --help only"),
    Doc("docs/cgan.md", "bench/bench_cgan.py --like-for-like", "run:families", "benchmark: --help only"),
    # docs/fastgan.md
    Doc("docs/fastgan.md", "--out runs/fastgan --preset cpu", "run:families"),
    Doc("docs/fastgan.md", "--out runs/fastgan-noise", "run:families", "starts from the run trained above it"),
    Doc("docs/fastgan.md", "--out runs/mine --preset cpu init_from=fastgan-ffml128", "run:families",
        "starts from the export of the run trained above it"),
    Doc("docs/fastgan.md", "--out runs/fastgan-r20", "run:families", "run 20, from the export of the run above"),
    Doc("docs/fastgan.md", "--out runs/fastgan-ffml128 --preset cpu", "run:families",
        "the CPU runs' commands, on the repository's sample and with a tiny network"),
    Doc("docs/fastgan.md", "--out runs/fastgan-r9", "run:families", "runs 9 and 10, each from the one before"),
    # docs/cvae.md
    Doc("docs/cvae.md", "--out runs/cvae --preset cpu       # train", "run:families"),
    Doc("docs/cvae.md", "dishgen train cvae --data DATASET --out RUN [--preset", "synopsis"),
    Doc("docs/cvae.md", "RUN/config.json            resolved config", "tree:families"),
    Doc("docs/cvae.md", "--model RUN -n 8 --seed 0 --temperature 0.8", "run:families"),
    Doc("docs/cvae.md", "model = load_model(", "python:families"),
    Doc("docs/cvae.md", "bench/bench_cvae.py --threads 2 --steps 8", "run:families", "benchmark: --help only"),
    # docs/data.md
    Doc("docs/data.md", "DATASET/train/*.png + metadata.jsonl", "tree:readme"),
    Doc("docs/data.md", "--images-dir flickr30k/flickr30k_images", "run:data"),
    Doc("docs/data.md", "dishgen data build RAW [RAW ...]", "synopsis"),
    Doc("docs/data.md", "dishgen data stats DATASET [--json]", "synopsis"),
    # docs/evaluate.md
    Doc("docs/evaluate.md", "--out reports/lora-vs-base", "run:readme"),
    Doc("docs/evaluate.md", "from dishgen.evaluate import EvaluationConfig", "python:readme"),
    # docs/lora.md
    Doc("docs/lora.md", "[--base MODEL] [--preset NAME]", "synopsis"),
    Doc("docs/lora.md", "--out runs/lora-smoke --base ./tiny-sd --preset tiny", "run:families"),
    Doc("docs/lora.md", "RUN/pytorch_lora_weights.safetensors", "tree:families"),
    Doc("docs/lora.md", "--lora runs/lora --lora-scale 0.8", "run:families"),
    Doc("docs/lora.md", 'gen = load_generator("runs/lora"', "python:families"),
    Doc("docs/lora.md", "accelerate config", "run:families", "several GPUs: parsed only"),
    Doc("docs/lora.md", "--num_machines 2 --machine_rank 0", "run:families", "several machines: parsed only"),
    Doc("docs/lora.md", "bench/bench_lora.py --threads 1", "run:families", "benchmarks: --help only"),
    Doc("docs/lora.md", "bench/gpu_bench.py --out gpu-bench-smoke --smoke", "run:families",
        "GPU benchmark: --help only (the smoke run takes about 30 s)"),
    # docs/scraping.md
    Doc("docs/scraping.md", "dishgen data scrape SITE --out RAW", "synopsis"),
    Doc("docs/scraping.md", "recepti: 5 new recipes written", "output", "sample output of a scrape"),
    Doc("docs/scraping.md", "recepti: 0 new recipes written", "output", "sample output of a re-run"),
    Doc("docs/scraping.md", "# 200 Croatian recipes", "run:data"),
    Doc("docs/scraping.md", "--llm-base-url http://127.0.0.1:11434/v1 --llm-model qwen2.5:7b", "run:data"),
    Doc("docs/scraping.md", '{"name": "Sarma", "image"', "json"),
    Doc("docs/scraping.md", '{"url": ".../kuvar/glavna-jela/106-losa-slika"', "json"),
    Doc("docs/scraping.md", "summary = scrape(", "python:data"),
    Doc("docs/scraping.md", "python bench/bench_parse.py tests/fixtures/pages", "run:data", "benchmark: --help only"),
    Doc("docs/scraping.md", "# Local Ollama: no key", "run:data"),
    Doc("docs/scraping.md", "dishgen data caption DATASET [--captioner", "synopsis"),
    Doc("docs/scraping.md", "from dishgen.data.caption import CaptionInput", "python:data"),
    # docs/synthetic.md
    Doc("docs/synthetic.md", "--out datasets/synth --model MODEL [--variations 3]", "synopsis"),
    Doc("docs/synthetic.md", "dishgen data augment DATASET --out SYNTH", "synopsis"),
    Doc("docs/synthetic.md", "dishgen data mix REAL SYNTH --out DATASET", "synopsis"),
    Doc("docs/synthetic.md", "# 1. Real data, and synthetic variations", "run:families"),
    Doc("docs/synthetic.md", "from dishgen.data.synth import AugmentOptions", "python:families"),
]

BLOCKS = extract_blocks()


def entry_for(block: Block) -> list[Doc]:
    return [doc for doc in COVERAGE if doc.file == block.file and doc.fragment in block.text]


def blocks_checked_by(check: str) -> list[Block]:
    """The blocks whose entry says ``check`` (e.g. ``run:readme``), in file order."""
    return [block for block in BLOCKS if [doc.check for doc in entry_for(block)] == [check]]


def test_every_doc_block_is_covered():
    problems = []
    for block in BLOCKS:
        found = entry_for(block)
        if len(found) != 1:
            what = "no entry" if not found else f"{len(found)} entries ({', '.join(d.fragment for d in found)})"
            problems.append(f"{what} for this block:\n{block}")
    for doc in COVERAGE:
        if not [b for b in BLOCKS if b.file == doc.file and doc.fragment in b.text]:
            problems.append(f"entry {doc} matches no code block of {doc.file} (was the example changed?)")
        kind = doc.check.split(":")[0]
        if kind not in {"run", "python", "tree", "synopsis", "json", "yaml-config", "output", "console"}:
            problems.append(f"entry {doc} has an unknown check {doc.check!r}")
        if kind == "output" and not doc.why:
            problems.append(f"entry {doc} must say in `why` what the block shows")
    assert not problems, (
        "Every code block of README.md and docs/*.md must be run by tests/test_docs.py or listed as not "
        "runnable: add one Doc(file, fragment, check, why) per block to COVERAGE in tests/test_docs.py.\n\n"
        + "\n\n".join(problems)
    )


# --- Blocks that are not commands --------------------------------------------------------------


@pytest.mark.parametrize("block", blocks_checked_by("json"), ids=lambda b: f"{b.file}:{b.line}")
def test_json_examples_parse(block):
    value = json.loads(block.text)
    assert isinstance(value, dict) and value


@pytest.mark.parametrize("block", blocks_checked_by("yaml-config"), ids=lambda b: f"{b.file}:{b.line}")
def test_yaml_config_examples_load(block, tmp_path):
    from dishgen.config import apply_overrides, load_config_file
    from dishgen.train.cgan import CGANTrainConfig

    path = tmp_path / "example.yaml"
    path.write_text(block.text, encoding="utf-8")
    values = load_config_file(path)
    assert values
    config = apply_overrides(CGANTrainConfig(), values, source=str(path))  # every key is a real one
    assert all(getattr(config, key) == value for key, value in values.items())


@pytest.mark.parametrize("block", blocks_checked_by("console"), ids=lambda b: f"{b.file}:{b.line}")
def test_console_examples_print_the_error_they_show(block, tmp_path, monkeypatch, tiny_dataset):
    """A ``$ command`` + ``Error: ...`` transcript: the command fails with that message."""
    monkeypatch.chdir(tmp_path)
    Path("dataset").symlink_to(tiny_dataset)
    shutil.copytree(tiny_dataset / "test", "out", ignore=shutil.ignore_patterns("*.jsonl"))
    lines = block.text.splitlines()
    for index, line in enumerate(lines):
        if not line.startswith("$ "):
            continue
        words = shlex.split(line[2:])
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            key, _, value = words.pop(0).partition("=")
            monkeypatch.setenv(key, value)
        from click.testing import CliRunner

        from dishgen.cli import cli
        from dishgen.errors import user_error_types

        result = CliRunner().invoke(cli, dishgen_args(" ".join(shlex.quote(w) for w in words)))
        # `dishgen` (cli.main) prints a user error as the one line "Error: <message>", exit code 2.
        assert isinstance(result.exception, user_error_types()), (line, result.output, result.exception)
        printed = f"Error: {result.exception}"
        expected = lines[index + 1]
        assert expected.startswith("Error: "), expected
        for part in re.split(r"\([^)]*\)", expected):
            assert " ".join(part.split()) in " ".join(printed.split()), (part, printed)


@pytest.mark.parametrize("block", blocks_checked_by("synopsis"), ids=lambda b: f"{b.file}:{b.line}")
def test_synopses_name_real_options(block):
    """A usage synopsis (``dishgen data build RAW [RAW ...] --out DATASET [--size 512] ...``) names
    only options that the command has."""
    # A synopsis may wrap without a backslash: a command is every line up to the next `dishgen`.
    commands = re.split(r"\n(?=dishgen )", block.text.replace("\\\n", "\n"))
    for command in (" ".join(c.split()) for c in commands):
        words = dishgen_args(command.replace("[", " ").replace("]", " ").replace("|", " "))
        path = []
        for word in words:
            if not re.fullmatch(r"[a-z]+", word):
                break
            path.append(word)
        help_text = run_dishgen([*path, "--help"]).output
        options = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", command))
        missing = sorted(o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", help_text))
        assert not missing, f"{block.file}:{block.line}: `dishgen {' '.join(path)}` has no {missing}"


# --- Running the examples -------------------------------------------------------------------------


def run_block(block: Block, values: dict, inputs: dict | None = None, monkeypatch=None) -> list[str]:
    """Run every command of a shell block in the current directory; returns the commands as run."""
    ran = []
    for command in block.commands():
        found = exemption(command)
        command = substitute(command, values)
        if found is None:
            stdin = next((text for fragment, text in (inputs or {}).items() if fragment in command), None)
            run_dishgen(dishgen_args(command), input=stdin)
        else:
            pattern, check, _ = found
            if check == "help":
                run_script_help(REPO / re.search(pattern, command)[1])
            elif check == "parse":
                parse_only(dishgen_args(command))
            elif check == "make":
                target = command.split()[1]
                subprocess.run(["make", "-n", "-C", str(REPO), target], check=True, capture_output=True)
            elif check == "python-c":
                exec(compile(shlex.split(command)[2], f"{block.file}:{block.line}", "exec"), {"__name__": "__docs__"})
            elif check == "env":
                for assignment in command.split()[1:]:
                    key, _, value = assignment.partition("=")
                    monkeypatch.setenv(key, value)
        ran.append(command)
    return ran


def run_python(block: Block, values: dict, given: dict | None = None) -> dict:
    """exec a Python block (after the substitutions) in a fresh namespace; returns the namespace."""
    namespace = {"__name__": "__docs__", **(given or {})}
    exec(compile(substitute(block.text, values), f"{block.file}:{block.line}", "exec"), namespace)
    return namespace


def check_tree(block: Block, roots: dict[str, str]) -> None:
    """Every path of a file listing exists. Its first column is checked: ``a, b`` and ``a + b`` name
    several files of one folder; a prefix in ``roots`` (``RUN/``) is replaced; ``N``, ``<N>`` and
    ``<step>`` stand for any step."""
    for line in block.text.splitlines():
        if not line.strip() or line.startswith(" "):
            continue
        items = re.split(r",\s*|\s\+\s", re.split(r"\s{2,}", line.strip())[0])
        folder = items[0].rsplit("/", 1)[0]
        for item in items:
            path = re.sub(r"<N>|<step>|\bN\b", "*", item if "/" in item else f"{folder}/{item}")
            for prefix, root in roots.items():
                if path.startswith(prefix):
                    path = root + path[len(prefix):]
            assert list(Path().glob(path.rstrip("/"))), f"{block.file}:{block.line}: {path} was not written"


class Loopback:
    """The loopback services the docs' commands are pointed at: both recipe sites and an LLM server."""

    def __enter__(self) -> dict[str, str]:
        from test_llm import SECRET, FakeLLM
        from test_scrape import FIXTURES, FixtureSite

        self.sites = [FixtureSite(FIXTURES / name).__enter__() for name in ("recepti", "coolinarika")]
        self.llm = FakeLLM()
        return {"recepti": self.sites[0].base, "coolinarika": self.sites[1].base, "llm": self.llm.base_url,
                "llm_key": SECRET}

    def __exit__(self, *exc) -> None:
        self.llm.close()
        for site in self.sites:
            site.__exit__(*exc)


@pytest.fixture
def docs_env(tmp_path, monkeypatch, tiny_sd_dir, tiny_clip_dir):
    """A fresh working directory, a private HOME, the loopback services and the substitution values."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with Loopback() as services:
        monkeypatch.setenv("OPENAI_API_KEY", services["llm_key"])
        sample = tmp_path / "ffml_images"  # 8 dishes of 3 photos from the sample: fewer images, same road
        for folder in [p for p in sorted((REPO / "tests/data/ffml_sample/images").iterdir()) if len(list(p.glob("*.jpg"))) == 3][:8]:
            shutil.copytree(folder, sample / folder.name)
        values = {"tiny_sd": tiny_sd_dir, "tiny_clip": tiny_clip_dir, "sample_images": sample, **services}
        yield values


def write_inputs() -> None:
    """Files the docs' commands read and assume the reader has: a prompts file, a config file, a
    URL list, and a small Flickr30k-style caption table (pipe-separated, like its results.csv)."""
    Path("prompts.txt").write_text("Sarma, cabbage rolls in a clay pot\nGibanica, cheese pie\n", encoding="utf-8")
    shutil.copytree(REPO / "configs", "configs")  # the docs' commands run in the repository root
    Path("my.yaml").write_text("max_steps: 2\nseed: 1\n", encoding="utf-8")
    Path("my-recipes.txt").write_text("# two recipes\n/kuvar/glavna-jela/101-sarma\n/kuvar/glavna-jela/102-punjene-paprike\n")
    images = Path("flickr30k/flickr30k_images")
    images.mkdir(parents=True)
    rows = ["image_name| comment_number| comment"]
    for index, photo in enumerate(sorted((REPO / "tests/data/ffml_sample/images").glob("*/*.jpg"))[:4]):
        shutil.copy(photo, images / f"{index}.jpg")
        rows += [f"{index}.jpg| 0| A plate of food number {index} on a white table .",
                 f"{index}.jpg| 1| Food on a plate seen from above ."]
    Path("flickr30k/results.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")


def run_scenario(name: str, values: dict, monkeypatch, *, before: dict | None = None,
                 inputs: dict | None = None, given: dict | None = None, roots: dict | None = None) -> None:
    """Run every block checked by ``run:NAME`` / ``python:NAME`` / ``tree:NAME``, ordered by
    :data:`ORDER` (then file order), in the current directory.

    ``before[fragment]`` is called before the block whose text holds that fragment; ``inputs`` is
    the terminal input of commands holding a fragment; ``given[entry fragment]`` the names a Python
    block assumes; ``roots[entry fragment]`` the folders a file listing's placeholders stand for."""
    blocks = [(block, entry_for(block)[0]) for block in BLOCKS
              if [doc.check for doc in entry_for(block)] in ([f"run:{name}"], [f"python:{name}"], [f"tree:{name}"])]
    blocks.sort(key=lambda pair: ORDER.get(pair[1].fragment, 0))
    for block, doc in blocks:
        for fragment, action in (before or {}).items():
            if fragment in block.text:
                action()
        kind = doc.check.split(":")[0]
        if kind == "run":
            run_block(block, values, inputs, monkeypatch)
        elif kind == "python":
            run_python(block, values, (given or {}).get(doc.fragment))
        else:
            check_tree(block, (roots or {}).get(doc.fragment, {}))


# Where a scenario runs a block later than its place in the docs (default 0, then file order).
ORDER = {
    "--variations 3 --model runs/lora --device cuda": 1,  # README: needs runs/lora from the train block
    "DATASET/train/*.png + metadata.jsonl": 2,
    "# 1. Real data, and synthetic variations": 1,  # synthetic.md: needs the LoRA and cVAE runs
    "from dishgen.data.synth import AugmentOptions": 1,
    "runs/gan/config.json            resolved config": 2,
    "RUN/config.json            resolved config": 2,
    "RUN/pytorch_lora_weights.safetensors": 2,
}


@pytest.mark.slow
def test_readme_road(docs_env, monkeypatch):
    """README.md top to bottom: import -> build -> train -> generate -> evaluate, then docs/evaluate.md
    on the same runs."""
    write_inputs()

    def dataset_link():  # docs/evaluate.md calls the dataset `dataset`
        Path("dataset").symlink_to("datasets/dishes")

    run_scenario("readme", docs_env, monkeypatch, before={"--out reports/lora-vs-base": dataset_link},
                 inputs={"--interactive": "sarma in a clay pot\n\n"}, roots={"DATASET/train/*.png + metadata.jsonl": {"DATASET/": "datasets/dishes/"}})
    for path in ["runs/gan/model/config.json", "runs/vae/model/model.safetensors", "runs/lora/pytorch_lora_weights.safetensors",
                 "reports/compare/report.md", "reports/compare/report.json", "reports/gan-progress/report.md",
                 "reports/synthetic/report.md", "datasets/mixed/dataset.json", "reports/lora-vs-base/report.md"]:
        assert Path(path).is_file(), f"{path} was not written"
    assert json.loads(Path("runs/vae/config.json").read_text())["max_steps"] == 4  # --resume max_steps=...
    assert len(list(Path("outputs").glob("*.png"))) >= 4


@pytest.mark.slow
def test_family_docs(docs_env, monkeypatch, tiny_dataset_64):
    """docs/cgan.md, docs/cvae.md, docs/lora.md and docs/synthetic.md, sharing one dataset and their runs."""
    write_inputs()
    shutil.copytree(tiny_dataset_64, "dataset")
    run_dishgen(["data", "import", str(docs_env["sample_images"]), "--out", "raw/ffml"])  # synthetic.md's raw/ffml

    def other_lora():  # docs/lora.md loads a second LoRA file, other.safetensors
        shutil.copy("runs/lora/pytorch_lora_weights.safetensors", "other.safetensors")

    import torch

    given = {'model = load_model(': {"x": torch.zeros(1, 3, 64, 64)}}
    run_scenario("families", docs_env, monkeypatch, before={"--lora runs/lora --lora-scale 0.8": other_lora},
                 inputs={"--interactive": "sarma in a clay pot\n\n"}, given=given,
                 roots={"RUN/pytorch_lora_weights.safetensors": {"RUN/": "runs/lora/"},
                        "RUN/config.json            resolved config": {"RUN/": "runs/cvae/"}})
    assert Path("runs/gan/checkpoint-4").is_dir() and Path("runs/lora-te/config.json").is_file()
    assert Path("reports/real-vs-mix50/report.md").is_file()


@pytest.mark.slow
def test_data_docs(docs_env, monkeypatch):
    """docs/data.md and docs/scraping.md against the loopback recipe sites and LLM server."""
    write_inputs()
    page = "/recept/burek"
    import httpx

    html_text = httpx.get(docs_env["coolinarika"] + page).text
    given = {"summary = scrape(": {"html_text": html_text, "url": docs_env["coolinarika"] + page}}

    run_scenario("data", docs_env, monkeypatch, given=given)
    assert len(Path("raw/recepti/recipes.jsonl").read_text().splitlines()) >= 2
    rows = [json.loads(line) for line in Path("dataset/train/metadata.jsonl").read_text().splitlines()]
    assert rows and all(row["captioner"].startswith("llm:") for row in rows)
