"""NBD wire format: constants and precompiled structs, no I/O.

Names and values follow ``doc/proto.md`` of the NBD project (fixed newstyle
handshake, simple and structured replies). Everything on the wire is
big-endian. The server in :mod:`blockd.nbd_server` is the only user; tests use
the same helpers to speak the protocol from a raw socket.
"""

from __future__ import annotations

import errno as _errno
import struct

# --- magics -----------------------------------------------------------------

NBDMAGIC = 0x4E42444D41474943  # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054  # "IHAVEOPT", also the option request magic
REPLY_MAGIC = 0x0003E889045565A9  # option reply magic
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

# --- handshake flags (server, 16 bits) and client flags (32 bits) ----------

FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1
FLAG_C_FIXED_NEWSTYLE = 1 << 0
FLAG_C_NO_ZEROES = 1 << 1
KNOWN_CLIENT_FLAGS = FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES

# --- transmission flags (16 bits) -------------------------------------------

FLAG_HAS_FLAGS = 1 << 0
FLAG_READ_ONLY = 1 << 1
FLAG_SEND_FLUSH = 1 << 2
FLAG_SEND_FUA = 1 << 3
FLAG_ROTATIONAL = 1 << 4
FLAG_SEND_TRIM = 1 << 5
FLAG_SEND_WRITE_ZEROES = 1 << 6
FLAG_SEND_DF = 1 << 7
FLAG_CAN_MULTI_CONN = 1 << 8
FLAG_SEND_RESIZE = 1 << 9
FLAG_SEND_CACHE = 1 << 10
FLAG_SEND_FAST_ZERO = 1 << 11

# --- options ----------------------------------------------------------------

OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_PEEK_EXPORT = 4
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10
OPT_EXTENDED_HEADERS = 11

# --- option replies -----------------------------------------------------------

REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
_REP_ERR = 1 << 31
REP_ERR_UNSUP = _REP_ERR | 1
REP_ERR_POLICY = _REP_ERR | 2
REP_ERR_INVALID = _REP_ERR | 3
REP_ERR_PLATFORM = _REP_ERR | 4
REP_ERR_TLS_REQD = _REP_ERR | 5
REP_ERR_UNKNOWN = _REP_ERR | 6
REP_ERR_SHUTDOWN = _REP_ERR | 7
REP_ERR_BLOCK_SIZE_REQD = _REP_ERR | 8
REP_ERR_TOO_BIG = _REP_ERR | 9

# --- NBD_REP_INFO types -----------------------------------------------------

INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

# --- commands and command flags ---------------------------------------------

CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_CACHE = 5
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7

CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_DF = 1 << 2
CMD_FLAG_REQ_ONE = 1 << 3
CMD_FLAG_FAST_ZERO = 1 << 4

# --- structured replies -------------------------------------------------------

REPLY_FLAG_DONE = 1 << 0

REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_ERROR = (1 << 15) | 1
REPLY_TYPE_ERROR_OFFSET = (1 << 15) | 2

# --- base:allocation ------------------------------------------------------------

STATE_HOLE = 1 << 0
STATE_ZERO = 1 << 1
META_BASE_ALLOCATION = "base:allocation"

# --- error values (the protocol fixes these numbers, whatever the host's errno) -

EPERM = 1
EIO = 5
ENOMEM = 12
EINVAL = 22
ENOSPC = 28
EOVERFLOW = 75
ENOTSUP = 95
ESHUTDOWN = 108

_WIRE_ERRORS = frozenset({EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW, ENOTSUP, ESHUTDOWN})
# Host errnos the spec tells servers to fold into one of the wire values.
_ERRNO_TO_WIRE = {
    _errno.EPERM: EPERM,
    _errno.EACCES: EPERM,
    _errno.EROFS: EPERM,
    _errno.EIO: EIO,
    _errno.ENOMEM: ENOMEM,
    _errno.EINVAL: EINVAL,
    _errno.ENOSPC: ENOSPC,
    _errno.EDQUOT: ENOSPC,
    _errno.EFBIG: ENOSPC,
    _errno.EOVERFLOW: EOVERFLOW,
    _errno.ENOTSUP: ENOTSUP,
    _errno.EOPNOTSUPP: ENOTSUP,
    _errno.ESHUTDOWN: ESHUTDOWN,
}


def wire_errno(err: int) -> int:
    """Map a host errno to the NBD error value sent on the wire (EIO if none fits)."""
    return _ERRNO_TO_WIRE.get(err, err if err in _WIRE_ERRORS else EIO)


# --- limits -------------------------------------------------------------------

MAX_STRING = 4096  # export names, queries, messages: the spec's hard limit
DEFAULT_MIN_BLOCK = 1
DEFAULT_PREF_BLOCK = 4096
DEFAULT_MAX_BLOCK = 32 * 1024 * 1024  # what every client caps READ/WRITE at

