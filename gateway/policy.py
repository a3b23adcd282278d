"""The AWS policy language for S3: bucket (resource) and identity policies.

:func:`parse_policy` validates a policy document as S3 and IAM do and compiles it
once (wildcards to regexes, condition values to numbers, dates, networks) into
immutable dataclasses; :meth:`Policy.evaluate` then answers ALLOW, DENY or
NOT_APPLICABLE for a :class:`RequestContext` without any JSON work.

A statement applies when its principal (bucket policies only), action, resource
and every condition match. ``NotPrincipal``/``NotAction``/``NotResource`` apply to
everything the list does not name. A request's principal is its user and its
account: ``Principal`` matches if it names either, ``NotPrincipal`` only excludes
a user whose account it names as well (AWS's rule for NotPrincipal with Deny).

:func:`decide` combines the policies the way S3 authorizes a request:

1. an explicit Deny in any applicable identity or bucket policy denies;
2. an anonymous request is allowed only by the bucket policy or an ACL;
3. in the bucket owner's account, either side allows: an identity policy, the
   bucket policy, an ACL, or being the account's root — a bucket policy that
   names the account (not the user, nor everyone) allows its users only through
   their identity policies, as AWS delegates account grants;
4. from another account both sides must allow: the requester's account (an
   identity policy, or being that account's root) and the bucket owner (the
   bucket policy or an ACL);
5. anything else is denied (the default, implicit deny).
"""

from __future__ import annotations

import enum
import functools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .policy_conditions import Clause, MalformedPolicy, Wildcard, glob_regex, parse_clause

__all__ = [
    "ALLOW", "DENY", "NOT_APPLICABLE", "Decision", "MalformedPolicy", "Policy", "Principals",
    "RequestContext", "Statement", "decide", "is_public", "parse_policy",
]

BUCKET_POLICY_LIMIT = 20 * 1024
EXISTING_TAG = "s3:existingobjecttag/"
VERSIONS = ("2012-10-17", "2008-10-17")


class Decision(enum.Enum):
    ALLOW = "Allow"
    DENY = "Deny"
    NOT_APPLICABLE = "NotApplicable"


ALLOW, DENY, NOT_APPLICABLE = Decision.ALLOW, Decision.DENY, Decision.NOT_APPLICABLE

_ANONYMOUS = "*anonymous*"  # the identity of an unsigned request; no policy can name it


def account_arn(account: str) -> str:
    return f"arn:aws:iam::{account}:root"


