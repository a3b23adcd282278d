"""Daemons Basalt starts and finds again by their pid files (dnsmasq, libvirtd)."""

from __future__ import annotations

from collections.abc import Callable


def alive(pid: int) -> bool:
    """Whether `pid` is a running process (not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # State is the field after the parenthesised command name.
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def pid_from_file(path: str, matches: Callable[[list[bytes]], bool]) -> int | None:
    """The live process whose pid `path` holds, if its argv satisfies `matches`.

    The pid file alone is not trusted: after a crash or reboot its pid may
    belong to an unrelated process.
    """
    try:
        with open(path) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return None
    if pid <= 0 or not alive(pid):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return None
    return pid if argv and matches(argv) else None
