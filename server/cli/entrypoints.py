"""The console scripts `tessera-server` and `tessera-admin`, guarded for a light install.

`pip install tessera` brings the agent alone; the server's dependencies come with the `server`
extra. Without them the server's modules would fail on their first import with a traceback
naming one module; this says in one line what is missing and what installs it. Only the
standard library is imported here, before the check.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable

# Import name → distribution in the `server` extra of pyproject.toml (a test keeps them equal).
SERVER_MODULES: dict[str, str] = {
    "sqlalchemy": "SQLAlchemy",
    "asyncpg": "asyncpg",
    "alembic": "alembic",
    "jwt": "PyJWT",
    "pydantic": "pydantic",
    "orjson": "orjson",
    "prometheus_client": "prometheus-client",
    "nacl": "PyNaCl",
    "aiohttp_jinja2": "aiohttp-jinja2",
    "jinja2": "Jinja2",
    "argon2": "argon2-cffi",
    "pyotp": "pyotp",
    "aiosmtplib": "aiosmtplib",
    "standardwebhooks": "standardwebhooks",
    "multidict": "multidict",
    "tqdm": "tqdm",
    "greenlet": "greenlet",
}
INSTALL_HINT = "pip install 'tessera[server]'"


def missing_server_distributions() -> list[str]:
    return [dist for module, dist in SERVER_MODULES.items() if importlib.util.find_spec(module) is None]


def _guarded(prog: str, load: Callable[[], Callable[[], int]]) -> int:
    missing = missing_server_distributions()
    if missing:
        from server.cli.kit import CliError, fail

        detail = f"{prog} needs the server's dependencies, not installed here ({', '.join(missing)}): {INSTALL_HINT}"
        return fail("--json" in sys.argv[1:], CliError("server-dependencies-missing", detail))
    return load()()


def _server() -> Callable[[], int]:
    from server.cli.server import main

    return main


def _admin() -> Callable[[], int]:
    from server.cli.admin import main

    return main


def server_main() -> int:
    return _guarded("tessera-server", _server)


def admin_main() -> int:
    return _guarded("tessera-admin", _admin)
