"""TLS and mutual TLS credentials from PEM files, for servers and channels.

Servers: :func:`server_credentials` turns ``tls_cert_file``/``tls_key_file``
(and ``tls_client_ca_file`` for mTLS, where a client without a certificate
signed by that CA is refused during the handshake) into gRPC credentials.
Channels: :func:`channel_credentials` does the same for a caller (a CA to
trust, and a client certificate to present when the server asks for one).
"""

from __future__ import annotations

from pathlib import Path

import grpc

from agentmesh.runtime.settings import ServerSettings


class TLSConfigError(ValueError):
    """A certificate or key file could not be read; the message names the setting."""


def read_pem(path: Path, setting: str) -> bytes:
    """The bytes of ``path``; a missing or unreadable file names ``setting``, not its contents."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from None


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS credentials for the server's port, or None to serve plaintext."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    pair = (
        read_pem(settings.tls_key_file, "tls_key_file"),
        read_pem(settings.tls_cert_file, "tls_cert_file"),
    )
    if settings.tls_client_ca_file is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair],
        root_certificates=read_pem(settings.tls_client_ca_file, "tls_client_ca_file"),
        require_client_auth=True,
    )


def channel_credentials(
    *,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    prefix: str = "tls",
) -> grpc.ChannelCredentials | None:
    """Credentials for a TLS channel, or None for plaintext (nothing set).

    ``ca_file`` is the CA bundle to trust (None: the system roots); ``cert_file``
    and ``key_file`` are the client certificate for mTLS and go together.
    ``prefix`` names the settings in error messages (``upstream_tls``...).
    """
    if ca_file is None and cert_file is None and key_file is None:
        return None
    if (cert_file is None) != (key_file is None):
        raise TLSConfigError(f"{prefix}_cert_file and {prefix}_key_file go together")
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(ca_file, f"{prefix}_ca_file") if ca_file else None,
        private_key=read_pem(key_file, f"{prefix}_key_file") if key_file else None,
        certificate_chain=read_pem(cert_file, f"{prefix}_cert_file") if cert_file else None,
    )
