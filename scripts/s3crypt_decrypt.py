#!/usr/bin/env python3
"""Reference decryptor for s3crypt format v1 (docs/FORMAT.md), independent of the Rust code.

Decrypts an object read straight from the store, given the keyring (or, for KMS-protected objects, access to the
KMS key), the object's metadata and its bucket and key, with nothing but Python's standard library and
`cryptography` (pip install cryptography; boto3 too for KMS objects):

    aws s3api head-object --bucket B --key K > meta.json          # metadata, straight from the store
    aws s3 cp s3://B/K ct.bin                                      # ciphertext, straight from the store
    python3 s3crypt_decrypt.py --keyring keyring.toml --metadata meta.json --bucket B --key K ct.bin > plain.bin

    python3 s3crypt_decrypt.py --kms --metadata meta.json --bucket B --key K ct.bin > plain.bin   # KMS objects

Exit status 0 means the whole object verified; anything else means the output must not be used.
"""
import argparse
import base64
import json
import sys
import tomllib

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

FORMAT_VERSION = 1
HEADER_LEN = 16
TAG_LEN = 16
FLAG_FINAL = 0x01
STREAM_KEY_INFO = b"s3crypt/v1 stream key"
WRAP_AAD_LABEL = b"s3crypt/v1 dek wrap"
WRAP_V1_LEN = 12 + 32 + 16
WRAP_V2 = 0x02
WRAP_V2_KEY_INFO = b"s3crypt/v1 wrap key"


class Invalid(Exception):
    """The object, its metadata or the key does not verify."""


def load_keyring(path):
    with open(path, "rb") as f:
        ring = tomllib.load(f)
    return {kid: base64.b64decode(v) for kid, v in ring["keys"].items()}


def envelope(metadata):
    """The s3crypt envelope from user metadata (names with or without the x-amz-meta- prefix)."""
    m = {}
    for k, v in metadata.items():
        k = k.lower()
        m[k[len("x-amz-meta-"):] if k.startswith("x-amz-meta-") else k] = v.strip()
    if m.get("s3crypt-v") != str(FORMAT_VERSION):
        raise Invalid("no s3crypt v1 envelope in the metadata")
    return int(m["s3crypt-seg"]), m["s3crypt-kek"], base64.b64decode(m["s3crypt-dek"]), m.get("s3crypt-mp")


def kms_fields(metadata):
    """(bucket key blob or None, client encryption context as sent (base64 JSON) or None)."""
    m = {k.lower().removeprefix("x-amz-meta-"): v.strip() for k, v in metadata.items()}
    bk = m.get("s3crypt-bk")
    return (base64.b64decode(bk) if bk else None), m.get("s3crypt-ctx")


def wrap_aad(kek_ref, bucket, key, segment_size, mp=None, ctx=None):
    aad = WRAP_AAD_LABEL + bytes([FORMAT_VERSION]) + segment_size.to_bytes(4, "big")
    fields = [kek_ref.encode(), bucket.encode(), key.encode()] + ([mp.encode()] if mp is not None else [])
    if ctx is not None:
        fields.append(b"ctx:" + ctx.encode())
    for field in fields:
        aad += len(field).to_bytes(4, "big") + field
    return aad


def open_wrap(kek, wrapped, aad):
    """A wrapped data key of either layout (docs/FORMAT.md §2): version 1 is nonce (12) || ct || tag under the key
    itself (60 bytes); version 2 is 0x02 || salt (16) || nonce (12) || ct || tag under HKDF-SHA256(key, salt,
    "s3crypt/v1 wrap key")."""
    if len(wrapped) == WRAP_V1_LEN:
        key, rest = kek, wrapped
    elif len(wrapped) > 1 + 16 + 12 + 16 and wrapped[0] == WRAP_V2:
        salt, rest = wrapped[1:17], wrapped[17:]
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=WRAP_V2_KEY_INFO).derive(kek)
    else:
        raise Invalid("wrapped data key of the wrong length")
    try:
        dek = AESGCM(key).decrypt(rest[:12], rest[12:], aad)
    except Exception as e:  # InvalidTag
        raise Invalid("the data key does not unwrap for this bucket and key") from e
    if len(dek) != 32:
        raise Invalid("wrapped data key of the wrong length")
    return dek


