//! Bucket policies as s3crypt evaluates them (docs/BUCKETS.md): the part of the IAM policy language that governs
//! encryption and transport, parsed into types once, at PutBucketPolicy, and evaluated on every request with an
//! explicit Deny winning. An element s3crypt would not evaluate is refused when the policy is put
//! (`MalformedPolicy`, naming it): a policy is never stored half enforced.

use std::net::IpAddr;

use http::Method;
use serde_json::{Map, Value};

use super::op::{BUCKET_SUBRESOURCES, OBJECT_SUBRESOURCES, S3Op};
use super::query::Query;

/// The largest policy S3 accepts (20 KiB).
pub const MAX_POLICY_LEN: usize = 20 * 1024;

/// Why a policy was refused: the message of S3's `MalformedPolicy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

fn malformed(m: impl Into<String>) -> PolicyError {
    PolicyError(m.into())
}

/// A parsed bucket policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    statements: Vec<Statement>,
}

#[derive(Debug, Clone, PartialEq)]
struct Statement {
    sid: Option<String>,
    deny: bool,
    /// `None`: every principal (`"*"`, `{"AWS": "*"}`).
    principals: Option<Vec<String>>,
    actions: Patterns,
    resources: Patterns,
    conditions: Vec<Condition>,
}

/// `Action` / `Resource` (or their `Not` forms): IAM wildcards (`*`, `?`).
#[derive(Debug, Clone, PartialEq)]
struct Patterns {
    negated: bool,
    patterns: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Null,
    Bool,
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    IpAddress,
    NotIpAddress,
}

/// The condition keys s3crypt knows the value of for every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionKey {
    SecureTransport,
    SourceIp,
    Sse,
    SseKmsKeyId,
    SseCustomerAlgorithm,
}

