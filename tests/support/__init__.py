"""Helpers shared by the tests: services, reliability checks, strategies, tool venvs."""
