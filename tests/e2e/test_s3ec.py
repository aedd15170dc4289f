"""Objects written by the official AWS S3 Encryption Client (amazon-s3-encryption-client-python 4.x) straight to
the store (moto in server mode: S3 and KMS), read through s3crypt with plain boto3: V3 (key commitment) and V2,
single PUT and multipart, KMS-wrapped and raw-AES-wrapped, in object metadata and in instruction files; tampered
ones fail closed; `s3crypt migrate --from-s3ec` re-encrypts them in place (docs/S3EC.md)."""
import base64
import hashlib
import io
import json
import os
import random
import subprocess

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from conftest import BIN, Proxy, https_only_config, kms_client, make_client
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from s3_encryption import S3EncryptionClient, S3EncryptionClientConfig
from s3_encryption.materials import AlgorithmSuite, CommitmentPolicy, KmsKeyring

BUCKET = "s3ec"
MIB = 1024 * 1024
AES_KEY = bytes(range(32, 64))
# The proxy reads S3EC objects up to this size (13 MiB: the 12 MiB uploads fit, the 14 MiB one does not).
MAX_OBJECT = 13 * MIB


def data(seed, n):
    return random.Random(seed).randbytes(n)


def moto_endpoint():
    return os.environ["S3CRYPT_TEST_KMS_ENDPOINT"]


def moto_s3():
    return boto3.client("s3", endpoint_url=moto_endpoint(), region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing",
                        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}))


def b64(b):
    return base64.b64encode(b).decode()


def raw_aes_object(version, plain, wrap_aad=b"AES/GCM/NoPadding"):
    """An S3EC object wrapped under a raw AES key, as the Java client writes it (the Python 4.x client has no raw
    AES keyring): (metadata, body)."""
    pdk, wiv = os.urandom(32), os.urandom(12)
    edk = wiv + AESGCM(AES_KEY).encrypt(wiv, pdk, wrap_aad)
    if version == 2:
        iv = os.urandom(12)
        meta = {"x-amz-key-v2": b64(edk), "x-amz-iv": b64(iv), "x-amz-cek-alg": "AES/GCM/NoPadding",
                "x-amz-wrap-alg": "AES/GCM", "x-amz-matdesc": "{}", "x-amz-tag-len": "128"}
        return meta, AESGCM(pdk).encrypt(iv, plain, None)
    mid = os.urandom(28)

    def expand(info, n):
        return HKDF(algorithm=hashes.SHA512(), length=n, salt=mid, info=b"\x00\x73" + info).derive(pdk)

    meta = {"x-amz-c": "115", "x-amz-3": b64(edk), "x-amz-w": "02", "x-amz-m": "{}", "x-amz-i": b64(mid),
            "x-amz-d": b64(expand(b"COMMITKEY", 28))}
    return meta, AESGCM(expand(b"DERIVEKEY", 32)).encrypt(b"\x01" * 12, plain, b"\x00\x73")


class Store:
    """What the S3 Encryption Client wrote: key → plaintext."""

    def __init__(self):
        self.raw = moto_s3()
        self.kms = kms_client()
        created = self.kms.create_key(Description="s3ec e2e")["KeyMetadata"]
        self.key_id, self.key_arn = created["KeyId"], created["Arn"]
        self.objects = {}
        try:
            self.raw.create_bucket(Bucket=BUCKET)
        except self.raw.exceptions.BucketAlreadyOwnedByYou:
            pass

    def client(self, version, **config):
        keyring = KmsKeyring(kms_client=self.kms, kms_key_id=self.key_id)
        if version == 2:
            config.update(encryption_algorithm=AlgorithmSuite.ALG_AES_256_GCM_IV12_TAG16_NO_KDF,
                          commitment_policy=CommitmentPolicy.FORBID_ENCRYPT_ALLOW_DECRYPT)
        # The S3EC wraps the boto3 client it is given: each gets its own.
        return S3EncryptionClient(moto_s3(), S3EncryptionClientConfig(keyring=keyring, **config))

    def put(self, version, key, plain, multipart=False, **kw):
        c = self.client(version)
        if multipart:
            c.upload_fileobj(io.BytesIO(plain), BUCKET, key)
        else:
            c.put_object(Bucket=BUCKET, Key=key, Body=plain, **kw)
        self.objects[key] = plain

    def put_raw(self, key, meta, body, plain=None):
        self.raw.put_object(Bucket=BUCKET, Key=key, Body=body, Metadata=meta)
        if plain is not None:
            self.objects[key] = plain


