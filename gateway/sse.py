"""Server-side encryption requests: S3's SSE headers in, an object's keys out.

Three modes, as AWS has them:

- SSE-S3 (``x-amz-server-side-encryption: AES256``): a data key per object,
  sealed under the built-in key of storaged.kms (derived from the master key);
- SSE-KMS (``aws:kms``, ``-aws-kms-key-id``, ``-context``, ``-bucket-key-enabled``):
  a data key per object sealed under the named KMS key (``aws/s3`` when none is
  named), the encryption context bound in (S3 adds ``aws:s3:arn``);
- SSE-C (``-customer-algorithm``/``-customer-key``/``-customer-key-MD5``): the
  client's key, never stored. The object key is derived from it and a random
  salt (HKDF), and a salted HMAC of it is kept to tell a wrong key (403) from a
  damaged object.

:class:`Encryption` is what an object's metadata keeps: no key in clear. Its
``headers()`` are the response headers AWS returns for the object.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from typing import Any

from .errors import AccessDenied, InvalidArgument, InvalidRequest, S3Error

SSE = "x-amz-server-side-encryption"
KMS_KEY = SSE + "-aws-kms-key-id"
CONTEXT = SSE + "-context"
BUCKET_KEY = SSE + "-bucket-key-enabled"
CUSTOMER = SSE + "-customer-"
COPY_CUSTOMER = "x-amz-copy-source-" + CUSTOMER[len("x-amz-"):]
MODES = ("AES256", "aws:kms", "aws:kms:dsse")


class InvalidEncryptionAlgorithmError(S3Error):
    status = 400
    message = "The encryption request you specified is not valid. The valid value is AES256."


class KMSNotFound(S3Error):
    code = "KMS.NotFoundException"
    status = 400


class KMSDisabled(S3Error):
    code = "KMS.DisabledException"
    status = 400


@dataclasses.dataclass(frozen=True)
class CustomerKey:
    key: bytes = dataclasses.field(repr=False)
    md5: str  # base64, as the client sent it (and gets back)


@dataclasses.dataclass(frozen=True)
class Requested:
    """What a write asked for."""

    mode: str                            # AES256, aws:kms, aws:kms:dsse, or SSE-C
    kms_key: str | None = None
    context: dict[str, str] | None = None
    bucket_key: bool | None = None
    customer: CustomerKey | None = None


@dataclasses.dataclass
class Encryption:
    """How one object (or upload) is encrypted: kept in its metadata."""

    mode: str
    sealed: str = ""              # SSE-S3/KMS: the data key, sealed (base64)
    kms_key: str = ""             # SSE-KMS: the key's ARN
    context: str = ""             # SSE-KMS: the encryption context (base64 JSON)
    bucket_key: bool = False
    salt: str = ""                # SSE-C: HKDF salt and HMAC key (base64)
    key_hmac: str = ""            # SSE-C: HMAC-SHA256 of the client's key under the salt
    key_md5: str = ""             # SSE-C: the MD5 the client sent (AWS returns it)

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in dataclasses.asdict(self).items() if v})

    @classmethod
    def from_json(cls, raw: str) -> Encryption:
        return cls(**json.loads(raw))

    @property
    def is_customer(self) -> bool:
        return self.mode == "SSE-C"

    def headers(self) -> dict[str, str]:
        """The response headers AWS sends for an object encrypted this way."""
        if self.is_customer:
            return {CUSTOMER + "algorithm": "AES256", CUSTOMER + "key-MD5": self.key_md5}
        out = {SSE: self.mode}
        if self.mode != "AES256":
            out[KMS_KEY] = self.kms_key
            if self.bucket_key:
                out[BUCKET_KEY] = "true"
        return out


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    return value.strip() if value is not None else None


def customer_key(headers: Mapping[str, str], prefix: str = CUSTOMER, *, secure: bool,
                 allow_http: bool = False) -> CustomerKey | None:
    """The SSE-C key a request carries (``prefix``: the copy source's headers for
    a copy's source), validated as AWS does; None when it carries none."""
    algorithm = _header(headers, prefix + "algorithm")
    key = _header(headers, prefix + "key")
    md5 = _header(headers, prefix + "key-MD5")
    if algorithm is None and key is None and md5 is None:
        return None
    what = "Requests specifying Server Side Encryption with Customer provided keys must "
    if not secure and not allow_http:
        raise InvalidRequest(what + "be made over a secure connection.")
    if algorithm is None:
        raise InvalidArgument(what + "provide a valid encryption algorithm.",
                              ArgumentName=prefix + "algorithm")
    if algorithm != "AES256":
        raise InvalidEncryptionAlgorithmError(ArgumentName=prefix + "algorithm",
                                              ArgumentValue=algorithm)
    if not key:
        raise InvalidArgument(what + "provide an appropriate secret key.",
                              ArgumentName=prefix + "key")
    if not md5:
        raise InvalidArgument(what + "provide the client calculated MD5 of the secret key.",
                              ArgumentName=prefix + "key-MD5")
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise InvalidArgument("The secret key was invalid for the specified algorithm.",
                              ArgumentName=prefix + "key")
    if base64.b64encode(hashlib.md5(raw).digest()).decode() != md5:
        raise InvalidArgument("The calculated MD5 hash of the key did not match the hash "
                              "that was provided.", ArgumentName=prefix + "key-MD5")
    return CustomerKey(raw, md5)


def requested(headers: Mapping[str, str], *, secure: bool,
              allow_http: bool = False) -> Requested | None:
    """The encryption a write (PUT, POST, copy destination, CreateMultipartUpload)
    asks for in its headers; None when it asks for none."""
    customer = customer_key(headers, secure=secure, allow_http=allow_http)
    mode = _header(headers, SSE)
    kms_key = _header(headers, KMS_KEY)
    context = _header(headers, CONTEXT)
    bucket_key = _header(headers, BUCKET_KEY)
    if customer is not None:
        if mode is not None or kms_key is not None:
            raise InvalidArgument("Server Side Encryption with Customer provided key is "
                                  "incompatible with the encryption method specified",
                                  ArgumentName=SSE, ArgumentValue=mode or "")
        return Requested("SSE-C", customer=customer)
    if mode is None:
        if kms_key is not None or context is not None:
            raise InvalidArgument("Server Side Encryption with AWS KMS managed key requires "
                                  f"HTTP header {SSE} : aws:kms", ArgumentName=SSE)
        return None
    if mode not in MODES:
        raise InvalidArgument("The encryption method specified is not supported",
                              ArgumentName=SSE, ArgumentValue=mode)
    if mode == "AES256":
        if kms_key is not None or context is not None:
            raise InvalidArgument("Server Side Encryption with AWS KMS managed key requires "
                                  f"HTTP header {SSE} : aws:kms", ArgumentName=SSE,
                                  ArgumentValue=mode)
        return Requested("AES256")
    return Requested(mode, kms_key=kms_key or None, context=_context(context),
                     bucket_key=None if bucket_key is None else bucket_key.lower() == "true")


def _context(raw: str | None) -> dict[str, str] | None:
    if raw is None:
        return None
    try:
        value = json.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError):
        value = None
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidArgument("The header 'x-amz-server-side-encryption-context' shall be "
                              "Base64-encoded UTF-8 string holding JSON which represents "
                              "a string-string map", ArgumentName=CONTEXT)
    return value


