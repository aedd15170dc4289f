"""Waits until an S3 endpoint accepts a bucket creation and a write (SeaweedFS needs a moment after start)."""
import sys
import time

import boto3
from botocore.config import Config

endpoint, ak, sk = sys.argv[1:4]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=ak, aws_secret_access_key=sk,
                  region_name="us-east-1", config=Config(retries={"max_attempts": 1}))
deadline = time.time() + 60
last = None
while time.time() < deadline:
    try:
        s3.create_bucket(Bucket="s3crypt-ready-check")
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    except Exception as e:  # not ready yet
        last = e
        time.sleep(0.5)
        continue
    try:
        s3.put_object(Bucket="s3crypt-ready-check", Key="ready", Body=b"ok")
        sys.exit(0)
    except Exception as e:
        last = e
        time.sleep(0.5)
print(f"S3 endpoint {endpoint} not ready: {last}", file=sys.stderr)
sys.exit(1)
