"""--json anywhere on the command line, --version from the package metadata, settlement --csv alone on stdout."""

from __future__ import annotations

import csv
import io
import re
import tomllib
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.cli.conftest import Installation, licence_with_release, run

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(("--json", "licence", "{}"), id="before"),
        pytest.param(("licence", "--json", "{}"), id="between"),
        pytest.param(("licence", "{}", "--json"), id="after"),
    ],
)
def test_json_is_accepted_anywhere_on_the_admin_command_line(installation: Installation, args: tuple[str, ...]) -> None:
    licence = licence_with_release(installation)
    listed = installation.admin(*(a.replace("{}", "list") for a in args))
    assert listed.exit_code == 0, listed.stderr
    assert [row["id"] for row in listed.json()] == [licence["id"]]
    # Only an error tells JSON from text apart: a result is printed as JSON either way.
    missing = installation.admin(*(a.replace("{}", "show") for a in args), str(uuid.uuid4()))
    assert (missing.exit_code, missing.error()["code"]) == (3, "licence-not-found")


def test_json_after_a_nested_sub_command_and_for_errors(installation: Installation) -> None:
    installation.ok("plan", "add", "p1", "--kind", "subscription", "--model", "activation")
    assert installation.admin("plan", "price", "list", "p1", "--json").json() == installation.ok(
        "plan", "price", "list", "p1"
    )
    missing = str(uuid.uuid4())
    as_json = installation.admin("licence", "show", missing, "--json")
    assert (as_json.exit_code, as_json.error()["code"], as_json.stdout) == (3, "licence-not-found", "")
    as_text = installation.admin("licence", "show", missing)
    assert as_text.exit_code == 3 and as_text.stderr.startswith("error [licence-not-found]: ")


def test_json_is_accepted_before_and_after_the_server_command(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'tessera.db'}"
    after = run("tessera-server", "migrate", "--db", db, "--json")
    before = run("tessera-server", "--json", "migrate", "--db", db)
    assert (after.exit_code, before.exit_code) == (0, 0), after.stderr + before.stderr
    assert after.json() == before.json() and after.json()["database"] == db
    assert run("tessera-server", "migrate", "--db", db).stdout.startswith("schema at ")


@pytest.mark.parametrize("program", ["tessera-admin", "tessera-server"])
def test_version_comes_from_the_package_metadata(program: str) -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["version"]
    done = run(program, "--version")
    assert (done.exit_code, done.stdout, done.stderr) == (0, f"{program} {declared}\n", "")


def test_settlement_csv_writes_only_csv_on_stdout(installation: Installation) -> None:
    installation.ok("reseller", "add", "Reseller BV")
    installation.ok("customer", "add", "Resold GmbH", "--reseller", "Reseller BV")
    installation.ok("product", "add", "cad")
    installation.ok("plan", "add", "yearly", "--kind", "subscription", "--model", "activation",
                    "--price-cents", "50000")  # fmt: skip
    issued = installation.ok("licence", "issue", "--customer", "Resold GmbH", "--product", "cad",
                             "--plan", "yearly", "--seats", "2")  # fmt: skip
    year = str(datetime.now(UTC).year)  # the ledger entry is dated now
    report = installation.ok("settlement", "Reseller BV", "--year", year)
    for args in (("--json",), ()):
        done = installation.admin(*args, "settlement", "Reseller BV", "--year", year, "--csv")
        assert (done.exit_code, done.stderr) == (0, "")
        rows = list(csv.reader(io.StringIO(done.stdout)))
        assert all(len(row) == len(rows[0]) for row in rows), done.stdout  # nothing but CSV records
        assert len(rows) >= 2 and "{" not in done.stdout, done.stdout
        assert len(rows) - 1 == len(report["entries"]) >= 1
        assert issued["id"] in {row[rows[0].index("licence_id")] for row in rows[1:]}


def test_the_licence_and_the_changelog_match_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    licence = (ROOT / "LICENSE").read_text("utf-8")
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    assert "Apache License" in licence.splitlines()[1] and "Version 2.0, January 2004" in licence
    assert "END OF TERMS AND CONDITIONS" in licence  # the full text, not a pointer to it
    changelog = (ROOT / "CHANGELOG.md").read_text("utf-8")
    assert f"\n## [{project['version']}] - " in changelog


def test_people_read_tables_and_records_and_scripts_read_json(installation: Installation) -> None:
    installation.ok("product", "add", "cad")
    installation.ok("plan", "add", "node", "--kind", "perpetual", "--model", "activation")
    installation.ok("customer", "add", "Acme")
    issued = installation.ok("licence", "issue", "--customer", "Acme", "--product", "cad", "--plan", "node",
                             "--seats", "2")  # fmt: skip
    listed = installation.admin("licence", "list")
    assert listed.exit_code == 0
    header, row = listed.stdout.splitlines()[:2]
    assert header.split()[:3] == ["ID", "CUSTOMER", "CUSTOMER_ID"] and row.startswith(issued["id"])
    assert "{" not in listed.stdout
    shown = installation.admin("licence", "show", issued["id"]).stdout
    assert re.search(r"^seats\s+2$", shown, re.M) and re.search(r"^maintenance\.state\s+current$", shown, re.M)
    assert "terms:" in shown and "AUTO_RENEW" in shown
    assert installation.ok("licence", "show", issued["id"])["seats"] == 2  # --json: the document itself
    assert installation.admin("plan", "retire", "node").stdout.startswith("id ")
    empty = installation.admin("transfer", "list")
    assert empty.stdout.strip() == "(none)"
