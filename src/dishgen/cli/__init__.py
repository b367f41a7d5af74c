"""The ``dishgen`` command line: one click group; subcommands parse arguments and call the library.

Subcommands are imported only when run, so ``dishgen --help`` stays fast.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from dishgen import __version__

MAX_SEED = 2**32 - 1  # numpy and torch seeds alike (dishgen.config.MAX_SEED)


class FiniteFloatRange(click.FloatRange):
    """``click.FloatRange`` that also refuses ``nan`` and ``inf`` (which pass its comparisons)."""

    def convert(self, value, param, ctx):
        import math

        rv = super().convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{rv} is not a finite number; give a value in the range {self._describe_range()}.", param, ctx)
        return rv


SEED = click.IntRange(0, MAX_SEED)


def family_tag(knob: str | None = None, *, option: str | None = None, capability: str | None = None) -> str:
    """``[cgan, fastgan]``: the families that take a generation knob (or a loader option, or have a
    capability such as ``prompt_suffix``), read from the family registry, to start a flag's help."""
    from dishgen.families.registry import FAMILIES

    def takes(family) -> bool:
        if knob:
            return knob in family.knobs
        if option:
            return option in family.loader_options
        return bool(getattr(family, capability or ""))

    return f"[{', '.join(f.name for f in FAMILIES.values() if takes(f))}]"


def renamed_flag(value, old_value, old: str, new: str):
    """The value of flag ``new``, or of its old spelling ``old`` (accepted for one release, with a
    deprecation line); giving both is a usage error."""
    if old_value is None:
        return value
    if value is not None:
        raise click.UsageError(f"{old} is the old spelling of {new}; give {new} only")
    from dishgen.deprecation import deprecated

    deprecated(old, new)
    return old_value


def parse_knobs(items: tuple[str, ...], param_hint: str = "--knob") -> dict:
    """``key=value`` pairs; values are read as JSON when they parse (numbers, true, null), else text."""
    import json

    knobs = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=param_hint)
        try:
            knobs[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            knobs[key.strip()] = raw
    return knobs


class LazyGroup(click.Group):
    """A click group whose subcommands live in other modules and are imported on first use."""

    def __init__(self, *args, lazy_commands: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        # name -> ("module:attribute", one-line help shown by --help without importing)
        self.lazy_commands = lazy_commands or {}

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx, name):
        if name in self.lazy_commands:
            target, _ = self.lazy_commands[name]
            module_name, attr = target.split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy_commands:
                rows.append((name, self.lazy_commands[name][1]))
            else:
                cmd = super().get_command(ctx, name)
                if cmd is not None and not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(limit=80)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    lazy_commands={
        "data": ("dishgen.cli.data:data", "Import, scrape, build, caption and inspect datasets."),
        "train": ("dishgen.cli.train:train", "Train a generator: cgan, fastgan, cvae or lora."),
        "generate": ("dishgen.cli.generate:generate", "Generate images from captions with any model."),
        "evaluate": ("dishgen.cli.evaluate:evaluate", "Score models with FID, KID, CLIPScore; write a report."),
        "serve": ("dishgen.cli.serve:serve", "Serve the web app (localhost by default)."),
        "push": ("dishgen.cli.push:push", "Publish a finished run (final weights + model card) to the Hub."),
    },
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="dishgen")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """dishgen: photographs of Serbian dishes from short captions.

    \b
    Quick start (offline, CPU, bundled model):
      dishgen generate "Sarma, cabbage rolls served in a clay pot"
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main() -> None:
    """Console-script entry point, and the one place that maps errors to exit codes.

    A :class:`~dishgen.errors.DishgenError` (or a missing file) prints as the one line
    ``Error: <message>`` (no traceback) and exits with the error's ``exit_code``: 2, or
    ``128 + signal`` for a training run stopped by Ctrl-C or SIGTERM (its message, which says how to
    resume, is printed without the ``Error:`` prefix and only once, by rank 0 under a launcher).
    """
    import os

    from dishgen.errors import Interrupted, exit_code_for, user_error_types

    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    except user_error_types() as err:
        if isinstance(err, Interrupted):  # a trainer stopped on Ctrl-C/SIGTERM and saved a checkpoint
            # Under torchrun every rank stops; rank 0 says so (the trainers have already said it).
            if os.environ.get("RANK", "0") == "0" and not err.reported:
                click.echo(str(err), err=True)
        else:
            click.echo(f"Error: {err}", err=True)
        sys.exit(exit_code_for(err))
