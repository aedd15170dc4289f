"""The front door with real clients: boto3 and the aws CLI through the s3crypt binary over TLS."""
import datetime
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import botocore.auth
import pytest
from botocore.exceptions import ClientError

from conftest import AK, SK, ROOT, Proxy, make_client


def error_code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def test_boto3_puts_gets_lists_and_deletes_objects_over_tls(s3):
    sizes = [0, 1, 65_536, 3 * 1024 * 1024 + 7]
    for n in sizes:
        body = os.urandom(n)
        s3.put_object(Bucket="e2e", Key=f"boto3/{n}", Body=body)
        got = s3.get_object(Bucket="e2e", Key=f"boto3/{n}")["Body"].read()
        assert got == body, n
    listed = s3.list_objects_v2(Bucket="e2e", Prefix="boto3/")
    assert sorted(o["Size"] for o in listed["Contents"]) == sorted(sizes)
    for n in sizes:
        s3.delete_object(Bucket="e2e", Key=f"boto3/{n}")
    assert "Contents" not in s3.list_objects_v2(Bucket="e2e", Prefix="boto3/")


def test_boto3_multipart_upload_fileobj_round_trips_on_a_plaintext_bucket(s3, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(20 * 1024 * 1024 + 3))
    s3.upload_file(str(src), "e2e-plain", "boto3/multipart.bin")
    dst = tmp_path / "back.bin"
    s3.download_file("e2e-plain", "boto3/multipart.bin", str(dst))
    assert dst.read_bytes() == src.read_bytes()


def test_a_presigned_get_works_until_it_expires(proxy, s3):
    s3.put_object(Bucket="e2e", Key="presign/obj", Body=b"presigned body")
    ctx = ssl.create_default_context(cafile=proxy.ca)
    # boto3's default presigns with SigV2 for custom endpoints; s3v4 is what AWS recommends. Both work.
    v4 = make_client(proxy, signature_version="s3v4")
    for client, marker in [(s3, "Signature="), (v4, "X-Amz-Signature=")]:
        url = client.generate_presigned_url("get_object", Params={"Bucket": "e2e", "Key": "presign/obj"}, ExpiresIn=300)
        assert marker in url
        with urllib.request.urlopen(url, context=ctx) as r:
            assert r.read() == b"presigned body"
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url.replace("presign/obj", "presign/obk"), context=ctx)
        assert e.value.code == 403
    short = s3.generate_presigned_url("get_object", Params={"Bucket": "e2e", "Key": "presign/obj"}, ExpiresIn=1)
    time.sleep(2.5)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(short, context=ctx)
    assert e.value.code == 403
    body = e.value.read().decode()
    assert "<Code>AccessDenied</Code>" in body and "Request has expired" in body


def test_presigned_sigv2_query_headers_are_checked_like_headers(proxy, s3):
    """boto3's SigV2 presigner moves every x-amz-* header into the query: SSE-C keys, ACLs, metadata."""
    ctx = ssl.create_default_context(cafile=proxy.ca)
    key = bytes(range(32))
    url = s3.generate_presigned_url(
        "put_object",
        Params={"Bucket": "e2e", "Key": "presign/ssec", "SSECustomerAlgorithm": "AES256", "SSECustomerKey": key},
        ExpiresIn=300,
    )
    assert "Signature=" in url and "x-amz-server-side-encryption-customer-key=" in url
    req = urllib.request.Request(url, data=b"sse-c via a presigned url", method="PUT", headers={"Content-Type": ""})
    with urllib.request.urlopen(req, context=ctx) as r:
        assert r.status == 200
    with pytest.raises(ClientError) as e:
        s3.get_object(Bucket="e2e", Key="presign/ssec")
    assert error_code(e.value) == "InvalidRequest"  # stored under the client's key, which the store never saw
    got = s3.get_object(Bucket="e2e", Key="presign/ssec", SSECustomerAlgorithm="AES256", SSECustomerKey=key)
    assert got["Body"].read() == b"sse-c via a presigned url"

    # SigV2 signs x-amz-* values, not the query: sending the signed value as a header and another one in the
    # query must not get the other one upstream. Refused, nothing stored.
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": "e2e", "Key": "presign/acl", "ACL": "private"}, ExpiresIn=300
    )
    assert "x-amz-acl=private" in url
    forged = url.replace("x-amz-acl=private", "x-amz-acl=public-read-write")
    req = urllib.request.Request(forged, data=b"x", method="PUT", headers={"Content-Type": "", "x-amz-acl": "private"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, context=ctx)
    assert e.value.code == 400 and b"<Code>InvalidArgument</Code>" in e.value.read()
    with pytest.raises(ClientError):
        s3.head_object(Bucket="e2e", Key="presign/acl")


def test_a_wrong_secret_is_signature_does_not_match(proxy):
    bad = make_client(proxy, secret="wrong")
    with pytest.raises(ClientError) as e:
        bad.list_objects_v2(Bucket="e2e")
    assert error_code(e.value) == "SignatureDoesNotMatch"


def test_a_skewed_client_clock_is_request_time_too_skewed(proxy, monkeypatch):
    real = botocore.auth.get_current_datetime
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: real() + datetime.timedelta(minutes=20))
    with pytest.raises(ClientError) as e:
        make_client(proxy).list_objects_v2(Bucket="e2e")
    assert error_code(e.value) == "RequestTimeTooSkewed"
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_an_unsigned_x_amz_header_added_after_signing_is_refused(proxy, s3):
    def inject(request, **kwargs):
        request.headers["x-amz-meta-injected"] = "evil"

    s3.meta.events.register("before-send.s3.PutObject", inject)
    with pytest.raises(ClientError) as e:
        s3.put_object(Bucket="e2e", Key="injected", Body=b"x")
    assert error_code(e.value) == "AccessDenied"
    clean = make_client(proxy)
    with pytest.raises(ClientError) as e:
        clean.head_object(Bucket="e2e", Key="injected")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_plain_http_is_redirected_or_refused_per_listener(proxy):
    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as e:
        opener.open(proxy.url("http", 0) + "/e2e/some%20key?x=1")
    assert e.value.code == 308
    https_port = proxy.url("https").rsplit(":", 1)[1]
    host = proxy.url("http", 0).split("://")[1].rsplit(":", 1)[0]
    assert e.value.headers["Location"] == f"https://{host}:{https_port}/e2e/some%20key?x=1"

    with pytest.raises(urllib.error.HTTPError) as e:
        opener.open(proxy.url("http", 1) + "/e2e/key")
    assert e.value.code == 403
    assert "<Code>InsecureTransport</Code>" in e.value.read().decode()


