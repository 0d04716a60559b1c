"""https through the pinned connection: Plinth connects to the address it checked, yet the
TLS handshake names the URL's host (SNI) and the certificate is checked against that name,
not against the address. A loopback HTTPS server with a CA made for the test."""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from apps.core import outbound
from tests.notifications.servers import FakeDNS, HTTPReceiver


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_tls_files(folder: Path, host: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for `host` signed by it: (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Plinth test CA"))
        .issuer_name(_name("Plinth test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(host))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


class TLSReceiver(HTTPReceiver):
    """The recording HTTP receiver behind TLS; `server_names` are the SNI names it was sent."""

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__("127.0.0.1")
        self.server_names: list[str | None] = []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)

        def remember(sock: Any, name: str | None, ctx: Any) -> None:
            self.server_names.append(name)

        context.sni_callback = remember
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)  # type: ignore[attr-defined]
        self.url = f"https://secure.example.test:{self.port}/hook"


@pytest.fixture
def tls(tmp_path: Path, dns: FakeDNS, settings: Any) -> Iterator[tuple[TLSReceiver, Path]]:
    ca, cert, key = make_tls_files(tmp_path, "secure.example.test")
    dns.names["secure.example.test"] = ["127.0.0.1"]
    settings.PLINTH_OUTBOUND_ALLOWED_HOSTS = ["secure.example.test"]
    with TLSReceiver(cert, key) as receiver:
        yield receiver, ca


def test_https_to_the_pinned_address_checks_the_certificate_of_the_name(tls: tuple[TLSReceiver, Path]) -> None:
    receiver, ca = tls
    reply = outbound.post(receiver.url, data=b"{}", headers={}, timeout=5, verify=str(ca))
    assert reply.status == 204
    assert receiver.server_names == ["secure.example.test"]
    assert receiver.calls[0]["headers"]["Host"] == f"secure.example.test:{receiver.port}"


def test_https_refuses_a_certificate_for_another_name(tmp_path: Path, dns: FakeDNS, settings: Any) -> None:
    ca, cert, key = make_tls_files(tmp_path, "other.example.test")
    dns.names["secure.example.test"] = ["127.0.0.1"]
    settings.PLINTH_OUTBOUND_ALLOWED_HOSTS = ["secure.example.test"]
    with TLSReceiver(cert, key) as receiver:
        with pytest.raises(requests.exceptions.SSLError):
            outbound.post(receiver.url, data=b"{}", headers={}, timeout=5, verify=str(ca))
        assert receiver.calls == []