@pytest.fixture(scope="module")
def store():
    s = Store()
    s.put(3, "v3-kms-1k", data(1, 1024))
    s.put(2, "v2-kms-1k", data(2, 1024))
    s.put(3, "v3-kms-3m", data(3, 3 * MIB))
    s.put(3, "v3-kms-ctx", data(4, 1000), EncryptionContext={"team": "ledger"})
    s.put(3, "v3-kms-empty", b"")
    s.put(3, "v3-kms-12m-multipart", data(5, 12 * MIB), multipart=True)
    s.put(2, "v2-kms-12m-multipart", data(6, 12 * MIB), multipart=True)
    for version in (2, 3):
        plain = data(10 + version, 70_000)
        meta, body = raw_aes_object(version, plain)
        s.put_raw(f"v{version}-aes", meta, body, plain)
    plain = data(20, 5000)
    meta, body = raw_aes_object(3, plain, wrap_aad=b"115")
    s.put_raw("v3-aes-suite-aad", meta, body, plain)
    # Instruction files: V3 keeps c/d/i on the object; V2 keeps everything in the file.
    plain = data(30, 4096)
    meta, body = raw_aes_object(3, plain)
    on_object = {k: meta[k] for k in ("x-amz-c", "x-amz-d", "x-amz-i")}
    in_file = {k: meta[k] for k in ("x-amz-3", "x-amz-w", "x-amz-m")}
    s.put_raw("v3-instruction", on_object, body, plain)
    s.raw.put_object(Bucket=BUCKET, Key="v3-instruction.instruction", Body=json.dumps(in_file).encode())
    plain = data(31, 4096)
    meta, body = raw_aes_object(2, plain)
    s.put_raw("v2-instruction", {}, body, plain)
    s.raw.put_object(Bucket=BUCKET, Key="v2-instruction.instruction", Body=json.dumps(meta).encode())
    return s


def start_proxy(work, s3ec_settings, encryption_extra="", s3ec_on=None):
    """s3crypt in front of moto (S3 and KMS) with the S3EC AES keys in `work`/s3ec-aes.toml and `s3ec_settings`
    (TOML lines of [encryption.s3ec]); `s3ec_on` = (scope entries, KMS key ARNs) turns S3EC reading on."""
    ring = work / "s3ec-aes.toml"
    ring.write_text(f'current = "app"\n[keys]\nold = "{b64(bytes(32))}"\napp = "{b64(AES_KEY)}"\n')
    ring.chmod(0o600)
    upstream = f"""
[upstream]
endpoint = "{moto_endpoint()}"
access_key_id = "testing"
secret_access_key = "testing"
[encryption]
keyring_file = "keyring.toml"
{encryption_extra}
[encryption.kms]
endpoint = "{moto_endpoint()}"
region = "us-east-1"
access_key_id = "testing"
secret_access_key = "testing"
[encryption.s3ec]
aes_keyring_file = "s3ec-aes.toml"
{s3ec_settings}
{scoped(*s3ec_on) if s3ec_on else ""}
"""
    return Proxy(work, https_only_config(upstream), expected_listeners=1)


def scoped(scope, kms_keys):
    """The [encryption.s3ec] lines that turn S3EC reading on for `scope` and `kms_keys`."""
    return f"enabled = true\nscope = {json.dumps(scope)}\nkms_keys = {json.dumps(kms_keys)}"


@pytest.fixture(scope="module")
def proxy_s3ec(store, tmp_path_factory):
    work = tmp_path_factory.mktemp("proxy-s3ec")
    settings = f'instruction_files = true\nmax_object_size = {MAX_OBJECT}\nlist_buckets = ["{BUCKET}"]'
    p = start_proxy(work, settings, encryption_extra='legacy_objects = "passthrough"',
                    s3ec_on=([BUCKET], [store.key_arn]))
    yield p
    assert p.stop() == 0, "".join(p.log)


S3EC_KEYS = {"x-amz-key-v2", "x-amz-iv", "x-amz-cek-alg", "x-amz-wrap-alg", "x-amz-matdesc", "x-amz-tag-len",
             "x-amz-c", "x-amz-3", "x-amz-w", "x-amz-d", "x-amz-i", "x-amz-t", "x-amz-m"}


