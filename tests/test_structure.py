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
    (("dishgen.runs", "dishgen.exports", "dishgen.errors"), ("dishgen.train", "dishgen.cli") + INFERENCE,
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
