"""Self-signed certificates for the TLS tests (the `openssl` command, on every Debian/Ubuntu)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(folder: Path, name: str = "cert", *extra: str) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, its own CA, and its key: (cert.pem, key.pem). `extra` are
    more `openssl req` arguments (by default the key is not encrypted)."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert), *(extra or ("-nodes",))],
                   check=True, capture_output=True, timeout=60)
    return cert, key
