"""Certificates for the local cluster's TLS mode (like ElastiCache in-transit encryption): a
private CA, a server certificate for the nodes and the configuration endpoint, and a client
certificate for nodes that require one.

The server certificate names DNS hostnames only (by default ``localhost``), never an IP address:
clients connect to ``127.0.0.1`` and verify the hostname the discovery reply lists, as they do
against ElastiCache.

Variants for tests, each differing from a good set in one respect only::

    good = make_certificates(tmp / "good")
    other_ca = make_certificates(tmp / "other")                  # signed by a different CA
    expired = make_certificates(tmp / "expired", ca=good, expired=True)
    misnamed = make_certificates(tmp / "misnamed", ca=good, hostnames=("other.example",))

Generating them needs the ``cryptography`` package, imported only when certificates are made:
``pip install cryptography`` (or ``pip install django-elasticache-rs[local-tls]``).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "CRYPTOGRAPHY_HINT",
    "Certificates",
    "CryptographyNotInstalled",
    "make_certificates",
]

CRYPTOGRAPHY_HINT = (
    "the local cluster's TLS mode needs the cryptography package to make its certificates: "
    "pip install cryptography (or pip install django-elasticache-rs[local-tls])"
)

VALIDITY = datetime.timedelta(days=365)
"""How long the certificates are valid (from a few minutes before they are made)."""

_BACKDATE = datetime.timedelta(minutes=5)  # tolerates a little clock skew
_CA_NAME = "django-elasticache-rs local CA"
_CLIENT_NAME = "django-elasticache-rs local client"
_SERVER_NAME = "django-elasticache-rs local server"


class CryptographyNotInstalled(RuntimeError):
    """The ``cryptography`` package, needed to make certificates, is not installed."""


@dataclass(frozen=True)
class Certificates:
    """PEM files making up one TLS setup; private keys are readable by their owner only."""

    directory: Path
    """Where the files are."""
    ca_cert: Path
    """The CA certificate: what clients trust."""
    ca_key: Path
    """The CA's private key (to sign variants with the same CA: ``make_certificates(ca=...)``)."""
    server_cert: Path
    """The nodes' and the endpoint's certificate, signed by the CA."""
    server_key: Path
    """The server certificate's private key."""
    client_cert: Path
    """A client certificate signed by the CA, for nodes that require one."""
    client_key: Path
    """The client certificate's private key."""
    hostnames: tuple[str, ...]
    """The DNS names the server certificate is valid for (its subjectAltName)."""
    expired: bool = False
    """Whether the server certificate's validity ended before it was made."""

    @property
    def server_hostname(self) -> str:
        """The name to verify the server certificate against: its first hostname."""
        return self.hostnames[0]

    def client_context(self, *, client_cert: bool = False) -> ssl.SSLContext:
        """A client context trusting this CA only and verifying hostnames; presenting the client
        certificate if ``client_cert``."""
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        if client_cert:
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context

    def server_context(self) -> ssl.SSLContext:
        """A server context presenting the server certificate (TLS 1.2 or later)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(self.server_cert), str(self.server_key))
        return context


def make_certificates(
    directory: str | os.PathLike[str],
    *,
    hostnames: tuple[str, ...] = ("localhost",),
    expired: bool = False,
    ca: Certificates | None = None,
) -> Certificates:
    """Writes a CA, a server certificate for ``hostnames`` (DNS names, not IP addresses) and a
    client certificate into ``directory`` (an existing directory, or one it creates; files there
    are not overwritten). ``ca``: sign with that set's CA (copied) instead of a new one.
    ``expired``: a server certificate whose validity ended yesterday.

    Raises :class:`CryptographyNotInstalled` without the ``cryptography`` package, and
    ``ValueError`` for an empty or IP-address hostname."""
    _require_cryptography()
    _check_hostnames(hostnames)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    if ca is None:
        ca_key = _new_key()
        ca_cert = _ca_certificate(ca_key)
    else:
        ca_key, ca_cert = _load_ca(ca)
    certificates = _paths(folder, hostnames, expired)
    _write(certificates.ca_key, _key_pem(ca_key), private=True)
    _write(certificates.ca_cert, _cert_pem(ca_cert), private=False)
    issuer = _Issuer(ca_key, ca_cert)
    server = _Leaf(_SERVER_NAME, hostnames=hostnames, server=True, expired=expired)
    issuer.issue(server, certificates.server_cert, certificates.server_key)
    client = _Leaf(_CLIENT_NAME, hostnames=(), server=False, expired=False)
    issuer.issue(client, certificates.client_cert, certificates.client_key)
    return certificates


# -- plumbing ---------------------------------------------------------------------------------


def _require_cryptography() -> None:
    """Raises :class:`CryptographyNotInstalled` if ``cryptography`` cannot be imported."""
    try:
        import cryptography  # noqa: F401
    except ImportError as error:
        raise CryptographyNotInstalled(CRYPTOGRAPHY_HINT) from error


def _check_hostnames(hostnames: tuple[str, ...]) -> None:
    if not hostnames:
        raise ValueError("a server certificate needs at least one hostname")
    for name in hostnames:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            if not name or any(char.isspace() for char in name):
                raise ValueError(f"not a hostname: {name!r}") from None
            continue
        raise ValueError(f"{name!r} is an IP address: the certificates name hostnames only")


def _paths(folder: Path, hostnames: tuple[str, ...], expired: bool) -> Certificates:
    return Certificates(
        directory=folder,
        ca_cert=folder / "ca.pem",
        ca_key=folder / "ca-key.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server-key.pem",
        client_cert=folder / "client.pem",
        client_key=folder / "client-key.pem",
        hostnames=hostnames,
        expired=expired,
    )


def _write(path: Path, data: bytes, *, private: bool) -> None:
    """Creates ``path`` (mode 0600 if ``private``, else 0644; never over an existing file)."""
    mode = 0o600 if private else 0o644
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(path, mode)  # whatever the umask


# -- keys and certificates --------------------------------------------------------------------


@dataclass(frozen=True)
class _Leaf:
    """What distinguishes a leaf certificate: subject, DNS names, usage, validity."""

    common_name: str
    hostnames: tuple[str, ...]
    server: bool
    expired: bool

    def validity(self, now: datetime.datetime) -> tuple[datetime.datetime, datetime.datetime]:
        """``(not_before, not_after)``: ending yesterday if expired, else valid from now."""
        if self.expired:
            return now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)
        return now - _BACKDATE, now + VALIDITY


@dataclass(frozen=True)
class _Issuer:
    """A CA: its key and certificate."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def issue(self, leaf: _Leaf, cert_path: Path, key_path: Path) -> None:
        """Writes a new key and the certificate this CA signs for it."""
        key = _new_key()
        _write(key_path, _key_pem(key), private=True)
        _write(cert_path, _cert_pem(self._sign(leaf, key)), private=False)

    def _sign(self, leaf: _Leaf, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.x509.oid import ExtendedKeyUsageOID

        not_before, not_after = leaf.validity(_now())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if leaf.server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            _builder(_name(leaf.common_name), self.cert.subject, key, not_before, not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if leaf.hostnames:
            names = [x509.DNSName(name) for name in leaf.hostnames]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self.key, hashes.SHA256())


def _ca_certificate(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """A self-signed CA certificate (CA:true, keyCertSign) for ``key``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    now = _now()
    name = _name(_CA_NAME)
    builder = (
        _builder(name, name, key, now - _BACKDATE, now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
    )
    return builder.sign(key, hashes.SHA256())


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> x509.CertificateBuilder:
    """A certificate builder with the fields every certificate here has."""
    from cryptography import x509

    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    """digitalSignature for leaves; keyCertSign and cRLSign for a CA."""
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _name(common_name: str) -> x509.Name:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _new_key() -> ec.EllipticCurvePrivateKey:
    """A new EC P-256 key (fast to make; OpenSSL and rustls both accept it)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _load_ca(certificates: Certificates) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The CA key and certificate of an existing set."""
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(certificates.ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{certificates.ca_key} is not an EC private key")
    return key, x509.load_pem_x509_certificate(certificates.ca_cert.read_bytes())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted."""
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)
