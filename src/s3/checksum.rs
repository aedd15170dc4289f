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

    /// From the name S3 uses in `x-amz-checksum-algorithm` ("CRC32", case-insensitive).
    pub fn from_name(name: &str) -> Option<ChecksumAlgorithm> {
        ALL.into_iter().find(|a| a.display_name().eq_ignore_ascii_case(name.trim()))
    }

    fn crc(self) -> Option<CrcAlgorithm> {
        match self {
            ChecksumAlgorithm::Crc32 => Some(CrcAlgorithm::Crc32IsoHdlc),
            ChecksumAlgorithm::Crc32c => Some(CrcAlgorithm::Crc32Iscsi),
            ChecksumAlgorithm::Crc64Nvme => Some(CrcAlgorithm::Crc64Nvme),
            ChecksumAlgorithm::Sha1 | ChecksumAlgorithm::Sha256 => None,
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

/// Every algorithm S3 accepts.
pub const ALL: [ChecksumAlgorithm; 5] = [
    ChecksumAlgorithm::Crc32,
    ChecksumAlgorithm::Crc32c,
    ChecksumAlgorithm::Crc64Nvme,
    ChecksumAlgorithm::Sha1,
    ChecksumAlgorithm::Sha256,
];

/// What a multipart upload declared at CreateMultipartUpload: the checksum algorithm of its parts and whether the
/// object's checksum is a full-object one (CRCs combined) or composite (the checksum of the parts' checksums).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultipartChecksum {
    pub algorithm: ChecksumAlgorithm,
    pub full_object: bool,
}

impl MultipartChecksum {
    /// From `x-amz-checksum-algorithm` and `x-amz-checksum-type`, with S3's rules: CRC64NVME is full-object only,
    /// SHA-1 and SHA-256 composite only, CRC32 and CRC32C either (composite by default).
    pub fn from_headers(
        algorithm: Option<&str>,
        kind: Option<&str>,
    ) -> Result<Option<MultipartChecksum>, RequestError> {
        let invalid = |m: &str| RequestError::InvalidRequest(m.to_owned().into());
        let Some(name) = algorithm else {
            return match kind {
                None => Ok(None),
                Some(_) => Err(invalid(
                    "The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm header.",
                )),
            };
        };
        let algorithm =
            ChecksumAlgorithm::from_name(name).ok_or_else(|| invalid("Checksum algorithm provided is unsupported."))?;
        let full_object = match kind.map(|k| k.trim().to_ascii_uppercase()) {
            None => algorithm == ChecksumAlgorithm::Crc64Nvme,
            Some(k) if k == "FULL_OBJECT" => true,
            Some(k) if k == "COMPOSITE" => false,
            Some(_) => return Err(invalid("Value for x-amz-checksum-type header is invalid.")),
        };
        let allowed = match algorithm {
            ChecksumAlgorithm::Crc64Nvme => full_object,
            ChecksumAlgorithm::Sha1 | ChecksumAlgorithm::Sha256 => !full_object,
            ChecksumAlgorithm::Crc32 | ChecksumAlgorithm::Crc32c => true,
        };
        if !allowed {
            return Err(invalid(&format!(
                "The {} checksum type cannot be used with the {} checksum algorithm.",
                if full_object { "FULL_OBJECT" } else { "COMPOSITE" },
                algorithm.display_name().to_ascii_lowercase()
            )));
        }
        Ok(Some(MultipartChecksum { algorithm, full_object }))
    }

    /// `CRC32:C` / `CRC32:F`: how an upload ID records it.
    pub fn descriptor(&self) -> String {
        format!("{}:{}", self.algorithm.display_name(), if self.full_object { 'F' } else { 'C' })
    }

    pub fn parse(d: &str) -> Option<MultipartChecksum> {
        let (name, kind) = d.split_once(':')?;
        let algorithm = ChecksumAlgorithm::from_name(name)?;
        let full_object = match kind {
            "F" => true,
            "C" => false,
            _ => return None,
        };
        Some(MultipartChecksum { algorithm, full_object })
    }

    /// The object's checksum from its parts' digests and plaintext sizes, in part order: the CRCs combined
    /// (full-object) or the checksum of the concatenated digests (composite). `None` when a full-object checksum
    /// is asked of an algorithm that cannot combine.
    pub fn combine(&self, parts: &[(&[u8], u64)]) -> Option<Vec<u8>> {
        if !self.full_object {
            let mut c = Checksummer::new(self.algorithm);
            for (digest, _) in parts {
                c.update(digest);
            }
            return Some(c.finalize());
        }
        let crc = self.algorithm.crc()?;
        let mut out: Option<u64> = None;
        for (digest, len) in parts {
            let value = digest.iter().fold(0u64, |v, b| (v << 8) | u64::from(*b));
            out = Some(match out {
                None => value,
                Some(acc) => crc_fast::checksum_combine(crc, acc, value, *len),
            });
        }
        let v = out.unwrap_or_else(|| Checksummer::new(self.algorithm).finalize_u64());
        Some(match self.algorithm {
            ChecksumAlgorithm::Crc64Nvme => v.to_be_bytes().to_vec(),
            _ => u32::try_from(v & 0xffff_ffff).unwrap_or_default().to_be_bytes().to_vec(),
        })
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

    fn finalize_u64(self) -> u64 {
        self.finalize().iter().fold(0u64, |v, b| (v << 8) | u64::from(*b))
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
    fn multipart_checksums_combine_as_s3_defines_them() {
        let parts: [&[u8]; 3] = [b"hello ", b"multipart ", b"world"];
        for alg in [ChecksumAlgorithm::Crc32, ChecksumAlgorithm::Crc32c, ChecksumAlgorithm::Crc64Nvme] {
            let digests: Vec<Vec<u8>> = parts
                .iter()
                .map(|p| {
                    let mut c = Checksummer::new(alg);
                    c.update(p);
                    c.finalize()
                })
                .collect();
            let with_len: Vec<(&[u8], u64)> =
                digests.iter().zip(parts).map(|(d, p)| (d.as_slice(), p.len() as u64)).collect();
            let full = MultipartChecksum { algorithm: alg, full_object: true }.combine(&with_len).unwrap();
            assert_eq!(encode_value(&full), b64(alg, b"hello multipart world"), "{alg:?} full object");
        }
        // s3-tests' test_multipart_reupload_checksum_and_etag: three 5 MiB parts of 'A', 'B', 'C'.
        let mib5 = 5 * 1024 * 1024;
        let digests: Vec<Vec<u8>> = [b'A', b'B', b'C']
            .iter()
            .map(|c| {
                let mut h = Checksummer::new(ChecksumAlgorithm::Sha256);
                h.update(&vec![*c; mib5]);
                h.finalize()
            })
            .collect();
        assert_eq!(encode_value(&digests[0]), "275VF5loJr1YYawit0XSHREhkFXYkkPKGuoK0x9VKxI=");
        let with_len: Vec<(&[u8], u64)> = digests.iter().map(|d| (d.as_slice(), mib5 as u64)).collect();
        let composite = MultipartChecksum { algorithm: ChecksumAlgorithm::Sha256, full_object: false };
        assert_eq!(
            encode_value(&composite.combine(&with_len).unwrap()),
            "uWBwpe1dxI4Vw8Gf0X9ynOdw/SS6VBzfWm9giiv1sf4="
        );
    }

    #[test]
    fn upload_checksum_declarations_follow_s3s_rules() {
        let d = |a: Option<&str>, k: Option<&str>| MultipartChecksum::from_headers(a, k);
        assert_eq!(d(None, None).unwrap(), None);
        let crc = d(Some("crc32"), None).unwrap().unwrap();
        assert!(!crc.full_object);
        assert!(d(Some("CRC64NVME"), None).unwrap().unwrap().full_object);
        assert!(d(Some("CRC32C"), Some("FULL_OBJECT")).unwrap().unwrap().full_object);
        for (a, k) in [
            (Some("SHA256"), Some("FULL_OBJECT")),
            (Some("CRC64NVME"), Some("COMPOSITE")),
            (None, Some("COMPOSITE")),
            (Some("MD5"), None),
            (Some("CRC32"), Some("x")),
        ] {
            assert_eq!(d(a, k).unwrap_err().code(), "InvalidRequest", "{a:?} {k:?}");
        }
        assert_eq!(MultipartChecksum::parse(&crc.descriptor()), Some(crc));
        assert_eq!(MultipartChecksum::parse("CRC32:X"), None);
    }

    #[test]
    fn checksum_values_of_the_wrong_length_are_invalid() {
        assert!(ChecksumAlgorithm::Crc32.decode_value("rwg7LQ==").is_ok());
        assert_eq!(ChecksumAlgorithm::Crc32.decode_value("AAAAAAAAAAA=").unwrap_err().code(), "InvalidRequest");
        assert!(ChecksumAlgorithm::Crc32.decode_value("%%%").is_err());
    }
}
