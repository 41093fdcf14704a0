"""Every command, sub-command, option and argument of the operator CLIs says what it is for."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from server.cli import admin as admin_cli
from server.cli import server as cli
from tests.cli.conftest import run


def _walk(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, str | None]]:
    """(where, help) for every sub-command and every argument under the parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            described = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield f"{path} {name}", described.get(name)
                yield from _walk(sub, f"{path} {name}")
        elif action.help != argparse.SUPPRESS:  # hidden on purpose (a worker's --reuse-port)
            yield f"{path} {'/'.join(action.option_strings) or action.dest}", action.help


@pytest.mark.parametrize("build", [admin_cli.build_parser, cli.build_parser], ids=["tessera-admin", "tessera-server"])
def test_every_sub_command_and_option_has_help(build: object) -> None:
    parser = build()  # type: ignore[operator]
    missing = [where for where, text in _walk(parser, parser.prog) if not (text and text.strip())]
    assert missing == [], "\n".join(missing)


def test_the_walk_sees_every_level() -> None:
    seen = dict(_walk(admin_cli.build_parser(), "tessera-admin"))
    assert "tessera-admin plan price set --from" in seen and "tessera-admin licence show --json" in seen
    commands = [where for where in seen if not where.split()[-1].startswith("-") and where.count(" ") >= 1]
    assert {"tessera-admin licence renew", "tessera-admin webhooks redeliver", "tessera-admin backup"} <= set(commands)


@pytest.mark.parametrize(
    ("command", "says"),
    [
        pytest.param((), "licences, their terms and seats", id="top"),
        pytest.param(("licence",), "renew or extend maintenance", id="area"),
        pytest.param(("licence", "renew"), "renew or extend maintenance", id="own-description"),
        pytest.param(("plan", "price", "set"), "the first business day it applies", id="nested"),
    ],
)
def test_help_is_printed_by_the_program(command: tuple[str, ...], says: str) -> None:
    done = run("tessera-admin", *command, "--help")
    assert (done.exit_code, done.stderr) == (0, "") and done.stdout.startswith("usage: tessera-admin")
    assert says in " ".join(done.stdout.split())
