"""Provenance of every image: the job record and the IPTC digital source type ``trainedAlgorithmicMedia`` inside the
PNG, and, when a signing key and certificate are configured, a signed C2PA manifest.

What a PNG carries (``stamp``):

- an iTXt chunk ``imagine:record``: the job's record (``JobRecord.to_dict()``: prompt, seeds, model, parameters, job
  id) as JSON, compressed; ``imagine:job_id`` in plain text; ``Software`` and ``Description`` (the prompt), which
  image viewers show;
- an uncompressed iTXt chunk ``XML:com.adobe.xmp``: an XMP packet with ``Iptc4xmpExt:DigitalSourceType`` =
  ``http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia`` (where exiftool, Adobe's tools and
  other XMP readers look for it in a PNG), ``xmp:CreatorTool`` and the job id;
- with ``C2PA_SIGNING_KEY`` and ``C2PA_CERT``: a C2PA manifest (``caBX`` chunk) made and signed by the
  ``c2pa-python`` package, with a ``c2pa.created`` action of the same digital source type. It is added last, over the
  chunks above, so its hash covers them. ``c2pa`` is imported only when signing is configured (the package is the
  ``worker`` extra's).

``read`` gives back what a PNG carries (tests, and anyone verifying). The record inside a PNG is the record as it was
when the image was stored (before delivery); the stored record adds where it was delivered.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from PIL import Image, PngImagePlugin

from shared import defaults
from shared.jobs.record import JobRecord
from shared.settings import Settings

log = logging.getLogger(__name__)

RECORD_CHUNK = "imagine:record"
"""Keyword of the iTXt chunk holding the job record (JSON)."""

JOB_ID_CHUNK = "imagine:job_id"
"""Keyword of the tEXt chunk holding the job id."""

XMP_CHUNK = "XML:com.adobe.xmp"
"""Keyword of the iTXt chunk that XMP readers look for in a PNG."""

SOFTWARE = "imagine-bot"
"""What ``Software`` and ``xmp:CreatorTool`` say made the image."""

_XMP = """<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:imagine="https://github.com/imagine-bot/ns/1.0/"
    Iptc4xmpExt:DigitalSourceType="{source_type}"
    xmp:CreatorTool="{tool}"
    imagine:JobId="{job_id}">
   <dc:description><rdf:Alt><rdf:li xml:lang="x-default">{description}</rdf:li></rdf:Alt></dc:description>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""

_SOURCE_TYPE = re.compile(r'Iptc4xmpExt:DigitalSourceType="([^"]*)"')


def xmp_packet(job_id: str, description: str) -> str:
    """The XMP packet of one image: digital source type, creator tool, job id and the prompt as description."""
    return _XMP.format(
        source_type=defaults.DIGITAL_SOURCE_TYPE,
        tool=SOFTWARE,
        job_id=xml_escape(job_id, {'"': "&quot;"}),
        description=xml_escape(description),
    )


def png_info(record: JobRecord) -> PngImagePlugin.PngInfo:
    """The text chunks of a job's PNG (record, job id, software, description, XMP)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", SOFTWARE)
    info.add_text(JOB_ID_CHUNK, record.job_id)
    info.add_itxt("Description", record.spec.prompt, zip=True)
    info.add_itxt(RECORD_CHUNK, json.dumps(record.to_dict(), sort_keys=True, default=str), zip=True)
    info.add_itxt(XMP_CHUNK, xmp_packet(record.job_id, record.spec.prompt), zip=False)
    return info


def stamp(image: Image.Image, record: JobRecord, settings: Settings) -> bytes:
    """``image`` as PNG bytes carrying ``record``, the digital source type and (when configured) a C2PA manifest."""
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=png_info(record))
    data = out.getvalue()
    if not signing_configured(settings):
        return data
    try:
        return sign_c2pa(data, record, settings)
    except ImportError:
        # A process without the c2pa package (the slim bot image) posts the image with its chunks, unsigned; the
        # workers, which make and store every image, have it (the ``worker`` extra).
        log.error("C2PA signing is configured but the c2pa-python package is not installed here; posting unsigned")
        return data


def stamp_preview(image: Image.Image, job_id: str) -> bytes:
    """A progress preview as PNG bytes with the job id and the digital source type (no record exists yet)."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", SOFTWARE)
    info.add_text(JOB_ID_CHUNK, job_id)
    info.add_itxt(XMP_CHUNK, xmp_packet(job_id, ""), zip=False)
    out = io.BytesIO()
    image.save(out, format="PNG", pnginfo=info)
    return out.getvalue()


