"""Tessera client agent: fingerprint, offline entitlement check, local API, daemon.

For Python products, the in-process check:

    from client_agent import Checker
    verdict = Checker(state_dir="/var/lib/tessera-agent", jwks="/etc/tessera/jwks.json").check(
        "cad-pro", "5.2", "2026-03-01")
    if not verdict.ok:
        sys.exit(f"licence: {verdict.code}: {verdict.detail}")

The state directory may hold seats of several products and licences: a check asks
its product's seats (`licence=` narrows it to one licence).

Names are imported lazily so that `import client_agent` costs nothing.
"""

from __future__ import annotations

TYPE_CHECKING = False  # importing typing would cost `tessera-agent check` a fifth of its start-up
if TYPE_CHECKING:
    from typing import Any

    from client_agent.checker import Checker
    from client_agent.verdict import Verdict

__all__ = ["Checker", "Verdict"]


def __getattr__(name: str) -> Any:
    if name == "Checker":
        from client_agent.checker import Checker

        return Checker
    if name == "Verdict":
        from client_agent.verdict import Verdict

        return Verdict
    raise AttributeError(f"module 'client_agent' has no attribute {name!r}")
