//! A bucket's default encryption as PutBucketEncryption sets it (`ServerSideEncryptionConfiguration`): parsed into
//! a type once, rendered back as GetBucketEncryption answers it.

use quick_xml::Reader;
use quick_xml::events::Event;

use super::error::RequestError;
use super::sse::SseRequest;

/// The one rule of a bucket's default encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketEncryption {
    /// `AES256`: SSE-S3 (the proxy's keyring).
    S3,
    /// `aws:kms`, with the key (`None`: the configured default KMS key) and bucket keys.
    Kms { key_id: Option<String>, bucket_key: bool },
}

fn malformed() -> RequestError {
    RequestError::MalformedXml("ServerSideEncryptionConfiguration")
}

impl BucketEncryption {
    /// Reads a PutBucketEncryption body.
    pub fn parse(body: &[u8]) -> Result<BucketEncryption, RequestError> {
        let mut reader = Reader::from_reader(body);
        let mut path: Vec<Vec<u8>> = Vec::new();
        let (mut algorithm, mut key_id, mut bucket_key) = (None::<String>, None::<String>, None::<String>);
        let mut rules = 0;
        let mut text = String::new();
        loop {
            match reader.read_event().map_err(|_| malformed())? {
                Event::Start(e) => {
                    let name = e.local_name().as_ref().to_vec();
                    if path.is_empty() && name != b"ServerSideEncryptionConfiguration" {
                        return Err(malformed());
                    }
                    if path.len() == 1 && name == b"Rule" {
                        rules += 1;
                    }
                    path.push(name);
                    text.clear();
                }
                ev @ (Event::Text(_) | Event::CData(_) | Event::GeneralRef(_)) => super::xml::push_text(&ev, &mut text),
                Event::End(_) => {
                    let name = path.pop().unwrap_or_default();
                    let value = std::mem::take(&mut text).trim().to_owned();
                    match name.as_slice() {
                        b"SSEAlgorithm" => algorithm = Some(value),
                        b"KMSMasterKeyID" => key_id = Some(value).filter(|v| !v.is_empty()),
                        b"BucketKeyEnabled" => bucket_key = Some(value),
                        _ => {}
                    }
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if rules != 1 {
            return Err(malformed());
        }
        let bucket_key = match bucket_key.as_deref() {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => return Err(malformed()),
        };
        match algorithm.as_deref() {
            Some("AES256") if key_id.is_none() => Ok(BucketEncryption::S3),
            Some("AES256") => Err(RequestError::InvalidArgument(
                "a KMSMasterKeyID is not applicable if the default sse algorithm is not aws:kms".into(),
            )),
            Some("aws:kms") => Ok(BucketEncryption::Kms { key_id, bucket_key }),
            Some("aws:kms:dsse") => Err(RequestError::InvalidArgument(
                "DSSE-KMS (aws:kms:dsse) is not supported by the gateway; use aws:kms.".into(),
            )),
            Some(_) => Err(RequestError::InvalidArgument("The encryption method specified is not supported".into())),
            None => Err(malformed()),
        }
    }

    /// The GetBucketEncryption document.
    pub fn render(&self) -> bytes::Bytes {
        let (algorithm, key, bucket_key) = match self {
            BucketEncryption::S3 => ("AES256", None, false),
            BucketEncryption::Kms { key_id, bucket_key } => ("aws:kms", key_id.as_deref(), *bucket_key),
        };
        let escape = |s: &str| quick_xml::escape::escape(s).into_owned();
        let key = key.map(|k| format!("<KMSMasterKeyID>{}</KMSMasterKeyID>", escape(k))).unwrap_or_default();
        bytes::Bytes::from(format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ServerSideEncryptionConfiguration \
             xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Rule><ApplyServerSideEncryptionByDefault>\
             <SSEAlgorithm>{algorithm}</SSEAlgorithm>{key}</ApplyServerSideEncryptionByDefault>\
             <BucketKeyEnabled>{bucket_key}</BucketKeyEnabled></Rule></ServerSideEncryptionConfiguration>"
        ))
    }

    /// What an upload without SSE headers asks for in a bucket with this default.
    pub fn as_request(&self) -> SseRequest {
        match self {
            BucketEncryption::S3 => SseRequest::S3,
            BucketEncryption::Kms { key_id, bucket_key } => {
                SseRequest::Kms { key_id: key_id.clone(), context: None, bucket_key: Some(*bucket_key) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_parse_render_and_parse_back() {
        let kms = br#"<ServerSideEncryptionConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>aws:kms</SSEAlgorithm><KMSMasterKeyID>arn:aws:kms:us-east-1:1:key/k</KMSMasterKeyID></ApplyServerSideEncryptionByDefault><BucketKeyEnabled>true</BucketKeyEnabled></Rule></ServerSideEncryptionConfiguration>"#;
        let parsed = BucketEncryption::parse(kms).unwrap();
        assert_eq!(
            parsed,
            BucketEncryption::Kms { key_id: Some("arn:aws:kms:us-east-1:1:key/k".into()), bucket_key: true }
        );
        assert_eq!(BucketEncryption::parse(&parsed.render()).unwrap(), parsed);
        let s3 = b"<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>";
        assert_eq!(BucketEncryption::parse(s3).unwrap(), BucketEncryption::S3);
        for bad in [
            &b"<Other/>"[..],
            b"<ServerSideEncryptionConfiguration></ServerSideEncryptionConfiguration>",
            b"<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm><KMSMasterKeyID>k</KMSMasterKeyID></ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>",
            b"<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>aws:kms:dsse</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>",
            b"<ServerSideEncryptionConfiguration><Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES128</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>",
        ] {
            assert!(BucketEncryption::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