def read(data: bytes) -> dict[str, Any]:
    """What a PNG carries: ``record`` (dict or None), ``job_id``, ``digital_source_type`` ("" if none), ``software``."""
    image = Image.open(io.BytesIO(data))
    image.load()
    text: dict[str, Any] = dict(getattr(image, "text", {}) or {})
    raw_record = text.get(RECORD_CHUNK)
    match = _SOURCE_TYPE.search(str(text.get(XMP_CHUNK, "")))
    return {
        "record": json.loads(raw_record) if raw_record else None,
        "job_id": str(text.get(JOB_ID_CHUNK, "")),
        "digital_source_type": match.group(1) if match else "",
        "software": str(text.get("Software", "")),
    }


def digest(data: bytes) -> str:
    """SHA-256 of the exact bytes members download (hex)."""
    return hashlib.sha256(data).hexdigest()


# -- C2PA ---------------------------------------------------------------------------------------------------------


def signing_configured(settings: Settings) -> bool:
    """Whether ``C2PA_SIGNING_KEY`` and ``C2PA_CERT`` are both set."""
    return bool(settings.c2pa_signing_key.get_secret_value() and settings.c2pa_cert)


def _pem(value: str, what: str) -> bytes:
    """PEM text given as itself or as a path to a file; an error naming the setting when neither."""
    if value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    path = Path(value)
    if not path.is_file():
        raise ValueError(f"{what} must be PEM text or the path of an existing PEM file, got {value!r}")
    return path.read_bytes()


_signers: dict[tuple[str, str, str, str], Any] = {}
_signers_lock = threading.Lock()


def _signer(settings: Settings) -> tuple[Any, Any]:
    """The process's c2pa ``Signer`` and ``Context`` for the configured key (made once; signing is thread-safe per
    call, the signer is shared under a lock)."""
    import c2pa

    key = settings.c2pa_signing_key.get_secret_value()
    ident = (key, settings.c2pa_cert, settings.c2pa_alg, settings.c2pa_tsa_url)
    with _signers_lock:
        if ident not in _signers:
            info = c2pa.C2paSignerInfo(
                settings.c2pa_alg,
                _pem(settings.c2pa_cert, "C2PA_CERT"),
                _pem(key, "C2PA_SIGNING_KEY"),
                settings.c2pa_tsa_url or None,
            )
            # No thumbnail in the manifest: it costs about 140 ms per image and the image is its own thumbnail.
            context = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})
            _signers[ident] = (c2pa.Signer.from_info(info), context)
        return _signers[ident]


def manifest_definition(record: JobRecord) -> dict[str, Any]:
    """The C2PA manifest of one image: created by a trained model (the IPTC source type), what made it, the job."""
    return {
        "claim_generator_info": [{"name": SOFTWARE, "version": "0.1.0"}],
        "title": f"{record.job_id}.png",
        "format": "image/png",
        "assertions": [
            {
                "label": "c2pa.actions",
                "data": {
                    "actions": [
                        {
                            "action": "c2pa.created",
                            "digitalSourceType": defaults.DIGITAL_SOURCE_TYPE,
                            "softwareAgent": {"name": SOFTWARE},
                            "parameters": {"job_id": record.job_id, "model": record.spec.model or "default"},
                        }
                    ]
                },
            }
        ],
    }


def sign_c2pa(png: bytes, record: JobRecord, settings: Settings) -> bytes:
    """``png`` with a signed C2PA manifest embedded (the configured key and certificate chain)."""
    import c2pa

    signer, context = _signer(settings)
    builder = c2pa.Builder(manifest_definition(record), context=context)
    out = io.BytesIO()
    with _signers_lock:
        builder.sign(signer, "image/png", io.BytesIO(png), out)
    return out.getvalue()


def signer_name(settings: Settings) -> str:
    """Who signs (the certificate's organisation and common name), for the verify line; "" without signing."""
    return _signer_name(settings.c2pa_cert) if signing_configured(settings) else ""


@lru_cache(maxsize=4)
def _signer_name(cert: str) -> str:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        loaded = x509.load_pem_x509_certificate(_pem(cert, "C2PA_CERT"))
    except ValueError:
        log.exception("C2PA_CERT cannot be read")
        return ""
    names = [
        str(attribute.value)
        for oid in (NameOID.ORGANIZATION_NAME, NameOID.COMMON_NAME)
        for attribute in loaded.subject.get_attributes_for_oid(oid)
    ]
    return ", ".join(names)


def note(record: JobRecord, picture_png: bytes, settings: Settings) -> dict[str, Any]:
    """What the stored record says about provenance (``record.notes["provenance"]``): the posted picture's hash,
    the C2PA signer, the source type."""
    return {
        "sha256": digest(picture_png),
        "digital_source_type": defaults.DIGITAL_SOURCE_TYPE,
        "c2pa_signer": signer_name(settings),
    }