def aws(proxy, *args, check=True):
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": AK,
        "AWS_SECRET_ACCESS_KEY": SK,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CA_BUNDLE": proxy.ca,
        "AWS_MAX_ATTEMPTS": "1",
    }
    cmd = ["aws", "--endpoint-url", proxy.url("https"), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=check)


def test_the_aws_cli_copies_lists_presigns_and_removes(proxy, tmp_path):
    src = tmp_path / "cli.bin"
    src.write_bytes(os.urandom(7 * 1024 * 1024 + 1))
    aws(proxy, "s3", "cp", "--only-show-errors", str(src), "s3://e2e/cli/cli.bin")
    aws(proxy, "s3", "cp", "--only-show-errors", "s3://e2e/cli/cli.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
    listing = aws(proxy, "s3", "ls", "s3://e2e/cli/").stdout
    assert re.search(r"\s7340033 cli.bin", listing), listing
    url = aws(proxy, "s3", "presign", "s3://e2e/cli/cli.bin", "--expires-in", "60").stdout.strip()
    with urllib.request.urlopen(url, context=ssl.create_default_context(cafile=proxy.ca)) as r:
        assert r.read() == src.read_bytes()
    aws(proxy, "s3", "rm", "s3://e2e/cli/cli.bin")
    assert aws(proxy, "s3", "ls", "s3://e2e/cli/", check=False).stdout.strip() == ""


def test_the_aws_cli_with_a_wrong_secret_fails(proxy):
    r = subprocess.run(
        ["aws", "--endpoint-url", proxy.url("https"), "s3", "ls", "s3://e2e/"],
        env={**os.environ, "AWS_ACCESS_KEY_ID": AK, "AWS_SECRET_ACCESS_KEY": "wrong",
             "AWS_DEFAULT_REGION": "us-east-1", "AWS_CA_BUNDLE": proxy.ca, "AWS_MAX_ATTEMPTS": "1"},
        capture_output=True, text=True,
    )
    assert r.returncode != 0
    assert "SignatureDoesNotMatch" in r.stderr


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_the_readme_quick_start_works_as_written(tmp_path):
    """Runs the proxy on proxy.toml.example and then the README's aws CLI lines, verbatim; nothing in its log is
    an ERROR or a WARN."""
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- quickstart-aws -->\s*```sh\n(.*?)```", readme, re.S)
    assert m, "README.md must have the quick-start aws block"
    assert port_free(8443) and port_free(8080) and port_free(9090), "the quick start uses ports 8443, 8080, 9090"
    shutil.copy(ROOT / "proxy.toml.example", tmp_path / "proxy.toml.example")
    p = Proxy(tmp_path, (tmp_path / "proxy.toml.example").read_text(), expected_listeners=2)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        r = subprocess.run(["bash", "-euo", "pipefail", "-c", m.group(1)], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "hello, s3crypt" in r.stdout, r.stdout
        # A readiness check, as Kubernetes makes them, starts the store probe (every 5 s): past two of them.
        with urllib.request.urlopen("http://127.0.0.1:9090/readyz", timeout=10) as ready:
            assert ready.status == 200
        time.sleep(6)
    finally:
        assert p.stop() == 0
    # A healthy quick start says nothing alarming (the log level here is warn).
    plain = [re.sub(r"\x1b\[[0-9;]*m", "", l) for l in p.log]  # text logs are coloured
    alarming = [l for l in plain if re.search(r"\b(ERROR|WARN)\b", l)]
    assert not alarming, "".join(alarming)