impl ConditionKey {
    fn parse(name: &str) -> Option<ConditionKey> {
        Some(match name.to_ascii_lowercase().as_str() {
            "aws:securetransport" => ConditionKey::SecureTransport,
            "aws:sourceip" => ConditionKey::SourceIp,
            "s3:x-amz-server-side-encryption" => ConditionKey::Sse,
            "s3:x-amz-server-side-encryption-aws-kms-key-id" => ConditionKey::SseKmsKeyId,
            "s3:x-amz-server-side-encryption-customer-algorithm" => ConditionKey::SseCustomerAlgorithm,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Condition {
    op: Op,
    if_exists: bool,
    key: ConditionKey,
    values: Vec<String>,
}

/// What a request is, for its bucket's policy.
pub struct Facts<'a> {
    /// `s3:GetObject`, ...
    pub action: &'a str,
    /// `arn:aws:s3:::bucket` or `arn:aws:s3:::bucket/key`.
    pub resource: &'a str,
    /// The client's access key id.
    pub principal: &'a str,
    /// The value of a condition key for this request (`None`: absent).
    pub value: &'a dyn Fn(ConditionKey) -> Option<String>,
}

/// A policy's answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A Deny statement matched (its Sid, if any).
    Deny(Option<String>),
    /// An Allow statement matched and no Deny did.
    Allow,
    /// No statement matched.
    NotApplicable,
}

impl Policy {
    /// Parses and checks a policy document for `bucket`.
    pub fn parse(text: &str, bucket: &str) -> Result<Policy, PolicyError> {
        if text.len() > MAX_POLICY_LEN {
            return Err(malformed("Policies must be no more than 20 KB"));
        }
        let doc: Value = serde_json::from_str(text).map_err(|_| malformed("Policies must be valid JSON"))?;
        let doc = doc.as_object().ok_or_else(|| malformed("Policies must be valid JSON objects"))?;
        for k in doc.keys() {
            if !matches!(k.as_str(), "Version" | "Id" | "Statement") {
                return Err(malformed(format!("Unsupported policy element: {k}")));
            }
        }
        match doc.get("Version").and_then(Value::as_str) {
            Some("2012-10-17" | "2008-10-17") | None => {}
            Some(v) => return Err(malformed(format!("Unsupported policy Version: {v}"))),
        }
        let statements = match doc.get("Statement") {
            Some(Value::Array(list)) => list.iter().map(|s| Statement::parse(s, bucket)).collect::<Result<_, _>>()?,
            Some(one @ Value::Object(_)) => vec![Statement::parse(one, bucket)?],
            _ => return Err(malformed("Missing required field Statement")),
        };
        Ok(Policy { statements })
    }

    /// The policy's answer: an explicit Deny wins over any Allow.
    pub fn evaluate(&self, facts: &Facts<'_>) -> Decision {
        let mut allowed = false;
        for s in &self.statements {
            if s.applies(facts) {
                if s.deny {
                    return Decision::Deny(s.sid.clone());
                }
                allowed = true;
            }
        }
        if allowed { Decision::Allow } else { Decision::NotApplicable }
    }
}

/// The IAM action a request performs (what a policy's `Action` names), as S3 authorizes it.
pub fn action(op: S3Op, method: &Method, query: &Query) -> String {
    let versioned = query.version_id().is_some();
    let fixed = match op {
        S3Op::ListBuckets => "ListAllMyBuckets",
        S3Op::CreateBucket => "CreateBucket",
        S3Op::DeleteBucket => "DeleteBucket",
        S3Op::HeadBucket | S3Op::ListObjects | S3Op::ListObjectsV2 => "ListBucket",
        S3Op::ListObjectVersions => "ListBucketVersions",
        S3Op::ListMultipartUploads => "ListBucketMultipartUploads",
        S3Op::GetObject | S3Op::HeadObject if versioned => "GetObjectVersion",
        S3Op::GetObject | S3Op::HeadObject => "GetObject",
        S3Op::GetObjectAttributes if versioned => "GetObjectVersionAttributes",
        S3Op::GetObjectAttributes => "GetObjectAttributes",
        S3Op::PutObject
        | S3Op::CopyObject
        | S3Op::CreateMultipartUpload
        | S3Op::UploadPart
        | S3Op::UploadPartCopy
        | S3Op::CompleteMultipartUpload => "PutObject",
        S3Op::DeleteObject | S3Op::DeleteObjects if versioned => "DeleteObjectVersion",
        S3Op::DeleteObject | S3Op::DeleteObjects => "DeleteObject",
        S3Op::AbortMultipartUpload => "AbortMultipartUpload",
        S3Op::ListParts => "ListMultipartUploadParts",
        S3Op::BucketEncryption if *method == Method::GET => "GetEncryptionConfiguration",
        S3Op::BucketEncryption => "PutEncryptionConfiguration",
        S3Op::BucketPolicy if *method == Method::GET => "GetBucketPolicy",
        S3Op::BucketPolicy if *method == Method::DELETE => "DeleteBucketPolicy",
        S3Op::BucketPolicy => "PutBucketPolicy",
        S3Op::BucketConfig => return format!("s3:{}", config_action(method, query, BUCKET_SUBRESOURCES, "Bucket")),
        S3Op::ObjectConfig => return format!("s3:{}", config_action(method, query, OBJECT_SUBRESOURCES, "Object")),
    };
    format!("s3:{fixed}")
}

/// `GetBucketVersioning`, `PutObjectTagging`, ... from the method and the sub-resource, with S3's exceptions.
fn config_action(method: &Method, query: &Query, subresources: &[&str], what: &str) -> String {
    let sub = subresources.iter().find(|s| query.has(s)).copied().unwrap_or("");
    let verb = match *method {
        Method::GET | Method::HEAD => "Get",
        Method::DELETE if matches!(sub, "tagging") && what == "Object" => "Delete",
        Method::DELETE if matches!(sub, "website" | "analytics" | "metrics" | "inventory") => "Delete",
        Method::POST if sub == "restore" => return "RestoreObject".into(),
        _ => "Put",
    };
    let special = match (what, sub) {
        ("Bucket", "lifecycle") => Some("LifecycleConfiguration"),
        ("Bucket", "replication") => Some("ReplicationConfiguration"),
        ("Bucket", "accelerate") => Some("AccelerateConfiguration"),
        ("Bucket", "notification") => Some("BucketNotification"),
        ("Bucket", "object-lock") => Some("BucketObjectLockConfiguration"),
        ("Bucket", "cors") => Some("BucketCORS"),
        ("Object", "legal-hold") => Some("ObjectLegalHold"),
        _ => None,
    };
    let noun = match special {
        Some(n) => n.to_owned(),
        None => {
            let mut c = sub.chars();
            let capital: String = c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default();
            format!("{what}{}", capital.replace('-', ""))
        }
    };
    format!("{verb}{noun}")
}

fn strings(v: &Value, what: &str) -> Result<Vec<String>, PolicyError> {
    let one = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(malformed(format!("{what} must be a string or a list of strings"))),
    };
    match v {
        Value::Array(list) if !list.is_empty() => list.iter().map(one).collect(),
        Value::Array(_) => Err(malformed(format!("{what} must not be empty"))),
        other => Ok(vec![one(other)?]),
    }
}

impl Statement {
    fn parse(v: &Value, bucket: &str) -> Result<Statement, PolicyError> {
        let s = v.as_object().ok_or_else(|| malformed("Each Statement must be an object"))?;
        for k in s.keys() {
            if !matches!(
                k.as_str(),
                "Sid" | "Effect" | "Principal" | "Action" | "NotAction" | "Resource" | "NotResource" | "Condition"
            ) {
                return Err(malformed(format!("Unsupported policy element: {k}")));
            }
        }
        let deny = match s.get("Effect").and_then(Value::as_str) {
            Some("Deny") => true,
            Some("Allow") => false,
            _ => return Err(malformed("Effect must be Allow or Deny")),
        };
        let principals = Self::principals(s.get("Principal"))?;
        let actions = Self::patterns(s, "Action", "NotAction")?;
        for a in &actions.patterns {
            let lower = a.to_ascii_lowercase();
            if a != "*" && !lower.starts_with("s3:") {
                return Err(malformed(format!("Policy has invalid action: {a}")));
            }
        }
        let resources = Self::patterns(s, "Resource", "NotResource")?;
        for r in &resources.patterns {
            if !in_bucket(r, bucket) {
                return Err(malformed(format!("Policy has invalid resource: {r}")));
            }
        }
        let conditions = match s.get("Condition") {
            None => Vec::new(),
            Some(Value::Object(c)) => Self::conditions(c)?,
            Some(_) => return Err(malformed("Condition must be an object")),
        };
        let sid = s.get("Sid").and_then(Value::as_str).map(str::to_owned);
        Ok(Statement { sid, deny, principals, actions, resources, conditions })
    }

