"""`basalt quotas` commands (being built for issue 14)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def register(sub: Any, add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the commands to the CLI."""
