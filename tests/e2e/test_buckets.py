"""Governing encryption per bucket through the S3 API with real clients (docs/BUCKETS.md): the aws CLI and boto3 set
default encryption and a bucket policy; uploads over https and plain http, with and without SSE headers."""
import json
import os
import subprocess

import pytest
from botocore.exceptions import ClientError

from conftest import AK, SK, Proxy, make_client

CONFIG = f"""
[server]
mode = "dev"
[[listeners]]
address = "127.0.0.1:0"
protocol = "https"
[[listeners]]
address = "127.0.0.1:0"
protocol = "http"
plain_http = "allow"
[tls]
self_signed_dir = "tls"
[[clients]]
access_key_id = "{AK}"
secret_access_key = "{SK}"
bucket_admin = true
[upstream]
endpoint = "embedded"
[embedded]
data_dir = "store"
buckets = ["gov"]
"""


@pytest.fixture(scope="module")
def gov(tmp_path_factory):
    p = Proxy(tmp_path_factory.mktemp("gov"), CONFIG, expected_listeners=2)
    yield p
    assert p.stop() == 0, "".join(p.log)


def aws(proxy, *args, check=True):
    env = {**os.environ, "AWS_ACCESS_KEY_ID": AK, "AWS_SECRET_ACCESS_KEY": SK, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CA_BUNDLE": proxy.ca, "AWS_MAX_ATTEMPTS": "1"}
    return subprocess.run(["aws", "--endpoint-url", proxy.url("https"), *args], env=env, capture_output=True,
                          text=True, check=check)


def code(e: ClientError) -> str:
    return e.response["Error"]["Code"]


POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {"Sid": "DenyUnencryptedUploads", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
         "Resource": "arn:aws:s3:::gov/*", "Condition": {"Null": {"s3:x-amz-server-side-encryption": "true"}}},
        {"Sid": "DenyPlainHttp", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
         "Resource": ["arn:aws:s3:::gov", "arn:aws:s3:::gov/*"],
         "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
    ],
}


