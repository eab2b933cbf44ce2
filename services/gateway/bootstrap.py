"""Wires the gateway: settings to the Litestar app (with its request headers), served by uvicorn
with bounded requests (see adapters/http_limits.py), over HTTPS when a certificate is configured."""

from __future__ import annotations

import ipaddress
import logging
import ssl
import sys

import uvicorn

from services.gateway.adapters.http_limits import bounded_protocol
from services.gateway.app import create_asgi_app, is_loopback
from shared.config import ConfigError, Settings, load_settings
from shared.logs import configure_logging
from shared.telemetry import Telemetry

log = logging.getLogger(__name__)

# An idle kept-alive connection is closed after this (or API_REQUEST_TIMEOUT_SECONDS, if shorter).
# Longer than clients and proxies keep one idle (httpx 5 s, nginx upstream 60 s): a server that
# closes first races their next request on it, which then fails (a POST is not retried). With 5 s,
# as httpx's, 1 of 10,000 submits of a drain met a closed connection (ReadError).
KEEP_ALIVE_S = 65


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """HTTPS when API_TLS_CERT and API_TLS_KEY are both set; None when neither is."""
    cert, key = settings.api_tls_cert, settings.api_tls_key
    if not cert and not key:
        return None
    if not (cert and key):
        raise ConfigError("HTTPS needs both API_TLS_CERT and API_TLS_KEY (PEM files), or neither for plain HTTP")

    def encrypted_key() -> bytes:  # else OpenSSL would prompt on the terminal for a passphrase
        raise ConfigError(f"API_TLS_KEY {key} is encrypted: give the key unencrypted, readable by this user only")

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)  # no weak ciphers
    # Said, not left to the build's default: Debian's Python leaves it to OpenSSL's configuration.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key, password=encrypted_key)
    except OSError as error:  # missing, unreadable, not PEM, or a key that is not the certificate's
        raise ConfigError(f"cannot load API_TLS_CERT {cert} with API_TLS_KEY {key}: {error}") from None
    return context


def forwarding_options(settings: Settings) -> dict[str, object]:
    """uvicorn's proxy options: X-Forwarded-For and -Proto are believed from API_TRUSTED_PROXIES
    only. uvicorn's default believes 127.0.0.1, where every local process (jobs too) connects
    from: each could name a fresh client address for the rate limits at every request."""
    for proxy in settings.api_trusted_proxies:
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"API_TRUSTED_PROXIES: {proxy!r} is not an IP address or network "
                              "(comma-separated, e.g. 10.0.0.5,192.168.1.0/24)") from None
    return {"proxy_headers": bool(settings.api_trusted_proxies),
            "forwarded_allow_ips": settings.api_trusted_proxies}


def main() -> None:
    configure_logging("gateway")
    telemetry = Telemetry("scns-gateway", with_metrics=True)
    try:
        settings = load_settings()
        app = create_asgi_app(settings, traced=telemetry.traced, metered=telemetry.metered)
        tls = tls_context(settings)
        forwarding = forwarding_options(settings)
    except (ConfigError, ValueError) as error:
        sys.exit(f"gateway: {error}")
    if tls is None and not is_loopback(settings.api_host):
        log.warning("serving plain HTTP on %s: bearer tokens cross the network in clear; set API_TLS_CERT and "
                    "API_TLS_KEY, or put a TLS proxy in front", settings.api_host)
    try:
        # Open /events streams never end by themselves: a stop gives them a few seconds, not forever.
        uvicorn.run(app, host=settings.api_host, port=settings.api_port, log_level="warning", access_log=False,
                    timeout_graceful_shutdown=3, timeout_keep_alive=KEEP_ALIVE_S,
                    http=bounded_protocol(settings.api_request_timeout_seconds),  # type: ignore[arg-type]
                    limit_concurrency=settings.api_max_connections, **forwarding,  # type: ignore[arg-type]
                    ssl_context_factory=(lambda config, default: tls) if tls else None)
    finally:
        telemetry.shutdown()
