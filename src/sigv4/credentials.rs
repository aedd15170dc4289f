//! The credentials the proxy signs store requests with: static keys from the configuration, or the standard AWS
//! chain (`upstream.credentials = "aws"`: environment, profile, web identity / IRSA, container credentials / EKS
//! Pod Identity, IMDS), as the AWS SDKs resolve it (`aws-config`'s default chain). Chain credentials carry a
//! session token and an expiry; a task fetches new ones `upstream.credentials_refresh_before` ahead of the expiry
//! (retrying with back-off on failure), and signing always reads the latest, without waiting. The first fetch
//! happens before the proxy serves: a replica without store credentials does not start.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use aws_credential_types::provider::ProvideCredentials;

use crate::util::secret::SecretString;

/// How long the first fetch from the chain may take before the proxy gives up starting.
const FIRST_FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Wait after a failed refresh (doubling up to [`MAX_RETRY`]); the current credentials stay in use meanwhile.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// Credentials without an expiry (environment, profile keys) are read again this often.
const REREAD_UNEXPIRING: Duration = Duration::from_secs(3600);

/// One set of credentials.
pub struct Credentials {
    pub access_key_id: String,
    pub secret: SecretString,
    /// Sent (and signed) as `x-amz-security-token`.
    pub session_token: Option<SecretString>,
    pub expires: Option<SystemTime>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("session_token", &self.session_token.as_ref().map(|_| "[REDACTED]"))
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// Where signing reads the current credentials from.
#[derive(Debug)]
pub struct StoreCredentials {
    current: ArcSwap<Credentials>,
}

impl StoreCredentials {
    /// Static keys (the configuration's, or the embedded store's).
    pub fn fixed(access_key_id: &str, secret: &SecretString) -> Arc<StoreCredentials> {
        let c = Credentials {
            access_key_id: access_key_id.to_owned(),
            secret: secret.clone(),
            session_token: None,
            expires: None,
        };
        Arc::new(StoreCredentials { current: ArcSwap::from_pointee(c) })
    }

    /// The standard AWS chain for `region`: fetched once now (an error if that fails), then refreshed
    /// `refresh_before` ahead of each expiry by a task that ends when the returned value is dropped.
    pub async fn aws_chain(region: &str, refresh_before: Duration) -> Result<Arc<StoreCredentials>, String> {
        let chain = aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
            .region(aws_config::Region::new(region.to_owned()))
            .build()
            .await;
        let first = tokio::time::timeout(FIRST_FETCH_TIMEOUT, fetch(&chain))
            .await
            .map_err(|_| "store credentials: the AWS credential chain did not answer within 30 s".to_owned())?
            .map_err(|e| format!("store credentials from the AWS credential chain: {e}"))?;
        tracing::info!(
            access_key_id = %first.access_key_id,
            session = first.session_token.is_some(),
            expires = ?first.expires,
            "store credentials from the AWS credential chain"
        );
        let next = refresh_at(&first, refresh_before, SystemTime::now());
        let creds = Arc::new(StoreCredentials { current: ArcSwap::from_pointee(first) });
        tokio::spawn(refresh(chain, Arc::downgrade(&creds), next, refresh_before));
        Ok(creds)
    }

    /// The credentials to sign with now.
    pub fn current(&self) -> Arc<Credentials> {
        self.current.load_full()
    }
}

async fn fetch(chain: &impl ProvideCredentials) -> Result<Credentials, String> {
    let c = chain.provide_credentials().await.map_err(|e| e.to_string())?;
    Ok(Credentials {
        access_key_id: c.access_key_id().to_owned(),
        secret: SecretString::new(c.secret_access_key().to_owned()),
        session_token: c.session_token().map(|t| SecretString::new(t.to_owned())),
        expires: c.expiry(),
    })
}

/// When to fetch new credentials: `refresh_before` ahead of the expiry, or after [`REREAD_UNEXPIRING`].
fn refresh_at(c: &Credentials, refresh_before: Duration, now: SystemTime) -> Duration {
    match c.expires {
        Some(exp) => exp.checked_sub(refresh_before).and_then(|at| at.duration_since(now).ok()).unwrap_or_default(),
        None => REREAD_UNEXPIRING,
    }
}

async fn refresh(
    chain: impl ProvideCredentials,
    creds: Weak<StoreCredentials>,
    mut wait: Duration,
    refresh_before: Duration,
) {
    let mut retry = FIRST_RETRY;
    loop {
        // At least a second apart, whatever the expiry says (an expiry shorter than `refresh_before`).
        tokio::time::sleep(wait.max(Duration::from_secs(1))).await;
        let Some(target) = creds.upgrade() else { return };
        match fetch(&chain).await {
            Ok(c) => {
                tracing::info!(access_key_id = %c.access_key_id, expires = ?c.expires, "store credentials refreshed");
                wait = refresh_at(&c, refresh_before, SystemTime::now());
                target.current.store(Arc::new(c));
                retry = FIRST_RETRY;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_s = retry.as_secs(), "store credentials refresh failed");
                crate::metrics::upstream_error("credentials");
                wait = retry;
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_refreshed_ahead_of_their_expiry_and_unexpiring_ones_hourly() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = |expires| Credentials {
            access_key_id: "ASIA".into(),
            secret: SecretString::new("s".into()),
            session_token: None,
            expires,
        };
        let five = Duration::from_secs(300);
        assert_eq!(refresh_at(&c(Some(now + Duration::from_secs(3600))), five, now), Duration::from_secs(3300));
        assert_eq!(refresh_at(&c(Some(now + Duration::from_secs(60))), five, now), Duration::ZERO, "due now");
        assert_eq!(refresh_at(&c(None), five, now), REREAD_UNEXPIRING);
        assert!(!format!("{:?}", c(None)).contains("\"s\""), "no secret in Debug");
    }
}