    fn principals(v: Option<&Value>) -> Result<Option<Vec<String>>, PolicyError> {
        match v {
            Some(Value::String(s)) if s == "*" => Ok(None),
            Some(Value::Object(m)) => {
                let mut out = Vec::new();
                for (kind, names) in m {
                    if kind != "AWS" {
                        return Err(malformed(format!("Unsupported principal type: {kind}")));
                    }
                    let names = strings(names, "Principal")?;
                    if names.iter().any(|n| n == "*") {
                        return Ok(None);
                    }
                    out.extend(names);
                }
                Ok(Some(out))
            }
            Some(_) => Err(malformed("Invalid principal in policy")),
            None => Err(malformed("Missing required field Principal")),
        }
    }

    fn patterns(s: &Map<String, Value>, plain: &str, not: &str) -> Result<Patterns, PolicyError> {
        match (s.get(plain), s.get(not)) {
            (Some(v), None) => Ok(Patterns { negated: false, patterns: strings(v, plain)? }),
            (None, Some(v)) => Ok(Patterns { negated: true, patterns: strings(v, not)? }),
            (Some(_), Some(_)) => Err(malformed(format!("A statement cannot have both {plain} and {not}"))),
            (None, None) => Err(malformed(format!("Missing required field {plain}"))),
        }
    }

