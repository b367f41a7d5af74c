"""The code's shape, checked from its source: one error hierarchy, the import-graph rules between
packages, and families described once in a registry."""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dishgen"
BUILTIN_EXCEPTIONS = {name for name, value in vars(builtins).items()
                      if isinstance(value, type) and issubclass(value, BaseException)}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _trees() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text(encoding="utf-8")) for p in sorted(SRC.rglob("*.py"))}


# -- one error hierarchy ------------------------------------------------------------------------------


def test_every_public_exception_class_derives_from_dishgen_error():
    bases: dict[str, set[str]] = {}
    where: dict[str, str] = {}
    for module, tree in _trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                names = {b.id if isinstance(b, ast.Name) else b.attr for b in node.bases
                         if isinstance(b, (ast.Name, ast.Attribute))}
                bases.setdefault(node.name, set()).update(names)
                where[node.name] = module

    def ancestors(name: str, seen: frozenset = frozenset()) -> set[str]:
        found = set()
        for base in bases.get(name, ()):
            if base not in seen:
                found |= {base} | ancestors(base, seen | {name})
        return found

    exceptions = {name for name in bases if ancestors(name) & BUILTIN_EXCEPTIONS}
    assert {"DishgenError", "ModelReferenceError", "ConfigError", "RunDirError"} <= exceptions
    outside = sorted(f"{where[name]}.{name}" for name in exceptions
                     if name != "DishgenError" and not name.startswith("_") and "DishgenError" not in ancestors(name))
    assert outside == [], f"exception classes outside the DishgenError hierarchy: {outside}"


@pytest.mark.parametrize(("error", "code"), [("text", 2), ("diverged", 2), ("interrupted", 143)])
def test_cli_main_maps_every_dishgen_error_to_one_line_and_its_exit_code(monkeypatch, capsys, error, code):
    import dishgen.cli as cli_module
    from dishgen.errors import Interrupted
    from dishgen.text import TextEncoderNotAvailable
    from dishgen.train.common import TrainingDiverged

    raised = {"text": TextEncoderNotAvailable("encoder 'minilm' is not installed; pip install it"),
              "diverged": TrainingDiverged("training diverged at step 3: loss=nan"),
              "interrupted": Interrupted("interrupted at step 5; resume with: dishgen train ...", signum=15)}[error]

    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr(cli_module.cli, "main", fail)
    with pytest.raises(SystemExit) as exit_info:
        cli_module.main()
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err == (f"{raised}\n" if error == "interrupted" else f"Error: {raised}\n")


# -- the import graph ---------------------------------------------------------------------------------


def _imports(module: str, tree: ast.Module) -> set[str]:
    """Every dishgen module ``module`` imports, at the top or inside functions (both count)."""
    package = module.split(".") if (SRC.parent / Path(*module.split(".")) / "__init__.py").is_file() \
        else module.split(".")[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[: len(package) - node.level + 1]) if node.level else ""
            target = ".".join(part for part in (base, node.module or "") if part)
            found.add(target)
            # "from dishgen import exports" and "from dishgen.train import common" import modules too.
            found |= {f"{target}.{alias.name}" for alias in node.names
                      if (SRC.parent / Path(*target.split("."), alias.name)).with_suffix(".py").is_file()
                      or (SRC.parent / Path(*target.split("."), alias.name, "__init__.py")).is_file()}
    return {name for name in found if name == "dishgen" or name.startswith("dishgen.")}


def _within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


