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
