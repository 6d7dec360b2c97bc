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

A token's ``sub`` is its identity and its scopes are the ``agentmesh`` claim
(same shape as a key's ``scopes``). A principal may call an agent, skill or
declared workflow its scopes list (``"*"``: any); a request that leaves the
agent or skill to routing needs ``"*"`` there, and an inline workflow
definition needs ``"*"`` everywhere.

:class:`AuthInterceptor` applies all of this to ``agentmesh.v1`` methods;
health and reflection stay open (``AGENTMESH_AUTH_OPEN_SERVICES``). Other
services (e.g. an A2A endpoint) call :meth:`Authenticator.authenticate` and
:func:`authorize` the same way. Failures are UNAUTHENTICATED or
PERMISSION_DENIED with a message that never contains the key or token.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import inspect
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
import jwt
import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from agentmesh.gateway.resilience.policy import ClientRate, RateLimitPolicy
from agentmesh.runtime.errors import Reason
from agentmesh.runtime.settings import ServerSettings
from agentmesh.runtime.status import StatusDetails, abort_status
from agentmesh.v1 import gateway_pb2
from agentmesh.v1 import messages_pb2 as pb

if TYPE_CHECKING:
    from agentmesh.gateway.jobs import JobManager

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

Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"  # generic only to the type checker
Context = grpc.aio.ServicerContext[Any, Any]
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

    def __init__(self, code: grpc.StatusCode, message: str, *, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason  # the ErrorInfo reason; default: the code's name


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

    @classmethod
    def everything(cls) -> Scopes:
        return cls(agents=(ANY,), skills=(ANY,), workflows=(ANY,))


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


ANONYMOUS = Principal("anonymous", Scopes.everything())
"""The caller when authentication is optional and none was presented."""

_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "agentmesh_principal", default=None
)


def current_principal() -> Principal | None:
    """The principal of the call being served (None outside an authenticated call)."""
    return _current.get()


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
        )
        if authenticator.required and not authenticator.configured:
            raise AuthConfigError(
                "auth_required is on but no credentials are configured: set auth_keys_file "
                "or an auth_jwt_* key"
            )
        return authenticator

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
        if principal.scopes != Scopes.everything():
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
    if isinstance(request, pb.InvokeRequest):
        _check_target(principal, request.agent, request.skill)
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


# -- the interceptor ---------------------------------------------------------


class JobQuota:
    """Jobs queued or running per principal, for ``max_jobs`` of its key.

    Counts the jobs this gateway accepted for each principal; finished ones are
    dropped when next counted (read back from the job store).
    """

    def __init__(self, jobs: Callable[[], JobManager | None]) -> None:
        self._jobs = jobs
        self._ids: dict[str, list[str]] = {}

    async def check(self, principal: Principal) -> None:
        limit = principal.max_jobs
        manager = self._jobs()
        if limit is None or manager is None:
            return
        active = []
        for job_id in self._ids.get(principal.id, []):
            try:
                job = await manager.get(job_id)
            except Exception:  # noqa: S112 - gone from the store: no longer counts
                continue
            if job.state in (pb.TASK_STATE_SUBMITTED, pb.TASK_STATE_WORKING):
                active.append(job_id)
        self._ids[principal.id] = active
        if len(active) >= limit:
            raise AuthError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"jobs: {len(active)} jobs of {principal.id} are queued or running; "
                f"the limit is {limit} (max_jobs of the key)",
                reason=Reason.QUOTA_EXCEEDED,
            )

    def record(self, principal: Principal, job: object) -> None:
        if principal.max_jobs is not None and isinstance(job, gateway_pb2.Job):
            self._ids.setdefault(principal.id, []).append(job.job_id)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every non-open method and authorizes gateway requests by scope.

    The authenticated identity is :func:`authenticated_identity` for the
    interceptors after this one (the per-client rate limit), so a caller is
    rate limited by its key, not by the ``x-agentmesh-client`` label it sends.
    """

    def __init__(self, authenticator: Authenticator, *, quota: JobQuota | None = None) -> None:
        """``quota`` counts SubmitJob calls (shared with the A2A service, whose tasks are jobs)."""
        self._authenticator = authenticator
        self._quota = quota or JobQuota(lambda: None)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method = handler_call_details.method
        if self._authenticator.is_open(method):
            return await continuation(handler_call_details)
        metadata: Metadata = handler_call_details.invocation_metadata
        try:
            principal: Principal | AuthError = self._authenticator.authenticate(metadata)
        except AuthError as exc:
            principal = exc
        # Seen by the interceptors after this one in the same call (the rate
        # limit keys on it), and by the servicer.
        _current.set(principal if isinstance(principal, Principal) else None)
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        return self._wrap(handler, principal, method == f"{GATEWAY_PREFIX}SubmitJob")

    def _wrap(self, handler: Handler, principal: Principal | AuthError, is_submit: bool) -> Handler:
        quota = self._quota

        async def admit(request: Any, context: Context) -> Principal:
            try:
                if isinstance(principal, AuthError):
                    raise principal
                authorize(principal, request)
                if is_submit:
                    await quota.check(principal)
            except AuthError as exc:
                await abort_status(context, exc.code, exc.message, StatusDetails(exc.reason))
            _current.set(principal)
            return principal

        serializers: dict[str, Any] = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }
        if handler.unary_unary is not None:
            unary: Any = handler.unary_unary

            async def unary_unary(request: Any, context: Context) -> Any:
                admitted = await admit(request, context)
                response = await unary(request, context)
                if is_submit:
                    quota.record(admitted, response)
                return response

            return grpc.unary_unary_rpc_method_handler(unary_unary, **serializers)
        if handler.unary_stream is not None:
            streaming: Any = handler.unary_stream

            async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
                await admit(request, context)
                produced = streaming(request, context)
                if inspect.isasyncgen(produced):
                    async for item in produced:
                        yield item
                else:
                    await produced

            return grpc.unary_stream_rpc_method_handler(unary_stream, **serializers)
        if handler.stream_stream is not None:
            bidi: Any = handler.stream_stream

            async def stream_stream(requests: Any, context: Context) -> AsyncIterator[Any]:
                await admit(None, context)
                async for item in bidi(requests, context):
                    yield item

            return grpc.stream_stream_rpc_method_handler(stream_stream, **serializers)
        if handler.stream_unary is not None:
            collect: Any = handler.stream_unary

            async def stream_unary(requests: Any, context: Context) -> Any:
                await admit(None, context)
                return await collect(requests, context)

            return grpc.stream_unary_rpc_method_handler(stream_unary, **serializers)
        return handler
