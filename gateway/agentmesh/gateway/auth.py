"""Authentication and per-key authorization at the gateway.

A caller presents an API key (``x-api-key: KEY``, or ``authorization: Bearer
KEY``) or a JWT (``authorization: Bearer TOKEN``, HS256 or RS256). Keys are
stored hashed in a YAML/JSON file (``AGENTMESH_AUTH_KEYS_FILE``)::

    keys:
      - id: reports-bot
        hash: sha256:5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
        scopes: {agents: [summarizer, qa], skills: ["*"], workflows: [triage]}
        rate_limit: {rate: 5, burst: 10}     # optional, per second
        max_jobs: 10                         # optional, jobs queued or running
      - id: oncall
        hash: sha256:...
        scopes: {agents: ["*"], skills: ["*"], workflows: ["*"], operator: true}

A token's ``sub`` is its identity and its scopes are the ``agentmesh`` claim
(same shape as a key's ``scopes``). A principal may call an agent, skill or
declared workflow its scopes list (``"*"``: any); a request that leaves the
agent or skill to routing needs ``"*"`` there, and an inline workflow
definition needs ``"*"`` everywhere.

Jobs and A2A tasks belong to the principal that created them
(:attr:`Principal.owner`); a principal sees only its own unless its scopes
say ``operator: true`` (:attr:`Principal.viewer` is then None: every job).
With authentication off every caller is the one :data:`ANONYMOUS` principal.

``agentmesh.gateway.guard`` applies all of this, with the rate limit, the job
quota and the audit log, to every method of every service the gateway serves;
health and reflection stay open (``AGENTMESH_AUTH_OPEN_SERVICES``). Failures
are UNAUTHENTICATED or PERMISSION_DENIED with a message that never contains
the key or token. The keys file is read again on :meth:`Authenticator.reload`
(SIGHUP): a file that does not load leaves the keys in force as they were.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import jwt
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from agentmesh.gateway.policy import ClientRate, RateLimitPolicy
from agentmesh.gateway.targets import parse_target
from agentmesh.runtime.errors import AgentError
from agentmesh.runtime.settings import ServerSettings
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb

API_KEY_METADATA = "x-api-key"
AUTHORIZATION_METADATA = "authorization"
HASH_SCHEME = "sha256"
ANY = "*"
GATEWAY_PREFIX = "/agentmesh.v1.Gateway/"
DEFAULT_OPEN_SERVICES = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)

Metadata = Sequence[tuple[str, str | bytes]] | None


class AuthSettings(ServerSettings):
    """Authentication settings of the gateway (``AGENTMESH_AUTH_*``)."""

    auth_required: bool = Field(
        False, description="refuse calls without valid credentials (on in production)"
    )
    auth_keys_file: Path | None = Field(
        None, description="YAML/JSON file of hashed API keys with their scopes and limits"
    )
    auth_jwt_hs256_secret: SecretStr | None = Field(
        None, description="shared secret verifying HS256 bearer tokens (prefer the _file form)"
    )
    auth_jwt_hs256_secret_file: Path | None = Field(
        None, description="file holding the shared secret verifying HS256 bearer tokens"
    )
    auth_jwt_rs256_public_key_file: Path | None = Field(
        None, description="PEM public key verifying RS256 bearer tokens"
    )
    auth_jwt_issuer: str | None = Field(None, description="required iss claim of tokens")
    auth_jwt_audience: str | None = Field(None, description="required aud claim of tokens")
    auth_jwt_scopes_claim: str = Field(
        "agentmesh", description="claim holding a token's scopes {agents, skills, workflows}"
    )
    auth_jwt_leeway: float = Field(30.0, ge=0, le=600, description="clock skew allowed (s)")
    auth_open_services: list[str] = Field(
        default_factory=lambda: list(DEFAULT_OPEN_SERVICES),
        description="services callable without credentials (JSON list)",
    )


class AuthConfigError(ValueError):
    """The authentication configuration is unusable; the message says which setting."""


class AuthError(Exception):
    """A refused call: UNAUTHENTICATED or PERMISSION_DENIED with a caller-safe message."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        retry_after: float | None = None,
        reason: str = "",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after  # seconds, for a rate-limited call
        self.reason = reason  # the ErrorInfo reason; default: the code's name
        self.principal: str | None = None  # who was refused, once authenticated


