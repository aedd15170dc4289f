//! Browser uploads (POST Object): the signed POST policy. The form carries a base64 policy document and its
//! signature — SigV4 (`x-amz-algorithm`, `x-amz-credential`, `x-amz-date`, `x-amz-signature`: HMAC-SHA256 of the
//! base64 policy under the SigV4 signing key) or SigV2 (`AWSAccessKeyId`, `signature`: HMAC-SHA1 of it under the
//! secret). Verifying it names the client; the policy's expiration and conditions are then checked against every
//! form field and the file's length ([`PostPolicy::check`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{KeyInit, Mac};
use serde_json::Value;
use subtle::ConstantTimeEq;

use super::SigningKey;
use super::error::AuthError;
use super::verify::Verifier;
use crate::config::ClientCredential;
use crate::s3::error::RequestError;

/// A POST form's fields other than the file: names lowercased, values as sent.
pub type FormFields = BTreeMap<String, String>;

fn invalid_policy(m: impl Into<String>) -> AuthError {
    AuthError::Request(RequestError::InvalidPolicyDocument(m.into().into()))
}

impl Verifier {
    fn post_client(&self, access_key_id: &str) -> Result<Arc<ClientCredential>, AuthError> {
        self.client_by_id(access_key_id)
            .ok_or_else(|| AuthError::InvalidAccessKeyId { access_key_id: access_key_id.to_owned() })
    }

    /// Verifies a POST form's signature over its policy; returns the client and the policy document.
    pub fn verify_post(
        &self,
        fields: &FormFields,
        now: SystemTime,
    ) -> Result<(Arc<ClientCredential>, PostPolicy), AuthError> {
        let field = |n: &str| fields.get(n).map(String::as_str);
        let policy_b64 = field("policy").ok_or(AuthError::AccessDenied("Access Denied"))?;
        let client = match field("x-amz-algorithm") {
            Some(alg) => {
                if alg != "AWS4-HMAC-SHA256" {
                    return Err(invalid_policy("Unsupported x-amz-algorithm"));
                }
                let credential = field("x-amz-credential").ok_or_else(|| invalid_policy("x-amz-credential missing"))?;
                let mut parts = credential.split('/');
                let (Some(ak), Some(date), Some(region), Some("s3"), Some("aws4_request"), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Err(invalid_policy("malformed x-amz-credential"));
                };
                let client = self.post_client(ak)?;
                if region != self.region() {
                    return Err(invalid_policy(format!("the region {region} is wrong; expecting {}", self.region())));
                }
                let amz_date = field("x-amz-date").ok_or_else(|| invalid_policy("x-amz-date missing"))?;
                let time = crate::util::time::parse_amz_date(amz_date)
                    .filter(|_| amz_date.starts_with(date))
                    .ok_or_else(|| invalid_policy("x-amz-date does not match the credential's date"))?;
                let given = field("x-amz-signature").ok_or(AuthError::AccessDenied("Access Denied"))?;
                let expected = SigningKey::derive(client.secret_access_key.expose(), time, region)
                    .sign(policy_b64.as_bytes())
                    .to_hex();
                if !bool::from(expected.as_bytes().ct_eq(given.trim().to_ascii_lowercase().as_bytes())) {
                    return Err(AuthError::AccessDenied("Access Denied"));
                }
                client
            }
            None => {
                let ak = field("awsaccesskeyid").ok_or(AuthError::AccessDenied("Access Denied"))?;
                if !self.allows_sigv2() {
                    return Err(AuthError::AccessDenied("Access Denied"));
                }
                let client = self.post_client(ak)?;
                let given = field("signature").ok_or(AuthError::AccessDenied("Access Denied"))?;
                let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(client.secret_access_key.expose().as_bytes())
                    .map_err(|_| AuthError::AccessDenied("Access Denied"))?;
                mac.update(policy_b64.as_bytes());
                let expected = B64.encode(mac.finalize().into_bytes());
                if !bool::from(expected.as_bytes().ct_eq(given.trim().as_bytes())) {
                    return Err(AuthError::AccessDenied("Access Denied"));
                }
                client
            }
        };
        let policy = PostPolicy::parse(policy_b64, now)?;
        Ok((client, policy))
    }
}

