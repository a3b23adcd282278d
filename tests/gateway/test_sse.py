"""SSE request headers: every mode parsed, AWS's refusals for bad combinations,
and object keys sealed and opened (wrong customer keys refused, none stored)."""

import base64
import hashlib
import json
import os

import pytest

from gateway import sse
from gateway.errors import AccessDenied, InvalidArgument, InvalidRequest
from storaged import ObjectStore, kms

KEY = bytes(range(32))
KEY_B64 = base64.b64encode(KEY).decode()
KEY_MD5 = base64.b64encode(hashlib.md5(KEY).digest()).decode()
C = sse.CUSTOMER


def customer_headers(key=KEY_B64, md5=KEY_MD5, algorithm="AES256", prefix=C):
    headers = {}
    for name, value in (("algorithm", algorithm), ("key", key), ("key-MD5", md5)):
        if value is not None:
            headers[prefix + name] = value
    return headers


def test_no_headers_no_encryption():
    assert sse.requested({}, secure=False) is None
    assert sse.customer_key({}, secure=False) is None


def test_sse_s3_and_kms():
    assert sse.requested({sse.SSE: "AES256"}, secure=False).mode == "AES256"
    context = base64.b64encode(json.dumps({"team": "a"}).encode()).decode()
    got = sse.requested({sse.SSE: "aws:kms", sse.KMS_KEY: "alias/k", sse.CONTEXT: context,
                         sse.BUCKET_KEY: "true"}, secure=False)
    assert (got.mode, got.kms_key, got.context, got.bucket_key) == (
        "aws:kms", "alias/k", {"team": "a"}, True)
    assert sse.requested({sse.SSE: "aws:kms"}, secure=False).kms_key is None


@pytest.mark.parametrize("headers, message", [
    ({sse.SSE: "AES128"}, "not supported"),
    ({sse.SSE: "AES256", sse.KMS_KEY: "k"}, "requires HTTP header"),
    ({sse.KMS_KEY: "k"}, "requires HTTP header"),
    ({sse.SSE: "aws:kms", sse.CONTEXT: "not base64!"}, "Base64-encoded"),
    ({sse.SSE: "aws:kms", sse.CONTEXT: base64.b64encode(b"[1]").decode()}, "string-string"),
    ({sse.SSE: "AES256", **customer_headers()}, "incompatible"),
])
def test_refused_write_headers(headers, message):
    with pytest.raises(InvalidArgument, match=message):
        sse.requested(headers, secure=True)


def test_customer_key_validation():
    got = sse.customer_key(customer_headers(), secure=True)
    assert got.key == KEY and got.md5 == KEY_MD5 and KEY_B64 not in repr(got)
    with pytest.raises(InvalidRequest, match="secure connection"):
        sse.customer_key(customer_headers(), secure=False)
    assert sse.customer_key(customer_headers(), secure=False, allow_http=True).key == KEY
    cases = [
        (customer_headers(algorithm=None), InvalidArgument, "valid encryption algorithm"),
        (customer_headers(algorithm="AES128"), sse.InvalidEncryptionAlgorithmError, "AES256"),
        (customer_headers(key=None), InvalidArgument, "appropriate secret key"),
        (customer_headers(md5=None), InvalidArgument, "MD5 of the secret key"),
        (customer_headers(key=base64.b64encode(b"short").decode(),
                          md5=base64.b64encode(hashlib.md5(b"short").digest()).decode()),
         InvalidArgument, "secret key was invalid"),
        (customer_headers(key="%%%"), InvalidArgument, "secret key was invalid"),
        (customer_headers(md5=base64.b64encode(b"0" * 16).decode()), InvalidArgument,
         "did not match"),
    ]
    for headers, error, message in cases:
        with pytest.raises(error, match=message):
            sse.customer_key(headers, secure=True)
    copy = customer_headers(prefix=sse.COPY_CUSTOMER)
    assert sse.customer_key(copy, sse.COPY_CUSTOMER, secure=True).key == KEY
    assert sse.customer_key(copy, secure=True) is None


@pytest.fixture
async def keys(tmp_path):
    store = ObjectStore.open([str(tmp_path / f"d{i}") for i in range(4)], sync=False)
    await store.start(heal=False)
    yield kms.KeyService(store, os.urandom(32))
    await store.close()


async def test_customer_keys_are_never_stored(keys):
    req = sse.requested(customer_headers(), secure=True)
    object_key, enc = await sse.seal_new(req, keys, "b", "o")
    stored = enc.to_json()
    assert KEY_B64 not in stored and KEY.hex() not in stored and object_key.hex() not in stored
    assert enc.headers() == {C + "algorithm": "AES256", C + "key-MD5": KEY_MD5}
    back = sse.Encryption.from_json(stored)
    right = sse.customer_key(customer_headers(), secure=True)
    assert await sse.open_key(back, keys, right, "b", "o") == object_key
    other = os.urandom(32)
    wrong = sse.CustomerKey(other, base64.b64encode(hashlib.md5(other).digest()).decode())
    with pytest.raises(AccessDenied):
        await sse.open_key(back, keys, wrong, "b", "o")
    with pytest.raises(InvalidRequest, match="correct parameters must be provided"):
        await sse.open_key(back, keys, None, "b", "o")
    _, again = await sse.seal_new(req, keys, "b", "o")
    assert again.salt != enc.salt  # another object: another object key


async def test_sse_s3_and_kms_keys_open_and_refuse(keys):
    object_key, enc = await sse.seal_new(sse.Requested("AES256"), keys, "b", "o")
    assert enc.headers() == {sse.SSE: "AES256"}
    assert await sse.open_key(enc, keys, None, "b", "o") == object_key
    with pytest.raises(AccessDenied):  # sealed for another object
        await sse.open_key(enc, keys, None, "b", "other")
    with pytest.raises(InvalidRequest, match="not applicable"):
        await sse.open_key(enc, keys, sse.customer_key(customer_headers(), secure=True),
                           "b", "o")

    object_key, enc = await sse.seal_new(sse.Requested("aws:kms"), keys, "b", "o")
    default = await keys.find(kms.DEFAULT_ALIAS)
    assert enc.headers()[sse.KMS_KEY].endswith(f":key/{default.id}")
    assert await sse.open_key(sse.Encryption.from_json(enc.to_json()), keys, None, "b",
                              "o") == object_key
    record = await keys.create("team")
    object_key, enc = await sse.seal_new(
        sse.Requested("aws:kms", kms_key="alias/team", context={"x": "1"}, bucket_key=True),
        keys, "b", "o")
    assert enc.headers()[sse.BUCKET_KEY] == "true" and record.id in enc.kms_key
    assert json.loads(base64.b64decode(enc.context)) == {"x": "1", "aws:s3:arn":
                                                         "arn:aws:s3:::b/o"}
    assert await sse.open_key(enc, keys, None, "b", "o") == object_key
    await keys.set_enabled("team", False)
    with pytest.raises(sse.KMSDisabled):
        await sse.open_key(enc, keys, None, "b", "o")
    with pytest.raises(sse.KMSNotFound, match="Invalid keyId nope"):
        await sse.seal_new(sse.Requested("aws:kms", kms_key="nope"), keys, "b", "o")
