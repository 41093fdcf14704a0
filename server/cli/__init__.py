"""The command lines: `tessera-server` (server.py) and `tessera-admin` (admin.py, with a module per area and
units.py shared by them); kit.py holds what both share and what a light (agent-only) install may import."""
