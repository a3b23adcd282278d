"""Fixed-newstyle option haggling: from the greeting to the chosen export.

:class:`Handshake` reads options from a connection until the client picks an
export (NBD_OPT_GO or NBD_OPT_EXPORT_NAME), aborts, or breaks the protocol.
Refusals that the protocol can express (unknown export, malformed option,
unsupported option) are answered with an error reply and the client may try
again; only violations it cannot express end the connection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from . import protocol as p
from .export import Export, ExportRegistry, NBDError

__all__ = ["Handshake", "Session", "ProtocolViolation", "transmission_flags"]

log = logging.getLogger("blockd.nbd")

# Option payloads are tiny (names, queries); anything bigger is refused
# with NBD_REP_ERR_TOO_BIG after draining it, and past the drain limit the
# client is treated as hostile.
MAX_OPTION_DATA = 64 * 1024
MAX_OPTION_DRAIN = 16 * 1024 * 1024
# Bounds a client that haggles forever; nbdinfo --list spends two per export.
MAX_OPTIONS = 10_000
BASE_ALLOCATION_ID = 1


class ProtocolViolation(Exception):
    """The client broke a MUST of the protocol: the connection is dropped."""


class Channel(Protocol):
    """What the handshake needs from a connection."""

    async def read(self, n: int) -> bytes: ...

    async def skip(self, n: int) -> None: ...

    def write(self, data: bytes) -> None: ...


@dataclass
class Session:
    """The outcome of a successful handshake."""

    export: Export
    name: str  # as the client asked for it
    flags: int  # transmission flags sent to the client
    structured: bool
    meta_context: int | None  # base:allocation context id, when selected


def transmission_flags(export: Export, structured: bool) -> int:
    """The transmission flags advertised for ``export``."""
    flags = p.FLAG_HAS_FLAGS
    if export.can_flush:
        flags |= p.FLAG_SEND_FLUSH
    if export.can_multi_conn:
        flags |= p.FLAG_CAN_MULTI_CONN
    if export.can_cache:
        flags |= p.FLAG_SEND_CACHE
    if structured:
        flags |= p.FLAG_SEND_DF
    if export.read_only:
        return flags | p.FLAG_READ_ONLY
    if export.can_fua or export.can_flush:
        flags |= p.FLAG_SEND_FUA
    if export.can_trim:
        flags |= p.FLAG_SEND_TRIM
    if export.can_zero:
        flags |= p.FLAG_SEND_WRITE_ZEROES
        if export.can_fast_zero:
            flags |= p.FLAG_SEND_FAST_ZERO
    return flags


class _Invalid(Exception):
    """An option the client may retry: answered with ``reply`` and ``message``."""

    def __init__(self, reply: int, message: str) -> None:
        super().__init__(message)
        self.reply = reply


def _decode(raw: bytes, what: str) -> str:
    if len(raw) > p.MAX_STRING:
        raise _Invalid(p.REP_ERR_TOO_BIG, f"{what} longer than {p.MAX_STRING} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Invalid(p.REP_ERR_INVALID, f"{what} is not UTF-8") from None
    if "\0" in text:
        raise _Invalid(p.REP_ERR_INVALID, f"{what} contains NUL")
    return text


class _Reader:
    """Bounds-checked parsing of one option's payload."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise _Invalid(p.REP_ERR_INVALID, "option data shorter than its fields")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def u16(self) -> int:
        return p.S_U16.unpack(self.take(2))[0]

    def u32(self) -> int:
        return p.S_U32.unpack(self.take(4))[0]

    def string(self, what: str) -> str:
        return _decode(self.take(self.u32()), what)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise _Invalid(p.REP_ERR_INVALID, "trailing bytes after option data")


