"""The real binary killed mid-upload, in front of SeaweedFS: after SIGKILL nothing partial is stored (single PUT
and a multipart part); after SIGTERM the in-flight upload completes byte-exact and the process exits 0."""
import hashlib
import os
import signal
import threading
import time

import boto3
import pytest
from botocore.config import Config

from conftest import Proxy, https_only_config, make_client, seaweedfs

MIB = 1024 * 1024


def proxy_before_seaweedfs(tmp_path, bucket):
    ep, ak, sk = seaweedfs()
    direct = boto3.client("s3", endpoint_url=ep, aws_access_key_id=ak, aws_secret_access_key=sk,
                          region_name="us-east-1",
                          config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}))
    direct.create_bucket(Bucket=bucket)
    upstream = f'[upstream]\nendpoint = "{ep}"\naccess_key_id = "{ak}"\nsecret_access_key = "{sk}"\n'
    config = https_only_config(upstream, server_extra='drain_timeout = "60s"')
    return Proxy(tmp_path, config, expected_listeners=1), direct


class Trickle:
    """A file-like body that hands out `total` bytes slowly, so the upload is in flight when the signal comes."""

    def __init__(self, total, started: threading.Event, pace=0.02):
        self.total, self.sent, self.started, self.pace = total, 0, started, pace
        self.digest = hashlib.sha256()

    def read(self, n=-1):
        if self.sent >= self.total:
            return b""
        n = min(256 * 1024 if n is None or n < 0 else n, 256 * 1024, self.total - self.sent)
        chunk = bytes([(self.sent // 4096) % 251]) * n
        self.sent += n
        self.digest.update(chunk)
        if self.sent > 2 * MIB:
            self.started.set()
        time.sleep(self.pace)
        return chunk

    def __len__(self):
        return self.total


def upload_in_background(s3, bucket, key, total, pace=0.02):
    started = threading.Event()
    body = Trickle(total, started, pace)
    outcome = {}

    def run():
        try:
            s3.put_object(Bucket=bucket, Key=key, Body=body, ContentLength=total)
            outcome["ok"] = True
        except Exception as e:  # noqa: BLE001 - any failure is the expected outcome after SIGKILL
            outcome["error"] = repr(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(30), "the upload never got going"
    return t, outcome, body


def keys(direct, bucket):
    return [o["Key"] for o in direct.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_sigkill_mid_upload_leaves_no_object_and_no_part_at_the_store(tmp_path):
    bucket = f"e2e-kill-{os.getpid()}-{int(time.time())}"
    p, direct = proxy_before_seaweedfs(tmp_path, bucket)
    s3 = make_client(p)
    # a multipart upload with one part in flight, and a single PUT in flight
    up = s3.create_multipart_upload(Bucket=bucket, Key="killed/mp")
    t1, out1, single_body = upload_in_background(s3, bucket, "killed/single", 16 * MIB)

    part_started = threading.Event()
    part_body = Trickle(8 * MIB, part_started)
    part_out = {}

    def part():
        try:
            s3.upload_part(Bucket=bucket, Key="killed/mp", UploadId=up["UploadId"], PartNumber=1, Body=part_body,
                           ContentLength=8 * MIB)
            part_out["ok"] = True
        except Exception as e:  # noqa: BLE001
            part_out["error"] = repr(e)

    t2 = threading.Thread(target=part, daemon=True)
    t2.start()
    assert part_started.wait(30)
    assert single_body.sent < single_body.total and part_body.sent < part_body.total, "both bodies still streaming"
    p.proc.send_signal(signal.SIGKILL)
    p.proc.wait(timeout=10)
    t1.join(60)
    t2.join(60)
    assert "ok" not in out1 and "ok" not in part_out, (out1, part_out)
    time.sleep(1)
    assert keys(direct, bucket) == [], "no object from the killed PUT"
    uploads = direct.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    for u in uploads:
        parts = direct.list_parts(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"]).get("Parts", [])
        assert parts == [], f"no part from the killed UploadPart: {parts}"
        direct.abort_multipart_upload(Bucket=bucket, Key=u["Key"], UploadId=u["UploadId"])


def test_sigterm_mid_upload_lets_it_finish_byte_exact_then_exits_0(tmp_path):
    bucket = f"e2e-term-{os.getpid()}-{int(time.time())}"
    p, direct = proxy_before_seaweedfs(tmp_path, bucket)
    s3 = make_client(p)
    t, out, body = upload_in_background(s3, bucket, "term/obj", 12 * MIB, pace=0.01)
    p.proc.send_signal(signal.SIGTERM)
    t.join(60)
    assert out.get("ok"), out
    assert p.proc.wait(timeout=60) == 0, "".join(p.log)
    # read it back through a fresh proxy on the same keyring
    p2 = Proxy(tmp_path, (tmp_path / "proxy.toml").read_text(), expected_listeners=1)
    try:
        got = make_client(p2).get_object(Bucket=bucket, Key="term/obj")["Body"].read()
        assert hashlib.sha256(got).hexdigest() == body.digest.hexdigest() and len(got) == 12 * MIB
    finally:
        assert p2.stop() == 0


def test_a_full_disk_at_the_embedded_store_fails_the_upload_cleanly_and_keeps_what_was_stored(tmp_path):
    import subprocess
    from botocore.exceptions import ClientError
    store = tmp_path / "store"
    store.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(store)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        upstream = '[upstream]\nendpoint = "embedded"\n[embedded]\ndata_dir = "store"\nbuckets = ["full"]\n'
        config = https_only_config(upstream)
        p = Proxy(tmp_path, config, expected_listeners=1)
        try:
            s3 = make_client(p)
            first = os.urandom(MIB)
            s3.put_object(Bucket="full", Key="fits", Body=first)
            with pytest.raises(ClientError) as e:
                s3.put_object(Bucket="full", Key="too-big", Body=os.urandom(10 * MIB))
            status = e.value.response["ResponseMetadata"]["HTTPStatusCode"]
            assert 500 <= status < 600, e.value.response
            listed = [o["Key"] for o in s3.list_objects_v2(Bucket="full").get("Contents", [])]
            assert listed == ["fits"], listed
            assert s3.get_object(Bucket="full", Key="fits")["Body"].read() == first
            # The failed upload's space came back: another object of the same size as the first still fits.
            second = os.urandom(MIB)
            s3.put_object(Bucket="full", Key="fits-too", Body=second)
            assert s3.get_object(Bucket="full", Key="fits-too")["Body"].read() == second
        finally:
            assert p.stop() == 0, "".join(p.log)
    finally:
        subprocess.run(["umount", str(store)], check=False)
