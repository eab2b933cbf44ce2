import pytest

from services.gateway.bootstrap import tls_context
from shared.config import ConfigError, Settings

from ..certs import self_signed


@pytest.fixture(scope="module")
def pem_files(tmp_path_factory):
    """A self-signed certificate, its key, the key encrypted, and another certificate's key."""
    folder = tmp_path_factory.mktemp("tls")
    self_signed(folder, "good")
    self_signed(folder, "other")
    self_signed(folder, "locked", "-passout", "pass:secret")
    return folder


def test_no_certificate_is_plain_http():
    assert tls_context(Settings()) is None


def test_a_certificate_and_its_key_make_https(pem_files):
    context = tls_context(Settings(api_tls_cert=str(pem_files / "good.pem"), api_tls_key=str(pem_files / "good.key")))
    assert context is not None and context.minimum_version >= 771  # TLS 1.2


@pytest.mark.parametrize("cert, key, message", [
    ("good.pem", "", "both API_TLS_CERT and API_TLS_KEY"),
    ("", "good.key", "both API_TLS_CERT and API_TLS_KEY"),
    ("good.pem", "missing.key", "cannot load"),
    ("good.key", "good.key", "cannot load"),  # not a certificate
    ("good.pem", "other.key", "cannot load"),  # another certificate's key
    ("locked.pem", "locked.key", "is encrypted"),  # and no prompt on the terminal
])
def test_an_unusable_configuration_is_a_clear_error(pem_files, cert, key, message):
    settings = Settings(api_tls_cert=str(pem_files / cert) if cert else "",
                        api_tls_key=str(pem_files / key) if key else "")
    with pytest.raises(ConfigError, match=message):
        tls_context(settings)
