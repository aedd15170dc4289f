"""Keys the customer controls, with real clients: SSE-C and SSE-KMS from boto3 and the aws CLI through the s3crypt
binary to SeaweedFS, with moto as the KMS. The store never holds the customer's key or plaintext."""
import os
import subprocess

import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from conftest import AK, SK, make_client

MIB = 1024 * 1024
KEY_A = b"0123456789abcdef0123456789abcdef"   # 32 bytes: the aws CLI takes the key as text
KEY_B = b"fedcba9876543210fedcba9876543210"


def code(e: ClientError) -> str:
    return e.response["Error"]["Code"]


def status(e: ClientError) -> int:
    return e.response["ResponseMetadata"]["HTTPStatusCode"]


def test_boto3_sse_c_round_trips_and_every_read_needs_the_key(proxy_sw, seaweed_direct, tmp_path):
    s3 = make_client(proxy_sw)
    body = os.urandom(300_000)
    ssec = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": KEY_A}
    put = s3.put_object(Bucket="e2e-sw", Key="ssec/obj", Body=body, **ssec)
    assert put["SSECustomerAlgorithm"] == "AES256"
    assert s3.get_object(Bucket="e2e-sw", Key="ssec/obj", **ssec)["Body"].read() == body
    assert s3.head_object(Bucket="e2e-sw", Key="ssec/obj", **ssec)["ContentLength"] == len(body)
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="e2e-sw", Key="ssec/obj")
    assert status(e.value) == 400
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="e2e-sw", Key="ssec/obj", SSECustomerAlgorithm="AES256", SSECustomerKey=KEY_B)
    assert status(e.value) == 400  # another key than the object's: S3 answers 400
    # copy under another customer key
    s3.copy_object(Bucket="e2e-sw", Key="ssec/copy", CopySource={"Bucket": "e2e-sw", "Key": "ssec/obj"},
                   CopySourceSSECustomerAlgorithm="AES256", CopySourceSSECustomerKey=KEY_A,
                   SSECustomerAlgorithm="AES256", SSECustomerKey=KEY_B)
    got = s3.get_object(Bucket="e2e-sw", Key="ssec/copy", SSECustomerAlgorithm="AES256", SSECustomerKey=KEY_B)
    assert got["Body"].read() == body
    # multipart through the transfer manager (the key on every part)
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(12 * MIB + 1))
    s3.upload_file(str(src), "e2e-sw", "ssec/big", ExtraArgs=ssec, Config=TransferConfig(multipart_threshold=5 * MIB))
    back = tmp_path / "back.bin"
    s3.download_file("e2e-sw", "ssec/big", str(back), ExtraArgs=ssec)
    assert back.read_bytes() == src.read_bytes()
    # the store holds neither the key nor the plaintext
    raw = seaweed_direct.get_object(Bucket="e2e-sw", Key="ssec/obj")
    stored = raw["Body"].read()
    assert body[:64] not in stored
    assert raw["Metadata"]["s3crypt-kek"] == "sse-c"
    assert all(KEY_A.decode() not in v for v in raw["Metadata"].values())


def aws(proxy, *args, check=True):
    env = {**os.environ, "AWS_ACCESS_KEY_ID": AK, "AWS_SECRET_ACCESS_KEY": SK, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CA_BUNDLE": proxy.ca, "AWS_MAX_ATTEMPTS": "1"}
    return subprocess.run(["aws", "--endpoint-url", proxy.url("https"), *args], env=env, capture_output=True,
                          text=True, check=check)


def test_the_aws_cli_copies_with_sse_c_and_sse_kms(proxy_sw, tmp_path):
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(9 * MIB + 5))   # over the CLI's 8 MiB threshold: by parts
    key = KEY_A.decode()
    aws(proxy_sw, "s3", "cp", "--only-show-errors", "--sse-c", "AES256", "--sse-c-key", key, str(src),
        "s3://e2e-sw/cli-keys/c.bin")
    aws(proxy_sw, "s3", "cp", "--only-show-errors", "--sse-c", "AES256", "--sse-c-key", key,
        "s3://e2e-sw/cli-keys/c.bin", str(tmp_path / "c.back"))
    assert (tmp_path / "c.back").read_bytes() == src.read_bytes()
    r = aws(proxy_sw, "s3", "cp", "s3://e2e-sw/cli-keys/c.bin", str(tmp_path / "nokey"), check=False)
    assert r.returncode != 0

    default_key, other_key = proxy_sw.kms_keys
    aws(proxy_sw, "s3", "cp", "--only-show-errors", "--sse", "aws:kms", "--sse-kms-key-id", other_key, str(src),
        "s3://e2e-sw/cli-keys/k.bin")
    aws(proxy_sw, "s3", "cp", "--only-show-errors", "s3://e2e-sw/cli-keys/k.bin", str(tmp_path / "k.back"))
    assert (tmp_path / "k.back").read_bytes() == src.read_bytes()
    head = aws(proxy_sw, "s3api", "head-object", "--bucket", "e2e-sw", "--key", "cli-keys/k.bin").stdout
    assert other_key in head and "aws:kms" in head


def test_boto3_sse_kms_uses_the_named_or_default_key_and_refuses_others(proxy_sw):
    s3 = make_client(proxy_sw)
    default_key, other_key = proxy_sw.kms_keys
    put = s3.put_object(Bucket="e2e-sw", Key="kms/default", Body=b"d", ServerSideEncryption="aws:kms")
    assert put["SSEKMSKeyId"] == default_key
    put = s3.put_object(Bucket="e2e-sw", Key="kms/other", Body=b"o", ServerSideEncryption="aws:kms",
                        SSEKMSKeyId=other_key, BucketKeyEnabled=False)
    assert put["SSEKMSKeyId"] == other_key
    head = s3.head_object(Bucket="e2e-sw", Key="kms/other")
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == other_key
    assert s3.get_object(Bucket="e2e-sw", Key="kms/other")["Body"].read() == b"o"
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="e2e-sw", Key="kms/denied", Body=b"x", ServerSideEncryption="aws:kms",
                      SSEKMSKeyId="arn:aws:kms:us-east-1:123456789012:key/not-allowed")
    assert code(e.value) == "AccessDenied"