def test_the_aws_cli_sets_default_encryption_and_a_policy_refusing_unencrypted_and_plain_http_uploads(gov):
    s3 = make_client(gov)
    plain = make_client(gov, endpoint=gov.url("http"))
    # Seed example 1: default encryption, as `aws s3api` sets it.
    aws(gov, "s3api", "put-bucket-encryption", "--bucket", "gov", "--server-side-encryption-configuration",
        json.dumps({"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}))
    got = json.loads(aws(gov, "s3api", "get-bucket-encryption", "--bucket", "gov").stdout)
    rule = got["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    put = s3.put_object(Bucket="gov", Key="defaulted", Body=b"by default")
    assert put["ServerSideEncryption"] == "AES256"

    # Seed examples 2 and 3: deny unencrypted PUTs, deny plain HTTP.
    aws(gov, "s3api", "put-bucket-policy", "--bucket", "gov", "--policy", json.dumps(POLICY))
    assert json.loads(json.loads(aws(gov, "s3api", "get-bucket-policy", "--bucket", "gov").stdout)["Policy"]) == POLICY
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="gov", Key="no-header", Body=b"x")
    assert code(e.value) == "AccessDenied", "policies are evaluated before default encryption"
    s3.put_object(Bucket="gov", Key="with-header", Body=b"x", ServerSideEncryption="AES256")
    with pytest.raises(ClientError) as e:
        plain.put_object(Bucket="gov", Key="over-http", Body=b"x", ServerSideEncryption="AES256")
    assert code(e.value) == "AccessDenied"
    with pytest.raises(ClientError) as e:
        plain.get_object(Bucket="gov", Key="with-header")
    assert code(e.value) == "AccessDenied"
    assert s3.get_object(Bucket="gov", Key="with-header")["Body"].read() == b"x"
    # The aws CLI's high-level upload sends no SSE header unless told: refused, then accepted with --sse.
    src = gov.workdir / "cli.txt"
    src.write_bytes(os.urandom(1000))
    refused = aws(gov, "s3", "cp", str(src), "s3://gov/cli.txt", check=False)
    assert refused.returncode != 0 and "AccessDenied" in refused.stderr
    aws(gov, "s3", "cp", "--sse", "AES256", str(src), "s3://gov/cli.txt")

    # A policy s3crypt would only half enforce is refused, naming the element.
    half = json.loads(json.dumps(POLICY))
    half["Statement"][0]["Condition"] = {"DateLessThan": {"aws:CurrentTime": "2030-01-01T00:00:00Z"}}
    bad = aws(gov, "s3api", "put-bucket-policy", "--bucket", "gov", "--policy", json.dumps(half), check=False)
    assert bad.returncode != 0 and "MalformedPolicy" in bad.stderr and "DateLessThan" in bad.stderr, bad.stderr

    aws(gov, "s3api", "delete-bucket-policy", "--bucket", "gov")
    aws(gov, "s3api", "delete-bucket-encryption", "--bucket", "gov")
    missing = aws(gov, "s3api", "get-bucket-encryption", "--bucket", "gov", check=False)
    assert "ServerSideEncryptionConfigurationNotFoundError" in missing.stderr
    plain.put_object(Bucket="gov", Key="over-http-after", Body=b"x")


def test_a_presigned_post_from_boto3_sent_as_a_browser_would_is_encrypted_at_rest(gov):
    import requests
    s3 = make_client(gov)
    marker = b"browser-upload-marker-"
    for key, size in [("posts/small.txt", 100), ("posts/large.bin", 300_000)]:
        body = (marker * (size // len(marker) + 1))[:size]
        post = s3.generate_presigned_post(
            "gov", key,
            Fields={"x-amz-server-side-encryption": "AES256", "Content-Type": "text/plain"},
            Conditions=[{"x-amz-server-side-encryption": "AES256"}, {"Content-Type": "text/plain"},
                        ["content-length-range", 1, 1024 * 1024]],
            ExpiresIn=300)
        r = requests.post(post["url"], data=post["fields"], files={"file": ("f.txt", body)}, verify=gov.ca)
        assert r.status_code == 204, r.text
        assert r.headers["x-amz-server-side-encryption"] == "AES256"
        got = s3.get_object(Bucket="gov", Key=key)
        assert got["Body"].read() == body and got["ContentType"] == "text/plain"
        stored = gov.workdir / "store" / "gov" / key
        assert stored.exists() and marker not in stored.read_bytes(), "the store holds ciphertext only"
    # success_action_status 201 answers a PostResponse document
    post = s3.generate_presigned_post("gov", "posts/${filename}", Fields={"success_action_status": "201"},
                                      Conditions=[["starts-with", "$key", "posts/"], {"success_action_status": "201"}])
    r = requests.post(post["url"], data=post["fields"], files={"file": ("named.txt", b"hello")}, verify=gov.ca)
    assert r.status_code == 201 and "<Key>posts/named.txt</Key>" in r.text, r.text
    assert s3.get_object(Bucket="gov", Key="posts/named.txt")["Body"].read() == b"hello"
    # what the policy does not allow is refused, and nothing is stored
    post = s3.generate_presigned_post("gov", "posts/limited", Conditions=[["content-length-range", 1, 10]])
    r = requests.post(post["url"], data=post["fields"], files={"file": ("f", b"x" * 11)}, verify=gov.ca)
    assert r.status_code == 400 and "EntityTooLarge" in r.text, r.text
    tampered = dict(post["fields"], key="elsewhere")
    r = requests.post(post["url"], data=tampered, files={"file": ("f", b"x")}, verify=gov.ca)
    assert r.status_code == 403, r.text
    for key in ("posts/limited", "elsewhere"):
        with pytest.raises(ClientError):
            s3.head_object(Bucket="gov", Key=key)