def open_attributes(dek, sealed, bucket, key):
    """The sealed attributes (x-amz-meta-s3crypt-at, docs/FORMAT.md §2): a layout-2 wrap under the DEK with the
    AAD "s3crypt/v1 attributes" || BE32-prefixed bucket and key. Returns {type: value} of its records."""
    aad = b"s3crypt/v1 attributes"
    for field in (bucket.encode(), key.encode()):
        aad += len(field).to_bytes(4, "big") + field
    if len(sealed) < 1 + 16 + 12 + 16 or sealed[0] != WRAP_V2:
        raise Invalid("sealed attributes of the wrong layout")
    salt, rest = sealed[1:17], sealed[17:]
    w = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=WRAP_V2_KEY_INFO).derive(dek)
    try:
        payload = AESGCM(w).decrypt(rest[:12], rest[12:], aad)
    except Exception as e:  # InvalidTag
        raise Invalid("the sealed attributes do not open for this object") from e
    records, i = {}, 0
    while i < len(payload):
        if i + 2 > len(payload) or i + 2 + payload[i + 1] > len(payload):
            raise Invalid("truncated attribute record")
        t, n = payload[i], payload[i + 1]
        records[t] = payload[i + 2:i + 2 + n]
        i += 2 + n
    return records


def unwrap_kms(kms, kek_ref, wrapped, bucket, key, segment_size, mp, bucket_key, ctx):
    """A KMS-protected object's data key (docs/FORMAT.md §2): KMS Decrypt of the bucket key (bucket-key mode) or of
    the data key itself, each under its encryption context."""
    arn = kek_ref.partition(":")[2]
    if bucket_key is not None:
        context = {"s3crypt:v": str(FORMAT_VERSION), "s3crypt:bucket": bucket}
        blob = bucket_key
    else:
        context = json.loads(base64.b64decode(ctx)) if ctx else {}
        context.update({"s3crypt:v": str(FORMAT_VERSION), "s3crypt:bucket": bucket, "s3crypt:key": key,
                        "s3crypt:seg": str(segment_size)})
        if mp is not None:
            context["s3crypt:mp"] = mp
        blob = wrapped
    try:
        plain = kms.decrypt(KeyId=arn, CiphertextBlob=blob, EncryptionContext=context)["Plaintext"]
    except Exception as e:
        raise Invalid(f"KMS did not unwrap the key: {e}") from e
    if bucket_key is None:
        return plain
    return open_wrap(plain, wrapped, wrap_aad(kek_ref, bucket, key, segment_size, mp, ctx))


def layout(mp, segment_size):
    """None for a single-PUT object; (parts, segments per part) for a sealed multipart object."""
    if mp is None:
        return None
    if mp == "open":
        raise Invalid("multipart object never sealed (its completion was interrupted)")
    parts, _, size = mp.partition("x")
    if not (parts.isdigit() and size.isdigit()) or int(size) % segment_size or not 1 <= int(parts) <= 10000:
        raise Invalid("multipart state")
    return int(parts), int(size) // segment_size


def expected(g, total, lay):
    """(part, index, final flag) of segment g of an object of `total` segments."""
    last = g == total - 1
    if lay is None:
        return 0, g, last
    parts, per_part = lay
    part, index = g // per_part + 1, g % per_part
    if part > parts or (last and part != parts):
        raise Invalid("the object's length does not fit its multipart layout (parts dropped or added)")
    return part, index, last or index == per_part - 1


def unwrap(keyring, kek_ref, wrapped, bucket, key, segment_size, mp=None):
    scheme, _, kid = kek_ref.partition(":")
    if scheme != "keyring" or kid not in keyring:
        raise Invalid(f"the keyring has no key {kek_ref}")
    return open_wrap(keyring[kid], wrapped, wrap_aad(kek_ref, bucket, key, segment_size, mp))


