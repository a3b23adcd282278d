"""The audit log: one JSON line per request in ``DATA_DIR/logs/audit.jsonl``.

(Being built for issue 14: until then nothing is written.)
"""

from __future__ import annotations

from typing import Any


class AuditLog:
    """Appends request records to the audit log."""

    def record(self, request: Any, op: str, route: Any, status: int, error: str,
               bytes_in: int, bytes_out: int, elapsed: float) -> None:
        """Write one request's line."""


def open_log(data_dir: str | None) -> AuditLog | None:
    """The audit log of a server's data dir (None: no data dir, nothing logged)."""
    return None