def user_arn(account: str, user: str) -> str:
    return f"arn:aws:iam::{account}:user/{user}"


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What a policy is evaluated against.

    ``account`` is None for an anonymous request; a signed request without ``user``
    is the account's root. ``keys`` maps condition keys (any case) to their values;
    ``aws:PrincipalAccount``, ``aws:PrincipalArn``, ``aws:PrincipalType``,
    ``aws:username`` and (for root) ``aws:userid`` are filled in from the principal
    unless given.
    """

    action: str
    resource: str
    account: str | None = None
    user: str | None = None
    canonical_id: str | None = None
    keys: Mapping[str, Sequence[str] | str] = field(default_factory=dict)
    # A user is also named by its account's ARN (an account principal delegates to
    # its users); False leaves that out, to ask what names the user itself.
    by_account: bool = True
    condition_keys: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)
    identities: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        keys = {k.lower(): (v,) if isinstance(v, str) else tuple(v) for k, v in self.keys.items()}
        ids = set()
        if self.account is None:
            ids.add(_ANONYMOUS)
            keys.setdefault("aws:principaltype", ("Anonymous",))
        else:
            if self.user is None or self.by_account:
                ids.add(account_arn(self.account))
            keys.setdefault("aws:principalaccount", (self.account,))
            if self.user is None:
                keys.setdefault("aws:principalarn", (account_arn(self.account),))
                keys.setdefault("aws:principaltype", ("Account",))
                keys.setdefault("aws:userid", (self.account,))
            else:
                ids.add(user_arn(self.account, self.user))
                keys.setdefault("aws:principalarn", (user_arn(self.account, self.user),))
                keys.setdefault("aws:principaltype", ("User",))
                keys.setdefault("aws:username", (self.user,))
        if self.canonical_id is not None:
            ids.add("canonical:" + self.canonical_id)
        object.__setattr__(self, "condition_keys", keys)
        object.__setattr__(self, "identities", frozenset(ids))

    @property
    def anonymous(self) -> bool:
        return self.account is None

    @property
    def root(self) -> bool:
        return self.account is not None and self.user is None


@dataclass(frozen=True, slots=True)
class Principals:
    """A Principal/NotPrincipal element: everyone, or ARNs (accounts as ``...:root``) and canonical ids."""

    everyone: bool = False
    arns: frozenset[str] = frozenset()
    canonical_users: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()  # accepted as AWS does; no Basalt request is a service
    identities: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def names(self, ctx: RequestContext) -> bool:
        return self.everyone or not self.identities.isdisjoint(ctx.identities)

    def names_all(self, ctx: RequestContext) -> bool:
        return self.everyone or ctx.identities <= self.identities


@dataclass(frozen=True, slots=True)
class Statement:
    effect: Decision  # ALLOW or DENY
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    sid: str | None = None
    principal: Principals | None = None
    not_principal: bool = False
    not_action: bool = False
    not_resource: bool = False
    conditions: tuple[Clause, ...] = ()
    action_pattern: re.Pattern[str] = field(default=None, repr=False, compare=False)  # type: ignore[assignment]
    resource_pattern: re.Pattern[str] | None = field(default=None, repr=False, compare=False)
    resource_templates: tuple[Wildcard, ...] = field(default=(), repr=False, compare=False)

    def matches_action(self, action: str) -> bool:
        return (self.action_pattern.fullmatch(action) is not None) != self.not_action

    def applies(self, ctx: RequestContext) -> bool:
        """Whether the statement covers ``ctx`` (its action is checked by :meth:`matches_action`)."""
        # Plain loops, cheapest test first: this runs for every statement of every
        # request a policy judges.
        principal = self.principal
        if principal is not None:
            named = principal.names_all(ctx) if self.not_principal else principal.names(ctx)
            if named == self.not_principal:
                return False
        pattern = self.resource_pattern
        hit = pattern is not None and pattern.fullmatch(ctx.resource) is not None
        if not hit and self.resource_templates:
            keys = ctx.condition_keys
            hit = any(w.match(ctx.resource, keys) for w in self.resource_templates)
        if hit == self.not_resource:
            return False
        if self.conditions:
            keys = ctx.condition_keys
            for clause in self.conditions:
                if not clause.holds(keys):
                    return False
        return True


@dataclass(frozen=True, slots=True)
class Policy:
    statements: tuple[Statement, ...]
    version: str = "2008-10-17"
    id: str | None = None
    kind: str = "resource"
    # a condition names s3:ExistingObjectTag/...: the object's tags must be read
    reads_existing_tags: bool = False
    # action (lowercased) -> (Deny statements, Allow statements) whose Action covers it
    _by_action: dict[str, tuple[tuple[Statement, ...], tuple[Statement, ...]]] = field(
        default_factory=dict, repr=False, compare=False)

    def _for_action(self, action: str) -> tuple[tuple[Statement, ...], tuple[Statement, ...]]:
        found = self._by_action.get(action)
        if found is None:
            hits = [s for s in self.statements if s.matches_action(action)]
            found = (tuple(s for s in hits if s.effect is DENY), tuple(s for s in hits if s.effect is ALLOW))
            if len(self._by_action) < 1024:  # actions are a small set; bound it anyway
                self._by_action[action] = found
        return found

    def denies(self, ctx: RequestContext) -> bool:
        """Whether a Deny statement applies (all that matters for the owner's root)."""
        for statement in self._for_action(ctx.action.lower())[0]:
            if statement.applies(ctx):
                return True
        return False

    def evaluate(self, ctx: RequestContext) -> Decision:
        """DENY if a Deny statement applies, else ALLOW if an Allow does, else NOT_APPLICABLE."""
        denies, allows = self._for_action(ctx.action.lower())
        for statement in denies:
            if statement.applies(ctx):
                return DENY
        for statement in allows:
            if statement.applies(ctx):
                return ALLOW
        return NOT_APPLICABLE


def decide(identity_policies: Iterable[Policy], resource_policy: Policy | None, ctx: RequestContext,
           resource_owner_account: str, acl_allows: bool = False) -> bool:
    """Whether S3 allows ``ctx`` (the order is in the module docstring)."""
    if ctx.root and ctx.account == resource_owner_account:  # only a Deny can refuse it
        return resource_policy is None or not resource_policy.denies(ctx)
    identity = [] if ctx.anonymous else [p.evaluate(ctx) for p in identity_policies]
    resource = resource_policy.evaluate(ctx) if resource_policy is not None else NOT_APPLICABLE
    if resource is DENY or DENY in identity:
        return False
    owner_side = resource is ALLOW or acl_allows
    if ctx.anonymous:
        return owner_side
    requester_side = ctx.root or ALLOW in identity
    if ctx.account == resource_owner_account:
        if requester_side or acl_allows or resource is not ALLOW or ctx.user is None:
            return requester_side or owner_side
        # A grant to the account itself reaches its users only through their
        # identity policies: the bucket policy must name the user (or everyone).
        return resource_policy.evaluate(replace(ctx, by_account=False)) is ALLOW
    return requester_side and owner_side


# --- parsing -----------------------------------------------------------------------

_TOP_KEYS = frozenset(("Version", "Id", "Statement"))
_STATEMENT_KEYS = frozenset(("Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction",
                             "Resource", "NotResource", "Condition"))
_ACCOUNT = re.compile(r"\d{12}")
_PRINCIPAL_ARN = re.compile(r"arn:aws:iam::(\d{12}):(root|user/(?:[\w+=,.@-]+/)*[\w+=,.@-]{1,64})")
_CANONICAL = re.compile(r"[0-9a-fA-F]{64}")
_ACTION = re.compile(r"([a-z0-9-]+):([A-Za-z0-9*?]+)", re.IGNORECASE)
_SERVICE_RESOURCE = re.compile(r"arn:[^:]*:[^:]*:[^:]*:[^:]*:.+", re.DOTALL)
_S3_RESOURCE = "arn:aws:s3:::"

S3_ACTIONS = frozenset(a.lower() for a in """
AbortMultipartUpload BypassGovernanceRetention CreateAccessGrant CreateAccessGrantsInstance
CreateAccessGrantsLocation CreateAccessPoint CreateAccessPointForObjectLambda CreateBucket
CreateBucketMetadataTableConfiguration CreateJob CreateMultiRegionAccessPoint CreateStorageLensGroup
DeleteAccessGrant DeleteAccessGrantsInstance DeleteAccessGrantsInstanceResourcePolicy
DeleteAccessGrantsLocation DeleteAccessPoint DeleteAccessPointForObjectLambda DeleteAccessPointPolicy
DeleteAccessPointPolicyForObjectLambda DeleteBucket DeleteBucketMetadataTableConfiguration
DeleteBucketOwnershipControls DeleteBucketPolicy DeleteBucketWebsite DeleteJobTagging
DeleteMultiRegionAccessPoint DeleteObject DeleteObjectTagging DeleteObjectVersion
DeleteObjectVersionTagging DeleteStorageLensConfiguration DeleteStorageLensConfigurationTagging
DeleteStorageLensGroup DescribeJob DescribeMultiRegionAccessPointOperation GetAccelerateConfiguration
GetAccessGrant GetAccessGrantsInstance GetAccessGrantsInstanceForPrefix
GetAccessGrantsInstanceResourcePolicy GetAccessGrantsLocation GetAccessPoint
GetAccessPointConfigurationForObjectLambda GetAccessPointForObjectLambda GetAccessPointPolicy
GetAccessPointPolicyForObjectLambda GetAccessPointPolicyStatus GetAccessPointPolicyStatusForObjectLambda
GetAccountPublicAccessBlock GetAnalyticsConfiguration GetBucketAcl GetBucketCORS GetBucketLocation
GetBucketLogging GetBucketMetadataTableConfiguration GetBucketNotification
GetBucketObjectLockConfiguration GetBucketOwnershipControls GetBucketPolicy GetBucketPolicyStatus
GetBucketPublicAccessBlock GetBucketRequestPayment GetBucketTagging GetBucketVersioning GetBucketWebsite
GetDataAccess GetEncryptionConfiguration GetIntelligentTieringConfiguration GetInventoryConfiguration
GetJobTagging GetLifecycleConfiguration GetMetricsConfiguration GetMultiRegionAccessPoint
GetMultiRegionAccessPointPolicy GetMultiRegionAccessPointPolicyStatus GetMultiRegionAccessPointRoutes
GetObject GetObjectAcl GetObjectAttributes GetObjectLegalHold GetObjectRetention GetObjectTagging
GetObjectTorrent GetObjectVersion GetObjectVersionAcl GetObjectVersionAttributes
GetObjectVersionForReplication GetObjectVersionTagging GetObjectVersionTorrent
GetReplicationConfiguration GetStorageLensConfiguration GetStorageLensConfigurationTagging
GetStorageLensDashboard GetStorageLensGroup InitiateReplication ListAccessGrants
ListAccessGrantsInstances ListAccessGrantsLocations ListAccessPoints ListAccessPointsForObjectLambda
ListAllMyBuckets ListBucket ListBucketMultipartUploads ListBucketVersions ListCallerAccessGrants
ListJobs ListMultiRegionAccessPoints ListMultipartUploadParts ListStorageLensConfigurations
ListStorageLensGroups ListTagsForResource ObjectOwnerOverrideToBucketOwner PauseReplication
PutAccelerateConfiguration PutAccessGrantsInstanceResourcePolicy
PutAccessPointConfigurationForObjectLambda PutAccessPointPolicy PutAccessPointPolicyForObjectLambda
PutAccessPointPublicAccessBlock PutAccountPublicAccessBlock PutAnalyticsConfiguration PutBucketAcl
PutBucketCORS PutBucketLogging PutBucketNotification PutBucketObjectLockConfiguration
PutBucketOwnershipControls PutBucketPolicy PutBucketPublicAccessBlock PutBucketRequestPayment
PutBucketTagging PutBucketVersioning PutBucketWebsite PutEncryptionConfiguration
PutIntelligentTieringConfiguration PutInventoryConfiguration PutJobTagging PutLifecycleConfiguration
PutMetricsConfiguration PutMultiRegionAccessPointPolicy PutObject PutObjectAcl PutObjectLegalHold
PutObjectRetention PutObjectTagging PutObjectVersionAcl PutObjectVersionTagging
PutReplicationConfiguration PutStorageLensConfiguration PutStorageLensConfigurationTagging
ReplicateDelete ReplicateObject ReplicateTags RestoreObject SubmitMultiRegionAccessPointRoutes
TagResource UntagResource UpdateAccessGrantsLocation UpdateJobPriority UpdateJobStatus
UpdateStorageLensGroup
""".split())


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise MalformedPolicy("This policy contains invalid Json")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise MalformedPolicy("This policy contains invalid Json")


def _strings(raw: Any, error: str) -> tuple[str, ...]:
    """A string or a non-empty list of non-empty strings."""
    items = raw if isinstance(raw, list) else [raw]
    if not items or not all(isinstance(i, str) and i for i in items):
        raise MalformedPolicy(error)
    return tuple(items)


def _principals(raw: Any) -> Principals:
    bad = "Invalid principal in policy"
    if raw == "*":
        return Principals(everyone=True)
    if not isinstance(raw, dict) or not raw:
        raise MalformedPolicy(bad)
    everyone = False
    arns: set[str] = set()
    canonical: set[str] = set()
    services: set[str] = set()
    for kind, value in raw.items():
        for name in _strings(value, bad):
            if kind == "AWS":
                if name == "*":
                    everyone = True
                elif _ACCOUNT.fullmatch(name):
                    arns.add(f"arn:aws:iam::{name}:root")
                elif _PRINCIPAL_ARN.fullmatch(name):
                    arns.add(name)
                else:
                    raise MalformedPolicy(bad)
            elif kind == "CanonicalUser" and _CANONICAL.fullmatch(name):
                canonical.add(name.lower())
            elif kind == "Service" and "*" not in name:
                services.add(name)
            else:
                raise MalformedPolicy(bad)
    ids = frozenset(arns) | {"canonical:" + c for c in canonical}
    return Principals(everyone, frozenset(arns), frozenset(canonical), frozenset(services), ids)


@functools.lru_cache(maxsize=1024)
def _names_s3_action(name: str) -> bool:
    """Whether an action name (pattern) names any S3 action: S3 refuses one that names none."""
    pattern = re.compile(glob_regex(name))
    return any(pattern.fullmatch(a) for a in S3_ACTIONS)


def _actions(raw: Any, resource_policy: bool) -> tuple[tuple[str, ...], re.Pattern[str]]:
    bad = "Policy has invalid action"
    actions = _strings(raw, bad)
    for action in actions:
        if action == "*":
            continue
        m = _ACTION.fullmatch(action)
        if m is None:
            raise MalformedPolicy(bad)
        service, name = m.group(1).lower(), m.group(2)
        if service == "s3":
            if not _names_s3_action(name.lower()):
                raise MalformedPolicy(bad)
        elif resource_policy:
            raise MalformedPolicy(bad)
    source = "|".join(glob_regex(a) for a in actions)
    return actions, re.compile(f"(?:{source})", re.IGNORECASE | re.DOTALL)


def _resources(raw: Any, resource_policy: bool, bucket: str | None, variables: bool
               ) -> tuple[tuple[str, ...], re.Pattern[str] | None, tuple[Wildcard, ...]]:
    bad = "Policy has invalid resource"
    resources = _strings(raw, bad)
    static: list[str] = []
    templates: list[Wildcard] = []
    for resource in resources:
        if resource != "*":
            if not _SERVICE_RESOURCE.fullmatch(resource):
                raise MalformedPolicy(bad)
            if resource_policy:
                if not resource.startswith(_S3_RESOURCE) or len(resource) == len(_S3_RESOURCE):
                    raise MalformedPolicy(bad)
                name = resource[len(_S3_RESOURCE):].split("/", 1)[0]
                # A bucket's policy may only name that bucket and its objects.
                if bucket is not None and "${" not in name and not re.fullmatch(glob_regex(name), bucket):
                    raise MalformedPolicy(bad)
        wildcard = Wildcard(resource, variables)
        if wildcard.pattern is not None:
            static.append(wildcard.template.regex({}) or "")
        else:
            templates.append(wildcard)
    pattern = re.compile("(?:" + "|".join(static) + ")", re.DOTALL) if static else None
    return resources, pattern, tuple(templates)


def _conditions(raw: Any, variables: bool, resource_policy: bool) -> tuple[Clause, ...]:
    if not isinstance(raw, dict):
        raise MalformedPolicy("Policy has an invalid condition block")
    clauses = []
    for op_name, block in raw.items():
        if not isinstance(block, dict):
            raise MalformedPolicy("Policy has an invalid condition block")
        for key, values in block.items():
            clauses.append(parse_clause(op_name, key, values, variables, resource_policy))
    return tuple(clauses)


def _one_of(raw: dict[str, Any], name: str, required: bool) -> tuple[Any, bool] | None:
    """The value of ``name`` or ``Not<name>`` and whether it was the negated one."""
    positive, negative = name in raw, "Not" + name in raw
    if positive and negative:
        raise MalformedPolicy(f"Statement cannot have both {name} and Not{name}")
    if not positive and not negative:
        if required:
            raise MalformedPolicy(f"Missing required field {name}")
        return None
    return (raw[name], False) if positive else (raw["Not" + name], True)


def _statement(raw: Any, resource_policy: bool, bucket: str | None, variables: bool) -> Statement:
    if not isinstance(raw, dict):
        raise MalformedPolicy("Policy has an invalid statement")
    for key in raw:
        if key not in _STATEMENT_KEYS:
            raise MalformedPolicy(f"Unknown field {key}")
    sid = raw.get("Sid")
    if sid is not None and not isinstance(sid, str):
        raise MalformedPolicy("Policy has an invalid Sid")
    if "Effect" not in raw:
        raise MalformedPolicy("Missing required field Effect")
    if raw["Effect"] not in ("Allow", "Deny"):
        raise MalformedPolicy(f"Invalid effect: {raw['Effect']}")
    principal = _one_of(raw, "Principal", resource_policy)
    if principal is not None and not resource_policy:
        raise MalformedPolicy("Has prohibited field " + ("NotPrincipal" if principal[1] else "Principal"))
    action_raw, not_action = _one_of(raw, "Action", True)  # type: ignore[misc]
    resource_raw, not_resource = _one_of(raw, "Resource", True)  # type: ignore[misc]
    actions, action_pattern = _actions(action_raw, resource_policy)
    resources, resource_pattern, templates = _resources(resource_raw, resource_policy, bucket, variables)
    conditions = _conditions(raw["Condition"], variables, resource_policy) if "Condition" in raw else ()
    return Statement(
        effect=Decision(raw["Effect"]), actions=actions, resources=resources, sid=sid,
        principal=_principals(principal[0]) if principal else None,
        not_principal=bool(principal and principal[1]), not_action=not_action,
        not_resource=not_resource, conditions=conditions, action_pattern=action_pattern,
        resource_pattern=resource_pattern, resource_templates=templates,
    )


def parse_policy(document: str | bytes | Mapping[str, Any], kind: str = "resource", *,
                 bucket: str | None = None, max_size: int | None = None) -> Policy:
    """Validate and compile a policy document (JSON text or an already decoded object).

    ``kind`` is "resource" (a bucket policy: Principal required, S3 actions,
    resources and condition keys only, 20 KiB at most unless ``max_size`` says
    otherwise) or "identity" (no Principal). With ``bucket``, a bucket policy's
    resources must name that bucket or its objects.
    """
    if kind not in ("resource", "identity"):
        raise ValueError(f"policy kind must be 'resource' or 'identity', not {kind!r}")
    resource_policy = kind == "resource"
    if max_size is None and resource_policy:
        max_size = BUCKET_POLICY_LIMIT
    if isinstance(document, Mapping):
        size = len(json.dumps(document, separators=(",", ":")).encode())
        raw: Any = document
    else:
        text = document.decode("utf-8", "replace") if isinstance(document, bytes) else document
        size = len(text.encode())
        if max_size is None or size <= max_size:
            if not text.lstrip().startswith("{"):
                raise MalformedPolicy()
            try:
                raw = json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
            except ValueError:
                raise MalformedPolicy("This policy contains invalid Json") from None
    if max_size is not None and size > max_size:
        raise MalformedPolicy("Policy exceeds the maximum allowed document size.")
    if not isinstance(raw, Mapping):
        raise MalformedPolicy()
    for key in raw:
        if key not in _TOP_KEYS:
            raise MalformedPolicy(f"Unknown field {key}")
    version = raw.get("Version", "2008-10-17")
    if version not in VERSIONS:
        raise MalformedPolicy("The policy must contain a valid version string")
    policy_id = raw.get("Id")
    if policy_id is not None and not isinstance(policy_id, str):
        raise MalformedPolicy("Policy has an invalid Id")
    if "Statement" not in raw:
        raise MalformedPolicy("Missing required field Statement")
    items = raw["Statement"] if isinstance(raw["Statement"], list) else [raw["Statement"]]
    if not items:
        raise MalformedPolicy("Missing required field Statement")
    variables = version == "2012-10-17"
    statements = tuple(_statement(s, resource_policy, bucket, variables) for s in items)
    sids = [s.sid for s in statements if s.sid is not None]
    if len(sids) != len(set(sids)):
        raise MalformedPolicy("Statement IDs (SID) in a single policy must be unique")
    existing_tags = any(c.key.startswith(EXISTING_TAG) for st in statements for c in st.conditions)
    return Policy(statements, version, policy_id, kind, existing_tags)


# --- public policies ----------------------------------------------------------------

# Condition keys whose fixed values keep an Allow to everyone from being public
# (the rules of GetBucketPolicyStatus / Block Public Access).
_RESTRICTING_KEYS = frozenset(k.lower() for k in (
    "aws:SourceIp", "aws:SourceArn", "aws:SourceVpc", "aws:SourceVpce", "aws:SourceOwner",
    "aws:SourceAccount", "aws:SourceOrgID", "aws:PrincipalAccount", "aws:PrincipalArn",
    "aws:PrincipalOrgID", "aws:userid", "s3:DataAccessPointArn", "s3:DataAccessPointAccount",
))
_FIXING_OPERATORS = frozenset(("StringEquals", "StringEqualsIgnoreCase", "StringLike", "ArnEquals",
                               "ArnLike", "IpAddress"))


def _restricts(clause: Clause) -> bool:
    if (clause.key not in _RESTRICTING_KEYS or clause.base not in _FIXING_OPERATORS
            or clause.if_exists or clause.quantifier == "all"):
        return False
    if clause.base == "IpAddress":
        # A very wide block (e.g. 0.0.0.0/1) is as good as everyone.
        return all(net.prefixlen >= (8 if net.version == 4 else 32) for net in clause.compiled)
    # Fixed values: no wildcard and no variable anywhere.
    return not any(c in v for v in clause.values for c in "*?$")


def is_public(policy: Policy) -> bool:
    """Whether a bucket policy is public: an Allow to everyone not pinned by a fixed condition."""
    for statement in policy.statements:
        if statement.effect is not ALLOW or statement.principal is None:
            continue
        if statement.not_principal or statement.principal.everyone:
            if not any(_restricts(c) for c in statement.conditions):
                return True
    return False
