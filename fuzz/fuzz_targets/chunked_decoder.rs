//! The aws-chunked decoder (chunk-size lines, extensions, trailers, checksums) over arbitrary bytes in arbitrary
//! frames: it ends with data of exactly the declared length or an error, never a panic.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use s3crypt::sigv4::chunked::{AwsChunkedBody, ChunkedSpec};

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let trailer = ["", "x-amz-checksum-crc32", "x-amz-checksum-crc32c", "x-amz-checksum-crc64nvme", "x-amz-checksum-sha256", "x-amz-checksum-sha1"]
        [usize::from(data[0]) % 6];
    let decoded = u64::from(u16::from_le_bytes([data[1], data[2]]));
    let sizes = &data[3..data.len().min(8)];
    let body = &data[data.len().min(8)..];
    let mut headers = http::HeaderMap::new();
    headers.insert("x-amz-decoded-content-length", decoded.into());
    if !trailer.is_empty() {
        headers.insert("x-amz-trailer", http::HeaderValue::from_static(trailer));
    }
    let Ok(spec) = ChunkedSpec::from_headers(&headers) else { return };
    if let Ok(out) = common::drain(AwsChunkedBody::new(common::frames(body, sizes), spec)) {
        assert_eq!(out.len() as u64, decoded, "decoded length differs from x-amz-decoded-content-length");
    }
});