def test_objects_the_s3_encryption_client_wrote_read_back_byte_exact_through_s3crypt(store, proxy_s3ec):
    s3 = make_client(proxy_s3ec)
    for key, plain in store.objects.items():
        got = s3.get_object(Bucket=BUCKET, Key=key)
        assert hashlib.sha256(got["Body"].read()).hexdigest() == hashlib.sha256(plain).hexdigest(), key
        assert got["ContentLength"] == len(plain), key
        head = s3.head_object(Bucket=BUCKET, Key=key)
        assert head["ContentLength"] == len(plain), key
        assert not S3EC_KEYS & set(head["Metadata"]), (key, head["Metadata"])


def test_the_stored_objects_are_ciphertext_one_tag_longer_than_the_plaintext(store):
    for key in ("v3-kms-1k", "v2-kms-12m-multipart", "v3-aes"):
        raw = store.raw.get_object(Bucket=BUCKET, Key=key)
        assert raw["ContentLength"] == len(store.objects[key]) + 16
        assert raw["Body"].read()[:-16] != store.objects[key]


def test_ranges_of_s3ec_objects_are_cut_from_the_verified_plaintext(store, proxy_s3ec):
    s3 = make_client(proxy_s3ec)
    for key, rng, sl in [("v3-kms-3m", "bytes=100-199", slice(100, 200)),
                         ("v3-kms-12m-multipart", f"bytes={8 * MIB - 5}-{8 * MIB + 5}", slice(8 * MIB - 5, 8 * MIB + 6)),
                         ("v2-kms-1k", "bytes=-10", slice(1014, 1024)),
                         ("v3-aes", "bytes=69990-", slice(69990, 70000))]:
        got = s3.get_object(Bucket=BUCKET, Key=key, Range=rng)
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["Body"].read() == store.objects[key][sl], (key, rng)
        total = len(store.objects[key])
        assert got["ContentRange"].endswith(f"/{total}")
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=BUCKET, Key="v2-kms-1k", Range="bytes=5000-")
    assert e.value.response["Error"]["Code"] == "InvalidRange"


def test_listings_report_the_plaintext_sizes_of_s3ec_objects(store, proxy_s3ec):
    s3 = make_client(proxy_s3ec)
    listed = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    for key, plain in store.objects.items():
        assert listed[key] == len(plain), key


def test_tampered_truncated_or_recommitted_s3ec_objects_fail_closed(store, proxy_s3ec):
    s3 = make_client(proxy_s3ec)
    head = store.raw.head_object(Bucket=BUCKET, Key="v3-kms-1k")
    body = bytearray(store.raw.get_object(Bucket=BUCKET, Key="v3-kms-1k")["Body"].read())
    flipped = bytes(body[:10]) + bytes([body[10] ^ 1]) + bytes(body[11:])
    recommitted = dict(head["Metadata"], **{"x-amz-d": b64(bytes(28))})
    v2 = store.raw.head_object(Bucket=BUCKET, Key="v2-kms-1k")["Metadata"]
    v2_body = store.raw.get_object(Bucket=BUCKET, Key="v2-kms-1k")["Body"].read()
    cases = {
        "bad-flipped": (head["Metadata"], flipped),
        "bad-truncated": (head["Metadata"], bytes(body[:-1])),
        "bad-commitment": (recommitted, bytes(body)),
        "bad-iv": (dict(v2, **{"x-amz-iv": b64(bytes(12))}), v2_body),
        "bad-context": (dict(v2, **{"x-amz-matdesc": '{"aws:x-amz-cek-alg": "AES/GCM/NoPadding", "x": "y"}'}), v2_body),
        "bad-cbc": (dict(v2, **{"x-amz-cek-alg": "AES/CBC/PKCS5Padding"}), v2_body),
    }
    for key, (meta, b) in cases.items():
        store.put_raw(key, meta, b)
        with pytest.raises(ClientError) as e:
            s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 502), (key, e.value.response)
        assert e.value.response["Error"]["Code"] in ("ObjectIntegrityError", "KMS.NotFoundException"), key
    # An AES-wrapped object whose key the proxy does not have.
    meta, b = raw_aes_object(2, b"x" * 100)
    meta["x-amz-key-v2"] = b64(os.urandom(60))
    store.put_raw("bad-unknown-key", meta, b)
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=BUCKET, Key="bad-unknown-key")
    assert e.value.response["Error"]["Code"] == "KMS.NotFoundException"
    for key in list(cases) + ["bad-unknown-key"]:
        store.raw.delete_object(Bucket=BUCKET, Key=key)


