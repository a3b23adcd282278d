"""Fixtures shared by every test package."""

import compileall
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def pytest_configure(config):
    """Compile the project's modules to bytecode once, before any test runs.

    Under PYTHONDONTWRITEBYTECODE no process caches what it compiles, so each of
    the suite's hundreds of ``basalt`` processes (servers, their workers, CLI
    calls) compiled every module it imports from source again: ~2 s of a
    server's start. Bytecode next to the source (``__pycache__``, ignored by git)
    is checked against the source's mtime and size as Python always does, so an
    edited module is compiled afresh.
    """
    for package in sorted(p.parent for p in ROOT.glob("*/__init__.py")):
        compileall.compile_dir(package, quiet=1)


@pytest.fixture
def fake_serve(monkeypatch):
    """``basalt serve`` that starts nothing: the ServeOptions it was given, in order."""
    import basalt.logs
    import basalt.server
    seen = []

    async def fake(opts):
        seen.append(opts)

    monkeypatch.setattr(basalt.server, "serve", fake)
    monkeypatch.setattr(basalt.logs, "setup", lambda level: None)
    return seen
