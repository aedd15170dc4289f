"""Encryption with real clients and a real store: boto3 and the aws CLI through s3crypt to SeaweedFS. What the
store holds is ciphertext; the independent reference decryptor turns it back into the client's bytes."""
import os
import subprocess
import sys

import pytest
from botocore.exceptions import ClientError

from conftest import AK, SK, ROOT, make_client

sys.path.insert(0, str(ROOT / "scripts"))
import s3crypt_decrypt as ref  # noqa: E402

SIZES = [0, 1, 65535, 65536, 65537, 3 * 65536 + 7, 2 * 1024 * 1024 + 3]


def test_boto3_round_trips_through_the_proxy_and_the_store_holds_only_ciphertext(proxy_sw, seaweed_direct):
    s3 = make_client(proxy_sw)
    keyring = ref.load_keyring(proxy_sw.keyring)
    for n in SIZES:
        body = os.urandom(n)
        key = f"boto3/obj {n}"
        put = s3.put_object(Bucket="e2e-sw", Key=key, Body=body)
        assert put["ServerSideEncryption"] == "AES256" and "SSEKMSKeyId" not in put
        got = s3.get_object(Bucket="e2e-sw", Key=key)
        assert got["Body"].read() == body
        assert got["ContentLength"] == n
        assert not any(k.startswith("s3crypt") for k in got.get("Metadata", {}))

        raw = seaweed_direct.get_object(Bucket="e2e-sw", Key=key)
        stored = raw["Body"].read()
        assert stored != body and (n < 64 or body[:64] not in stored)
        assert raw["Metadata"]["s3crypt-v"] == "1"
        # An independent implementation of docs/FORMAT.md decrypts what the store holds.
        assert ref.decrypt(keyring, raw["Metadata"], "e2e-sw", key, stored) == body
        with pytest.raises(ref.Invalid):
            ref.decrypt(keyring, raw["Metadata"], "e2e-sw", key + "-moved", stored)
    sizes = {o["Key"]: o["Size"] for o in s3.list_objects_v2(Bucket="e2e-sw", Prefix="boto3/")["Contents"]}
    assert sizes == {f"boto3/obj {n}": n for n in SIZES}


def test_boto3_ranged_reads_return_plaintext_bytes(proxy_sw):
    s3 = make_client(proxy_sw)
    body = os.urandom(300_000)
    s3.put_object(Bucket="e2e-sw", Key="ranges", Body=body)
    for r, want in [("bytes=0-0", body[:1]), ("bytes=65530-65545", body[65530:65546]),
                    ("bytes=299990-", body[299990:]), ("bytes=-70000", body[-70000:])]:
        got = s3.get_object(Bucket="e2e-sw", Key="ranges", Range=r)
        assert got["Body"].read() == want, r
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="e2e-sw", Key="ranges", Range="bytes=300000-")
    assert e.value.response["Error"]["Code"] == "InvalidRange"


def test_the_aws_cli_copies_through_the_proxy_to_seaweedfs(proxy_sw, tmp_path):
    env = {**os.environ, "AWS_ACCESS_KEY_ID": AK, "AWS_SECRET_ACCESS_KEY": SK, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CA_BUNDLE": proxy_sw.ca, "AWS_MAX_ATTEMPTS": "1"}
    aws = ["aws", "--endpoint-url", proxy_sw.url("https")]
    src = tmp_path / "cli.bin"
    src.write_bytes(os.urandom(5 * 1024 * 1024 + 11))
    subprocess.run([*aws, "s3", "cp", "--only-show-errors", str(src), "s3://e2e-sw/cli.bin"], env=env, check=True)
    subprocess.run([*aws, "s3", "cp", "--only-show-errors", "s3://e2e-sw/cli.bin", str(tmp_path / "b.bin")],
                   env=env, check=True)
    assert (tmp_path / "b.bin").read_bytes() == src.read_bytes()
    ls = subprocess.run([*aws, "s3", "ls", "s3://e2e-sw/cli.bin"], env=env, check=True, capture_output=True, text=True)
    assert " 5242891 cli.bin" in ls.stdout, ls.stdout


def test_the_reference_decryptor_reads_kms_protected_objects_with_kms_alone(proxy_sw, seaweed_direct):
    """Bucket-key and direct KMS mode, with and without a client encryption context, single PUT and multipart:
    with the store's bytes, the metadata and KMS, docs/FORMAT.md is enough to get the data back."""
    import base64
    import json

    from conftest import kms_client

    s3 = make_client(proxy_sw)
    kms = kms_client()
    ctx = base64.b64encode(json.dumps({"team": "ledger"}).encode()).decode()
    cases = {
        "kms/bucket-key": dict(ServerSideEncryption="aws:kms"),
        "kms/direct": dict(ServerSideEncryption="aws:kms", BucketKeyEnabled=False),
        "kms/direct-ctx": dict(ServerSideEncryption="aws:kms", BucketKeyEnabled=False, SSEKMSEncryptionContext=ctx),
        "kms/bucket-key-ctx": dict(ServerSideEncryption="aws:kms", SSEKMSEncryptionContext=ctx),
    }
    for key, extra in cases.items():
        body = os.urandom(200_000)
        s3.put_object(Bucket="e2e-sw", Key=key, Body=body, **extra)
        raw = seaweed_direct.get_object(Bucket="e2e-sw", Key=key)
        stored = raw["Body"].read()
        assert raw["Metadata"]["s3crypt-kek"].startswith("kms:"), key
        assert ("s3crypt-bk" in raw["Metadata"]) == ("bucket-key" in key), key
        assert ("s3crypt-ctx" in raw["Metadata"]) == key.endswith("-ctx"), key
        assert ref.decrypt(None, raw["Metadata"], "e2e-sw", key, stored, kms=kms) == body, key
        with pytest.raises(ref.Invalid):
            ref.decrypt(None, raw["Metadata"], "e2e-sw", key + "-moved", stored, kms=kms)
        with pytest.raises(ref.Invalid):
            ref.decrypt(None, raw["Metadata"], "e2e-sw", key, stored)
    body = os.urandom(11 * 1024 * 1024)
    part = 5 * 1024 * 1024
    for key, extra in [("kms/mp-bucket-key", {"ServerSideEncryption": "aws:kms"}),
                       ("kms/mp-direct", {"ServerSideEncryption": "aws:kms", "BucketKeyEnabled": False})]:
        up = s3.create_multipart_upload(Bucket="e2e-sw", Key=key, **extra)["UploadId"]
        etags = [s3.upload_part(Bucket="e2e-sw", Key=key, UploadId=up, PartNumber=i + 1,
                                Body=body[i * part:(i + 1) * part])["ETag"] for i in range(3)]
        s3.complete_multipart_upload(Bucket="e2e-sw", Key=key, UploadId=up, MultipartUpload={
            "Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]})
        raw = seaweed_direct.get_object(Bucket="e2e-sw", Key=key)
        assert raw["Metadata"]["s3crypt-mp"] != "open"
        assert ("s3crypt-bk" in raw["Metadata"]) == (key == "kms/mp-bucket-key")
        assert ref.decrypt(None, raw["Metadata"], "e2e-sw", key, raw["Body"].read(), kms=kms) == body, key
