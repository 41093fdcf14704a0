"""Exit codes tell a script what happened: one per outcome, the same for every command (README, "Exit codes")."""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from server.cli import kit as clikit
from server.domain import errors
from tests.cli.conftest import Installation, codes, licence_with_release, run

ROOT = Path(__file__).resolve().parents[2]


def test_0_ok(installation: Installation) -> None:
    done = installation.admin("--json", "licence", "list")
    assert (done.exit_code, done.json(), done.stderr) == (0, [], "")


def test_1_refused(installation: Installation) -> None:
    licence = licence_with_release(installation)
    done = installation.admin("--json", "licence", "support-check", licence["id"], "--contact", "nobody@c.test",
                              "--release", "1.0")  # fmt: skip
    assert codes(done) == (1, "support-not-eligible")


@pytest.mark.parametrize(
    ("args", "code"),
    [
        pytest.param(("licence", "list", "--no-such-option"), None, id="argparse"),
        pytest.param(("release", "add", "p", "1.0", "--released", "yesterday"), None, id="argparse-type"),
        pytest.param(("product", "add", "Not A Code"), "validation-error", id="invalid-value"),
    ],
)
def test_2_usage(installation: Installation, args: tuple[str, ...], code: str | None) -> None:
    done = installation.admin("--json", *args)
    assert done.exit_code == 2, done.stderr
    if code is None:
        assert "usage: tessera-admin" in done.stderr and done.stdout == ""
    else:
        assert done.error()["code"] == code


def test_3_not_found(installation: Installation) -> None:
    done = installation.admin("--json", "licence", "show", str(uuid.uuid4()))
    assert codes(done) == (3, "licence-not-found")
    done = installation.admin("--json", "customer", "add", "Orphan", "--reseller", "Nobody")
    assert codes(done) == (3, "not-found")


def test_4_conflict(installation: Installation) -> None:
    installation.ok("product", "add", "twice")
    assert codes(installation.admin("--json", "product", "add", "twice")) == (4, "conflict")
    licence = licence_with_release(installation)
    installation.ok("licence", "revoke", licence["id"])
    assert codes(installation.admin("--json", "licence", "resume", licence["id"])) == (4, "conflict")


def test_5_unavailable(tmp_path: Path) -> None:
    unreachable = "postgresql://postgres@127.0.0.1:1/tessera"
    done = run("tessera-admin", "--db", unreachable, "--json", "licence", "list")
    assert codes(done) == (5, "database-unavailable")
    done = run("tessera-admin", "--db", f"sqlite:///{tmp_path / 'empty.db'}", "--json", "licence", "list")
    assert codes(done) == (5, "schema-missing")
    done = run("tessera-server", "migrate", "--db", unreachable, "--json")
    assert codes(done) == (5, "migrate-failed")


def test_tessera_server_usage_and_settings_errors_exit_2(tmp_path: Path) -> None:
    assert run("tessera-server", "serve", "--port", "eighty").exit_code == 2
    config = tmp_path / "server.toml"
    config.write_text("port = 70000\n")
    assert codes(run("tessera-server", "serve", "--config", str(config), "--json")) == (2, "bad-setting")


def _domain_classes() -> list[type[errors.DomainError]]:
    return [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.DomainError)]


def test_every_refusal_of_the_services_has_an_exit_code_that_agrees_with_its_http_status() -> None:
    family = {404: clikit.NOT_FOUND, 409: clikit.CONFLICT, 503: clikit.UNAVAILABLE}
    for kind in _domain_classes():
        status = errors.HTTP_STATUS[kind]
        expected = clikit.USAGE if issubclass(kind, errors.ValidationFailed) else family.get(status, clikit.REFUSED)
        assert clikit.exit_code_for(kind.code) == expected, kind
        assert clikit.CliError.from_domain(kind("x")).exit_code == expected, kind


def _literal_codes() -> set[str]:
    """Every error code the CLIs and the layers under them write literally (f-string codes expanded)."""
    found: set[str] = set()
    raised = re.compile(r"""(?:CliError|DataError|SettingsError)\(\s*(f?)"([a-z{}_-]+)\"""")
    for path in [*(ROOT / "server").rglob("*.py"), *(ROOT / "keys").rglob("*.py")]:
        text = path.read_text("utf-8")
        for is_f, code in raised.findall(text):
            if not is_f:
                found.add(code)
            elif code.startswith("{code_prefix}-"):
                rest = code.removeprefix("{code_prefix}-")
                kinds = ("corrupt", "not-sqlite") if rest == "{kind}" else (rest,)
                found |= {f"{stage}-{k}" for stage in ("backup", "restore", "migrate-db") for k in kinds}
            else:
                raise AssertionError(f"{path}: an error code this test cannot read: {code}")
        found |= set(re.findall(r'^\s+code = "([a-z-]+)"$', text, re.MULTILINE))
        found |= set(re.findall(r'(?:schema_code|code)="([a-z-]+)"', text))
    return found


def test_every_error_code_has_a_row_in_the_exit_code_table() -> None:
    domain = {kind.code for kind in _domain_classes()}
    unmapped = sorted(_literal_codes() - domain - set(clikit.CLI_EXIT_CODES))
    assert unmapped == [], f"add these to clikit.CLI_EXIT_CODES: {unmapped}"
    assert "backup-pg-dump-missing" in clikit.CLI_EXIT_CODES and "restore-target-in-use" in _literal_codes()


def test_the_readme_documents_every_exit_code() -> None:
    readme = (ROOT / "README.md").read_text("utf-8")
    table = dict(re.findall(r"^\| `(\d)` \| (.+?) \|", readme, re.MULTILINE))
    assert sorted(table) == ["0", "1", "2", "3", "4", "5"], table


def test_the_cli_kit_imports_nothing_a_light_install_lacks() -> None:
    # server.cli.entrypoints reports missing server dependencies through clikit: it must import without them.
    from server.cli.entrypoints import SERVER_MODULES

    probe = "import sys, server.cli.kit; print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    done = subprocess.run([sys.executable, "-I", "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert set(done.stdout.split()) & set(SERVER_MODULES) == set()
