"""Multipart uploads into encrypted buckets with real clients: boto3's transfer manager and the aws CLI, 40 MiB
files over https and plain http, on the embedded store and on SeaweedFS; exact sizes in listings; `aws s3 sync`
uploads nothing the second time; the reference decryptor reads the sealed multipart object from the store."""
import io
import json
import os
import re
import subprocess
import sys
import time

import pytest
from boto3.s3.transfer import TransferConfig

from conftest import AK, BIN, ROOT, SK, make_client

sys.path.insert(0, str(ROOT / "scripts"))
import s3crypt_decrypt as ref  # noqa: E402

MIB = 1024 * 1024
BIG = 40 * MIB + 5


def stores(request):
    """(proxy fixture, encrypted bucket) for the parametrised store."""
    if request.param == "embedded":
        return request.getfixturevalue("proxy"), "e2e"
    return request.getfixturevalue("proxy_sw"), "e2e-sw"


@pytest.fixture(params=["embedded", "seaweedfs"])
def store(request):
    return stores(request)


def endpoint(proxy, scheme):
    if scheme == "https":
        return proxy.url("https")
    return proxy.url("http", len([s for s, _ in proxy.listeners if s == "http"]) - 1)  # the "allow" listener


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("mp") / "big.bin"
    p.write_bytes(os.urandom(BIG))
    return p


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_boto3_transfer_manager_uploads_and_downloads_40_mib_by_parts(store, scheme, big_file, tmp_path):
    proxy, bucket = store
    s3 = make_client(proxy, endpoint=endpoint(proxy, scheme))
    key = f"boto3-mp/{scheme}.bin"
    s3.upload_file(str(big_file), bucket, key)  # 8 MiB parts, in parallel
    back = tmp_path / "back.bin"
    s3.download_file(bucket, key, str(back))  # ranged GETs, in parallel
    assert back.read_bytes() == big_file.read_bytes()
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == BIG
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=key)["Contents"]
    assert [o["Size"] for o in listed] == [BIG]


def test_boto3_with_misaligned_parts_still_lists_exact_sizes(store, big_file, tmp_path):
    proxy, bucket = store
    s3 = make_client(proxy)
    cfg = TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB + 1)
    s3.upload_file(str(big_file), bucket, "boto3-mp/misaligned.bin", Config=cfg)
    assert s3.list_objects_v2(Bucket=bucket, Prefix="boto3-mp/misaligned.bin")["Contents"][0]["Size"] == BIG
    back = tmp_path / "back.bin"
    s3.download_file(bucket, "boto3-mp/misaligned.bin", str(back))
    assert back.read_bytes() == big_file.read_bytes()


def aws(proxy, scheme, *args, check=True):
    env = {**os.environ, "AWS_ACCESS_KEY_ID": AK, "AWS_SECRET_ACCESS_KEY": SK, "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CA_BUNDLE": proxy.ca, "AWS_MAX_ATTEMPTS": "1"}
    return subprocess.run(["aws", "--endpoint-url", endpoint(proxy, scheme), *args], env=env,
                          capture_output=True, text=True, check=check)


@pytest.mark.parametrize("scheme", ["https", "http"])
def test_the_aws_cli_copies_40_mib_by_parts_and_lists_exact_sizes(store, scheme, big_file, tmp_path):
    proxy, bucket = store
    url = f"s3://{bucket}/cli-mp/{scheme}.bin"
    aws(proxy, scheme, "s3", "cp", "--only-show-errors", str(big_file), url)
    aws(proxy, scheme, "s3", "cp", "--only-show-errors", url, str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == big_file.read_bytes()
    listing = aws(proxy, scheme, "s3", "ls", f"s3://{bucket}/cli-mp/").stdout
    assert re.search(rf"\s{BIG} {scheme}\.bin", listing), listing


def test_aws_s3_sync_twice_uploads_nothing_the_second_time(store, tmp_path):
    proxy, bucket = store
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    sizes = {"empty": 0, "small": 10, "segment": 65_536, "sub/mp": 9 * MIB + 7, "sub/odd": 3 * 65_536 + 1}
    past = time.time() - 60  # stores keep whole-second LastModified: files written in the same second look newer
    for name, n in sizes.items():
        (src / name).write_bytes(os.urandom(n))
        os.utime(src / name, (past, past))
    prefix = f"s3://{bucket}/sync-{os.getpid()}/"
    first = aws(proxy, "https", "s3", "sync", "--no-progress", str(src), prefix).stdout
    assert first.count("upload:") == len(sizes), first
    second = aws(proxy, "https", "s3", "sync", "--no-progress", str(src), prefix).stdout
    assert "upload:" not in second, second
    listing = aws(proxy, "https", "s3", "ls", "--recursive", prefix).stdout
    for name, n in sizes.items():
        assert re.search(rf"\s{n} sync-{os.getpid()}/{re.escape(name)}$", listing, re.M), (name, listing)
    down = tmp_path / "down"
    aws(proxy, "https", "s3", "sync", "--no-progress", prefix, str(down))
    for name in sizes:
        assert (down / name).read_bytes() == (src / name).read_bytes(), name


def test_a_sealed_multipart_object_decrypts_offline_with_the_reference_decryptor_and_the_cli(
        proxy_sw, seaweed_direct, tmp_path):
    body = os.urandom(17 * MIB + 3)
    s3 = make_client(proxy_sw)
    s3.upload_fileobj(io.BytesIO(body), "e2e-sw", "offline/mp.bin")  # 8 MiB parts
    raw = seaweed_direct.get_object(Bucket="e2e-sw", Key="offline/mp.bin")
    stored, meta = raw["Body"].read(), raw["Metadata"]
    assert meta["s3crypt-mp"] == "3x8388608"
    assert ref.decrypt(ref.load_keyring(proxy_sw.keyring), meta, "e2e-sw", "offline/mp.bin", stored) == body
    (tmp_path / "meta.json").write_text(json.dumps({"Metadata": meta}))
    (tmp_path / "ct.bin").write_bytes(stored)
    r = subprocess.run([BIN, "decrypt", "--keyring", proxy_sw.keyring, "--metadata", str(tmp_path / "meta.json"),
                        "--bucket", "e2e-sw", "--key", "offline/mp.bin", "--in", str(tmp_path / "ct.bin"),
                        "--out", str(tmp_path / "plain.bin")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "plain.bin").read_bytes() == body