class Handshake:
    """Negotiates one connection; :meth:`run` returns the session or None on abort."""

    def __init__(self, channel: Channel, registry: ExportRegistry) -> None:
        self.ch = channel
        self.registry = registry
        self.no_zeroes = False
        self.structured = False
        self.meta: tuple[str, int] | None = None  # (export name, context id)
        self.requested = "-"  # last export name asked for, for the connection's log line
        self._handlers = {
            p.OPT_GO: self._info_or_go,
            p.OPT_INFO: self._info_or_go,
            p.OPT_LIST: self._list,
            p.OPT_STRUCTURED_REPLY: self._structured_reply,
            p.OPT_LIST_META_CONTEXT: self._meta_context,
            p.OPT_SET_META_CONTEXT: self._meta_context,
            p.OPT_ABORT: self._abort,
        }

    async def run(self) -> Session | None:
        """Greet the client and haggle until it picks an export."""
        self.ch.write(p.greeting())
        (cflags,) = p.S_U32.unpack(await self.ch.read(4))
        if cflags & ~p.KNOWN_CLIENT_FLAGS:
            raise ProtocolViolation(f"unknown client flags {cflags:#x}")
        self.no_zeroes = bool(cflags & p.FLAG_C_NO_ZEROES)
        # Clients without FLAG_C_FIXED_NEWSTYLE are served as fixed newstyle
        # anyway, as the spec allows: the only option they send is EXPORT_NAME.
        for _ in range(MAX_OPTIONS):
            magic, option, length = p.S_OPTION.unpack(await self.ch.read(p.S_OPTION.size))
            if magic != p.IHAVEOPT:
                raise ProtocolViolation(f"bad option magic {magic:#x}")
            if length > MAX_OPTION_DATA:
                if option == p.OPT_EXPORT_NAME or length > MAX_OPTION_DRAIN:
                    raise ProtocolViolation(f"option {option} of {length} bytes")
                await self.ch.skip(length)
                self._reply(option, p.REP_ERR_TOO_BIG, b"option data too long")
                continue
            data = await self.ch.read(length) if length else b""
            if option == p.OPT_EXPORT_NAME:
                return await self._export_name(data)
            handler = self._handlers.get(option)
            if handler is None:
                name = p.OPTION_NAMES.get(option, str(option))
                self._reply(option, p.REP_ERR_UNSUP, f"{name} is not supported".encode())
                continue
            try:
                # False: keep haggling; None: the client aborted; a Session: GO.
                result = await handler(option, data)
            except _Invalid as exc:
                self._reply(option, exc.reply, str(exc).encode())
                continue
            if result is not False:
                return result
        raise ProtocolViolation(f"more than {MAX_OPTIONS} options")

    def _reply(self, option: int, reply: int, data: bytes = b"") -> None:
        self.ch.write(p.option_reply(option, reply, data))

    async def _abort(self, option: int, data: bytes) -> None:
        self._reply(option, p.REP_ACK)
        return None

    async def _list(self, option: int, data: bytes) -> bool:
        if data:
            raise _Invalid(p.REP_ERR_INVALID, "NBD_OPT_LIST takes no data")
        try:
            listing = await self.registry.listing()
        except Exception:
            log.exception("nbd export listing failed")
            raise _Invalid(p.REP_ERR_PLATFORM, "cannot list exports now") from None
        for name, description in listing:
            raw = name.encode()
            if len(raw) <= p.MAX_STRING:
                # The description after the name is what nbdinfo --list shows.
                desc = description.encode()[: p.MAX_STRING]
                self._reply(option, p.REP_SERVER, p.S_U32.pack(len(raw)) + raw + desc)
        self._reply(option, p.REP_ACK)
        return False

    async def _structured_reply(self, option: int, data: bytes) -> bool:
        if data:
            raise _Invalid(p.REP_ERR_INVALID, "NBD_OPT_STRUCTURED_REPLY takes no data")
        self.structured = True
        self._reply(option, p.REP_ACK)
        return False

    async def _lookup(self, name: str) -> Export:
        self.requested = name
        try:
            export = await self.registry.lookup(name)
        except Exception:
            log.exception("nbd export lookup failed", extra={"fields": {"export": name}})
            raise _Invalid(p.REP_ERR_UNKNOWN, f"export {name!r} is unavailable") from None
        if export is None:
            raise _Invalid(p.REP_ERR_UNKNOWN, f"no export named {name!r}")
        return export

    async def _open(self, export: Export) -> None:
        try:
            await export.open()
        except NBDError as exc:
            reply = p.REP_ERR_POLICY if p.wire_errno(exc.errno) == p.EPERM else p.REP_ERR_UNKNOWN
            raise _Invalid(reply, f"cannot open export {export.name!r}: {exc}") from None
        except Exception:
            log.exception("nbd export open failed", extra={"fields": {"export": export.name}})
            raise _Invalid(p.REP_ERR_UNKNOWN, f"export {export.name!r} is unavailable") from None

    def _session(self, export: Export, name: str) -> Session:
        meta = None
        if self.meta is not None and self.meta[0] == name:
            meta = self.meta[1]
        flags = transmission_flags(export, self.structured)
        return Session(export, name, flags, self.structured, meta)

    async def _export_name(self, data: bytes) -> Session:
        # NBD_OPT_EXPORT_NAME cannot carry an error: every refusal is a hang-up.
        try:
            name = _decode(data, "export name")
            export = await self._lookup(name)
            await self._open(export)
        except _Invalid as exc:
            raise ProtocolViolation(str(exc)) from None
        session = self._session(export, name)
        reply = p.S_EXPORT_NAME_REPLY.pack(export.size, session.flags)
        self.ch.write(reply if self.no_zeroes else reply + p.EXPORT_NAME_ZEROES)
        return session

    async def _info_or_go(self, option: int, data: bytes) -> Session | bool:
        r = _Reader(data)
        name = r.string("export name")
        infos = {r.u16() for _ in range(r.u16())}
        r.end()
        export = await self._lookup(name)
        go = option == p.OPT_GO
        if go:
            await self._open(export)
        session = self._session(export, name)
        # NBD_INFO_EXPORT is mandatory even when not asked for (QEMU never
        # asks). Block sizes go out unasked too: clients that did not request
        # them may ignore them, and misaligned requests are refused cleanly.
        self._info(option, p.S_INFO_EXPORT.pack(p.INFO_EXPORT, export.size, session.flags))
        if p.INFO_NAME in infos:
            self._info(option, p.S_U16.pack(p.INFO_NAME) + export.name.encode()[: p.MAX_STRING])
        if p.INFO_DESCRIPTION in infos and export.description:
            desc = export.description.encode()[: p.MAX_STRING]
            self._info(option, p.S_U16.pack(p.INFO_DESCRIPTION) + desc)
        self._info(
            option,
            p.S_INFO_BLOCK_SIZE.pack(
                p.INFO_BLOCK_SIZE,
                export.minimum_block_size,
                export.preferred_block_size,
                export.maximum_block_size,
            ),
        )
        self._reply(option, p.REP_ACK)
        return session if go else False

    def _info(self, option: int, payload: bytes) -> None:
        self._reply(option, p.REP_INFO, payload)

    async def _meta_context(self, option: int, data: bytes) -> bool:
        setting = option == p.OPT_SET_META_CONTEXT
        if setting:
            # A SET replaces the previous selection even when it fails.
            self.meta = None
            if not self.structured:
                raise _Invalid(p.REP_ERR_INVALID, "negotiate structured replies first")
        r = _Reader(data)
        name = r.string("export name")
        queries = [r.string("query") for _ in range(r.u32())]
        r.end()
        await self._lookup(name)
        if not queries and not setting:
            matches = True  # an empty LIST query asks for every context
        else:
            wanted = {p.META_BASE_ALLOCATION} if setting else {p.META_BASE_ALLOCATION, "base:"}
            # Unknown namespaces and leaves are ignored, never an error.
            matches = any(q in wanted for q in queries)
        if matches:
            context_id = BASE_ALLOCATION_ID if setting else 0
            body = p.S_U32.pack(context_id) + p.META_BASE_ALLOCATION.encode()
            self._reply(option, p.REP_META_CONTEXT, body)
            if setting:
                self.meta = (name, context_id)
        self._reply(option, p.REP_ACK)
        return False
