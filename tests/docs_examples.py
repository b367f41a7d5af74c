"""Code blocks of README.md and docs/*.md, and how tests/test_docs.py runs them.

- :func:`extract_blocks` finds every fenced code block (with its file, line and language tag).
- :meth:`Block.commands` splits a shell block into logical commands (``\\`` continuations joined,
  ``#`` comments and blank lines dropped).
- :data:`SUBSTITUTIONS` is the one table of rewrites that makes a documented command run offline,
  on a CPU, in seconds (a hub model -> a tiny local pipeline, GPU flags dropped, step counts cut).
- :func:`run_dishgen` runs ``dishgen ...`` in-process with click's ``CliRunner``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC_FILES = ("README.md", "docs/*.md")
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>```+|~~~+)(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown file."""

    file: str  # relative to the repository root, e.g. "docs/cgan.md"
    line: int  # 1-based line of the opening fence
    lang: str  # the info string's first word ("" when untagged)
    text: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} ```{self.lang}\n{self.text}```"

    def commands(self) -> list[str]:
        """Logical commands: continuation lines joined, comments and blank lines dropped."""
        commands, pending = [], ""
        for raw in self.text.splitlines():
            line = strip_comment(raw).rstrip()
            if line.endswith("\\"):
                pending += line[:-1].strip() + " "
                continue
            line = (pending + line.strip()).strip()
            pending = ""
            if line:
                commands.append(line)
        if pending.strip():
            commands.append(pending.strip())
        return commands


def strip_comment(line: str) -> str:
    """``line`` without a shell comment (a ``#`` at the start or after a blank, outside quotes)."""
    try:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=False)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        tokens = list(lexer)
    except ValueError:  # unbalanced quotes: leave the line as it is
        return line
    if not tokens:
        return ""
    # Cut the raw line at the comment, keeping its own quoting: find the last token's end.
    index = 0
    for token in tokens:
        index = _find_token_end(line, index, token)
    return line[:index]


def _find_token_end(line: str, start: int, token: str) -> int:
    """Where ``token`` (shell-unquoted) ends in ``line`` after ``start``."""
    i = start
    while i < len(line) and line[i].isspace():
        i += 1
    quote = None
    while i < len(line):
        char = line[i]
        if quote:
            if char == quote:
                quote = None
            elif char == "\\" and quote == '"':
                i += 1
        elif char in "'\"":
            quote = char
        elif char == "\\":
            i += 1
        elif char.isspace():
            break
        i += 1
    return i


def extract_blocks(root: Path = REPO) -> list[Block]:
    """Every fenced code block of README.md and docs/*.md, in file order."""
    files = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    blocks = []
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        opened = None
        body: list[str] = []
        for number, line in enumerate(lines, 1):
            match = FENCE.match(line)
            if opened is None:
                if match:
                    opened = (number, match["fence"], match["info"].strip().split(" ")[0])
                    body = []
            elif match and match["fence"].startswith(opened[1]) and not match["info"].strip():
                blocks.append(Block(str(path.relative_to(root)), opened[0], opened[2], "".join(b + "\n" for b in body)))
                opened = None
            else:
                body.append(line)
        if opened is not None:
            raise ValueError(f"{path}:{opened[0]}: unclosed code fence")
    return blocks


# --- Substitutions: what makes a documented command run here ------------------------------------
# (pattern, replacement, why). Applied in order, by ``re.sub`` (MULTILINE), to every shell command
# and every Python snippet taken from the docs; ``{name}`` in a replacement is a path or URL that
# the test provides (see ``test_docs.py::values``). Everything else is run exactly as written.
TINY_CGAN = ("resolution=32 base_channels=8 max_channel_mult=4 z_dim=16 cond_dim=16 batch_size=4 max_steps=2 "
             "checkpoint_every=2 sample_every=2 log_every=1 keep_checkpoints=0 sample_per_prompt=2 compile=false")
TINY_CVAE = ("base_channels=8 max_channels=32 z_dim=16 cond_dim=32 batch_size=8 max_steps=2 checkpoint_every=2 "
             "sample_every=2 log_every=1 samples_per_prompt=2 num_recon_images=4 lr_warmup_steps=1")
TINY_FASTGAN = ("resolution=32 g_channels=8 d_channels=8 max_channels=32 decoder_channels=16 z_dim=16 cond_dim=16 "
                "batch_size=4 max_steps=2 checkpoint_every=2 sample_every=2 log_every=1 keep_checkpoints=0 "
                "sample_per_prompt=2")
TINY_LORA = ("resolution=64 batch_size=2 lora_rank=4 max_steps=2 checkpoint_every=2 sample_every=2 "
             "validation_steps=2 gradient_accumulation_steps=1 gradient_checkpointing=false optimizer=adamw "
             "mixed_precision=no")