def _unauthenticated(message: str) -> AuthError:
    return AuthError(grpc.StatusCode.UNAUTHENTICATED, message)


def _denied(message: str) -> AuthError:
    return AuthError(grpc.StatusCode.PERMISSION_DENIED, message)


# -- keys and scopes ---------------------------------------------------------


def hash_key(key: str) -> str:
    """The stored form of an API key: ``sha256:<hex>``.

    A fast hash suits keys (unlike passwords): they are long random strings
    (:func:`new_key`), so a stolen hash cannot be brute-forced back.
    """
    return f"{HASH_SCHEME}:{hashlib.sha256(key.encode('utf-8')).hexdigest()}"


def new_key() -> str:
    """A fresh API key with 256 bits of randomness."""
    return "am_" + secrets.token_urlsafe(32)


class Scopes(BaseModel):
    """What a principal may call; ``"*"`` in a list allows any name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    agents: tuple[str, ...] = ()
    skills: tuple[str, ...] = ()
    workflows: tuple[str, ...] = ()
    operator: bool = False  # sees and cancels every principal's jobs and tasks

    @classmethod
    def everything(cls) -> Scopes:
        return cls(agents=(ANY,), skills=(ANY,), workflows=(ANY,))

    @functools.cached_property
    def calls_anything(self) -> bool:
        """Every agent, skill and workflow (and inline workflows): authorization has
        nothing to check (asked on every call; scopes never change)."""
        return all(ANY in names for names in (self.agents, self.skills, self.workflows))


class KeyEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    hash: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    scopes: Scopes = Field(default_factory=Scopes)
    rate_limit: ClientRate | None = None
    max_jobs: int | None = Field(None, ge=0)


class KeyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[KeyEntry] = Field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: ``key:<id>`` or ``jwt:<sub>``, with its scopes."""

    id: str
    scopes: Scopes
    max_jobs: int | None = None

    @property
    def owner(self) -> str:
        """The owner recorded on the jobs and tasks this principal creates."""
        return self.id

    @property
    def viewer(self) -> str | None:
        """Whose jobs this principal may see: its own, or None (all) for an operator."""
        return None if self.scopes.operator else self.id


ANONYMOUS = Principal("anonymous", Scopes.everything())
"""The caller when authentication is optional and none was presented."""

_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "agentmesh_principal", default=None
)


def current_principal() -> Principal | None:
    """The principal of the call being served (None outside an authenticated call)."""
    return _current.get()


def caller() -> Principal:
    """The principal of the call being served; :data:`ANONYMOUS` when none was set
    (authentication off)."""
    return _current.get() or ANONYMOUS


_work_owner: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "agentmesh_work_owner", default=None
)


def work_owner() -> str | None:
    """Whose work is being done: the admitted caller's, or in a job's run its owner's."""
    principal = _current.get()
    return principal.owner if principal is not None else _work_owner.get()


def set_work_owner(owner: str | None) -> None:
    """Do the current task's work for ``owner`` (a job's run, for the job's owner)."""
    _work_owner.set(owner)


def set_current_principal(principal: Principal | None) -> None:
    """Make ``principal`` the current call's (the guard does, once it is admitted)."""
    _current.set(principal)


def authenticated_identity() -> str | None:
    """The identity to rate limit the current call by: its principal's, unless anonymous."""
    principal = _current.get()
    return None if principal is None or principal is ANONYMOUS else principal.id


