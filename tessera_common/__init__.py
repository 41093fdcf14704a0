"""Code the server and the agent share; imports neither of them (import-linter keeps it so)."""
