"""Where Basalt keeps its state, and the settings `basalt serve` was given.

The data directory holds ``basalt.json`` (the disk list the server runs on, so
later commands and restarts find the same disks), ``credentials.json`` and, on
the embedded default, the disk directories themselves.
"""

from __future__ import annotations

import json
import os
import re

DEFAULT_DATA_DIR = "basalt-data"
DEFAULT_DISKS = 4
SETTINGS_FILE = "basalt.json"


class ConfigError(ValueError):
    """A setting is malformed or inconsistent; the message says which."""


def parse_ec(text: str) -> tuple[int, int]:
    """``"4+2"`` → (4, 2)."""
    m = re.fullmatch(r"\s*(\d+)\s*\+\s*(\d+)\s*", text or "")
    if not m:
        raise ConfigError(f"erasure coding must look like K+M (e.g. 4+2), not {text!r}")
    k, parity = int(m.group(1)), int(m.group(2))
    if k < 1:
        raise ConfigError("erasure coding needs at least one data shard")
    return k, parity


def parse_address(text: str, default_port: int) -> tuple[str, int]:
    """``"127.0.0.1:9000"``, ``"[::1]:9000"``, ``":9000"`` or ``"host"`` → (host, port)."""
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:\[\]]*)(?::(\d+))?", text.strip())
    if not m:
        raise ConfigError(f"not an address: {text!r} (expected HOST:PORT)")
    host = m.group(1) or m.group(3) or "127.0.0.1"
    port = int(m.group(2) or m.group(4) or default_port)
    if not 0 <= port <= 65535:
        raise ConfigError(f"port out of range in {text!r}")
    return host, port


def load_settings(data_dir: str) -> dict:
    path = os.path.join(data_dir, SETTINGS_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ConfigError(f"{path} is damaged: {exc}") from None


def save_settings(data_dir: str, settings: dict) -> None:
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, SETTINGS_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def disk_paths(data_dir: str, disks: list[str] | None) -> list[str]:
    """The disks to run on: those given, else those used last time, else the default."""
    if disks:
        return [os.path.abspath(d) for d in disks]
    stored = load_settings(data_dir).get("disks")
    if stored:
        return stored
    return [os.path.abspath(os.path.join(data_dir, "disks", f"disk{i}"))
            for i in range(DEFAULT_DISKS)]


def inside(path: str, data_dir: str) -> bool:
    """Whether ``path`` lies in ``data_dir``: such disk directories (the embedded
    default) are recreated when deleted; disks given elsewhere never are, since a
    missing one is a disk that failed to appear (see storaged/mounts.py)."""
    real, home = os.path.realpath(path), os.path.realpath(data_dir)
    return os.path.commonpath([real, home]) == home


_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1000, "KIB": 1 << 10, "M": 1 << 20, "MB": 10**6,
          "MIB": 1 << 20, "G": 1 << 30, "GB": 10**9, "GIB": 1 << 30, "T": 1 << 40,
          "TB": 10**12, "TIB": 1 << 40}


def parse_size(text: str) -> int:
    """``10G`` → 10 GiB (K/M/G/T are binary, as qemu-img's; KB/MB/GB decimal)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text or "")
    unit = m.group(2).upper() if m else None
    if not m or unit not in _UNITS:
        raise ConfigError(f"not a size: {text!r} (e.g. 512M, 10G, 1T)")
    value = int(float(m.group(1)) * _UNITS[unit])
    if value <= 0:
        raise ConfigError("a size must be positive")
    return value
