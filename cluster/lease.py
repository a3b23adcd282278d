"""A TTL lease kept alive in the background, with a ``lost`` signal.

A lease is Basalt's proof of life in etcd: keys put with it (a node's record, a
leader key, a volume's owner) vanish when it expires. Holders must stop acting on
it as soon as ``lost`` is set: etcd has (or may have) deleted those keys already,
and another node may have taken over.

``lost`` is set conservatively early, never late: when a keepalive answers that
the lease has expired, or when no keepalive has succeeded for the lease's TTL,
counted from the moment the last successful one was *sent* (etcd counted from
when it received it, which is later), so a holder cut off from etcd steps down
no later than etcd expires its keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from .etcd import Etcd, EtcdError

log = logging.getLogger("basalt.cluster.lease")


class Lease:
    """``async with Lease(etcd, ttl) as lease: etcd.put(k, v, lease=lease.id)``.

    Keepalives go every ``ttl/3`` seconds (sooner while they fail). ``close()``
    stops them and revokes the lease (its keys go at once).
    """

    def __init__(self, etcd: Etcd, ttl: int = 10):
        if ttl < 1:
            raise ValueError("lease ttl must be at least 1 second")
        self.etcd = etcd
        self.ttl = int(ttl)
        self.id: int | None = None
        self.lost = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closed = False

    @property
    def alive(self) -> bool:
        """Granted, not lost and not closed: keys on it may be trusted to exist."""
        return self.id is not None and not self.lost.is_set() and not self._closed

    async def start(self) -> Lease:
        """Grant the lease (raises EtcdError/EtcdUnavailable) and start keeping it alive."""
        if self.id is not None:
            raise RuntimeError("lease already started")
        sent = time.monotonic()
        self.id = await self.etcd.grant(self.ttl)
        self._task = asyncio.create_task(self._keepalive(sent), name=f"lease-{self.id:x}")
        return self

    async def __aenter__(self) -> Lease:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, revoke: bool = True) -> None:
        """Stop the keepalives; ``revoke`` (default) ends the lease in etcd now
        (best effort: if etcd cannot be reached the lease simply expires)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        # A lost lease is revoked too: after an etcd outage it may still live (a new
        # etcd leader renews every lease), holding keys for another TTL.
        if revoke and self.id is not None and not self.etcd.closed:
            try:
                await self.etcd.revoke(self.id)
            except EtcdError as exc:
                log.warning("lease %x not revoked (%s); it expires within %d s", self.id, exc, self.ttl)

    async def _keepalive(self, last_ok: float) -> None:
        """Refresh until expired, unreachable past the TTL, or cancelled."""
        assert self.id is not None
        deadline = last_ok + self.ttl
        interval = self.ttl / 3
        retry = min(interval, 0.5)
        wait = interval
        while True:
            await asyncio.sleep(max(0.0, min(wait, deadline - time.monotonic())))
            left = deadline - time.monotonic()
            if left <= 0:
                return self._lose("no keepalive succeeded within the TTL")
            sent = time.monotonic()
            try:
                ttl = await asyncio.wait_for(self.etcd.keepalive(self.id), timeout=left)
            except (TimeoutError, EtcdError) as exc:
                if time.monotonic() >= deadline:
                    return self._lose(f"etcd unreachable for the TTL: {exc}")
                wait = retry
                continue
            if ttl <= 0:
                return self._lose("etcd says the lease has expired")
            deadline = sent + ttl
            wait = interval

    def _lose(self, why: str) -> None:
        log.warning("lease %x lost: %s", self.id or 0, why)
        self.lost.set()
