"""Shared fixtures: tiny GGUF models come from MAGI's own pytest plugin."""

pytest_plugins = ["magi.testing.fixtures"]
