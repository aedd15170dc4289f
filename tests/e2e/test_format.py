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
    seg, kek_ref, wrapped, mp = ref.envelope(v["metadata"])
    assert mp is None
    assert (seg, kek_ref) == (65536, "keyring:kat-key")
    assert ref.wrap_aad(kek_ref, v["bucket"], v["key"], seg).hex() == v["wrap_aad"]
    assert ref.unwrap(keyring, kek_ref, wrapped, v["bucket"], v["key"], seg).hex() == v["dek"]
    with pytest.raises(ref.Invalid):
        ref.unwrap(keyring, kek_ref, wrapped, v["bucket"], v["key"] + "x", seg)


def test_the_reference_decryptor_unwraps_the_second_wrap_layout():
    v = VECTORS
    keyring = {v["kek_id"]: bytes.fromhex(v["kek"])}
    seg, kek_ref, wrapped, mp = ref.envelope(v["wrap_v2"]["metadata"])
    assert wrapped.hex() == v["wrap_v2"]["wrapped_dek"]
    assert (len(wrapped), wrapped[0]) == (1 + 16 + 12 + 32 + 16, 2)
    assert ref.unwrap(keyring, kek_ref, wrapped, v["bucket"], v["key"], seg).hex() == v["dek"]
    for i in (0, 5, 30, 76):
        tampered = bytearray(wrapped)
        tampered[i] ^= 1
        with pytest.raises(ref.Invalid):
            ref.unwrap(keyring, kek_ref, bytes(tampered), v["bucket"], v["key"], seg)


@pytest.mark.parametrize("stream", [s for s in VECTORS["streams"] if "ciphertext" in s], ids=lambda s: str(s["plaintext_len"]))
def test_the_reference_decryptor_opens_every_vector(stream):
    dek = bytes.fromhex(VECTORS["dek"])
    ct = bytes.fromhex(stream["ciphertext"])
    assert stream["part"] == 0
    plain = b"".join(ref.decrypt_segments(dek, VECTORS["segment_size"], ct))
    assert plain == pattern(stream["plaintext_len"])
    tampered = bytearray(ct)
    tampered[-1] ^= 1
    with pytest.raises(ref.Invalid):
        b"".join(ref.decrypt_segments(dek, VECTORS["segment_size"], bytes(tampered)))


def test_the_reference_decryptor_opens_the_multipart_vector_and_refuses_it_cut_or_resealed():
    v = VECTORS
    mp = v["multipart"]
    keyring = {v["kek_id"]: bytes.fromhex(v["kek"])}
    ct = bytes.fromhex(mp["ciphertext"])
    plain = ref.decrypt(keyring, mp["metadata"], v["bucket"], v["key"], ct)
    assert plain == b"".join(pattern(n) for n in mp["part_plaintext_lens"])
    assert ref.wrap_aad(mp["metadata"]["x-amz-meta-s3crypt-kek"], v["bucket"], v["key"], mp["segment_size"],
                        mp["metadata"]["x-amz-meta-s3crypt-mp"]).hex() == mp["wrap_aad"]
    last_part = mp["part_ciphertext_lens"][-1]
    with pytest.raises(ref.Invalid):  # the last part dropped
        ref.decrypt(keyring, mp["metadata"], v["bucket"], v["key"], ct[:-last_part])
    resealed = dict(mp["metadata"], **{"x-amz-meta-s3crypt-mp": "2x4096"})
    with pytest.raises(ref.Invalid):  # the layout changed in the metadata: the key no longer unwraps
        ref.decrypt(keyring, resealed, v["bucket"], v["key"], ct[:-last_part])


def test_the_reference_decryptor_opens_the_sealed_attributes_vector():
    import hashlib
    a = json.loads((ROOT / "tests" / "fixtures" / "crypto" / "attributes-vectors.json").read_text())
    v = VECTORS
    sealed = bytes.fromhex(a["sealed"])
    records = ref.open_attributes(bytes.fromhex(v["dek"]), sealed, v["bucket"], v["key"])
    assert records[1] == hashlib.md5(pattern(100)).digest()
    assert records[2][0] == 2 and records[2][1:].hex() == a["crc32c"]
    with pytest.raises(ref.Invalid):
        ref.open_attributes(bytes.fromhex(v["dek"]), sealed, v["bucket"], v["key"] + "x")
    # An object completed from parts: the multipart ETag (0x03) and composite checksum (0x04) records.
    mp = ref.open_attributes(bytes.fromhex(v["dek"]), bytes.fromhex(a["multipart"]["sealed"]), v["bucket"], v["key"])
    count, digest = int.from_bytes(mp[3][:4], "big"), mp[3][4:]
    assert f"{digest.hex()}-{count}" == a["multipart"]["etag"]
    assert int.from_bytes(mp[4][:4], "big") == 3 and mp[4][4] == 5 and len(mp[4][5:]) == 32
