//! Micro-benchmarks of the front door's per-request and per-byte work: SigV4 verification of a request head,
//! and the body transforms (SHA-256-checked raw body, aws-chunked decoding with a CRC32 trailer), each next to
//! the raw primitive it is built on so the overhead shows as a ratio.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http::{Method, Request};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use s3crypt::config::ClientCredential;
use s3crypt::error::ProxyError;
use s3crypt::s3::checksum::{ChecksumAlgorithm, Checksummer};
use s3crypt::sigv4::chunked::{AwsChunkedBody, ChunkedSpec};
use s3crypt::sigv4::payload::{CheckedBody, Checks};
use s3crypt::sigv4::sign::{OutboundPayload, UpstreamSigner};
use s3crypt::sigv4::verify::{RequestHead, Verifier};
use s3crypt::util::secret::SecretString;
use sha2::Digest;

struct Frames(VecDeque<Bytes>);

impl Body for Frames {
    type Data = Bytes;
    type Error = ProxyError;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, ProxyError>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

fn frames(data: &Bytes, size: usize) -> Frames {
    Frames((0..data.len()).step_by(size).map(|i| data.slice(i..(i + size).min(data.len()))).collect())
}

fn sigv4(c: &mut Criterion) {
    let secret = SecretString::new("bench-secret".into());
    let signer = UpstreamSigner::new("AKIDBENCH", &secret, "us-east-1");
    let verifier = Verifier::new(
        &[ClientCredential {
            access_key_id: "AKIDBENCH".into(),
            secret_access_key: secret,
            buckets: None,
            bucket_admin: false,
        }],
        "us-east-1",
        false,
    );
    let now = SystemTime::now();
    let mut req = Request::builder()
        .method("PUT")
        .uri("https://127.0.0.1:8443/bucket/some/key%20with%20space.bin?partNumber=3&uploadId=abc")
        .header("host", "127.0.0.1:8443")
        .header("content-type", "application/octet-stream")
        .header("x-amz-meta-owner", "bench")
        .body(())
        .unwrap();
    signer.sign(&mut req, &OutboundPayload::Unsigned, now).unwrap();
    let mut g = c.benchmark_group("sigv4");
    g.bench_function("verify_header_auth", |b| {
        b.iter(|| {
            let head = RequestHead { method: &Method::PUT, uri: req.uri(), headers: req.headers(), vhost_bucket: None };
            verifier.verify(&head, now).unwrap()
        })
    });
    // What the proxy sends upstream for a small PUT: the s3crypt signer (cached signing key) next to the
    // aws-sigv4 crate with the same S3 settings (what it used before; derives the signing key per request).
    let outbound = || {
        Request::builder()
            .method("PUT")
            .uri("https://s3.example.com/bucket/some/key%20with%20space.bin?partNumber=3&uploadId=abc")
            .header("host", "s3.example.com")
            .header("content-type", "application/octet-stream")
            .header("content-length", "4160")
            .header("x-amz-meta-owner", "bench")
            .header("x-amz-meta-s3crypt-v", "1")
            .header("x-amz-meta-s3crypt-kek", "keyring:k1")
            .header("x-amz-meta-s3crypt-dek", "c29tZSB3cmFwcGVkIGRhdGEga2V5IGJ5dGVzIGhlcmUgYW5kIG1vcmUgYnl0ZXM=")
            .body(())
            .unwrap()
    };
    g.bench_function("sign_outbound", |b| {
        b.iter(|| {
            let mut r = outbound();
            signer.sign(&mut r, &OutboundPayload::Unsigned, now).unwrap();
            r
        })
    });
    g.bench_function("sign_outbound_aws_sigv4_crate", |b| {
        use aws_sigv4::http_request::{
            PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
            UriPathNormalizationMode, sign,
        };
        let identity = aws_credential_types::Credentials::new("AKIDBENCH", "bench-secret", None, None, "b").into();
        b.iter(|| {
            let mut r = outbound();
            let mut settings = SigningSettings::default();
            settings.percent_encoding_mode = PercentEncodingMode::Single;
            settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
            let params = aws_sigv4::sign::v4::SigningParams::builder()
                .identity(&identity)
                .region("us-east-1")
                .name("s3")
                .time(now)
                .settings(settings)
                .build()
                .unwrap()
                .into();
            let headers: Vec<(&str, &str)> =
                r.headers().iter().map(|(n, v)| (n.as_str(), std::str::from_utf8(v.as_bytes()).unwrap())).collect();
            let uri = r.uri().to_string();
            let signable =
                SignableRequest::new(r.method().as_str(), uri, headers.into_iter(), SignableBody::UnsignedPayload)
                    .unwrap();
            let (instructions, _) = sign(signable, &params).unwrap().into_parts();
            instructions.apply_to_request_http1x(&mut r);
            r
        })
    });
    g.finish();
}

/// The audit line: the direct formatter writing to a sink, next to the tracing-subscriber JSON layer it replaced.
fn audit(c: &mut Criterion) {
    use s3crypt::util::audit::{Record, format_line};
    use std::io::Write;
    let record = Record {
        request_id: "0123456789ABCDEF",
        principal: "AKIDBENCH",
        op: "PutObject",
        bucket: "bench-bucket",
        key: "some/key with space.bin",
        version: "-",
        sse: "aws:kms",
        key_id: "keyring:k1",
        status: 200,
        bytes_in: 4096,
        bytes_out: 0,
        latency_ms: 2,
    };
    let mut g = c.benchmark_group("audit_line");
    let mut line = Vec::with_capacity(512);
    let mut sink = std::io::sink();
    g.bench_function("direct_json", |b| {
        b.iter(|| {
            line.clear();
            format_line(&mut line, &record, time::OffsetDateTime::now_utc());
            sink.write_all(&line).unwrap();
        })
    });
    let subscriber = tracing_subscriber::fmt().json().with_writer(std::io::sink).finish();
    tracing::subscriber::with_default(subscriber, || {
        g.bench_function("tracing_subscriber_json", |b| {
            b.iter(|| {
                tracing::info!(
                    target: "s3crypt::audit",
                    request_id = record.request_id,
                    principal = record.principal,
                    op = record.op,
                    bucket = record.bucket,
                    key = record.key,
                    version = record.version,
                    sse = record.sse,
                    key_id = record.key_id,
                    status = record.status,
                    bytes_in = record.bytes_in,
                    bytes_out = record.bytes_out,
                    latency_ms = record.latency_ms,
                    "audit"
                );
            })
        });
    });
    g.finish();
}

fn bodies(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let len = 8 * 1024 * 1024;
    let data = Bytes::from((0..len).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>());
    let hash: [u8; 32] = sha2::Sha256::digest(&data).into();
    let mut wire = Vec::with_capacity(len + 1024);
    for chunk in data.chunks(1 << 20) {
        wire.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        wire.extend_from_slice(chunk);
        wire.extend_from_slice(b"\r\n");
    }
    let mut crc = Checksummer::new(ChecksumAlgorithm::Crc32);
    crc.update(&data);
    let crc = s3crypt::s3::checksum::encode_value(&crc.finalize());
    wire.extend_from_slice(format!("0\r\nx-amz-checksum-crc32:{crc}\r\n\r\n").as_bytes());
    let wire = Bytes::from(wire);

    let mut g = c.benchmark_group("bodies_8MiB_in_64KiB_frames");
    g.throughput(Throughput::Bytes(len as u64));
    g.bench_function("raw_sha256 (primitive)", |b| b.iter(|| sha2::Sha256::digest(&data)));
    g.bench_function("verified_body_sha256", |b| {
        b.iter(|| rt.block_on(CheckedBody::new(frames(&data, 65_536), Checks::new().sha256(hash)).collect()).unwrap())
    });
    g.bench_function("passthrough_body", |b| {
        b.iter(|| rt.block_on(CheckedBody::new(frames(&data, 65_536), Checks::new()).collect()).unwrap())
    });
    g.bench_function("raw_crc32 (primitive)", |b| {
        b.iter(|| {
            let mut c = Checksummer::new(ChecksumAlgorithm::Crc32);
            c.update(&data);
            c.finalize()
        })
    });
    g.bench_function("aws_chunked_decode_crc32", |b| {
        b.iter(|| {
            let spec = ChunkedSpec {
                decoded_length: len as u64,
                trailer: Some(ChecksumAlgorithm::Crc32),
                signed: None,
                verified: None,
            };
            rt.block_on(AwsChunkedBody::new(frames(&wire, 65_536), spec).collect()).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, sigv4, audit, bodies);
criterion_main!(benches);
