"""A test certificate authority and C2PA signing certificate, made here with ``cryptography`` (nothing downloaded),
and c2pa's reader with that authority as its only trust anchor."""

from __future__ import annotations

import datetime
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class C2paTestCertificates:
    """The signing key and chain files (``C2PA_SIGNING_KEY``, ``C2PA_CERT``) and the CA that trusts them."""

    key: Path
    chain: Path
    ca_pem: str

    def read_manifest(self, data: bytes) -> dict[str, Any]:
        """c2pa's reading of a PNG: its validation state under this CA and its active manifest."""
        import c2pa

        context = c2pa.Context.from_dict({"verify": {"verify_trust": True}, "trust": {"trust_anchors": self.ca_pem}})
        reader = c2pa.Reader("image/png", io.BytesIO(data), context=context)
        return {
            "validation_state": reader.get_validation_state(),
            "results": reader.get_validation_results(),
            "active": reader.get_active_manifest(),
            "json": json.loads(reader.json()),
        }


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "imagine test"),
        ]
    )


def _usage(*, signer: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not signer,
        crl_sign=not signer,
        encipher_only=False,
        decipher_only=False,
    )


def make_certificates(folder: Path) -> C2paTestCertificates:
    """A P-256 CA and an end-entity signing certificate (email-protection usage, as C2PA's profile asks), valid for
    a month; the key and the chain (signer first) written as PEM files in ``folder``."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("imagine test CA"))
        .issuer_name(_name("imagine test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_usage(signer=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("imagine signer"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(signer=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_path = folder / "signer.key"
    chain_path = folder / "chain.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    chain_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
    return C2paTestCertificates(key=key_path, chain=chain_path, ca_pem=ca_pem.decode())
