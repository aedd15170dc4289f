"""Fixtures for the end-to-end suite: the real s3crypt binary (S3CRYPT_BIN), started on ephemeral ports with
the embedded store, driven by boto3 and the aws CLI exactly as users run them."""
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("S3CRYPT_BIN", str(ROOT / "target" / "debug" / "s3crypt"))
AK = "e2e-client"
SK = "e2e-client-secret"


class Proxy:
    """A running s3crypt process and what it announced."""

    def __init__(self, workdir: Path, config_text: str, expected_listeners: int):
        self.workdir = workdir
        (workdir / "proxy.toml").write_text(config_text)
        self.proc = subprocess.Popen(
            [BIN, "serve", "--config", str(workdir / "proxy.toml")],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        self.listeners = []
        self.ca = None
        self.log = []
        deadline = time.time() + 60
        while time.time() < deadline and (len(self.listeners) < expected_listeners or self.ca is None):
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("s3crypt exited early:\n" + "".join(self.log))
            self.log.append(line)
            m = re.match(r"s3crypt: listening on (https?)://([\d.]+):(\d+)", line)
            if m:
                self.listeners.append((m.group(1), f"{m.group(2)}:{m.group(3)}"))
            m = re.match(r"s3crypt: dev mode: generated a development CA at (\S+)", line)
            if m:
                self.ca = str((workdir / m.group(1)).resolve())
        # Keep draining stderr so the process never blocks on a full pipe.
        self.drain = threading.Thread(target=self._drain, daemon=True)
        self.drain.start()

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def url(self, scheme: str, index: int = 0) -> str:
        addrs = [a for s, a in self.listeners if s == scheme]
        return f"{scheme}://{addrs[index]}"

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        # Every line the process wrote is in self.log once the drain has read to the end of the pipe.
        self.drain.join(timeout=30)
        return self.proc.returncode


CONFIG = f"""
[server]
mode = "dev"
[[listeners]]
address = "127.0.0.1:0"
protocol = "https"
[[listeners]]
address = "127.0.0.1:0"
protocol = "http"
plain_http = "redirect"
[[listeners]]
address = "127.0.0.1:0"
protocol = "http"
plain_http = "refuse"
[[listeners]]
address = "127.0.0.1:0"
protocol = "http"
plain_http = "allow"
[tls]
self_signed_dir = "tls"
[[clients]]
access_key_id = "{AK}"
secret_access_key = "{SK}"
[upstream]
endpoint = "embedded"
[embedded]
data_dir = "store"
buckets = ["e2e", "e2e-plain"]
[encryption]
passthrough_buckets = ["e2e-plain"]
"""


@pytest.fixture(scope="session")
def proxy(tmp_path_factory):
    p = Proxy(tmp_path_factory.mktemp("proxy"), CONFIG, expected_listeners=4)
    yield p
    assert p.stop() == 0, "s3crypt must exit 0 after SIGTERM:\n" + "".join(p.log)


def make_client(proxy, secret=SK, endpoint=None, **config):
    return boto3.client(
        "s3",
        endpoint_url=endpoint or proxy.url("https"),
        aws_access_key_id=AK,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        verify=proxy.ca,
        config=Config(retries={"total_max_attempts": 1}, s3={"addressing_style": "path"}, **config),
    )


@pytest.fixture()
def s3(proxy):
    return make_client(proxy)


def https_only_config(upstream: str, server_extra: str = "") -> str:
    """A dev-mode configuration with one https listener and the e2e client, in front of `upstream` (TOML)."""
    return f"""
[server]
mode = "dev"
{server_extra}
[[listeners]]
address = "127.0.0.1:0"
protocol = "https"
[tls]
self_signed_dir = "tls"
[[clients]]
access_key_id = "{AK}"
secret_access_key = "{SK}"
{upstream}
"""


def seaweedfs():
    """The SeaweedFS scripts/test.sh started: (endpoint, access key, secret key)."""
    try:
        return (os.environ["S3CRYPT_TEST_SEAWEEDFS_ENDPOINT"], os.environ["S3CRYPT_TEST_SEAWEEDFS_ACCESS_KEY"],
                os.environ["S3CRYPT_TEST_SEAWEEDFS_SECRET_KEY"])
    except KeyError as e:
        raise RuntimeError(f"{e} is not set: run ./scripts/test.sh, which starts SeaweedFS") from e


@pytest.fixture(scope="session")
def seaweed_direct():
    ep, ak, sk = seaweedfs()
    return boto3.client("s3", endpoint_url=ep, aws_access_key_id=ak, aws_secret_access_key=sk,
                        region_name="us-east-1", config=Config(retries={"total_max_attempts": 1}))


def kms_client():
    """The KMS the test command started (moto in server mode)."""
    try:
        endpoint = os.environ["S3CRYPT_TEST_KMS_ENDPOINT"]
    except KeyError as e:
        raise RuntimeError(f"{e} is not set: run ./scripts/test.sh, which starts moto") from e
    return boto3.client("kms", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


@pytest.fixture(scope="session")
def proxy_sw(tmp_path_factory, seaweed_direct):
    """s3crypt in front of SeaweedFS, with bucket e2e-sw, and KMS (moto) with a default key and an allowed one."""
    ep, ak, sk = seaweedfs()
    try:
        seaweed_direct.create_bucket(Bucket="e2e-sw")
    except seaweed_direct.exceptions.BucketAlreadyOwnedByYou:
        pass
    kms = kms_client()
    default_key = kms.create_key()["KeyMetadata"]["Arn"]
    other_key = kms.create_key()["KeyMetadata"]["Arn"]
    config = f"""
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
[upstream]
endpoint = "{ep}"
access_key_id = "{ak}"
secret_access_key = "{sk}"
[encryption]
keyring_file = "keyring.toml"
[encryption.kms]
endpoint = "{os.environ.get('S3CRYPT_TEST_KMS_ENDPOINT', '')}"
region = "us-east-1"
access_key_id = "testing"
secret_access_key = "testing"
default_key = "{default_key}"
allowed_keys = ["{other_key}"]
"""
    p = Proxy(tmp_path_factory.mktemp("proxy-sw"), config, expected_listeners=2)
    p.keyring = str(p.workdir / "keyring.toml")
    p.kms_keys = (default_key, other_key)
    yield p
    assert p.stop() == 0
