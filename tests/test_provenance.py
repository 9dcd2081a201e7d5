"""Provenance of the workers' PNGs: the record and the IPTC source type in text chunks (read back with Pillow), and
a C2PA manifest signed with a certificate made here, validated by c2pa's reader with that CA as trust anchor."""

from __future__ import annotations

import io

from PIL import Image
from pydantic import SecretStr

from shared import defaults, messages, provenance
from shared.jobs.record import JobRecord
from shared.jobs.spec import JobSpec
from shared.settings import Settings
from tests.c2pa_certs import make_certificates


def record() -> JobRecord:
    spec = JobSpec.for_prompt("a red fox in snow, 狐狸", seed=7, width=64, height=64, steps=2, job_id="0123abcd")
    return JobRecord(job_id=spec.job_id, spec=spec, seeds=spec.seeds, size=(64, 64))


def test_text_chunks_carry_the_record_and_the_source_type(queue_settings: Settings) -> None:
    image = Image.effect_noise((64, 64), 40).convert("RGB")
    made = record()
    data = provenance.stamp(image, made, queue_settings)
    found = provenance.read(data)
    assert found["record"] == made.to_dict()  # non-Latin-1 prompts survive (compressed iTXt)
    assert found["job_id"] == "0123abcd" and found["software"] == "imagine-bot"
    assert found["digital_source_type"] == defaults.DIGITAL_SOURCE_TYPE
    reread = Image.open(io.BytesIO(data))
    assert reread.size == (64, 64) and reread.convert("RGB").tobytes() == image.tobytes()
    assert "Iptc4xmpExt:DigitalSourceType" in reread.text["XML:com.adobe.xmp"]
    preview = provenance.read(provenance.stamp_preview(image, "0123abcd"))
    assert preview["digital_source_type"] == defaults.DIGITAL_SOURCE_TYPE and preview["record"] is None


def test_signed_c2pa_manifest_validates_and_keeps_the_chunks(queue_settings: Settings, tmp_path: object) -> None:
    certificates = make_certificates(tmp_path)  # type: ignore[arg-type]
    signing = queue_settings.model_copy(
        update={"c2pa_signing_key": SecretStr(str(certificates.key)), "c2pa_cert": str(certificates.chain)}
    )
    assert provenance.signing_configured(signing) and not provenance.signing_configured(queue_settings)
    made = record()
    data = provenance.stamp(Image.effect_noise((64, 64), 40).convert("RGB"), made, signing)
    manifest = certificates.read_manifest(data)
    assert manifest["validation_state"] == "Trusted", manifest["results"]
    action = manifest["active"]["assertions"][0]["data"]["actions"][0]
    assert (action["action"], action["digitalSourceType"]) == ("c2pa.created", defaults.DIGITAL_SOURCE_TYPE)
    assert manifest["active"]["signature_info"]["common_name"] == "imagine signer"
    assert provenance.read(data)["record"] == made.to_dict()  # the chunks are still there, under the hash
    # A changed byte in the image data breaks the manifest's hash.
    tampered = bytearray(data)
    tampered[len(tampered) // 2] ^= 0xFF
    assert certificates.read_manifest(bytes(tampered))["validation_state"] != "Trusted"
    # The verify line names the signer and the hash members can check.
    note = provenance.note(made, data, signing)
    assert note["c2pa_signer"] == "imagine test, imagine signer"
    line = messages.verify_line(note)
    assert "imagine test, imagine signer" in line and note["sha256"] in line