INFERENCE = ("dishgen.families", "dishgen.generation", "dishgen.generation_io", "dishgen.evaluate", "dishgen.web")
# (who, may never import, why): the arrows the layering forbids.
NEVER = [
    (("dishgen.train",), INFERENCE + ("dishgen.cli",),
     "training writes run directories through dishgen.runs and exports through dishgen.exports"),
    (("dishgen.runs", "dishgen.exports", "dishgen.cards", "dishgen.errors", "dishgen.bundled"),
     ("dishgen.train", "dishgen.cli")
     + INFERENCE,
     "neutral ground imports neither side"),
    (("dishgen.models",), ("dishgen.train", "dishgen.cli", "dishgen.runs", "dishgen.exports", "dishgen.fileio")
     + INFERENCE, "a model file holds networks and their math only"),
]
# Only training code and the training commands import dishgen.train (inference, evaluation, the web
# page, data tools and the other commands never do).
TRAIN_IMPORTERS = ("dishgen.train", "dishgen.cli.train", "dishgen.cli.train_cgan", "dishgen.cli.train_cvae",
                   "dishgen.cli.train_fastgan", "dishgen.cli.train_lora")


def _graph() -> dict[str, set[str]]:
    return {module: _imports(module, tree) for module, tree in _trees().items()}


def test_import_graph_reader_sees_imports_inside_functions():
    graph = _graph()
    # Imported only inside functions in these modules: a top-level-only reader would miss them.
    assert "dishgen.exports" in graph["dishgen.train.cgan"]
    assert "dishgen.runs" in graph["dishgen.evaluate.harness"]
    assert "dishgen.exports" in graph["dishgen.families.cgan"]  # "from dishgen import exports"
    assert "dishgen.train.cgan" in graph["dishgen.cli.train_cgan"]


def test_import_graph_breaks_no_never_arrow():
    graph = _graph()
    broken = []
    for importers, forbidden, why in NEVER:
        for module, targets in graph.items():
            if _within(module, *importers):
                broken += [f"{module} -> {t} ({why})" for t in sorted(targets) if _within(t, *forbidden)]
    for module, targets in graph.items():
        if not _within(module, *TRAIN_IMPORTERS):
            broken += [f"{module} -> {t} (only training imports dishgen.train)" for t in sorted(targets)
                       if _within(t, "dishgen.train")]
    assert broken == [], "imports that break the layering:\n" + "\n".join(broken)


# -- a family added in one registry line ------------------------------------------------------------


class ToyGenerator:
    """A toy family's generator: a flat colour per image, from the seed, the image's index and the
    ``sharpness`` knob (its own knob, which no other family takes)."""

    family = "toy"

    def __init__(self, calls: list):
        from dishgen.families import get_family

        self.knobs = get_family("toy").knobs
        self.calls = calls

    def generate(self, prompts, num_images=1, seed=None, *, first_index=0, **knobs):
        from PIL import Image

        from dishgen.generation import check_knobs

        knobs = check_knobs(self.family, self.knobs, knobs)
        self.calls.append(knobs)
        shade = int(10 * float(knobs.get("sharpness", 1.0)))
        return [Image.new("RGB", (32, 32), ((seed or 0) % 200 + shade, first_index + k, len(prompt)))
                for prompt in prompts for k in range(num_images)]


@pytest.fixture
def toy(tmp_path):
    """Register the toy family (one line) and write a saved toy model folder."""
    from dishgen.families import FAMILIES, Family, register

    calls: list = []
    loads: list = []

    def load_toy(location, device=None, dtype=None, **options):
        loads.append(options)
        return ToyGenerator(calls)

    register(Family("toy", load_toy, knobs=("sharpness", "num_inference_steps", "guidance_scale", "negative_prompt",
                                            "batch_size"), negative_prompt=True, steps=True))
    folder = tmp_path / "toy-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"family": "toy"}')
    yield folder, calls, loads
    FAMILIES.pop("toy")


