"""A throwaway certificate authority for the test cluster, so apiserver ↔ kubelet traffic is mutually
authenticated (the apiserver presents a client certificate, the kubelet a serving certificate, both
signed here) rather than anonymous as in the first try on these machines.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALID = dt.timedelta(days=2)  # a test run lasts minutes; nothing here should outlive a day or two


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


@dataclass
class CertificateAuthority:
    """One CA per test cluster; `ca.crt` is what both sides trust."""

    directory: Path
    _key: ec.EllipticCurvePrivateKey | None = None
    _cert: x509.Certificate | None = None

    @property
    def cert_path(self) -> Path:
        return self.directory / "ca.crt"

    def create(self) -> "CertificateAuthority":
        self.directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        name = _name("agent-orchestrator test cluster CA")
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALID)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256())
        )
        self._key, self._cert = key, cert
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (self.directory / "ca.key").write_bytes(_key_pem(key))
        (self.directory / "ca.key").chmod(0o600)
        return self

    def issue(self, stem: str, *, common_name: str, organizations: tuple[str, ...] = (), client: bool = False,
              server_ips: tuple[str, ...] = (), server_names: tuple[str, ...] = ()) -> Issued:
        """A leaf certificate for a client (CN = user, O = groups, as the apiserver reads them) and/or a server."""
        assert self._key is not None and self._cert is not None, "create() first"
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        builder = (
            x509.CertificateBuilder().subject_name(_name(common_name, organizations)).issuer_name(self._cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + _VALID)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if server_ips or server_names:
            usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
            sans: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips]
            sans += [x509.DNSName(n) for n in server_names]
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        issued = Issued(cert=self.directory / f"{stem}.crt", key=self.directory / f"{stem}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(_key_pem(key))
        issued.key.chmod(0o600)
        return issued
