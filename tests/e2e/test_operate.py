"""Operating the binary: JSON logs and the audit log (one line per request, nothing secret in any log line, also
with SSE-C and presigned requests; each line of a request in its connection's and request's spans), and
configuration reload on SIGHUP (applied when valid, refused otherwise)."""
import base64
import json
import os
import signal
import time
import urllib.parse
import urllib.request
import ssl

import pytest
from botocore.exceptions import ClientError

from conftest import AK, SK, Proxy, make_client

BASE = f"""
[server]
mode = "dev"
[[listeners]]
address = "127.0.0.1:0"
protocol = "https"
[tls]
self_signed_dir = "tls"
[logging]
format = "json"
audit = "stderr"
[upstream]
endpoint = "embedded"
[embedded]
data_dir = "store"
buckets = ["ops"]
"""


def clients(*pairs):
    return "".join(f'[[clients]]\naccess_key_id = "{a}"\nsecret_access_key = "{s}"\n' for a, s in pairs)


def test_logs_are_json_with_one_audit_line_per_request_and_never_show_keys_secrets_signatures_or_data(
        tmp_path, monkeypatch):
    monkeypatch.setenv("RUST_LOG", "debug")  # the most the proxy ever logs
    p = Proxy(tmp_path, BASE + clients((AK, SK)), expected_listeners=1)
    try:
        s3 = make_client(p)
        key = os.urandom(32)
        marker = b"BODY-MARKER-" + os.urandom(8).hex().encode()
        ssec = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
        s3.put_object(Bucket="ops", Key="audit/ssec", Body=marker * 100, **ssec)
        assert s3.get_object(Bucket="ops", Key="audit/ssec", **ssec)["Body"].read() == marker * 100
        s3.put_object(Bucket="ops", Key="audit/plain", Body=marker)
        url = s3.generate_presigned_url("get_object", Params={"Bucket": "ops", "Key": "audit/plain"}, ExpiresIn=60)
        with urllib.request.urlopen(url, context=ssl.create_default_context(cafile=p.ca)) as r:
            assert r.read() == marker
        with pytest.raises(ClientError):
            make_client(p, secret="wrong-secret").get_object(Bucket="ops", Key="audit/plain")
    finally:
        assert p.stop() == 0
    log = "".join(p.log)
    signature = urllib.parse.parse_qs(urllib.parse.urlparse(url).query).get("Signature", [""])[0]
    for secret in [SK, base64.b64encode(key).decode(), key.hex(), marker.decode(), signature, "wrong-secret"]:
        assert secret and secret not in log, f"{secret[:12]}... found in the logs"
    audit = [json.loads(l) for l in p.log if l.startswith("{") and '"s3crypt::audit"' in l]
    fields = [a["fields"] for a in audit]
    puts = [f for f in fields if f.get("op") == "PutObject" and f.get("key") == "audit/ssec"]
    assert puts and puts[0]["principal"] == AK and puts[0]["sse"] == "sse-c" and puts[0]["status"] == 200
    assert puts[0]["bytes_in"] == len(marker) * 100
    plain = [f for f in fields if f.get("op") == "PutObject" and f.get("key") == "audit/plain"]
    assert plain[0]["sse"] == "AES256" and plain[0]["key_id"].startswith("keyring:")
    assert any(f.get("status") == 403 for f in fields), "refused requests are audited too"
    others = [json.loads(l) for l in p.log if l.startswith("{") and '"s3crypt::audit"' not in l]
    assert others, "the ordinary log is JSON too"


def test_each_log_line_of_a_request_carries_its_connection_and_request(tmp_path, monkeypatch):
    monkeypatch.setenv("RUST_LOG", "info")
    p = Proxy(tmp_path, BASE + clients((AK, SK)), expected_listeners=1)
    try:
        with pytest.raises(ClientError):
            make_client(p, secret="wrong-secret").get_object(Bucket="ops", Key="spans/x")
        with pytest.raises(ClientError):
            make_client(p).get_object(Bucket="ops", Key="spans/missing")
    finally:
        assert p.stop() == 0
    events = [json.loads(l) for l in p.log if l.startswith("{") and '"s3crypt::audit"' not in l]

    def logged(code):
        found = [e for e in events if e.get("fields", {}).get("s3.code") == code]
        assert found, f"{code} is logged: " + "".join(p.log)
        spans = found[0]["spans"]
        assert [s["name"] for s in spans] == ["connection", "request"], spans
        assert spans[0]["client.addr"].startswith("127.0.0.1:") and spans[0]["tls"] is True
        assert spans[1]["request.id"] and spans[1]["http.method"] == "GET"
        return spans[1]

    assert "principal" not in logged("SignatureDoesNotMatch"), "nobody is named before authentication"
    request = logged("NoSuchKey")
    assert (request["principal"], request["s3.op"], request["s3.bucket"]) == (AK, "GetObject", "ops"), request


def test_sighup_applies_a_valid_configuration_and_keeps_the_running_one_otherwise(tmp_path):
    p = Proxy(tmp_path, BASE + clients((AK, SK)), expected_listeners=1)
    try:
        new_ak, new_sk = "AKIDRELOADED", "reloaded-secret"
        newcomer = make_client(p)
        newcomer = __import__("boto3").client(
            "s3", endpoint_url=p.url("https"), aws_access_key_id=new_ak, aws_secret_access_key=new_sk,
            region_name="us-east-1", verify=p.ca, config=newcomer.meta.config)
        with pytest.raises(ClientError) as e:
            newcomer.list_objects_v2(Bucket="ops")
        assert e.value.response["Error"]["Code"] == "InvalidAccessKeyId"

        (tmp_path / "proxy.toml").write_text(BASE + clients((AK, SK), (new_ak, new_sk)))
        p.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while True:
            try:
                newcomer.list_objects_v2(Bucket="ops")
                break
            except ClientError:
                assert time.time() < deadline, "the reload did not take"
                time.sleep(0.2)

        (tmp_path / "proxy.toml").write_text(BASE.replace('format = "json"', 'format = "yaml"') + clients((AK, SK)))
        p.proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        newcomer.list_objects_v2(Bucket="ops")  # still the previous, valid configuration
        assert any("reload refused" in l for l in p.log), "".join(p.log[-5:])
    finally:
        assert p.stop() == 0