SUBSTITUTIONS: list[tuple[str, str, str]] = [
    # models and data that need the hub, a GPU or hours
    (r"stable-diffusion-v1-5/stable-diffusion-v1-5|\./tiny-sd\b", "{tiny_sd}",
     "hub model -> the tiny diffusers pipeline of tests/tiny_models.py"),
    (r"\.\./shared/data/ffml/images", "{sample_images}", "the full FFML set -> the repository's sample"),
    (r" --device cuda(:\d+)?\b| --dtype fp16\b| (mixed_)?precision=(fp16|bf16)\b", "",
     "GPU-only flags dropped (bf16 is emulated, very slow, on this CPU)"),
    (r'device="cuda", dtype="fp16", ', "", "the same in Python"),
    (r"--size \d+", "--size 64", "datasets at 64 px (the cVAE's smallest size)"),
    (r"--(height|width) \d+", r"--\1 64", "diffusion images at 64 px"),
    (r"--steps \d+", "--steps 2", "2 denoising steps"),
    (r"num_inference_steps=\d+", "num_inference_steps=2", "2 denoising steps"),
    (r"max_steps=\d+", "max_steps=4", "continue a 2-step run to 4 steps"),
    (r"checkpoint-\d+\b", "checkpoint-4", "the last checkpoint of the tiny runs"),
    (r"images/gan-step-\d+", "images/gan-step-2", "the images of the tiny cGAN run (2 steps)"),
    (r" -k \d+", " -k 1", "one image per caption"),
    (r"(?<=--data )(DATASET|DS|data/ds)\b", "dataset", "the docs' placeholder -> the test's dataset folder"),
    (r"--model RUN\b", "--model runs/cvae", "docs/cvae.md's RUN -> the run trained above it"),
    (r"^(dishgen data build (?!.*--size).*)$", r"\1 --size 64", "datasets at 64 px"),
    (r"^(dishgen train lora (?!.*--resume)(?!.*--base).*)$", r"\1 --base {tiny_sd}",
     "the default base model (SD 1.5 from the hub) -> the tiny pipeline"),
    (r"^(dishgen train cgan (?!.*--resume).*)$", r"\1 " + TINY_CGAN, "tiny cGAN, 2 steps"),
    (r"^(dishgen train cvae (?!.*--resume).*)$", r"\1 " + TINY_CVAE, "tiny cVAE, 2 steps"),
    (r"init_from=fastgan-ffml128\b", "init_from=runs/fastgan/model",
     "the bundled model (128 px) -> the export of the tiny FastGAN run above (its shape)"),
    (r"^(.*\bdishgen train fastgan (?!.*--resume).*)$", r"\1 " + TINY_FASTGAN, "tiny FastGAN at 32 px, 2 steps"),
    (r"^(dishgen train lora (?!.*--resume).*)$", r"\1 " + TINY_LORA, "tiny LoRA, 2 steps, fp32"),
    (r"^dishgen evaluate ", "dishgen evaluate --clip-model {tiny_clip} --bootstrap 2 --no-progress --knob num_inference_steps=2 ",
     "CLIP ViT-L/14 from the hub -> a tiny local CLIP; fewer bootstrap resamples"),
    (r"^(dishgen data augment .*--model runs/lora)(?!.*--steps)", r"\1 --steps 2", "2 denoising steps"),
    # network services -> loopback servers
    (r"^dishgen data scrape --site https://\S+ (.*)$", r"dishgen data scrape --site {coolinarika} \1 --delay 0 --min-image-side 64",
     "any site by URL -> the loopback copy of coolinarika"),
    (r"^(dishgen data scrape (recepti|coolinarika) .*)$", r"\1 --base-url {\2} --delay 0 --min-image-side 64",
     "the real site -> its loopback copy (tests/fixtures/site), no politeness delay, small test photos"),
    (r'max_recipes=100, delay=2\.0\)', 'max_recipes=100, delay=0, base_url="{coolinarika}", min_image_side=64)',
     "the same in Python"),
    (r"PoliteClient\(delay=1\.0\)", "PoliteClient(delay=0)", "no politeness delay against the loopback site"),
    (r"http://(localhost|127\.0\.0\.1):(8000|11434)/v1", "{llm}", "an LLM server -> tests/fake_openai.py"),
    (r"OPENAI_API_KEY=\S+", "OPENAI_API_KEY={llm_key}", "the loopback server's key"),
    (r"EvaluationConfig\(", 'EvaluationConfig(clip_model="{tiny_clip}", bootstrap=2, ',
     "the same in Python: a tiny local CLIP, fewer bootstrap resamples"),
    (r"\[\.\.\.\]", '["500 g mesa"]', "the elided ingredient lists of a Python example"),
]