# --- structs ----------------------------------------------------------------------

S_U16 = struct.Struct(">H")
S_U32 = struct.Struct(">I")
S_U64 = struct.Struct(">Q")
# server greeting: NBDMAGIC, IHAVEOPT, handshake flags
S_GREETING = struct.Struct(">QQH")
# client option header: IHAVEOPT, option, length
S_OPTION = struct.Struct(">QII")
# option reply header: magic, option, reply type, length
S_OPTION_REPLY = struct.Struct(">QIII")
# NBD_OPT_EXPORT_NAME answer: size, transmission flags (+124 zero bytes unless NO_ZEROES)
S_EXPORT_NAME_REPLY = struct.Struct(">QH")
# NBD_INFO_EXPORT payload: info type, size, transmission flags
S_INFO_EXPORT = struct.Struct(">HQH")
# NBD_INFO_BLOCK_SIZE payload: info type, minimum, preferred, maximum
S_INFO_BLOCK_SIZE = struct.Struct(">HIII")
# transmission request: magic, flags, type, handle, offset, length
S_REQUEST = struct.Struct(">IHHQQI")
# simple reply: magic, error, handle
S_SIMPLE_REPLY = struct.Struct(">IIQ")
# structured reply chunk header: magic, flags, type, handle, payload length
S_STRUCTURED_REPLY = struct.Struct(">IHHQI")
# OFFSET_DATA prefix (offset), OFFSET_HOLE payload (offset, size)
S_OFFSET_HOLE = struct.Struct(">QI")
# ERROR payload prefix: error, message length
S_ERROR = struct.Struct(">IH")
# block status descriptor: length, flags
S_EXTENT = struct.Struct(">II")

EXPORT_NAME_ZEROES = bytes(124)


def greeting() -> bytes:
    """The server's first message of the newstyle handshake."""
    return S_GREETING.pack(NBDMAGIC, IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)


def option_reply(option: int, reply: int, data: bytes = b"") -> bytes:
    """One fixed-newstyle option reply: header then ``data``."""
    return S_OPTION_REPLY.pack(REPLY_MAGIC, option, reply, len(data)) + data


def simple_reply(handle: int, error: int = 0) -> bytes:
    """A simple reply header (a READ's data follows it on success)."""
    return S_SIMPLE_REPLY.pack(SIMPLE_REPLY_MAGIC, error, handle)


def chunk_header(handle: int, rtype: int, length: int, flags: int = REPLY_FLAG_DONE) -> bytes:
    """A structured reply chunk header announcing ``length`` payload bytes."""
    return S_STRUCTURED_REPLY.pack(STRUCTURED_REPLY_MAGIC, flags, rtype, handle, length)


def data_chunk_header(handle: int, offset: int, length: int, flags: int) -> bytes:
    """Header plus offset of an OFFSET_DATA chunk carrying ``length`` data bytes."""
    return chunk_header(handle, REPLY_TYPE_OFFSET_DATA, 8 + length, flags) + S_U64.pack(offset)


def hole_chunk(handle: int, offset: int, length: int, flags: int) -> bytes:
    """A complete OFFSET_HOLE chunk: ``length`` bytes at ``offset`` read as zero."""
    header = chunk_header(handle, REPLY_TYPE_OFFSET_HOLE, S_OFFSET_HOLE.size, flags)
    return header + S_OFFSET_HOLE.pack(offset, length)


def error_chunk(handle: int, error: int, message: str = "") -> bytes:
    """A final NBD_REPLY_TYPE_ERROR chunk with an optional human-readable message."""
    msg = message.encode("utf-8", "replace")[:MAX_STRING]
    return (
        chunk_header(handle, REPLY_TYPE_ERROR, 6 + len(msg))
        + S_ERROR.pack(error, len(msg))
        + msg
    )


def block_status_chunk(handle: int, context_id: int, extents: list[tuple[int, int]]) -> bytes:
    """A final NBD_REPLY_TYPE_BLOCK_STATUS chunk for one metadata context."""
    body = b"".join([S_U32.pack(context_id), *(S_EXTENT.pack(n, f) for n, f in extents)])
    return chunk_header(handle, REPLY_TYPE_BLOCK_STATUS, len(body)) + body


def done_chunk(handle: int) -> bytes:
    """The NBD_REPLY_TYPE_NONE chunk that ends a structured reply."""
    return chunk_header(handle, REPLY_TYPE_NONE, 0)


OPTION_NAMES = {
    v: k for k, v in globals().items() if k.startswith("OPT_") and isinstance(v, int)
}
COMMAND_NAMES = {
    v: k for k, v in globals().items() if k.startswith("CMD_") and not k.startswith("CMD_FLAG")
}
