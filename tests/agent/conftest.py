"""Fixtures for the agent's tests; the fakes themselves live in agent_fakes.py."""

from agent_fakes import fake_server, install, machine, other_machine, vendor

__all__ = ["fake_server", "install", "machine", "other_machine", "vendor"]
