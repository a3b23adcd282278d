"""Where the network state lives: the host, or a named network namespace.

Everything Basalt does to the kernel goes through a `Namespace`, so pointing a
manager at a test namespace keeps the host's own networking untouched.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pyroute2 import IPRoute

from .errors import HostToolError

_TOOL_TIMEOUT = 30.0


class Namespace:
    """The host's network namespace (`name=None`) or the named one (`ip netns`)."""

    def __init__(self, name: str | None = None):
        if name is not None and not os.path.exists(f"/run/netns/{name}"):
            raise HostToolError(f"network namespace {name!r} does not exist")
        self.name = name

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"

    def iproute(self) -> IPRoute:
        """A pyroute2 RTNL socket inside this namespace (use as a context manager)."""
        # flags=0: never create a namespace by accident; it must already exist.
        from pyroute2 import IPRoute  # ~20 MiB: only once netlink is needed

        return IPRoute(netns=self.name, flags=0) if self.name else IPRoute()

    def argv(self, argv: Sequence[str]) -> list[str]:
        """`argv` prefixed so that it runs inside this namespace."""
        prefix = ["ip", "netns", "exec", self.name] if self.name else []
        return prefix + list(argv)

    def run(
        self, argv: Sequence[str], stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Run a tool inside the namespace; raise HostToolError with its stderr on failure."""
        full = self.argv(argv)
        try:
            result = subprocess.run(
                full,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=_TOOL_TIMEOUT,
                check=False,
            )
        except FileNotFoundError as exc:
            raise HostToolError(f"{full[0]} is not installed: {exc}") from None
        except subprocess.TimeoutExpired:
            raise HostToolError(f"{' '.join(full)} timed out after {_TOOL_TIMEOUT:.0f}s") from None
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()
            raise HostToolError(f"{' '.join(argv)} failed ({result.returncode}): {detail}")
        return result

    def read_sysctl(self, key: str) -> str:
        """Value of a sysctl as seen inside the namespace."""
        if self.name is None:
            with open("/proc/sys/" + key.replace(".", "/")) as f:
                return f.read().strip()
        return self.run(["sysctl", "-n", key]).stdout.strip()

    def write_sysctl(self, key: str, value: str) -> None:
        """Set a sysctl inside the namespace (per-namespace keys such as ip_forward)."""
        if self.name is None:
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(value)
            return
        self.run(["sysctl", "-qw", f"{key}={value}"])
