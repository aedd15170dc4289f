"""S3's ETag contract as clients rely on it, for every protection (docs/ENCRYPTION.md "ETag and SSE headers"):
- what the AWS SDK for Java v1 does after PutObject and UploadPart: unless the response names SSE-KMS or SSE-C,
  the ETag must be the hex MD5 of the bytes sent;
- what rclone and other tools assume everywhere else: any 32-hex ETag (PUT, HEAD, GET, CopyObject, listings,
  ListParts) is the MD5 of the plaintext it names."""
import base64
import hashlib
import os
import re

from conftest import make_client

HEX32 = re.compile(r"^[0-9a-f]{32}$")


def java_v1_put_check(resp, sent):
    """AmazonS3Client's client-side check of a PUT / UploadPart response."""
    h = resp["ResponseMetadata"]["HTTPHeaders"]
    if h.get("x-amz-server-side-encryption") == "aws:kms" or "x-amz-server-side-encryption-customer-algorithm" in h:
        return "skipped"
    assert resp["ETag"].strip('"') == hashlib.md5(sent).hexdigest(), (resp["ETag"], h)
    return "checked"


def assert_md5_or_opaque(etag, plaintext, where):
    bare = etag.strip('"')
    if HEX32.match(bare):
        assert bare == hashlib.md5(plaintext).hexdigest(), f"{where}: a 32-hex ETag that is not the plaintext MD5"
    else:
        assert "-" in bare, f"{where}: {etag}"


def test_every_etag_a_client_sees_is_the_plaintext_md5_or_cannot_be_taken_for_one(proxy_sw):
    s3 = make_client(proxy_sw)
    b = "e2e-sw"
    run = os.urandom(4).hex()
    ssec_key = os.urandom(16).hex()  # 32 characters: a 256-bit key (boto3 base64-encodes it)
    ssec = dict(SSECustomerAlgorithm="AES256", SSECustomerKey=ssec_key)
    modes = {
        "default": {},
        "sse-s3": dict(ServerSideEncryption="AES256"),
        "sse-kms": dict(ServerSideEncryption="aws:kms"),
        "sse-c": ssec,
    }
    counts = {"checked": 0, "skipped": 0}
    for mode, extra in modes.items():
        read_extra = ssec if mode == "sse-c" else {}
        for n in (0, 1000, 65536, 70_000, 300_000):
            body = os.urandom(n)
            for with_md5 in (False, True):
                key = f"etags-{run}/{mode}/{n}/{with_md5}"
                more = {"ContentMD5": base64.b64encode(hashlib.md5(body).digest()).decode()} if with_md5 else {}
                put = s3.put_object(Bucket=b, Key=key, Body=body, **extra, **more)
                counts[java_v1_put_check(put, body)] += 1
                if mode in ("default", "sse-s3"):
                    assert put["ServerSideEncryption"] == "AES256"
                    assert HEX32.match(put["ETag"].strip('"')), "SSE-S3 PUTs answer the MD5"
                head = s3.head_object(Bucket=b, Key=key, **read_extra)
                assert_md5_or_opaque(head["ETag"], body, f"HEAD {key}")
                got = s3.get_object(Bucket=b, Key=key, **read_extra)
                assert got["Body"].read() == body
                assert got["ETag"] == head["ETag"], "GET and HEAD show the same ETag"
        listed = s3.list_objects_v2(Bucket=b, Prefix=f"etags-{run}/{mode}/")["Contents"]
        assert len(listed) == 10
        for o in listed:
            assert not HEX32.match(o["ETag"].strip('"')), f"listings cannot know the MD5: {o}"

        # multipart: UploadPart answers like PutObject, ListParts shows the same part ETags; Complete is S3's
        # multipart ETag (MD5 of the parts' MD5s, "-2") for SSE-S3, opaque otherwise, and never a bare MD5
        key = f"etags-{run}/{mode}/mp"
        up = s3.create_multipart_upload(Bucket=b, Key=key, **extra)
        parts, md5s = [], b""
        for i, size in enumerate((5 * 1024 * 1024, 1234), 1):
            body = os.urandom(size)
            md5s += hashlib.md5(body).digest()
            r = s3.upload_part(Bucket=b, Key=key, UploadId=up["UploadId"], PartNumber=i, Body=body,
                               **({"SSECustomerAlgorithm": "AES256", "SSECustomerKey": ssec_key} if mode == "sse-c" else {}))
            counts[java_v1_put_check(r, body)] += 1
            parts.append({"PartNumber": i, "ETag": r["ETag"]})
        lp = s3.list_parts(Bucket=b, Key=key, UploadId=up["UploadId"])
        assert [p["ETag"] for p in lp["Parts"]] == [p["ETag"] for p in parts], "ListParts shows what UploadPart said"
        done = s3.complete_multipart_upload(Bucket=b, Key=key, UploadId=up["UploadId"],
                                            MultipartUpload={"Parts": parts}, **read_extra)
        assert not HEX32.match(done["ETag"].strip('"'))
        if mode in ("default", "sse-s3"):
            assert done["ETag"].strip('"') == f"{hashlib.md5(md5s).hexdigest()}-2"
        assert s3.head_object(Bucket=b, Key=key, **read_extra)["ETag"] == done["ETag"]

    # copies: the result shows the MD5 where the source's is known, else an opaque ETag
    small = os.urandom(500)
    s3.put_object(Bucket=b, Key="etags/copy-src", Body=small)
    c = s3.copy_object(Bucket=b, Key="etags/copy-dst", CopySource={"Bucket": b, "Key": "etags/copy-src"})
    assert c["CopyObjectResult"]["ETag"].strip('"') == hashlib.md5(small).hexdigest()
    c = s3.copy_object(Bucket=b, Key="etags/copy-kms", CopySource={"Bucket": b, "Key": "etags/copy-src"},
                       ServerSideEncryption="aws:kms")
    assert not HEX32.match(c["CopyObjectResult"]["ETag"].strip('"'))
    # every protection was exercised both ways
    assert counts["checked"] >= 24 and counts["skipped"] >= 24, counts
