"""What a client presents to the gateway: TLS settings and credentials."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from agentmesh.runtime.tls import channel_credentials


@dataclass(frozen=True, slots=True)
class Security:
    """TLS and credentials for a gateway connection; the default is plaintext, anonymous.

    ``tls`` (or any of the files) turns TLS on; ``tls_ca_file`` is the CA to
    trust (None: the system's roots); ``tls_cert_file``/``tls_key_file`` a
    client certificate for mTLS. ``api_key`` goes as ``x-api-key``, ``token``
    as ``authorization: Bearer``.
    """

    tls: bool = False
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    api_key: str | None = None
    token: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Security:
        """From ``AGENTMESH_TLS``, ``AGENTMESH_TLS_CA_FILE``, ``AGENTMESH_TLS_CLIENT_CERT_FILE``,
        ``AGENTMESH_TLS_CLIENT_KEY_FILE``, ``AGENTMESH_API_KEY`` and ``AGENTMESH_TOKEN``."""
        env = os.environ if environ is None else environ

        def path(name: str) -> Path | None:
            value = env.get(name, "").strip()
            return Path(value) if value else None

        return cls(
            tls=env.get("AGENTMESH_TLS", "").lower() in ("1", "true", "yes", "on"),
            tls_ca_file=path("AGENTMESH_TLS_CA_FILE"),
            tls_cert_file=path("AGENTMESH_TLS_CLIENT_CERT_FILE"),
            tls_key_file=path("AGENTMESH_TLS_CLIENT_KEY_FILE"),
            api_key=env.get("AGENTMESH_API_KEY") or None,
            token=env.get("AGENTMESH_TOKEN") or None,
        )

    @property
    def uses_tls(self) -> bool:
        return self.tls or any((self.tls_ca_file, self.tls_cert_file, self.tls_key_file))

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """Credentials for a TLS channel, or None for plaintext."""
        if not self.uses_tls:
            return None
        credentials = channel_credentials(
            ca_file=self.tls_ca_file, cert_file=self.tls_cert_file, key_file=self.tls_key_file
        )
        return credentials or grpc.ssl_channel_credentials()

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The credential metadata sent with every call."""
        if self.api_key:
            return (("x-api-key", self.api_key),)
        if self.token:
            return (("authorization", f"Bearer {self.token}"),)
        return ()


def with_credentials(
    security: Security | None,
    api_key: str | None,
    token: str | None,
    tls_ca_file: Path | str | None,
) -> Security:
    """``security`` (default: plaintext, anonymous) with the shorthand arguments applied."""
    base = security or Security()
    return Security(
        tls=base.tls,
        tls_ca_file=Path(tls_ca_file) if tls_ca_file is not None else base.tls_ca_file,
        tls_cert_file=base.tls_cert_file,
        tls_key_file=base.tls_key_file,
        api_key=api_key if api_key is not None else base.api_key,
        token=token if token is not None else base.token,
    )