def test_a_registered_toy_family_generates_from_python_and_the_cli(toy, tmp_path):
    from click.testing import CliRunner

    import dishgen.generation as generation
    from dishgen.cli import cli
    from dishgen.generation_io import read_provenance

    folder, calls, _ = toy
    assert generation.resolve_model(folder) == ("toy", folder)
    images = generation.generate(["sarma", "ajvar"], model=folder, num_images=2, seed=3, sharpness=2.0)
    assert [im.getpixel((0, 0)) for im in images] == [(23, 0, 5), (23, 1, 5), (23, 0, 5), (23, 1, 5)]
    with pytest.raises(generation.UnknownKnobError, match="the toy family does not take truncation"):
        generation.generate("sarma", model=folder, truncation=0.5)

    result = CliRunner().invoke(cli, ["generate", "sarma", "--model", str(folder), "--seed", "4", "--steps", "3",
                                      "--knob", "sharpness=1.5", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert calls[-1] == {"sharpness": 1.5, "num_inference_steps": 3}
    (png,) = sorted((tmp_path / "out").glob("*.png"))
    record = read_provenance(png)
    assert (record["family"], record["knobs"]) == ("toy", {"sharpness": 1.5, "num_inference_steps": 3})


def test_a_registered_toy_family_is_evaluated(toy, tiny_dataset, tmp_path):
    from test_metrics_evaluate import TinyFeatures

    from dishgen.evaluate import EvaluationConfig, evaluate

    folder, calls, loads = toy
    config = EvaluationConfig(data=str(tiny_dataset), out=str(tmp_path / "eval"), models=[str(folder)],
                              metrics=("fid",), image_size=32, bootstrap=2, progress=False,
                              knobs={"sharpness": 2.0, "truncation": 0.5}, model_options={"lora": ["x.safetensors"]})
    report = evaluate(config, feature_network=TinyFeatures(), write=False)
    (row,) = report["results"]
    assert row["family"] == "toy" and row["n_generated"] == 9
    assert loads == [{}]  # the toy family takes no loader options: the LoRA files were not passed
    assert calls and all(knobs["sharpness"] == 2.0 and "truncation" not in knobs for knobs in calls)


def test_the_web_page_offers_a_registered_toy_family_its_capabilities(toy):
    from dishgen.web import GenerationService, ModelChoices

    folder, calls, _ = toy
    choices = ModelChoices({"toy": str(folder)})
    assert choices.has_steps("toy") and choices.takes_negative_prompt("toy")
    service = GenerationService(choices)
    images, seed = service.generate("sarma", "blurry", "toy", 2, 7, steps=4, guidance=3.0)
    assert seed == 7 and len(images) == 2
    assert calls == [{"num_inference_steps": 4, "guidance_scale": 3.0, "negative_prompt": "blurry"}]
    assert images[0].info  # each image carries its provenance


# -- callers ask the registry, never a family's name --------------------------------------------------

# Modules that serve every family: they read capabilities from the registry (cards.py, which
# writes LoRA-specific hub metadata, and the family modules themselves are not among them).
FAMILY_NEUTRAL = ("dishgen.cli", "dishgen.web", "dishgen.evaluate", "dishgen.data", "dishgen.generation",
                  "dishgen.generation_io", "dishgen.publish")


def _names_family(node: ast.AST) -> bool:
    text = ast.unparse(node)
    return "family" in text or "families" in text.lower()


def _is_name_literal(node: ast.AST, names: set[str]) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in names
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_is_name_literal(item, names) for item in node.elts)
    return False


def test_family_neutral_code_tests_no_family_name():
    from dishgen.families import FAMILIES

    names = set(FAMILIES)
    found = []
    for module, tree in _trees().items():
        if not _within(module, *FAMILY_NEUTRAL):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn))
                                                     for op in node.ops):
                sides = [node.left, *node.comparators]
                if any(_names_family(s) for s in sides) and any(_is_name_literal(s, names) for s in sides):
                    found.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
            elif isinstance(node, ast.Assign) and _is_name_literal(node.value, names) and isinstance(
                    node.value, (ast.Tuple, ast.List, ast.Set)):
                found.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    assert found == [], "ask the family registry (dishgen.families.get_family) instead:\n" + "\n".join(found)