def test_an_s3ec_object_too_large_to_authenticate_in_memory_is_refused_with_a_clear_error(store, proxy_s3ec):
    s3 = make_client(proxy_s3ec)
    meta, body = raw_aes_object(2, data(40, 14 * MIB))
    store.put_raw("too-large", meta, body)
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket=BUCKET, Key="too-large")
    assert e.value.response["Error"]["Code"] == "InvalidObjectState"
    assert "migrate --from-s3ec" in e.value.response["Error"]["Message"]
    assert s3.head_object(Bucket=BUCKET, Key="too-large")["ContentLength"] == 14 * MIB
    store.raw.delete_object(Bucket=BUCKET, Key="too-large")


def test_migrate_from_s3ec_re_encrypts_s3ec_objects_in_place_and_plain_migrate_leaves_them_alone(store, proxy_s3ec):
    keys = {"mig/v3": data(50, 300_000), "mig/v2": data(51, 2000)}
    store.put(3, "mig/v3", keys["mig/v3"])
    store.put(2, "mig/v2", keys["mig/v2"])
    config = str(proxy_s3ec.workdir / "proxy.toml")
    run = subprocess.run([BIN, "migrate", "--config", config, "--bucket", BUCKET, "--prefix", "mig/"],
                         cwd=proxy_s3ec.workdir, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "2 skipped" in run.stderr, run.stderr
    assert "x-amz-3" in store.raw.head_object(Bucket=BUCKET, Key="mig/v3")["Metadata"]
    run = subprocess.run([BIN, "migrate", "--config", config, "--bucket", BUCKET, "--prefix", "mig/", "--from-s3ec"],
                         cwd=proxy_s3ec.workdir, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "2 changed" in run.stderr, run.stderr
    s3 = make_client(proxy_s3ec)
    for key, plain in keys.items():
        meta = store.raw.head_object(Bucket=BUCKET, Key=key)["Metadata"]
        assert not S3EC_KEYS & set(meta), meta
        assert any(k.startswith("s3crypt") for k in meta), meta
        assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == plain
    run = subprocess.run([BIN, "migrate", "--config", config, "--bucket", BUCKET, "--prefix", "mig/", "--from-s3ec"],
                         cwd=proxy_s3ec.workdir, capture_output=True, text=True, timeout=120)
    assert "2 already done" in run.stderr, run.stderr


def test_the_s3_encryption_client_itself_reads_what_it_wrote_so_the_fixtures_are_genuine(store):
    reader = store.client(3, commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_ALLOW_DECRYPT)
    for key in ("v3-kms-1k", "v2-kms-1k", "v3-kms-12m-multipart"):
        assert reader.get_object(Bucket=BUCKET, Key=key)["Body"].read() == store.objects[key]


def test_a_server_side_copy_of_an_s3ec_object_writes_an_s3crypt_object_of_its_plaintext(store, proxy_s3ec):
    s3 = make_client(proxy_s3ec)
    s3.copy_object(Bucket=BUCKET, Key="copied/v2", CopySource={"Bucket": BUCKET, "Key": "v2-kms-1k"})
    meta = store.raw.head_object(Bucket=BUCKET, Key="copied/v2")["Metadata"]
    assert not S3EC_KEYS & set(meta) and "s3crypt-v" in meta, meta
    assert s3.get_object(Bucket=BUCKET, Key="copied/v2")["Body"].read() == store.objects["v2-kms-1k"]


def test_s3crypt_decrypt_reads_s3ec_objects_offline(store, proxy_s3ec, tmp_path):
    for key, args in [("v3-aes", ["--keyring", str(proxy_s3ec.workdir / "s3ec-aes.toml")]),
                      ("v2-kms-1k", ["--kms-endpoint", moto_endpoint(), "--kms-region", "us-east-1"]),
                      ("v3-instruction", ["--keyring", str(proxy_s3ec.workdir / "s3ec-aes.toml"),
                                          "--instruction-file", str(tmp_path / "instruction.json")])]:
        head = store.raw.head_object(Bucket=BUCKET, Key=key)
        (tmp_path / "meta.json").write_text(json.dumps({"Metadata": head["Metadata"]}))
        (tmp_path / "ct.bin").write_bytes(store.raw.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        if key == "v3-instruction":
            (tmp_path / "instruction.json").write_bytes(
                store.raw.get_object(Bucket=BUCKET, Key=key + ".instruction")["Body"].read())
        out = tmp_path / "plain.bin"
        out.unlink(missing_ok=True)
        env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        run = subprocess.run([BIN, "decrypt", "--metadata", str(tmp_path / "meta.json"), "--bucket", BUCKET,
                              "--key", key, "--in", str(tmp_path / "ct.bin"), "--out", str(out)] + args,
                             capture_output=True, text=True, timeout=60, env=env)
        assert run.returncode == 0, (key, run.stderr)
        assert out.read_bytes() == store.objects[key], key
        # Tampered: nothing written.
        ct = bytearray((tmp_path / "ct.bin").read_bytes())
        ct[0] ^= 1
        (tmp_path / "ct.bin").write_bytes(bytes(ct))
        out.unlink()
        run = subprocess.run([BIN, "decrypt", "--metadata", str(tmp_path / "meta.json"), "--bucket", BUCKET,
                              "--key", key, "--in", str(tmp_path / "ct.bin"), "--out", str(out)] + args,
                             capture_output=True, text=True, timeout=60, env=env)
        assert run.returncode != 0 and not out.exists(), key


def test_s3ec_reads_beyond_the_buffer_budget_wait_then_get_slow_down_and_are_served_once_room_frees(store, tmp_path):
    """Two 12 MiB S3EC objects do not fit a 20 MiB budget at once: while the first response is held (its body not
    read), the second read waits `buffer_wait` and gets 503 SlowDown; once the first is read, reads are served."""
    p = start_proxy(tmp_path, f'max_object_size = {13 * MIB}\nmax_buffered = {20 * MIB}\nbuffer_wait = "300ms"',
                    s3ec_on=([BUCKET], [store.key_arn]))
    held = None
    try:
        s3 = make_client(p)
        key = "v3-kms-12m-multipart"
        held = s3.get_object(Bucket=BUCKET, Key=key)
        with pytest.raises(ClientError) as e:
            s3.get_object(Bucket=BUCKET, Key="v2-kms-12m-multipart")
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert e.value.response["Error"]["Code"] == "SlowDown"
        assert held["Body"].read() == store.objects[key]
        assert s3.get_object(Bucket=BUCKET, Key="v2-kms-12m-multipart")["Body"].read() == \
            store.objects["v2-kms-12m-multipart"]
    finally:
        if held is not None:
            held["Body"].close()
        assert p.stop() == 0, "".join(p.log)


def test_s3ec_reads_are_off_by_default_and_scoped_to_their_buckets_and_kms_keys(store, tmp_path):
    """An S3EC object is bound to no bucket or key: a store could put one in place of any object. So S3EC reading is
    off unless configured, reads only where `scope` says, and only data keys wrapped under `kms_keys`."""
    # An s3crypt object the store replaces with an S3EC object of its own making, under a KMS key the proxy's
    # principal can use but that is not in kms_keys.
    rogue = store.kms.create_key(Description="the store's own key")["KeyMetadata"]
    forger = S3EncryptionClient(moto_s3(), S3EncryptionClientConfig(keyring=KmsKeyring(
        kms_client=store.kms, kms_key_id=rogue["KeyId"])))
    for sub, settings, s3ec_on in [("off", "", None),
                                   ("scoped", "", ([f"{BUCKET}/elsewhere/"], [store.key_arn])),
                                   ("keys", "", ([BUCKET], [store.key_arn]))]:
        work = tmp_path / sub
        work.mkdir()
        p = start_proxy(work, settings, s3ec_on=s3ec_on)
        try:
            s3 = make_client(p)
            key = f"swapped/{sub}"
            s3.put_object(Bucket=BUCKET, Key=key, Body=b"the real object")
            forger.put_object(Bucket=BUCKET, Key=key, Body=b"the store's forgery")
            with pytest.raises(ClientError) as e:
                s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            status = e.value.response["ResponseMetadata"]["HTTPStatusCode"]
            assert status in (403, 502), (sub, e.value.response)
            # Objects the S3 Encryption Client wrote under an allowed key read where S3EC reading is on and scoped.
            if sub == "keys":
                assert s3.get_object(Bucket=BUCKET, Key="v3-kms-1k")["Body"].read() == store.objects["v3-kms-1k"]
            else:
                with pytest.raises(ClientError):
                    s3.get_object(Bucket=BUCKET, Key="v3-kms-1k")["Body"].read()
        finally:
            assert p.stop() == 0, "".join(p.log)
