//! S3 flexible checksums (CRC32, CRC32C, CRC64NVME, SHA-1, SHA-256): which header or trailer names one, and
//! computing it over a body as it streams. CRCs use `crc-fast` (hardware CLMUL/AVX-512 paths, 70–100 GB/s
//! measured here, see research/limits.md).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use crc_fast::{CrcAlgorithm, Digest as Crc};
use sha2::Digest;

use crate::s3::error::RequestError;

/// A checksum algorithm S3 accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    /// From a header / trailer name such as `x-amz-checksum-crc32`.
    pub fn from_header_name(name: &str) -> Option<ChecksumAlgorithm> {
        Some(match name.to_ascii_lowercase().as_str() {
            "x-amz-checksum-crc32" => ChecksumAlgorithm::Crc32,
            "x-amz-checksum-crc32c" => ChecksumAlgorithm::Crc32c,
            "x-amz-checksum-crc64nvme" => ChecksumAlgorithm::Crc64Nvme,
            "x-amz-checksum-sha1" => ChecksumAlgorithm::Sha1,
            "x-amz-checksum-sha256" => ChecksumAlgorithm::Sha256,
            _ => return None,
        })
    }

    /// The name S3 uses in messages ("The CRC32 you specified did not match ...").
    pub fn display_name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "CRC32",
            ChecksumAlgorithm::Crc32c => "CRC32C",
            ChecksumAlgorithm::Crc64Nvme => "CRC64NVME",
            ChecksumAlgorithm::Sha1 => "SHA1",
            ChecksumAlgorithm::Sha256 => "SHA256",
        }
    }

    pub fn header_name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "x-amz-checksum-crc32",
            ChecksumAlgorithm::Crc32c => "x-amz-checksum-crc32c",
            ChecksumAlgorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            ChecksumAlgorithm::Sha1 => "x-amz-checksum-sha1",
            ChecksumAlgorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }

    fn digest_len(self) -> usize {
        match self {
            ChecksumAlgorithm::Crc32 | ChecksumAlgorithm::Crc32c => 4,
            ChecksumAlgorithm::Crc64Nvme => 8,
            ChecksumAlgorithm::Sha1 => 20,
            ChecksumAlgorithm::Sha256 => 32,
        }
    }

    /// Decodes a base64 checksum value, checking its length.
    pub fn decode_value(self, value: &str) -> Result<Vec<u8>, RequestError> {
        match B64.decode(value.trim()) {
            Ok(v) if v.len() == self.digest_len() => Ok(v),
            _other => Err(RequestError::InvalidRequest(
                format!("Value for {} trailing header is invalid.", self.header_name()).into(),
            )),
        }
    }
}

/// A running checksum.
pub enum Checksummer {
    Crc(ChecksumAlgorithm, Crc),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Checksummer {
    pub fn new(alg: ChecksumAlgorithm) -> Checksummer {
        match alg {
            ChecksumAlgorithm::Crc32 => Checksummer::Crc(alg, Crc::new(CrcAlgorithm::Crc32IsoHdlc)),
            ChecksumAlgorithm::Crc32c => Checksummer::Crc(alg, Crc::new(CrcAlgorithm::Crc32Iscsi)),
            ChecksumAlgorithm::Crc64Nvme => Checksummer::Crc(alg, Crc::new(CrcAlgorithm::Crc64Nvme)),
            ChecksumAlgorithm::Sha1 => Checksummer::Sha1(sha1::Sha1::new()),
            ChecksumAlgorithm::Sha256 => Checksummer::Sha256(sha2::Sha256::new()),
        }
    }

    pub fn algorithm(&self) -> ChecksumAlgorithm {
        match self {
            Checksummer::Crc(alg, _) => *alg,
            Checksummer::Sha1(_) => ChecksumAlgorithm::Sha1,
            Checksummer::Sha256(_) => ChecksumAlgorithm::Sha256,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Checksummer::Crc(_, c) => c.update(data),
            Checksummer::Sha1(h) => h.update(data),
            Checksummer::Sha256(h) => h.update(data),
        }
    }

    /// The big-endian digest bytes, as S3 encodes them before base64.
    pub fn finalize(self) -> Vec<u8> {
        match self {
            Checksummer::Crc(ChecksumAlgorithm::Crc64Nvme, c) => c.finalize().to_be_bytes().to_vec(),
            Checksummer::Crc(_, c) => {
                let v = u32::try_from(c.finalize() & 0xffff_ffff).unwrap_or_default();
                v.to_be_bytes().to_vec()
            }
            Checksummer::Sha1(h) => h.finalize().to_vec(),
            Checksummer::Sha256(h) => h.finalize().to_vec(),
        }
    }
}

/// Base64 of a digest, as S3 sends checksums.
pub fn encode_value(digest: &[u8]) -> String {
    B64.encode(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::AtBoundary;

    fn b64(alg: ChecksumAlgorithm, data: &[u8]) -> String {
        let mut c = Checksummer::new(alg);
        c.update(data);
        encode_value(&c.finalize())
    }

    #[test]
    fn checksums_match_the_values_real_clients_send() {
        // boto3 sent x-amz-checksum-crc32:rwg7LQ== for "hello world\n" and NjowIA== for "hello\n" (testbed.md).
        assert_eq!(b64(ChecksumAlgorithm::Crc32, b"hello world\n"), "rwg7LQ==");
        assert_eq!(b64(ChecksumAlgorithm::Crc32, b"hello\n"), "NjowIA==");
        // CRC32C("123456789") = 0xE3069283, CRC64/NVME("123456789") = 0xAE8B14860A799888.
        assert_eq!(b64(ChecksumAlgorithm::Crc32c, b"123456789"), encode_value(&0xE306_9283u32.to_be_bytes()));
        assert_eq!(
            b64(ChecksumAlgorithm::Crc64Nvme, b"123456789"),
            encode_value(&0xAE8B_1486_0A79_9888u64.to_be_bytes())
        );
        assert_eq!(b64(ChecksumAlgorithm::Sha256, b""), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    }

    #[test]
    fn checksum_values_of_the_wrong_length_are_invalid() {
        assert!(ChecksumAlgorithm::Crc32.decode_value("rwg7LQ==").is_ok());
        assert_eq!(ChecksumAlgorithm::Crc32.decode_value("AAAAAAAAAAA=").unwrap_err().code(), "InvalidRequest");
        assert!(ChecksumAlgorithm::Crc32.decode_value("%%%").is_err());
    }
}
