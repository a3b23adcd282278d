"""SigV4 presigned URLs signed with the signed-in user's key.

The console never acts on buckets or objects itself: it hands the browser URLs
signed as the user (query-string SigV4: ``host`` and the headers asked for signed, payload unsigned),
which the browser then requests on the same origin, so the gateway authorizes
them as any S3 client's request: policies, ACLs and quotas apply.
"""

from __future__ import annotations

import datetime
import hashlib
import urllib.parse

from .. import sigv4

REGION = "us-east-1"


def object_path(bucket: str | None, key: str | None = None) -> str:
    """The raw path of a bucket or object (key percent-encoded, ``/`` kept)."""
    if not bucket:
        return "/"
    path = "/" + urllib.parse.quote(bucket, safe="")
    return path + ("/" + urllib.parse.quote(key, safe="/~") if key is not None else "")


def presign(method: str, path: str, query: dict[str, str], host: str, access_key: str,
            secret: str, expires: int, headers: dict[str, str] | None = None,
            now: datetime.datetime | None = None) -> str:
    """``path?query`` with SigV4 query authentication valid for ``expires`` seconds;
    ``headers`` (e.g. ``x-amz-checksum-mode``, which S3 wants signed) are signed too
    and must then be sent as given."""
    signed = {"host": host, **{k.lower(): " ".join(str(v).split()) for k, v in
                               (headers or {}).items()}}
    names = sorted(signed)
    now = now or datetime.datetime.now(datetime.UTC)
    amz_date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    scope = f"{day}/{REGION}/{sigv4.SERVICE}/aws4_request"
    params = {**query, "X-Amz-Algorithm": sigv4.ALGORITHM,
              "X-Amz-Credential": f"{access_key}/{scope}", "X-Amz-Date": amz_date,
              "X-Amz-Expires": str(expires), "X-Amz-SignedHeaders": ";".join(names)}
    raw_query = urllib.parse.urlencode(sorted(params.items()), quote_via=urllib.parse.quote,
                                       safe="-_.~")
    canonical = "\n".join([method, sigv4.canonical_uri(path), sigv4.canonical_query(raw_query),
                           "".join(f"{n}:{signed[n]}\n" for n in names), ";".join(names),
                           sigv4.UNSIGNED_PAYLOAD])
    to_sign = "\n".join([sigv4.ALGORITHM, amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    signature = sigv4.sign(sigv4.signing_key(secret, day, REGION), to_sign)
    return f"{path}?{raw_query}&X-Amz-Signature={signature}"
