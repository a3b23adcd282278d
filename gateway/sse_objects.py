"""Encrypted objects in the handlers: what a write seals its body with, and the
plaintext a read streams back.

A write asks with its SSE headers (gateway.sse), else gets its bucket's default
encryption (gateway.bucket_encryption); the engine then stores the body as
packages (gateway.sse_packages, one stream per part, numbered like the part)
and keeps the plaintext's size, MD5 and checksums. A read opens the object key
with what the request carries and decrypts only the packages its range touches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from storaged import ObjectAttrs, ObjectInfo, Seal

from . import bucket_encryption, sse
from .errors import InternalError, InvalidArgument, InvalidRequest, S3NotImplemented
from .request import Context
from .sse_packages import (
    PACKAGE,
    SEALED,
    TAG,
    Encryptor,
    PackageCipher,
    PackageError,
    packages,
    sealed_size,
    sealed_span,
)

SALT_BYTES = 16  # a multipart part's salt (see Sealing.seal_part)


def part_key(key: bytes, salt: bytes) -> bytes:
    """The key one upload of a multipart part is sealed under (HKDF-SHA256 of
    the object key with the part's salt)."""
    return sse.derive_key(key, salt, b"basalt sse part key")


def opaque_etag(key: bytes, md5_hex: str) -> str:
    """SSE-KMS and SSE-C ETags (AWS: not the plaintext's MD5): an HMAC of it
    under the object key, shaped like an MD5 so multipart ETags compose."""
    return hmac.new(key, b"basalt etag" + bytes.fromhex(md5_hex), hashlib.sha256).hexdigest()[:32]


@dataclasses.dataclass
class Sealing:
    """An encrypted write: how (kept in the record) and the object key."""

    enc: sse.Encryption
    key: bytes = dataclasses.field(repr=False)

    def attrs(self, attrs: ObjectAttrs) -> ObjectAttrs:
        return dataclasses.replace(attrs, encryption=self.enc.to_json())

    def seal(self) -> Seal:
        """The engine's Seal for a whole object (PUT, copy, form upload)."""
        return Seal(Encryptor(PackageCipher(self.key, 1)), sealed_size, self._etag())

    def seal_part(self, number: int) -> Seal:
        """The Seal of one upload of part ``number``: under a key of its own.

        The parts of an upload share the object key, and a part number may be
        uploaded again (a retry, or other content): were its packages sealed under
        the object key, the same GCM nonces (part number, package index) would
        seal other plaintext, which GCM does not survive. So each upload of a
        part gets a random salt, kept in its record, and seals under
        :func:`part_key`."""
        salt = os.urandom(SALT_BYTES)
        return Seal(Encryptor(PackageCipher(part_key(self.key, salt), number)), sealed_size,
                    self._etag(), salt)

    def _etag(self):
        if self.enc.mode == "AES256":
            return None
        return lambda md5_hex: opaque_etag(self.key, md5_hex)

    def headers(self) -> dict[str, str]:
        return self.enc.headers()


def _secure(ctx: Context) -> dict[str, bool]:
    return {"secure": ctx.request.secure, "allow_http": ctx.config.allow_sse_c_over_http}


def _keys(ctx: Context) -> Any:
    keys = ctx.request.get("keys")
    if keys is None:
        raise S3NotImplemented("Server-side encryption needs the server's master key "
                               "(basalt serve --master-key-file).")
    return keys


def asked(ctx: Context, headers: Mapping[str, str] | None = None) -> sse.Requested | None:
    """The encryption a write's headers (a form's fields) ask for, validated;
    None when none."""
    return sse.requested(ctx.headers if headers is None else headers, **_secure(ctx))


async def for_write(ctx: Context, requested: sse.Requested | None = None,
                    key: str | None = None) -> Sealing | None:
    """How a write (PUT, copy destination, CreateMultipartUpload, POST of
    ``key``) is encrypted: as its headers ask, else as its bucket's default;
    None: not."""
    requested = requested or asked(ctx)
    if requested is None:
        requested = bucket_encryption.default_encryption(
            await ctx.store.bucket_config(ctx.bucket, bucket_encryption.KIND))
        if requested is None:
            return None
    keys = None if requested.customer is not None else _keys(ctx)
    account = getattr(ctx.principal, "account", None) or "000000000000"
    object_key, enc = await sse.seal_new(requested, keys, ctx.bucket, key or ctx.key,
                                         region=ctx.config.region, account=account)
    return Sealing(enc, object_key)


def refuse_on_read(headers: Mapping[str, str]) -> None:
    """A read (GET, HEAD) carrying the headers of an encrypted write: 400, as AWS."""
    for name in (sse.SSE, sse.KMS_KEY, sse.CONTEXT, sse.BUCKET_KEY):
        if name in headers:
            raise InvalidArgument(f"Header {name} is not allowed for this request "
                                  "(it applies to writes only).", ArgumentName=name)


async def object_key(ctx: Context, encryption: str, bucket: str, key: str,
                     prefix: str = sse.CUSTOMER) -> bytes | None:
    """The key of an object (or upload) encrypted as ``encryption`` says
    (""/None: plain), opened with the SSE-C headers under ``prefix`` (a copy's
    source: sse.COPY_CUSTOMER) where it needs them; AWS's errors otherwise."""
    customer = sse.customer_key(ctx.headers, prefix, **_secure(ctx))
    if not encryption:
        if customer is not None:
            raise InvalidRequest("The encryption parameters are not applicable to this object.")
        return None
    enc = sse.Encryption.from_json(encryption)
    keys = None if enc.is_customer else _keys(ctx)
    return await sse.open_key(enc, keys, customer, bucket, key)


def response_headers(info: ObjectInfo | None = None, encryption: str = "") -> dict[str, str]:
    """The SSE response headers of an object (or upload)."""
    raw = info.encryption if info is not None else encryption
    return sse.Encryption.from_json(raw).headers() if raw else {}


async def plaintext(store: Any, info: ObjectInfo, key: bytes, offset: int,
                    length: int) -> AsyncIterator[memoryview]:
    """Plaintext bytes ``offset .. offset+length`` of an encrypted object: each
    part's touched packages are read and opened, nothing more. As the engine's
    readers, it yields views of a buffer it reuses: each is valid until the next
    one is asked for."""
    end = offset + length
    base = stored_base = 0
    for part in info.parts:
        lo, hi = max(offset - base, 0), min(end - base, part.size)
        if lo < hi:
            async for piece in _part(store, info, part, stored_base, key, lo, hi):
                yield piece
        base += part.size
        stored_base += part.stored


async def _part(store: Any, info: ObjectInfo, part: Any, base: int, key: bytes, lo: int,
                hi: int) -> AsyncIterator[memoryview]:
    first, slo, shi = sealed_span(lo, hi, part.size)
    # Parts sealed before part salts existed (empty salt) are under the object key.
    cipher = PackageCipher(part_key(key, part.salt) if part.salt else key, part.number)
    total = packages(part.size)
    reader = await store.get_object(info.bucket, info.key, base + slo, shi - slo, info=info,
                                    stored=True)
    skip, want = lo - first * PACKAGE, hi - lo
    index = first

    scratch = bytearray()

    def open_all(start: int, sealed: list[memoryview]) -> memoryview:
        """Packages ``start, start+1, ...`` (views of their sealed bytes) opened
        into ``scratch``: whoever reads :func:`plaintext` (a GET's response, a
        copy's writer) has taken the previous chunk before asking for the next."""
        nonlocal scratch
        if start + len(sealed) > total:
            raise PackageError("encrypted body is longer than its size")
        if any(len(s) < TAG for s in sealed):
            raise PackageError("encrypted package cut short")
        size = sum(map(len, sealed)) - TAG * len(sealed)
        if len(scratch) < size:
            scratch = bytearray(size)
        dest = memoryview(scratch)[:size]
        at = 0
        for i, s in enumerate(sealed, start):
            cipher.open_into(i, s, i == total - 1, dest[at:at + len(s) - TAG])
            at += len(s) - TAG
        return dest

    def opened(sealed: list[memoryview]) -> memoryview | None:
        """The plaintext of these packages (one view: one response write per
        engine chunk, not one per package), trimmed to the range. AES-GCM runs
        at ~10 GB/s here: a chunk's packages take ~0.1 ms, less than a thread
        hop would cost."""
        nonlocal index, skip, want
        try:
            plain = open_all(index, sealed)
        except PackageError:
            raise InternalError("The object's stored data does not authenticate: it was "
                                "altered or damaged.") from None
        index += len(sealed)
        plain = plain[skip:skip + want]
        skip, want = 0, want - len(plain)
        return plain or None

    # Packages are opened straight from the reader's chunks (no gathering copy);
    # only one straddling two chunks is put together in ``carry``, and opened
    # with the next chunk's.
    carry = bytearray()
    try:
        async for chunk in reader:
            view = memoryview(chunk)
            batch = []
            if carry:
                take = SEALED - len(carry)
                carry += view[:take]
                view = view[take:]
                if len(carry) < SEALED:
                    continue
                batch.append(memoryview(bytes(carry)))
                carry.clear()
            whole = len(view) // SEALED * SEALED
            batch += [view[at:at + SEALED] for at in range(0, whole, SEALED)]
            plain = opened(batch) if batch else None
            if plain is not None:
                yield plain
            carry += view[whole:]
        if carry:
            plain = opened([memoryview(bytes(carry))])
            if plain is not None:
                yield plain
    finally:
        await reader.aclose()
    if want:
        raise InternalError("The object's stored data is shorter than its size.")