/// One condition of a POST policy.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Condition {
    /// `{"field": "value"}` or `["eq", "$field", "value"]`.
    Equals(String, String),
    /// `["starts-with", "$field", "prefix"]` (empty prefix: any value).
    StartsWith(String, String),
    /// `["content-length-range", min, max]`.
    LengthRange(u64, u64),
}

/// A verified, unexpired POST policy document.
#[derive(Debug, Clone)]
pub struct PostPolicy {
    conditions: Vec<Condition>,
}

impl PostPolicy {
    fn parse(b64: &str, now: SystemTime) -> Result<PostPolicy, AuthError> {
        let doc = B64.decode(b64.trim()).map_err(|_| invalid_policy("Invalid Policy: Invalid Base64"))?;
        let doc: Value = serde_json::from_slice(&doc).map_err(|_| invalid_policy("Invalid Policy: Invalid JSON."))?;
        let expiration = doc
            .get("expiration")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid_policy("Invalid Policy: Policy missing expiration."))?;
        let expires = crate::util::time::parse_iso8601(expiration)
            .ok_or_else(|| invalid_policy("Invalid Policy: Invalid 'expiration' value."))?;
        if expires <= now {
            return Err(AuthError::AccessDenied("Invalid according to Policy: Policy expired."));
        }
        let list = doc
            .get("conditions")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid_policy("Invalid Policy: Policy missing conditions."))?;
        let field = |v: &Value| v.as_str().and_then(|s| s.strip_prefix('$')).map(str::to_ascii_lowercase);
        let number = |v: &Value| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()));
        let mut conditions = Vec::new();
        for c in list {
            match c {
                Value::Object(m) => {
                    for (k, v) in m {
                        let v = v.as_str().ok_or_else(|| invalid_policy("Invalid Policy: Invalid Simple-Condition"))?;
                        conditions.push(Condition::Equals(k.to_ascii_lowercase(), v.to_owned()));
                    }
                }
                Value::Array(a) if a.len() == 3 => {
                    let op = a[0].as_str().unwrap_or("").to_ascii_lowercase();
                    let c = match op.as_str() {
                        "eq" | "starts-with" => {
                            let name = field(&a[1]).ok_or_else(|| invalid_policy("Invalid Policy: condition field"))?;
                            let value =
                                a[2].as_str().ok_or_else(|| invalid_policy("Invalid Policy: condition value"))?;
                            if op == "eq" {
                                Condition::Equals(name, value.to_owned())
                            } else {
                                Condition::StartsWith(name, value.to_owned())
                            }
                        }
                        "content-length-range" => {
                            let (Some(min), Some(max)) = (number(&a[1]), number(&a[2])) else {
                                return Err(invalid_policy("Invalid Policy: content-length-range"));
                            };
                            Condition::LengthRange(min, max)
                        }
                        _ => return Err(invalid_policy(format!("Invalid Policy: unknown condition {op}"))),
                    };
                    conditions.push(c);
                }
                _ => return Err(invalid_policy("Invalid Policy: Invalid condition")),
            }
        }
        Ok(PostPolicy { conditions })
    }

    /// Checks the form against the policy: every condition holds, and every field (but the signature's, the
    /// policy, the file and `x-ignore-*`) is named by a condition, as S3 requires. `bucket` is the form's target.
    pub fn check(&self, fields: &FormFields, bucket: &str, file_len: u64) -> Result<(), AuthError> {
        let value = |name: &str| if name == "bucket" { Some(bucket) } else { fields.get(name).map(String::as_str) };
        let failed = |name: &str| {
            AuthError::AccessDenied(match name {
                "bucket" => "Invalid according to Policy: Policy Condition failed: bucket",
                "key" => "Invalid according to Policy: Policy Condition failed: key",
                _ => "Invalid according to Policy: Policy Condition failed",
            })
        };
        for c in &self.conditions {
            match c {
                Condition::Equals(n, v) => {
                    if value(n) != Some(v.as_str()) {
                        return Err(failed(n));
                    }
                }
                Condition::StartsWith(n, p) => {
                    // Content-Type may list several types: each must start with the prefix.
                    // An absent field is empty: it meets an empty prefix ("any value").
                    let holds = match value(n) {
                        Some(v) if n == "content-type" => v.split(',').all(|t| t.trim().starts_with(p.as_str())),
                        Some(v) => v.starts_with(p.as_str()),
                        None => p.is_empty(),
                    };
                    if !holds {
                        return Err(failed(n));
                    }
                }
                Condition::LengthRange(min, max) => {
                    if file_len < *min {
                        return Err(AuthError::Request(RequestError::EntityTooSmall));
                    }
                    if file_len > *max {
                        return Err(AuthError::Request(RequestError::EntityTooLarge));
                    }
                }
            }
        }
        let exempt = |n: &str| {
            matches!(
                n,
                "policy"
                    | "x-amz-signature"
                    | "signature"
                    | "awsaccesskeyid"
                    | "file"
                    | "x-amz-algorithm"
                    | "x-amz-credential"
                    | "x-amz-date"
                    | "x-amz-security-token"
            ) || n.starts_with("x-ignore-")
        };
        for name in fields.keys().filter(|n| !exempt(n)) {
            let named = self.conditions.iter().any(|c| match c {
                Condition::Equals(n, _) | Condition::StartsWith(n, _) => n == name,
                Condition::LengthRange(..) => false,
            });
            if !named {
                return Err(AuthError::AccessDenied("Invalid according to Policy: Extra input fields"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy(doc: &str) -> PostPolicy {
        PostPolicy::parse(&B64.encode(doc), SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)).unwrap()
    }

    #[test]
    fn conditions_bind_every_field_and_the_length() {
        let p = policy(
            r#"{"expiration":"2030-01-01T00:00:00Z","conditions":[{"bucket":"b"},["starts-with","$key","up/"],
              {"x-amz-server-side-encryption":"AES256"},["starts-with","$Content-Type","text/"],
              ["content-length-range",1,10]]}"#,
        );
        let mut f: FormFields =
            [("key", "up/a"), ("x-amz-server-side-encryption", "AES256"), ("content-type", "text/plain")]
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect();
        assert!(p.check(&f, "b", 5).is_ok());
        assert!(p.check(&f, "other", 5).is_err(), "bucket");
        assert!(p.check(&f, "b", 11).is_err(), "too large");
        assert!(p.check(&f, "b", 0).is_err(), "too small");
        f.insert("key".into(), "elsewhere".into());
        assert!(p.check(&f, "b", 5).is_err(), "key prefix");
        f.insert("key".into(), "up/a".into());
        f.insert("x-amz-meta-extra".into(), "1".into());
        assert!(p.check(&f, "b", 5).is_err(), "a field no condition names");
        f.remove("x-amz-meta-extra");
        f.insert("x-ignore-me".into(), "1".into());
        assert!(p.check(&f, "b", 5).is_ok());
    }

    #[test]
    fn expired_or_malformed_policies_are_refused() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let expired = B64.encode(r#"{"expiration":"2020-01-01T00:00:00Z","conditions":[]}"#);
        assert!(matches!(PostPolicy::parse(&expired, now), Err(AuthError::AccessDenied(_))));
        for bad in ["%%%", &B64.encode("[]"), &B64.encode(r#"{"conditions":[]}"#)] {
            assert!(PostPolicy::parse(bad, now).is_err(), "{bad}");
        }
    }
}