    fn conditions(c: &Map<String, Value>) -> Result<Vec<Condition>, PolicyError> {
        let mut out = Vec::new();
        for (op_name, keys) in c {
            let (base, if_exists) = match op_name.strip_suffix("IfExists") {
                Some(b) => (b, true),
                None => (op_name.as_str(), false),
            };
            let op = match base {
                "Null" if !if_exists => Op::Null,
                "Bool" => Op::Bool,
                "StringEquals" => Op::StringEquals,
                "StringNotEquals" => Op::StringNotEquals,
                "StringEqualsIgnoreCase" => Op::StringEqualsIgnoreCase,
                "StringNotEqualsIgnoreCase" => Op::StringNotEqualsIgnoreCase,
                "StringLike" => Op::StringLike,
                "StringNotLike" => Op::StringNotLike,
                "IpAddress" => Op::IpAddress,
                "NotIpAddress" => Op::NotIpAddress,
                _ => return Err(malformed(format!("Unsupported condition operator: {op_name}"))),
            };
            let keys = keys.as_object().ok_or_else(|| malformed(format!("{op_name} must be an object")))?;
            for (key_name, values) in keys {
                let key = ConditionKey::parse(key_name)
                    .ok_or_else(|| malformed(format!("Unsupported condition key: {key_name}")))?;
                let values = strings(values, key_name)?;
                let ip_key = key == ConditionKey::SourceIp;
                let ip_op = matches!(op, Op::IpAddress | Op::NotIpAddress);
                if ip_key != ip_op && op != Op::Null {
                    return Err(malformed(format!("{op_name} cannot be used with {key_name}")));
                }
                if ip_op && values.iter().any(|v| Cidr::parse(v).is_none()) {
                    return Err(malformed(format!("Invalid IP address or range in {key_name}")));
                }
                if matches!(op, Op::Bool | Op::Null)
                    && values.iter().any(|v| !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false"))
                {
                    return Err(malformed(format!("{op_name} takes true or false")));
                }
                out.push(Condition { op, if_exists, key, values });
            }
        }
        Ok(out)
    }

    fn applies(&self, f: &Facts<'_>) -> bool {
        let principal = self.principals.as_ref().is_none_or(|names| names.iter().any(|n| names_client(n, f.principal)));
        principal
            && self.actions.matches(f.action, true)
            && self.resources.matches(f.resource, false)
            && self.conditions.iter().all(|c| c.holds(f))
    }
}

/// A principal names a client by its access key id, bare or as the name of an IAM user ARN.
fn names_client(name: &str, access_key_id: &str) -> bool {
    name == access_key_id
        || name.rsplit_once(":user/").is_some_and(|(arn, user)| arn.starts_with("arn:") && user == access_key_id)
}

/// A resource of this bucket: `arn:aws:s3:::bucket` or `arn:aws:s3:::bucket/<anything>` (wildcards in the key).
fn in_bucket(resource: &str, bucket: &str) -> bool {
    let Some(rest) = resource.strip_prefix("arn:aws:s3:::") else { return false };
    match rest.split_once('/') {
        Some((b, _)) => b == bucket,
        None => rest == bucket,
    }
}

impl Patterns {
    fn matches(&self, value: &str, case_insensitive: bool) -> bool {
        let any = self.patterns.iter().any(|p| {
            if case_insensitive {
                wildcard(&p.to_ascii_lowercase(), &value.to_ascii_lowercase())
            } else {
                wildcard(p, value)
            }
        });
        any != self.negated
    }
}

/// IAM wildcards: `*` any run of characters, `?` one character.
fn wildcard(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    let (mut pi, mut vi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, vi));
            pi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl Condition {
    fn holds(&self, f: &Facts<'_>) -> bool {
        let value = (f.value)(self.key);
        if self.op == Op::Null {
            let absent = value.is_none();
            return self.values.iter().any(|v| v.eq_ignore_ascii_case("true") == absent);
        }
        let Some(value) = value else { return self.if_exists };
        let any = |eq: &dyn Fn(&str) -> bool| self.values.iter().any(|v| eq(v));
        match self.op {
            // Decided above, before a value is needed.
            Op::Null => false,
            Op::Bool => any(&|v| v.eq_ignore_ascii_case(&value)),
            Op::StringEquals => any(&|v| v == value),
            Op::StringNotEquals => !any(&|v| v == value),
            Op::StringEqualsIgnoreCase => any(&|v| v.eq_ignore_ascii_case(&value)),
            Op::StringNotEqualsIgnoreCase => !any(&|v| v.eq_ignore_ascii_case(&value)),
            Op::StringLike => any(&|v| wildcard(v, &value)),
            Op::StringNotLike => !any(&|v| wildcard(v, &value)),
            Op::IpAddress | Op::NotIpAddress => {
                let Ok(ip) = value.parse::<IpAddr>() else { return false };
                let inside = any(&|v| Cidr::parse(v).is_some_and(|c| c.contains(ip)));
                inside == (self.op == Op::IpAddress)
            }
        }
    }
}

/// An address range: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy)]
struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    fn parse(s: &str) -> Option<Cidr> {
        let (addr, bits) = match s.trim().split_once('/') {
            Some((a, b)) => (a, Some(b.parse::<u8>().ok()?)),
            None => (s.trim(), None),
        };
        let net: IpAddr = addr.parse().ok()?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = bits.unwrap_or(max);
        (bits <= max).then_some(Cidr { net, bits })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = match (self.net, ip) {
            (IpAddr::V4(_), IpAddr::V6(v6)) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            _ => ip,
        };
        let prefix = |a: u128, b: u128, width: u32| {
            let shift = width - u32::from(self.bits);
            if shift >= 128 { true } else { (a >> shift) == (b >> shift) }
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => prefix(u128::from(u32::from(n)), u128::from(u32::from(i)), 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => prefix(u128::from(n), u128::from(i), 128),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(action: &'a str, resource: &'a str, value: &'a dyn Fn(ConditionKey) -> Option<String>) -> Facts<'a> {
        Facts { action, resource, principal: "AKIDEXAMPLE", value }
    }

    const DENY_UNENCRYPTED: &str = r#"{"Version":"2012-10-17","Statement":[
        {"Sid":"alg","Effect":"Deny","Principal":"*","Action":"s3:PutObject","Resource":"arn:aws:s3:::b/*",
         "Condition":{"StringNotEquals":{"s3:x-amz-server-side-encryption":"aws:kms"}}},
        {"Sid":"none","Effect":"Deny","Principal":{"AWS":"*"},"Action":"s3:PutObject","Resource":"arn:aws:s3:::b/*",
         "Condition":{"Null":{"s3:x-amz-server-side-encryption":"true"}}},
        {"Sid":"tls","Effect":"Deny","Principal":"*","Action":"s3:*","Resource":["arn:aws:s3:::b","arn:aws:s3:::b/*"],
         "Condition":{"Bool":{"aws:SecureTransport":"false"}}}]}"#;

    #[test]
    fn the_seed_policies_deny_what_they_name_and_nothing_else() {
        let p = Policy::parse(DENY_UNENCRYPTED, "b").unwrap();
        let with = |sse: Option<&'static str>, secure: bool| {
            move |k: ConditionKey| match k {
                ConditionKey::Sse => sse.map(str::to_owned),
                ConditionKey::SecureTransport => Some(secure.to_string()),
                _ => None,
            }
        };
        let none = with(None, true);
        assert_eq!(p.evaluate(&facts("s3:PutObject", "arn:aws:s3:::b/k", &none)), Decision::Deny(Some("none".into())));
        let kms = with(Some("aws:kms"), true);
        assert_eq!(p.evaluate(&facts("s3:PutObject", "arn:aws:s3:::b/k", &kms)), Decision::NotApplicable);
        let s3 = with(Some("AES256"), true);
        assert_eq!(p.evaluate(&facts("s3:PutObject", "arn:aws:s3:::b/k", &s3)), Decision::Deny(Some("alg".into())));
        assert_eq!(p.evaluate(&facts("s3:GetObject", "arn:aws:s3:::b/k", &none)), Decision::NotApplicable);
        let plain = with(Some("aws:kms"), false);
        assert_eq!(p.evaluate(&facts("s3:ListBucket", "arn:aws:s3:::b", &plain)), Decision::Deny(Some("tls".into())));
    }

    #[test]
    fn elements_that_are_not_evaluated_are_refused_by_name() {
        let refused = |statement: &str| {
            let doc = format!(r#"{{"Version":"2012-10-17","Statement":[{statement}]}}"#);
            Policy::parse(&doc, "b").unwrap_err().0
        };
        let base = r#""Effect":"Deny","Principal":"*","Action":"s3:PutObject","Resource":"arn:aws:s3:::b/*""#;
        assert!(
            refused(&format!(r#"{{{base},"Condition":{{"StringEquals":{{"aws:PrincipalOrgID":"o"}}}}}}"#))
                .contains("aws:PrincipalOrgID")
        );
        assert!(
            refused(&format!(r#"{{{base},"Condition":{{"DateGreaterThan":{{"aws:SecureTransport":"x"}}}}}}"#))
                .contains("DateGreaterThan")
        );
        assert!(refused(&format!(r#"{{{base},"NotPrincipal":"*"}}"#)).contains("NotPrincipal"));
        assert!(
            refused(r#"{"Effect":"Deny","Principal":{"Service":"x"},"Action":"s3:*","Resource":"arn:aws:s3:::b"}"#)
                .contains("Service")
        );
        assert!(
            refused(r#"{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::other/*"}"#)
                .contains("resource")
        );
        assert!(
            refused(r#"{"Effect":"Deny","Principal":"*","Action":"iam:*","Resource":"arn:aws:s3:::b"}"#)
                .contains("action")
        );
        assert!(
            refused(r#"{"Effect":"Maybe","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::b"}"#)
                .contains("Effect")
        );
        assert!(Policy::parse("nonsense", "b").is_err());
        assert!(Policy::parse(&" ".repeat(MAX_POLICY_LEN + 1), "b").is_err());
    }

    #[test]
    fn requests_are_named_by_the_iam_actions_s3_authorizes() {
        let q = |pairs: &[(&str, &str)]| Query::new(pairs.iter().map(|(a, b)| ((*a).into(), (*b).into())).collect());
        assert_eq!(action(S3Op::CompleteMultipartUpload, &Method::POST, &q(&[])), "s3:PutObject");
        assert_eq!(action(S3Op::GetObject, &Method::GET, &q(&[("versionId", "v")])), "s3:GetObjectVersion");
        assert_eq!(action(S3Op::BucketConfig, &Method::GET, &q(&[("versioning", "")])), "s3:GetBucketVersioning");
        assert_eq!(action(S3Op::BucketConfig, &Method::PUT, &q(&[("lifecycle", "")])), "s3:PutLifecycleConfiguration");
        assert_eq!(action(S3Op::ObjectConfig, &Method::DELETE, &q(&[("tagging", "")])), "s3:DeleteObjectTagging");
        assert_eq!(action(S3Op::BucketPolicy, &Method::DELETE, &q(&[])), "s3:DeleteBucketPolicy");
        assert_eq!(action(S3Op::BucketEncryption, &Method::DELETE, &q(&[])), "s3:PutEncryptionConfiguration");
    }

    #[test]
    fn principals_wildcards_if_exists_and_addresses_evaluate_as_iam_does() {
        let doc = r#"{"Statement":{"Effect":"Deny","Principal":{"AWS":["arn:aws:iam::123:user/AKIDEXAMPLE"]},
            "NotAction":"s3:Get*","Resource":"arn:aws:s3:::b/secret/*",
            "Condition":{"NotIpAddress":{"aws:SourceIp":["10.0.0.0/8","2001:db8::/32"]},
                         "StringNotEqualsIfExists":{"s3:x-amz-server-side-encryption-customer-algorithm":"AES256"}}}}"#;
        let p = Policy::parse(doc, "b").unwrap();
        let from = |ip: &'static str| move |k: ConditionKey| (k == ConditionKey::SourceIp).then(|| ip.to_owned());
        let outside = from("192.0.2.1");
        assert!(matches!(p.evaluate(&facts("s3:PutObject", "arn:aws:s3:::b/secret/x", &outside)), Decision::Deny(_)));
        assert_eq!(p.evaluate(&facts("s3:GetObject", "arn:aws:s3:::b/secret/x", &outside)), Decision::NotApplicable);
        assert_eq!(p.evaluate(&facts("s3:PutObject", "arn:aws:s3:::b/public/x", &outside)), Decision::NotApplicable);
        for inside in [from("10.1.2.3"), from("2001:db8::7"), from("::ffff:10.0.0.1")] {
            assert_eq!(p.evaluate(&facts("s3:PutObject", "arn:aws:s3:::b/secret/x", &inside)), Decision::NotApplicable);
        }
        let other = Facts { principal: "SOMEONEELSE", ..facts("s3:PutObject", "arn:aws:s3:::b/secret/x", &outside) };
        assert_eq!(p.evaluate(&other), Decision::NotApplicable);
        assert!(
            wildcard("a*b?d", "aXXbcd") && !wildcard("a*b?d", "abd") && wildcard("*", "") && wildcard("s3:*", "s3:x")
        );
    }
}