def stream_key(dek, part, salt):
    info = STREAM_KEY_INFO + part.to_bytes(2, "big")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(dek)


def decrypt_segments(dek, segment_size, ciphertext, lay=None):
    """Yields verified plaintext, segment by segment. Every segment but the object's last is full."""
    full = segment_size + HEADER_LEN + TAG_LEN
    if len(ciphertext) < HEADER_LEN + TAG_LEN:
        raise Invalid("impossible ciphertext length")
    count = -(-len(ciphertext) // full)
    streams = {}  # part -> (salt, AESGCM)
    for index in range(count):
        seg = ciphertext[index * full:(index + 1) * full]
        if len(seg) < HEADER_LEN + TAG_LEN:
            raise Invalid("impossible ciphertext length")
        header, body = seg[:HEADER_LEN], seg[HEADER_LEN:]
        version, flags = header[0], header[1]
        seg_part = int.from_bytes(header[2:4], "big")
        seg_index = int.from_bytes(header[4:8], "big")
        part, want_index, final = expected(index, count, lay)
        if version != FORMAT_VERSION or flags & ~FLAG_FINAL:
            raise Invalid("unknown segment header")
        if seg_part != part or seg_index != want_index or bool(flags & FLAG_FINAL) != final:
            raise Invalid("segment out of place, or object truncated or extended")
        if index != count - 1 and len(body) != segment_size + TAG_LEN:
            raise Invalid("short segment before the end")
        if len(body) == TAG_LEN and seg_index != 0:
            raise Invalid("empty segment after others of its stream")
        if part not in streams:
            streams[part] = (header[8:16], AESGCM(stream_key(dek, part, header[8:16])))
        salt, aead = streams[part]
        if header[8:16] != salt:
            raise Invalid("segment of another stream")
        nonce = seg_index.to_bytes(4, "big") + bytes(7) + bytes([flags])
        try:
            yield aead.decrypt(nonce, body, header)
        except Exception as e:
            raise Invalid(f"segment {index} failed authentication") from e


def decrypt(keyring, metadata, bucket, key, ciphertext, kms=None):
    """The verified plaintext; `keyring` for keyring objects, `kms` (a boto3 KMS client) for KMS objects."""
    segment_size, kek_ref, wrapped, mp = envelope(metadata)
    lay = layout(mp, segment_size)
    if kek_ref.startswith("kms:"):
        if kms is None:
            raise Invalid("a KMS-protected object: give a KMS client (--kms)")
        bucket_key, ctx = kms_fields(metadata)
        dek = unwrap_kms(kms, kek_ref, wrapped, bucket, key, segment_size, mp, bucket_key, ctx)
    else:
        dek = unwrap(keyring or {}, kek_ref, wrapped, bucket, key, segment_size, mp)
    return b"".join(decrypt_segments(dek, segment_size, ciphertext, lay))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keyring", help="the keyring file (keyring objects)")
    p.add_argument("--kms", action="store_true", help="KMS objects: use KMS (boto3's standard configuration)")
    p.add_argument("--kms-endpoint", help="a KMS endpoint other than AWS's")
    p.add_argument("--metadata", required=True, help="head-object JSON output, or a JSON map of metadata")
    p.add_argument("--bucket", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("ciphertext", help="the object as stored")
    a = p.parse_args()
    with open(a.metadata) as f:
        meta = json.load(f)
    meta = meta.get("Metadata", meta)
    with open(a.ciphertext, "rb") as f:
        ct = f.read()
    try:
        kms = None
        if a.kms or a.kms_endpoint:
            import boto3
            kms = boto3.client("kms", endpoint_url=a.kms_endpoint)
        keyring = load_keyring(a.keyring) if a.keyring else None
        plain = decrypt(keyring, meta, a.bucket, a.key, ct, kms=kms)
    except Invalid as e:
        print(f"s3crypt_decrypt: {e}", file=sys.stderr)
        sys.exit(1)
    sys.stdout.buffer.write(plain)


if __name__ == "__main__":
    main()