def substitute(text: str, values: dict[str, str]) -> str:
    """``text`` with every :data:`SUBSTITUTIONS` rewrite applied; ``{name}`` filled from ``values``."""
    for pattern, replacement, _ in SUBSTITUTIONS:
        for name, value in values.items():
            replacement = replacement.replace("{" + name + "}", str(value).replace("\\", "\\\\"))
        text = re.sub(pattern, replacement, text, flags=re.MULTILINE)
    # Group references such as {recepti} come out of a substitution as text: fill them too.
    for name, value in values.items():
        text = text.replace("{" + name + "}", str(value))
    return text


# --- Commands that are not run as written, and what is checked instead ---------------------------
# (pattern, check, why). check: "help" runs the command's --help (dishgen in-process, Python scripts
# with runpy); "parse" parses the dishgen command line (every option must exist and convert) without
# running it; "make" runs `make -n TARGET`; "env" applies an `export` to the environment; "none".
EXEMPT: list[tuple[str, str, str]] = [
    (r"^make (run|test|lock)\b", "make", "sets up .venv and runs the whole suite (CI runs `make test` itself)"),
    (r"^python -c ", "python-c", "run in-process: the code is exec-uted in the scenario's directory"),
    (r"^python -m venv|^pip install", "none", "installs packages; `make test` does it from the lock"),
    (r"\bpython (bench/\S+)", "help", "benchmark, run by hand"),
    (r"\bpython (scripts/bundle_model\.py)", "help", "rewrites src/dishgen/weights/; run by hand"),
    (r"^accelerate config", "none", "interactive accelerate set-up"),
    (r"^(accelerate launch|torchrun)\b", "parse",
     "several GPUs or processes (multi-process training: tests/test_*_multiprocess.py)"),
    (r"^dishgen serve\b", "parse", "serves until stopped (the app: tests/test_web.py)"),
    (r"^export ", "env", "sets the environment of the following commands"),
]


def exemption(command: str) -> tuple[str, str, str] | None:
    """The :data:`EXEMPT` entry that matches ``command``, if any."""
    for pattern, check, why in EXEMPT:
        if re.search(pattern, command):
            return pattern, check, why
    return None


def dishgen_args(command: str) -> list[str]:
    """The arguments after ``dishgen`` (or ``$(which dishgen)``) in a shell command line; a word
    with a shell wildcard that matches files is expanded, as the shell would."""
    import glob

    words = shlex.split(command.replace("$(which dishgen)", "dishgen").replace('"dishgen"', "dishgen"))
    for index, word in enumerate(words):
        if word == "dishgen" or word.endswith("/dishgen"):
            args = []
            for arg in words[index + 1:]:
                matches = sorted(glob.glob(arg)) if any(ch in arg for ch in "*?[") else []
                args += matches or [arg]
            return args
    raise ValueError(f"no dishgen command in {command!r}")


def parse_only(args: list[str]):
    """Parse ``dishgen ARGS`` as click would, down to the subcommand, without running anything."""
    import click

    from dishgen.cli import cli

    command, name, parent = cli, "dishgen", None
    while True:
        ctx = command.make_context(name, list(args), parent=parent)
        if not isinstance(command, click.Group):
            return ctx
        name, command, args = command.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
        parent = ctx


def run_dishgen(args: list[str], input: str | None = None):
    """Run ``dishgen ARGS`` in-process; fail with the command, its output and traceback unless exit 0."""
    import traceback

    from click.testing import CliRunner

    from dishgen.cli import cli

    result = CliRunner().invoke(cli, args, input=input)
    if result.exit_code != 0:
        trace = "".join(traceback.format_exception(result.exception)) if result.exception else ""
        raise AssertionError(f"`dishgen {shlex.join(args)}` exited {result.exit_code}:\n{result.output}\n{trace}")
    return result


def run_script_help(path: Path) -> None:
    """Run ``python PATH --help`` in this process (argparse exits 0 after printing the help)."""
    import contextlib
    import io
    import runpy
    import sys

    import torch

    argv, sys.argv = sys.argv, [str(path), "--help"]
    search_path = list(sys.path)
    sys.path.insert(0, str(Path(path).resolve().parent))  # as `python PATH` does (bench/_common.py)
    grad_enabled = torch.is_grad_enabled()  # a script's `if __name__ == "__main__":` may switch it off
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv = argv
        sys.path[:] = search_path
        torch.set_grad_enabled(grad_enabled)
    assert "usage:" in out.getvalue().lower(), f"python {path} --help printed no usage:\n{out.getvalue()}"
