"""Every command's ``--help`` shows how to call it: one ``Examples:`` block of ``dishgen ...`` lines."""

from __future__ import annotations

import click
from click.testing import CliRunner

from dishgen.cli import cli


def _leaf_commands(group: click.Group, path: tuple[str, ...] = ()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):  # list_commands/get_command: the lazy subcommands too
        command = group.get_command(ctx, name)
        if isinstance(command, click.Group):
            yield from _leaf_commands(command, (*path, name))
        else:
            yield (*path, name)


def test_every_leaf_command_help_has_a_dishgen_example():
    leaves = list(_leaf_commands(cli))
    assert ("train", "lora") in leaves and ("data", "build") in leaves and ("evaluate",) in leaves
    missing = []
    for path in leaves:
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, result.output
        _, sep, examples = result.output.partition("Examples:")
        lines = [line.strip() for line in examples.splitlines()]
        if not sep or not any(line.startswith("dishgen ") for line in lines):
            missing.append(" ".join(path))
    assert not missing, f"commands whose --help has no 'Examples:' block with a 'dishgen ...' line: {missing}"