def load_keys(path: Path) -> KeyFile:
    """Read and validate a keys file; errors name the file and entry, never a hash."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise AuthConfigError(f"auth_keys_file: cannot read {path}: {exc.strerror}") from None
    try:
        raw = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError):
        raise AuthConfigError(f"auth_keys_file: {path} is not valid YAML/JSON") from None
    try:
        keys = KeyFile.model_validate(raw or {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise AuthConfigError(f"auth_keys_file: {path}: {problems}") from None
    ids = [k.id for k in keys.keys]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise AuthConfigError(f"auth_keys_file: duplicate key ids {', '.join(duplicates)}")
    return keys


# -- authentication ----------------------------------------------------------


@dataclass(slots=True)
class Authenticator:
    """Turns a call's metadata into a :class:`Principal` (or an :class:`AuthError`)."""

    required: bool = False
    keys: Mapping[str, KeyEntry] = field(default_factory=dict)  # by hash
    hs256_secret: bytes | None = None
    rs256_public_key: bytes | None = None
    issuer: str | None = None
    audience: str | None = None
    scopes_claim: str = "agentmesh"
    leeway: float = 30.0
    open_services: frozenset[str] = frozenset(DEFAULT_OPEN_SERVICES)
    keys_file: Path | None = None

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> Authenticator:
        keys = load_keys(settings.auth_keys_file).keys if settings.auth_keys_file else []
        secret: bytes | None = None
        if settings.auth_jwt_hs256_secret_file is not None:
            secret = _read(settings.auth_jwt_hs256_secret_file, "auth_jwt_hs256_secret_file")
            secret = secret.strip()
        elif settings.auth_jwt_hs256_secret is not None:
            secret = settings.auth_jwt_hs256_secret.get_secret_value().encode("utf-8")
        if secret is not None and len(secret) < 32:
            raise AuthConfigError("auth_jwt_hs256_secret: use at least 32 bytes")
        public_key = (
            _read(settings.auth_jwt_rs256_public_key_file, "auth_jwt_rs256_public_key_file")
            if settings.auth_jwt_rs256_public_key_file
            else None
        )
        authenticator = cls(
            required=settings.auth_required,
            keys={k.hash: k for k in keys},
            hs256_secret=secret,
            rs256_public_key=public_key,
            issuer=settings.auth_jwt_issuer,
            audience=settings.auth_jwt_audience,
            scopes_claim=settings.auth_jwt_scopes_claim,
            leeway=settings.auth_jwt_leeway,
            open_services=frozenset(settings.auth_open_services),
            keys_file=settings.auth_keys_file,
        )
        if authenticator.required and not authenticator.configured:
            raise AuthConfigError(
                "auth_required is on but no credentials are configured: set auth_keys_file "
                "or an auth_jwt_* key"
            )
        return authenticator

    def reload(self) -> int:
        """Read the keys file again and use its keys from the next call on; the number of
        keys. Raises :class:`AuthConfigError` (and keeps the keys in force) when the file
        does not load."""
        if self.keys_file is None:
            return len(self.keys)
        keys = load_keys(self.keys_file).keys
        self.keys = {k.hash: k for k in keys}
        return len(keys)

    @property
    def configured(self) -> bool:
        """Whether any credential could ever be accepted."""
        return bool(self.keys) or self.hs256_secret is not None or self.rs256_public_key is not None

    def is_open(self, method: str) -> bool:
        """Whether ``method`` (``/package.Service/Method``) is callable without credentials."""
        return method.lstrip("/").partition("/")[0] in self.open_services

    def authenticate(self, metadata: Metadata) -> Principal:
        """The caller's principal; raises :class:`AuthError` (UNAUTHENTICATED) when refused."""
        api_key, bearer = _credentials(metadata)
        if api_key is not None:
            return self._by_key(api_key)
        if bearer is not None:
            if bearer.count(".") == 2 and (self.hs256_secret or self.rs256_public_key):
                return self._by_token(bearer)
            return self._by_key(bearer)
        if self.required:
            raise _unauthenticated(
                "authentication required: send an API key in x-api-key "
                "or a token in authorization: Bearer"
            )
        return ANONYMOUS

    def _by_key(self, key: str) -> Principal:
        entry = self.keys.get(hash_key(key))
        # Compare again in constant time: the dict lookup only picks the candidate.
        if entry is None or not hmac.compare_digest(entry.hash, hash_key(key)):
            raise _unauthenticated("API key not recognised")
        return Principal(f"key:{entry.id}", entry.scopes, entry.max_jobs)

    def _by_token(self, token: str) -> Principal:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError:
            raise _unauthenticated("bearer token is not a well-formed JWT") from None
        key: bytes | None = {"HS256": self.hs256_secret, "RS256": self.rs256_public_key}.get(
            str(algorithm)
        )
        if key is None:
            raise _unauthenticated(f"bearer token algorithm {str(algorithm)[:16]!r} not accepted")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[str(algorithm)],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={"require": ["exp", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthenticated("bearer token has expired") from None
        except jwt.InvalidSignatureError:
            raise _unauthenticated("bearer token signature is not valid") from None
        except jwt.InvalidAudienceError:
            raise _unauthenticated("bearer token audience is not accepted") from None
        except jwt.InvalidIssuerError:
            raise _unauthenticated("bearer token issuer is not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _unauthenticated(f"bearer token lacks the {exc.claim} claim") from None
        except jwt.PyJWTError:
            raise _unauthenticated("bearer token is not valid") from None
        subject = str(claims["sub"])[:128]
        try:
            scopes = Scopes.model_validate(claims.get(self.scopes_claim) or {})
        except ValidationError:
            raise _unauthenticated(
                f"bearer token claim {self.scopes_claim} must be "
                "{agents: [...], skills: [...], workflows: [...]}"
            ) from None
        return Principal(f"jwt:{subject}", scopes)

    def rate_policy(self, policy: RateLimitPolicy) -> RateLimitPolicy:
        """``policy`` with each key's own rate limit added for its identity."""
        per_key = {f"key:{k.id}": k.rate_limit for k in self.keys.values() if k.rate_limit}
        if not per_key:
            return policy
        return policy.model_copy(update={"clients": {**policy.clients, **per_key}})


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AuthConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from None


def _credentials(metadata: Metadata) -> tuple[str | None, str | None]:
    """The API key and bearer value a call carries (either may be None)."""
    api_key = bearer = None
    for key, value in metadata or ():
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        if key == API_KEY_METADATA:
            api_key = text.strip()
        elif key == AUTHORIZATION_METADATA:
            scheme, _, credential = text.strip().partition(" ")
            if scheme.lower() != "bearer" or not credential.strip():
                raise _unauthenticated("authorization metadata must be 'Bearer <credential>'")
            bearer = credential.strip()
    return api_key, bearer


# -- authorization -----------------------------------------------------------


def _allowed(names: tuple[str, ...], name: str) -> bool:
    return ANY in names or name in names


def _check_target(principal: Principal, agent: str, skill: str) -> None:
    scopes = principal.scopes
    if not agent and not _allowed(scopes.agents, ANY):
        raise _denied(f"{principal.id} may call only named agents: set the agent")
    if agent and not _allowed(scopes.agents, agent):
        raise _denied(f"{principal.id} may not call agent {agent[:64]!r} (scopes.agents)")
    if not skill and not _allowed(scopes.skills, ANY):
        raise _denied(f"{principal.id} may use only named skills: set the skill")
    if skill and not _allowed(scopes.skills, skill):
        raise _denied(f"{principal.id} may not use skill {skill[:64]!r} (scopes.skills)")


def _check_workflow(principal: Principal, request: gateway_pb2.RunWorkflowRequest) -> None:
    if request.HasField("definition"):
        if not principal.scopes.calls_anything:
            raise _denied(
                f"{principal.id} may run only declared workflows: an inline definition "
                'needs "*" in every scope'
            )
        return
    if not _allowed(principal.scopes.workflows, request.workflow):
        raise _denied(
            f"{principal.id} may not run workflow {request.workflow[:64]!r} (scopes.workflows)"
        )


def authorize(principal: Principal, request: object) -> None:
    """Raise :class:`AuthError` (PERMISSION_DENIED) when ``principal`` may not make ``request``."""
    if principal.scopes.calls_anything:
        return
    if isinstance(request, pb.InvokeRequest):
        try:
            named = parse_target(request.agent, request.skill)
        except AgentError:
            return  # malformed: refused as INVALID_ARGUMENT where the request is read
        if named.workflow:
            _check_workflow(principal, gateway_pb2.RunWorkflowRequest(workflow=named.workflow))
        else:
            _check_target(principal, named.agent, named.skill)
    elif isinstance(request, gateway_pb2.FanOutRequest):
        for target in request.targets:
            _check_target(principal, target.agent, target.skill or request.skill)
        if not request.targets:
            _check_target(principal, "", request.skill)
        if request.HasField("aggregator"):
            _check_target(principal, request.aggregator.agent, request.aggregator.skill)
    elif isinstance(request, gateway_pb2.RunWorkflowRequest):
        _check_workflow(principal, request)
    elif isinstance(request, gateway_pb2.SubmitJobRequest):
        work = request.WhichOneof("work")
        if work is not None:
            authorize(principal, getattr(request, work))
