"""The row type of docs/RELIABILITY.md's table, and the CLI check every CLI row shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from typer.testing import CliRunner

from ttp_search.cli import app
from ttp_search.errors import InvalidInputError

runner = CliRunner()


@dataclass
class Case:
    """One row: ``call`` either raises ``error`` matching ``names`` or passes ``safe``."""

    id: str
    target: str
    bad_input: str
    call: Callable[[], object]
    error: type[BaseException] | None = None
    names: str = ""
    safe: str = ""  # what happens instead of an error, checked by ``call`` itself
    # A pytest fixture ``call`` takes as its one argument (e.g. "calibrated").
    fixture: str = ""

    @property
    def outcome(self) -> str:
        if self.error is not None:
            return f"`{self.error.__name__}` naming `{self.names}`"
        return self.safe


def cli_error(*args: str, env: dict | None = None):
    """Run ``ttp ARGS``: it must exit 2 with one line and no traceback; the line is raised
    as an ``InvalidInputError`` so the row checks its words like any other error."""
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    raise InvalidInputError(result.output)
