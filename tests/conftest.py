"""Fixtures shared by every test package."""

import pytest


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
