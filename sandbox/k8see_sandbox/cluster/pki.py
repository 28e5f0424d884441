"""The local cluster's certificates: one CA, and a key and certificate per identity.

Kubernetes authenticates its own components by client certificate: the common name is the user
and the organizations are the groups (``system:node:<name>`` in ``system:nodes`` for a kubelet,
``system:kube-controller-manager``, ...), and RBAC's bootstrap roles grant each of them what it
needs. The API server and the kubelet serve TLS with certificates for the addresses they are
reached at. Service-account tokens are signed with a key pair of their own.

EC P-256 keys: generated in microseconds, accepted everywhere Kubernetes takes a key.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 365


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


@dataclass(frozen=True)
class Pair:
    """A certificate and its key, as files."""

    cert: Path
    key: Path


class Pki:
    """Creates (once) and hands out the certificates under ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
        self.ca = Pair(directory / "ca.crt", directory / "ca.key")
        if not self.ca.cert.exists():
            key = _key()
            now = datetime.now(UTC)
            cert = (
                x509.CertificateBuilder()
                .subject_name(_name("k8see-local-ca"))
                .issuer_name(_name("k8see-local-ca"))
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - timedelta(minutes=5))
                .not_valid_after(now + timedelta(days=VALID_DAYS))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(
                    x509.KeyUsage(
                        digital_signature=True,
                        key_cert_sign=True,
                        crl_sign=True,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    critical=True,
                )
                .sign(key, hashes.SHA256())
            )
            self.ca.key.write_bytes(_pem_key(key))
            self.ca.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        name: str,
        *,
        common_name: str,
        organizations: tuple[str, ...] = (),
        hosts: tuple[str, ...] = (),
        server: bool = False,
    ) -> Pair:
        """A certificate for ``common_name`` signed by the CA, stored as ``<name>.crt/.key``.

        ``hosts`` (DNS names or IP addresses) make it a serving certificate; without
        ``server`` it is a client certificate.
        """
        pair = Pair(self.directory / f"{name}.crt", self.directory / f"{name}.key")
        if pair.cert.exists():
            return pair
        ca_key = serialization.load_pem_private_key(self.ca.key.read_bytes(), password=None)
        ca_cert = x509.load_pem_x509_certificate(self.ca.cert.read_bytes())
        key = _key()
        now = datetime.now(UTC)
        usage = [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, organizations))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        )
        if hosts:
            names: list[x509.GeneralName] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        cert = builder.sign(ca_key, hashes.SHA256())
        pair.key.write_bytes(_pem_key(key))
        pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return pair

    def service_account_keys(self) -> Pair:
        """The key pair that signs service-account tokens (``cert`` is the public key)."""
        pair = Pair(self.directory / "sa.pub", self.directory / "sa.key")
        if not pair.key.exists():
            key = _key()
            pair.key.write_bytes(_pem_key(key))
            pair.cert.write_bytes(
                key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
        return pair

    def kubeconfig(self, path: Path, *, server: str, user: dict[str, Any]) -> Path:
        """A kubeconfig for ``server`` trusting this CA, with the given user entry."""
        ca = base64.b64encode(self.ca.cert.read_bytes()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "local", "cluster": {"server": server, "certificate-authority-data": ca}}
            ],
            "users": [{"name": "user", "user": user}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "user"}}],
            "current-context": "local",
            "preferences": {},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        return path

    def client_kubeconfig(self, path: Path, *, server: str, pair: Pair) -> Path:
        """A kubeconfig that authenticates with a client certificate (embedded)."""
        return self.kubeconfig(
            path,
            server=server,
            user={
                "client-certificate-data": base64.b64encode(pair.cert.read_bytes()).decode(),
                "client-key-data": base64.b64encode(pair.key.read_bytes()).decode(),
            },
        )
