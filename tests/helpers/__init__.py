"""Test helpers (modules, not conftest files): import them as ``tests.helpers.<module>``."""
