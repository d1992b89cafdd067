"""Every registered command imports and answers --help (no placeholder commands)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from avel.cli.main import _COMMANDS, cli


@pytest.mark.parametrize("name", sorted(_COMMANDS))
def test_command_help(name):
    res = CliRunner().invoke(cli, [name, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage: " in res.output and name in res.output


def test_unknown_command_is_a_usage_error():
    res = CliRunner().invoke(cli, ["frobnicate"])
    assert res.exit_code == 2