def object_context(bucket: str, key: str, given: dict[str, str] | None) -> dict[str, str]:
    """The encryption context S3 uses with KMS: the caller's plus the object's ARN."""
    context = dict(given or {})
    context.setdefault("aws:s3:arn", f"arn:aws:s3:::{bucket}/{key}")
    return context


async def seal_new(request: Requested, keys: Any, bucket: str, key: str, *,
                   region: str = "us-east-1", account: str = "000000000000"
                   ) -> tuple[bytes, Encryption]:
    """A fresh object key for a write and what its metadata keeps (``keys``: a
    storaged.kms.KeyService)."""
    from storaged.kms import KMSError
    if request.customer is not None:
        salt = os.urandom(32)
        return (_derive(request.customer.key, salt),
                Encryption("SSE-C", salt=_b64(salt),
                           key_hmac=_b64(_key_hmac(request.customer.key, salt)),
                           key_md5=request.customer.md5))
    try:
        if request.mode == "AES256":
            data_key = await keys.data_key(None, {"aws:s3:arn": f"arn:aws:s3:::{bucket}/{key}"})
            return data_key.plaintext, Encryption("AES256", sealed=_b64(data_key.sealed))
        record = await (keys.find(request.kms_key) if request.kms_key else keys.default_key())
        context = object_context(bucket, key, request.context)
        data_key = await keys.data_key(record.id, context)
    except KMSError as exc:
        raise kms_error(exc) from None
    arn = f"arn:aws:kms:{region}:{account}:key/{record.id}"
    return data_key.plaintext, Encryption(
        request.mode, sealed=_b64(data_key.sealed), kms_key=arn,
        context=_b64(json.dumps(context, sort_keys=True).encode()),
        bucket_key=bool(request.bucket_key))


async def open_key(enc: Encryption, keys: Any, customer: CustomerKey | None, bucket: str,
                   key: str) -> bytes:
    """The object key of a stored object, for a read that carries ``customer``
    (its SSE-C headers, validated): AWS's errors when they do not fit."""
    from storaged.kms import KMSError
    if enc.is_customer:
        if customer is None:
            raise InvalidRequest("The object was stored using a form of Server Side "
                                 "Encryption. The correct parameters must be provided to "
                                 "retrieve the object.")
        salt = base64.b64decode(enc.salt)
        if not hmac.compare_digest(_key_hmac(customer.key, salt), base64.b64decode(enc.key_hmac)):
            raise AccessDenied()
        return _derive(customer.key, salt)
    if customer is not None:
        raise InvalidRequest("The encryption parameters are not applicable to this object.")
    context = (json.loads(base64.b64decode(enc.context)) if enc.context
               else {"aws:s3:arn": f"arn:aws:s3:::{bucket}/{key}"})
    try:
        return await keys.open(base64.b64decode(enc.sealed), context)
    except KMSError as exc:
        raise kms_error(exc) from None


def kms_error(exc: Any) -> S3Error:
    """The S3 error for a refusal of the key service."""
    if exc.code == "NotFoundException":
        return KMSNotFound(exc.message)
    if exc.code == "DisabledException":
        return KMSDisabled(exc.message)
    if exc.code == "InvalidCiphertextException":
        return AccessDenied()
    return S3Error(exc.message)


def derive_key(secret: bytes, salt: bytes, info: bytes) -> bytes:
    """A 32-byte key from ``secret`` (HKDF-SHA256 with ``salt`` and ``info``)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    return HKDF(hashes.SHA256(), 32, salt=salt, info=info).derive(secret)


def _derive(customer: bytes, salt: bytes) -> bytes:
    return derive_key(customer, salt, b"basalt sse-c object key")


def _key_hmac(customer: bytes, salt: bytes) -> bytes:
    return hmac.new(salt, b"basalt sse-c key check" + customer, hashlib.sha256).digest()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()
