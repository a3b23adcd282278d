"""Is there a volume of that name? Asked the way QEMU will ask: over NBD.

Before a VM is defined, Basalt checks its volume through the same NBD Unix
socket QEMU will open (fixed newstyle handshake, ``NBD_OPT_INFO``, then
``NBD_OPT_ABORT``): the volume exists, is writable, and the socket works.
Blocking; call it through ``asyncio.to_thread`` from asyncio code.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from blockd import protocol as p

from .errors import VolumeUnavailableError

_TIMEOUT = 10.0


@dataclass(frozen=True)
class ExportInfo:
    name: str
    size: int
    read_only: bool


def _recv(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("the NBD server closed the connection")
        buf += chunk
    return bytes(buf)


def export_info(socket_path: str, name: str, timeout: float = _TIMEOUT) -> ExportInfo | None:
    """Size and writability of export `name` at the NBD socket, or None if it does not exist.

    Raises VolumeUnavailableError (503) when the NBD server cannot be reached.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(socket_path)
            magic, opt, hs_flags = struct.unpack(">QQH", _recv(sock, 18))
            if magic != p.NBDMAGIC or opt != p.IHAVEOPT:
                raise VolumeUnavailableError(
                    f"{socket_path} is not a newstyle NBD server", status=503,
                    code="VolumeServiceUnavailable")
            sock.sendall(struct.pack(">I", p.FLAG_C_FIXED_NEWSTYLE
                                     | (hs_flags & p.FLAG_C_NO_ZEROES)))
            raw = name.encode()
            payload = struct.pack(">I", len(raw)) + raw + struct.pack(">H", 0)
            sock.sendall(struct.pack(">QII", p.IHAVEOPT, p.OPT_INFO, len(payload)) + payload)
            info: ExportInfo | None = None
            while True:
                _, _, kind, length = struct.unpack(">QIII", _recv(sock, 20))
                data = _recv(sock, length) if length else b""
                if kind == p.REP_ACK:
                    break
                if kind == p.REP_INFO and len(data) >= 12 and \
                        struct.unpack(">H", data[:2])[0] == p.INFO_EXPORT:
                    size, flags = struct.unpack(">QH", data[2:12])
                    info = ExportInfo(name, size, bool(flags & p.FLAG_READ_ONLY))
                elif kind in (p.REP_ERR_UNKNOWN, p.REP_ERR_INVALID):
                    info = None
                    break
                elif kind & (1 << 31):
                    raise VolumeUnavailableError(
                        f"NBD server refused volume {name!r}: "
                        f"{data.decode(errors='replace') or hex(kind)}",
                        status=503, code="VolumeServiceUnavailable")
            try:
                sock.sendall(struct.pack(">QII", p.IHAVEOPT, p.OPT_ABORT, 0))
            except OSError:
                pass
            return info
    except (OSError, ConnectionError, struct.error) as exc:
        raise VolumeUnavailableError(
            f"cannot reach the NBD server at {socket_path}: {exc}",
            status=503, code="VolumeServiceUnavailable") from None
