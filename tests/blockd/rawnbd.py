"""A minimal blocking NBD client over a raw socket, for protocol edge cases.

Real clients never send malformed options or out-of-range requests; this one
sends whatever a test asks for and returns exactly what the server answered.
"""

from __future__ import annotations

import socket
import struct

from blockd import protocol as p


class Closed(Exception):
    """The server closed the connection."""


class RawClient:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(10)

    @classmethod
    def tcp(cls, port: int, host: str = "127.0.0.1") -> RawClient:
        return cls(socket.create_connection((host, port)))

    @classmethod
    def unix(cls, path: str) -> RawClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        return cls(sock)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- bytes --------------------------------------------------------------

    def recv(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise Closed(f"closed after {len(out)} of {n} bytes")
            out += chunk
        return bytes(out)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def is_closed(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the connection (waits up to ``timeout``)."""
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(10)

    # --- handshake ----------------------------------------------------------

    def greet(self, client_flags: int = p.FLAG_C_FIXED_NEWSTYLE | p.FLAG_C_NO_ZEROES) -> int:
        magic, opt_magic, flags = p.S_GREETING.unpack(self.recv(p.S_GREETING.size))
        assert (magic, opt_magic) == (p.NBDMAGIC, p.IHAVEOPT)
        self.send(p.S_U32.pack(client_flags))
        return flags

    def option(self, option: int, data: bytes = b"", length: int | None = None) -> None:
        n = len(data) if length is None else length
        self.send(p.S_OPTION.pack(p.IHAVEOPT, option, n) + data)

    def reply(self) -> tuple[int, int, bytes]:
        """One option reply: (option, reply type, data)."""
        magic, option, rtype, length = p.S_OPTION_REPLY.unpack(self.recv(p.S_OPTION_REPLY.size))
        assert magic == p.REPLY_MAGIC, hex(magic)
        return option, rtype, self.recv(length) if length else b""

    def replies(self) -> list[tuple[int, bytes]]:
        """Replies up to and including the final one (ACK or an error)."""
        out = []
        while True:
            _, rtype, data = self.reply()
            out.append((rtype, data))
            if rtype == p.REP_ACK or rtype & (1 << 31):
                return out

    def request_option(self, option: int, data: bytes = b"") -> list[tuple[int, bytes]]:
        self.option(option, data)
        return self.replies()

    @staticmethod
    def info_data(name: str, infos: tuple[int, ...] = ()) -> bytes:
        raw = name.encode()
        return (
            p.S_U32.pack(len(raw))
            + raw
            + p.S_U16.pack(len(infos))
            + b"".join(p.S_U16.pack(i) for i in infos)
        )

    @staticmethod
    def meta_data(name: str, queries: list[str]) -> bytes:
        raw = name.encode()
        body = p.S_U32.pack(len(raw)) + raw + p.S_U32.pack(len(queries))
        for q in queries:
            body += p.S_U32.pack(len(q.encode())) + q.encode()
        return body

    def go(self, name: str, *, structured: bool = True, meta: bool = True,
           infos: tuple[int, ...] = ()) -> dict:
        """Negotiate and enter transmission; returns size, flags and the replies."""
        self.structured = structured
        self.context_id = None
        if structured:
            assert self.request_option(p.OPT_STRUCTURED_REPLY)[-1][0] == p.REP_ACK
            if meta:
                replies = self.request_option(
                    p.OPT_SET_META_CONTEXT, self.meta_data(name, [p.META_BASE_ALLOCATION])
                )
                assert replies[-1][0] == p.REP_ACK, replies
                self.context_id = p.S_U32.unpack(replies[0][1][:4])[0]
        replies = self.request_option(p.OPT_GO, self.info_data(name, infos))
        assert replies[-1][0] == p.REP_ACK, replies
        result = {"replies": replies}
        for rtype, data in replies:
            if rtype == p.REP_INFO and p.S_U16.unpack(data[:2])[0] == p.INFO_EXPORT:
                _, result["size"], result["flags"] = p.S_INFO_EXPORT.unpack(data)
        return result

    # --- transmission ---------------------------------------------------------

    def request(self, cmd: int, handle: int, offset: int = 0, length: int = 0,
                flags: int = 0, data: bytes = b"") -> None:
        self.send(p.S_REQUEST.pack(p.REQUEST_MAGIC, flags, cmd, handle, offset, length) + data)

    def simple_reply(self, read_length: int = 0) -> tuple[int, int, bytes]:
        """(handle, error, data) of a simple reply; data only for a successful read."""
        magic, error, handle = p.S_SIMPLE_REPLY.unpack(self.recv(p.S_SIMPLE_REPLY.size))
        assert magic == p.SIMPLE_REPLY_MAGIC, hex(magic)
        data = self.recv(read_length) if read_length and not error else b""
        return handle, error, data

    def chunk(self) -> tuple[int, int, int, bytes]:
        """(flags, type, handle, payload) of one reply; simple replies come back as type -1."""
        (magic,) = struct.unpack(">I", self.recv(4))
        if magic == p.SIMPLE_REPLY_MAGIC:
            error, handle = struct.unpack(">IQ", self.recv(12))
            return p.REPLY_FLAG_DONE, -1, handle, p.S_U32.pack(error)
        assert magic == p.STRUCTURED_REPLY_MAGIC, hex(magic)
        flags, rtype, handle, length = struct.unpack(">HHQI", self.recv(16))
        return flags, rtype, handle, self.recv(length) if length else b""

    def structured_reply(self) -> tuple[int, list[tuple[int, bytes]]]:
        """All chunks of one (uninterleaved) structured reply: (handle, [(type, payload)])."""
        chunks = []
        while True:
            flags, rtype, handle, payload = self.chunk()
            chunks.append((rtype, payload))
            if flags & p.REPLY_FLAG_DONE:
                return handle, chunks

    def reply_error(self) -> tuple[int, int]:
        """(handle, errno) of a payload-less reply in either format (0 on success)."""
        if not getattr(self, "structured", False):
            handle, error, _ = self.simple_reply()
            return handle, error
        handle, chunks = self.structured_reply()
        for rtype, payload in chunks:
            if rtype == -1 or rtype & (1 << 15):
                return handle, p.S_U32.unpack(payload[:4])[0]
        return handle, 0

    def read(self, handle: int, offset: int, length: int, flags: int = 0) -> tuple[int, bytes]:
        """Issue a READ and assemble its reply: (errno, data)."""
        self.request(p.CMD_READ, handle, offset, length, flags)
        if not getattr(self, "structured", False):
            h, error, data = self.simple_reply(length)
            assert h == handle
            return error, data
        h, chunks = self.structured_reply()
        assert h == handle
        return assemble_read(offset, length, chunks)


def assemble_read(offset: int, length: int, chunks: list[tuple[int, bytes]]) -> tuple[int, bytes]:
    """(errno, data) from the chunks of a structured READ reply."""
    for rtype, payload in chunks:
        if rtype & (1 << 15):
            return p.S_U32.unpack(payload[:4])[0], b""
    out = bytearray(length)
    covered = 0
    for rtype, payload in chunks:
        if rtype == p.REPLY_TYPE_OFFSET_DATA:
            (start,) = p.S_U64.unpack(payload[:8])
            data = payload[8:]
            out[start - offset : start - offset + len(data)] = data
            covered += len(data)
        elif rtype == p.REPLY_TYPE_OFFSET_HOLE:
            start, n = p.S_OFFSET_HOLE.unpack(payload)
            covered += n
    assert covered == length, (covered, length)
    return 0, bytes(out)
