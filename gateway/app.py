"""The aiohttp application: routing, authentication, errors, logging, metrics.

Every request goes through :func:`dispatch`: route it, verify its signature,
run the operation's handler, turn any failure into S3's XML error, add the
request id headers, log one structured line and count it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from storaged import ObjectStore, request_scope
from storaged.meta import new_id
from storaged.metering import Meter, MeteredClock

from . import (
    access,
    acl,
    admin,
    attributes,
    audit,
    bucket,
    bucket_encryption,
    bucket_policy,
    copy,
    cors,
    delete,
    get,
    iam_admin,  # noqa: F401  (registers the accounts and keys admin routes)
    identity,
    kms_admin,  # noqa: F401  (registers the KMS keys admin routes)
    lifecycle,
    listing,
    metrics,
    multipart,
    object_lock,
    post_object,
    public_access,
    put,
    router,
    sigv2,
    sigv4,
    tagging,
    usage_admin,  # noqa: F401  (registers the usage admin route)
    versioning,
)
from .errors import (
    AccessDenied,
    InvalidAccessKeyId,
    InvalidURI,
    RequestHeaderSectionTooLarge,
    S3Error,
    S3NotImplemented,
)
from .failures import s3_error
from .request import Context, GatewayConfig

log = logging.getLogger("basalt.s3")

Handler = Callable[[Context], Awaitable[web.StreamResponse]]

HANDLERS: dict[str, Handler] = {
    "ListBuckets": bucket.list_buckets,
    "CreateBucket": bucket.create_bucket,
    "HeadBucket": bucket.head_bucket,
    "DeleteBucket": bucket.delete_bucket,
    "GetBucketLocation": bucket.get_bucket_location,
    "GetBucketVersioning": versioning.get_bucket_versioning,
    "PutBucketVersioning": versioning.put_bucket_versioning,
    "ListObjectVersions": versioning.list_object_versions,
    "GetObjectLockConfiguration": object_lock.get_object_lock_configuration,
    "PutObjectLockConfiguration": object_lock.put_object_lock_configuration,
    "GetObjectRetention": object_lock.get_object_retention,
    "PutObjectRetention": object_lock.put_object_retention,
    "GetObjectLegalHold": object_lock.get_object_legal_hold,
    "PutObjectLegalHold": object_lock.put_object_legal_hold,
    "GetBucketLifecycleConfiguration": lifecycle.get_bucket_lifecycle,
    "PutBucketLifecycleConfiguration": lifecycle.put_bucket_lifecycle,
    "DeleteBucketLifecycle": lifecycle.delete_bucket_lifecycle,
    "GetObjectTagging": tagging.get_object_tagging,
    "PutObjectTagging": tagging.put_object_tagging,
    "DeleteObjectTagging": tagging.delete_object_tagging,
    "GetBucketTagging": tagging.get_bucket_tagging,
    "PutBucketPolicy": bucket_policy.put_bucket_policy,
    "GetBucketPolicy": bucket_policy.get_bucket_policy,
    "DeleteBucketPolicy": bucket_policy.delete_bucket_policy,
    "GetBucketPolicyStatus": bucket_policy.get_bucket_policy_status,
    "GetObjectAttributes": attributes.get_object_attributes,
    "PutBucketTagging": tagging.put_bucket_tagging,
    "DeleteBucketTagging": tagging.delete_bucket_tagging,
    "GetBucketAcl": acl.get_bucket_acl,
    "GetObjectAcl": acl.get_object_acl,
    "PutBucketAcl": acl.put_bucket_acl,
    "PutObjectAcl": acl.put_object_acl,
    "ListObjects": listing.list_objects,
    "ListObjectsV2": listing.list_objects_v2,
    "GetObject": get.get_object,
    "HeadObject": get.head_object,
    "PutObject": put.put_object,
    "CopyObject": copy.copy_object,
    "DeleteObject": delete.delete_object,
    "DeleteObjects": delete.delete_objects,
    "CreateMultipartUpload": multipart.create_multipart_upload,
    "UploadPart": multipart.upload_part,
    "UploadPartCopy": multipart.upload_part_copy,
    "CompleteMultipartUpload": multipart.complete_multipart_upload,
    "AbortMultipartUpload": multipart.abort_multipart_upload,
    "ListParts": multipart.list_parts,
    "ListMultipartUploads": multipart.list_multipart_uploads,
    "GetBucketCors": cors.get_bucket_cors,
    "PutBucketCors": cors.put_bucket_cors,
    "DeleteBucketCors": cors.delete_bucket_cors,
    "PreflightCors": cors.preflight,
    "PostObject": post_object.post_object,
    "GetBucketOwnershipControls": public_access.get_ownership_controls,
    "PutBucketOwnershipControls": public_access.put_ownership_controls,
    "DeleteBucketOwnershipControls": public_access.delete_ownership_controls,
    "GetPublicAccessBlock": public_access.get_public_access_block,
    "PutPublicAccessBlock": public_access.put_public_access_block,
    "DeletePublicAccessBlock": public_access.delete_public_access_block,
    "PutBucketEncryption": bucket_encryption.put_bucket_encryption,
    "GetBucketEncryption": bucket_encryption.get_bucket_encryption,
    "DeleteBucketEncryption": bucket_encryption.delete_bucket_encryption,
}
# Operations that carry no signature of their own to check before the handler:
# a CORS preflight is never signed; a form upload's signature is in its body.
UNSIGNED_OPS = {"PreflightCors", "PostObject"}

HOST_ID = uuid.uuid4().hex


def error_response(err: S3Error, resource: str, request_id: str, method: str) -> web.Response:
    body = b"" if method == "HEAD" else err.to_xml(resource, request_id)
    resp = web.Response(status=err.status, body=body or None, headers=err.headers)
    if body:
        resp.content_type = "application/xml"
    return resp


class Gateway:
    """The S3 endpoint over one ObjectStore."""

    def __init__(self, store: ObjectStore, config: GatewayConfig) -> None:
        self.store, self.config = store, config
        self.owner = admin.Owner(config.owner_socket)
        self.audit = audit.open_log(config.data_dir)
        root_access, root_secret = next(iter(config.credentials.items()))
        self.keys = None  # storaged.kms.KeyService, when the server has a master key
        master = None
        if config.master_key_file:
            from storaged import kms, master_key
            master = master_key.load(config.master_key_file)
            self.keys = kms.KeyService(store, master)
        self.directory = identity.Directory(store, root_access, root_secret, master)
        store.on_event = metrics.engine_event
        self.meter = None if config.usage_flush_seconds <= 0 else Meter(
            store, "s3", config.usage_flush_seconds,
            clock=MeteredClock(*config.usage_clock) if config.usage_clock else time.time)

    async def authenticate(self, request: web.Request,
                           route: router.Route | None = None
                           ) -> tuple[sigv4.AuthContext, identity.Principal]:
        """The verified signature and who made it (AccessDenied & co. otherwise).
        A key unknown to this worker's snapshot is looked up again once: it may
        have just been created by another worker or node."""
        await self.directory.fresh()
        try:
            auth = self._verify(request, route)
        except InvalidAccessKeyId:
            await self.directory.fresh(identity.MISS_REFRESH_SECONDS)
            auth = self._verify(request, route)
        found = self.directory.lookup(auth.access_key)
        if found is None:  # disabled between the two reads
            raise InvalidAccessKeyId(AWSAccessKeyId=auth.access_key)
        self.directory.note_use(auth.access_key)
        return auth, found[1]

    def _verify(self, request: web.Request, route: router.Route | None) -> sigv4.AuthContext:
        raw_path, _, raw_query = request.raw_path.partition("?")
        secret_for = self.directory.secret_for
        resource = raw_path  # SigV2 signs /bucket/key, virtual-hosted or not
        if route is not None and route.bucket and not raw_path.startswith("/" + route.bucket):
            resource = "/" + route.bucket + raw_path
        if sigv2.is_header_signed(request.headers):
            request["auth_type"] = ("REST-HEADER", "AWS")
            return sigv2.verify_header(request.method, resource, raw_query, request.headers,
                                       secret_for)
        if sigv2.is_presigned_v2(raw_query) and "Authorization" not in request.headers:
            request["auth_type"] = ("REST-QUERY-STRING", "AWS")
            return sigv2.verify_presigned(request.method, resource, raw_query, request.headers,
                                          secret_for)
        request["auth_type"] = ("REST-HEADER" if "Authorization" in request.headers
                                else "REST-QUERY-STRING", "AWS4-HMAC-SHA256")
        return sigv4.verify_request(request.method, raw_path, raw_query, request.headers,
                                    secret_for)

    async def authenticate_admin(self, request: web.Request) -> None:
        """The admin API answers the root credentials only."""
        _, principal = await self.authenticate(request)
        request["principal"] = principal  # for the audit log
        if not principal.admin:
            raise AccessDenied("The admin API is for the root credentials only.")

    async def authorize(self, request: web.Request,
                        route: router.Route) -> sigv4.AuthContext | None:
        """The request's verified signature (None: unsigned), once its principal
        may do what it asks (AccessDenied otherwise)."""
        auth, principal = None, None
        if not _unsigned(request):
            auth, principal = await self.authenticate(request, route)
        request["principal"] = principal
        await self.check_access(request, route, principal)
        return auth

    async def resolve_key(self, access_key: str) -> tuple[str, identity.Principal] | None:
        """(secret, principal) of an access key that may sign requests; None otherwise."""
        return await self.directory.resolve(access_key)

    async def check_access(self, request: web.Request, route: router.Route,
                           principal: identity.Principal | None) -> None:
        """AccessDenied unless ``principal`` (None: anonymous) may do ``route``."""
        await access.check(self.store, self.directory, request, route, principal)

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        request_id = request["request_id"] = new_id(64).upper()
        request["directory"] = self.directory
        request["keys"] = self.keys
        started = time.monotonic()
        op, resource, resp, route = "Unknown", request.path, None, None
        error_code = ""
        try:
            if request.path.startswith(router.ADMIN_PREFIX):
                op = "Admin"
                resp = await admin.handle(request, self.store, self.authenticate_admin, request_id,
                                          self.owner, self.config.nbd_address,
                                          self.config.nbd_socket)
            else:
                check_request_size(request)
                try:
                    route = router.route(request.method, request.raw_path.partition("?")[0],
                                         request.query, request.headers, self.config.domain)
                except S3Error as refused:
                    # Who is asking is checked before what is asked, as S3 does.
                    if not getattr(refused, "before_auth", False):
                        await self.authenticate(request)
                    raise refused
                op, resource = route.op, route.resource
                handler = HANDLERS.get(route.op)
                with request_scope():  # bucket records and settings read once per request
                    await cors.prepare(request, route, self.store)
                    auth = None if route.op in UNSIGNED_OPS else await self.authorize(request,
                                                                                      route)
                    if handler is None:
                        raise S3NotImplemented(f"{route.op} is not supported.")
                    resp = await handler(Context(request, route, self.store, self.config,
                                                 request_id, auth, check_access=self.check_access,
                                                 resolve_key=self.resolve_key))
        except asyncio.CancelledError:
            # Cancelled (the client went away, or the server is shutting down and
            # the grace ran out): whatever was being written is rolled back.
            error_code = "ClientDisconnected"
            raise
        except Exception as exc:
            if isinstance(exc, ConnectionError) and _client_gone(request):
                # The client went away mid-request: nothing to answer, nothing
                # was stored. Not an error of ours: aiohttp logs a traceback at
                # error level for anything a handler raises, so answer instead
                # (the write fails quietly on the closed connection).
                error_code = "ClientDisconnected"
                resp = web.Response(status=499)
                resp.force_close()
                return resp
            if request.get("streaming"):
                raise  # the response had started: all we can do is drop the connection
            err = s3_error(exc)
            if err.status >= 500 and not isinstance(exc, S3Error):
                log.error("internal error", exc_info=exc,
                          extra={"fields": {"request_id": request_id, "op": op}})
            error_code = err.code
            resp = error_response(err, resource, request_id, request.method)
            if request.body_exists and not request.content.at_eof():
                # Never read (maybe gigabytes of) a rejected body: close once the
                # answer is out (the runner sets lingering_time=0 for that).
                resp.force_close()
        finally:
            elapsed = time.monotonic() - started
            status = resp.status if resp is not None else 499  # 499: client gone
            bytes_in, bytes_out = request.get("bytes_in", 0), request.get("bytes_out", 0)
            metrics.observe(op, status, elapsed, bytes_in, bytes_out)
            # One structured line per request on the server's log (operators follow
            # it; ~4% of a 4 KiB GET's CPU): --log-level warning turns it off.
            if log.isEnabledFor(logging.INFO):
                log.info("request", extra={"fields": {
                    "op": op, "method": request.method, "resource": resource, "status": status,
                    "error": error_code, "in": bytes_in, "out": bytes_out,
                    "ms": round(elapsed * 1000, 2), "id": request_id, "remote": request.remote}})
            if self.audit is not None:
                self.audit.record(request, op, route, status, error_code, bytes_in, bytes_out,
                                  elapsed)
            # Usage is the bucket owner's (as S3 bills it), else the requester's; a
            # request refused before either was known is nobody's.
            principal = request.get("principal")
            account = request.get("bucket_owner") or (principal and principal.account)
            if route is not None and account and self.meter is not None:
                self.meter.count_request(account, route.bucket or "", op, bytes_in, bytes_out)
        return resp

    def app(self) -> web.Application:
        application = web.Application(client_max_size=1 << 20)
        application.router.add_route("*", "/{tail:.*}", self.dispatch)
        application.on_response_prepare.append(_request_id_headers)
        audit.attach(application, self.audit)

        async def close_owner(_: web.Application) -> None:
            await self.owner.close()
        application.on_cleanup.append(close_owner)
        application.cleanup_ctx.append(self._key_uses)
        application.cleanup_ctx.append(self._metering)
        return application

    async def _metering(self, _: web.Application) -> AsyncIterator[None]:
        if self.meter is None:  # metering off
            yield
            return
        self.meter.start()
        yield
        await self.meter.close()

    async def _key_uses(self, _: web.Application) -> AsyncIterator[None]:
        task = asyncio.ensure_future(self.directory.keep_uses())
        yield
        task.cancel()


MAX_HEADER_BYTES = 8 * 1024
MAX_URL_BYTES = 8 * 1024
# aiohttp's own parser limits sit above S3's so that oversized requests reach
# dispatch and get S3's XML error instead of aiohttp's plain-text 400.
PARSER_LIMITS = {"max_line_size": 64 * 1024, "max_field_size": 64 * 1024,
                 "lingering_time": 0}


_SIGNATURE_PARAMS = ("X-Amz-Signature", "X-Amz-Credential", "X-Amz-Algorithm", "Signature",
                     "AWSAccessKeyId")


def _unsigned(request: web.Request) -> bool:
    """No signature of any kind (an anonymous request, not a failed signed one)."""
    return "Authorization" not in request.headers and not any(
        name in request.query for name in _SIGNATURE_PARAMS)


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def check_request_size(request: web.Request) -> None:
    if len(request.raw_path) > MAX_URL_BYTES:
        raise InvalidURI("The URI is too long.")
    size = sum(len(k) + len(v) + 4 for k, v in request.raw_headers)
    if size > MAX_HEADER_BYTES:
        raise RequestHeaderSectionTooLarge(MaxSizeAllowed=MAX_HEADER_BYTES)
    if request.method in ("PUT", "POST") and "chunked" in request.headers.get(
            "Transfer-Encoding", "").lower() \
            and "x-amz-decoded-content-length" not in request.headers:
        raise S3NotImplemented("A header you provided implies functionality that is not "
                               "implemented", Header="Transfer-Encoding")


async def _request_id_headers(request: web.Request, response: web.StreamResponse) -> None:
    # Runs for every response, streamed ones included, just before it starts.
    response.headers["x-amz-request-id"] = request.get("request_id", "")
    response.headers["x-amz-id-2"] = HOST_ID
    response.headers["Server"] = "Basalt"
    cors.add_headers(request, response)
