"""Leader election for a cluster-wide background job ("heal", "lifecycle", ...).

Each candidate holds a lease and tries to create ``/basalt/leader/NAME`` with
its node name on that lease; etcd lets exactly one create succeed. The winner
is leader for as long as its lease lives; when it resigns, dies or is cut off
from etcd, the lease ends (revoked, or expired after its TTL), etcd deletes the
key and the others, watching it, race to create it again.

A leader must check :attr:`Election.is_leader` (or wait on
:meth:`wait_not_leader`) before acting: it turns False as soon as the lease is
lost, which is no later than etcd lets another node win.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .etcd import Etcd, EtcdError
from .lease import Lease

log = logging.getLogger("basalt.cluster.election")

LEADER_PREFIX = "/basalt/leader/"


class Election:
    """Campaign for leadership of job ``name`` as ``node``.

    ``await election.campaign()`` starts campaigning in the background (and
    returns at once); ``is_leader`` tells whether this node leads now;
    ``resign()`` stops campaigning and gives the role up at once.
    Also ``async with Election(...) as election:``.
    """

    def __init__(self, etcd: Etcd, name: str, node: str, ttl: int = 10):
        if not name or "/" in name:
            raise ValueError(f"bad election name {name!r}")
        self.etcd = etcd
        self.name = name
        self.node = node
        self.ttl = ttl
        self.key = LEADER_PREFIX + name
        self.lease: Lease | None = None
        self._leading = False
        self._elected = asyncio.Event()
        self._follower = asyncio.Event()
        self._follower.set()
        self._task: asyncio.Task | None = None

    @property
    def is_leader(self) -> bool:
        return self._leading and self.lease is not None and self.lease.alive

    async def leader(self) -> str | None:
        """The node leading now, as etcd says (None when nobody leads)."""
        found = await self.etcd.get(self.key)
        return found[0].decode() if found else None

    async def wait_elected(self) -> None:
        """Until this node is leader."""
        await self._elected.wait()

    async def wait_not_leader(self) -> None:
        """Until this node is not (or no longer) leader."""
        await self._follower.wait()

    async def campaign(self) -> Election:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"election-{self.name}")
        return self

    async def __aenter__(self) -> Election:
        return await self.campaign()

    async def __aexit__(self, *exc: object) -> None:
        await self.resign()

    async def resign(self) -> None:
        """Stop campaigning; if leading, give the role up now (the lease is
        revoked, so the others see the key go without waiting for the TTL)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._set_leading(False)
        lease, self.lease = self.lease, None
        if lease is not None:
            await lease.close(revoke=True)

    def _set_leading(self, leading: bool) -> None:
        if leading != self._leading:
            log.info("%s %s leadership of %s", self.node, "took" if leading else "lost", self.name)
        self._leading = leading
        if leading:
            self._follower.clear()
            self._elected.set()
        else:
            self._elected.clear()
            self._follower.set()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                await self._round()
                backoff = 0.1
            except EtcdError as exc:
                self._set_leading(False)
                log.debug("election %s: %s", self.name, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, max(1.0, self.ttl / 3))

    async def _round(self) -> None:
        """One attempt: get a live lease, try to win, then lead or wait for a vacancy."""
        if self.lease is None or not self.lease.alive:
            if self.lease is not None:
                await self.lease.close()
            self.lease = None
            lease = Lease(self.etcd, self.ttl)
            await lease.start()
            self.lease = lease
        lease = self.lease
        if await self.etcd.create(self.key, self.node, lease=lease.id):
            await self._lead(lease)
            return
        found = await self.etcd.get(self.key)
        if found is not None:   # wait for a vacancy (or ttl: then poll again)
            await self._watch_key(lease, found[1] + 1, deletes_only=True)

    async def _lead(self, lease: Lease) -> None:
        """Leader until the lease is lost or the key is no longer ours (deleted
        or overwritten by hand). etcd being unreachable alone does not end it:
        the lease decides that, after its TTL."""
        found = await self.etcd.get(self.key)
        if found is None or found[0] != self.node.encode():
            return
        self._set_leading(True)
        try:
            while lease.alive:
                if await self._watch_key(lease, found[1] + 1, deletes_only=False):
                    return
                try:
                    now = await self.etcd.get(self.key)
                except EtcdError:
                    continue
                if now is None or now[0] != self.node.encode():
                    return
                found = now
        finally:
            self._set_leading(False)

    async def _watch_key(self, lease: Lease, start_revision: int, *, deletes_only: bool) -> bool:
        """True when the key changed (was deleted) from ``start_revision`` on;
        False when the lease was lost or ``ttl`` seconds passed first."""
        watch = self.etcd.watch(self.key, start_revision=start_revision)

        async def changed() -> None:
            async for event in watch:
                if event.type == "DELETE" or not deletes_only:
                    return

        lost = asyncio.create_task(lease.lost.wait())
        change = asyncio.create_task(changed())
        try:
            await asyncio.wait({lost, change}, timeout=self.ttl, return_when=asyncio.FIRST_COMPLETED)
            return change.done() and not change.cancelled() and change.exception() is None
        finally:
            for task in (lost, change):
                task.cancel()
            await watch.close()
            await asyncio.gather(lost, change, return_exceptions=True)
