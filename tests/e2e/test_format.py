"""The format as specified (docs/FORMAT.md), checked by an independent implementation: the Python reference
decryptor (scripts/s3crypt_decrypt.py) opens the known-answer vectors and objects the proxy wrote."""
import json
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import s3crypt_decrypt as ref  # noqa: E402

VECTORS = json.loads((ROOT / "tests" / "fixtures" / "crypto" / "v1-vectors.json").read_text())


def pattern(n):
    return bytes((i * 7 + 3) % 256 for i in range(n))


def test_the_reference_decryptor_unwraps_the_vector_data_key():
    v = VECTORS
    keyring = {v["kek_id"]: bytes.fromhex(v["kek"])}
    seg, kek_ref, wrapped = ref.envelope(v["metadata"])
    assert (seg, kek_ref) == (65536, "keyring:kat-key")
    assert ref.wrap_aad(kek_ref, v["bucket"], v["key"], seg).hex() == v["wrap_aad"]
    assert ref.unwrap(keyring, kek_ref, wrapped, v["bucket"], v["key"], seg).hex() == v["dek"]
    with pytest.raises(ref.Invalid):
        ref.unwrap(keyring, kek_ref, wrapped, v["bucket"], v["key"] + "x", seg)


@pytest.mark.parametrize("stream", [s for s in VECTORS["streams"] if "ciphertext" in s], ids=lambda s: str(s["plaintext_len"]))
def test_the_reference_decryptor_opens_every_vector(stream):
    dek = bytes.fromhex(VECTORS["dek"])
    ct = bytes.fromhex(stream["ciphertext"])
    plain = b"".join(ref.decrypt_segments(dek, VECTORS["segment_size"], ct, part=stream["part"]))
    assert plain == pattern(stream["plaintext_len"])
    tampered = bytearray(ct)
    tampered[-1] ^= 1
    with pytest.raises(ref.Invalid):
        b"".join(ref.decrypt_segments(dek, VECTORS["segment_size"], bytes(tampered), part=stream["part"]))
