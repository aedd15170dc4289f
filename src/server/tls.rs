//! TLS for the client-facing listeners: PEM certificates chosen by SNI, reloaded when their files change
//! (cert-manager rotates them) without touching open connections, and a generated development CA plus
//! certificate when dev mode has none configured.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A certificate's files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

struct Entry {
    files: CertFiles,
    key: Arc<CertifiedKey>,
    /// SHA-256 of the file contents last loaded, to notice changes (the private key's PEM is not kept).
    loaded: [u8; 32],
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry").field("files", &self.files).field("key", &"<redacted>").finish()
    }
}

/// The PEM files as read: the key's bytes are wiped when dropped.
struct Contents {
    cert: Vec<u8>,
    key: zeroize::Zeroizing<Vec<u8>>,
}

impl Contents {
    fn fingerprint(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update((self.cert.len() as u64).to_be_bytes());
        h.update(&self.cert);
        h.update(self.key.as_slice());
        h.finalize().into()
    }
}

/// The certificates served, by SNI; the first one is the default.
#[derive(Debug)]
pub struct CertStore {
    entries: RwLock<Arc<Vec<Entry>>>,
}

fn load_pair(cert_pem: &[u8], key_pem: &[u8], files: &CertFiles) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", files.cert_file.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate found", files.cert_file.display()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| format!("{}: {e}", files.key_file.display()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let ck = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| format!("{} / {}: {e}", files.cert_file.display(), files.key_file.display()))?;
    Ok(Arc::new(ck))
}

fn read_files(files: &CertFiles) -> Result<Contents, String> {
    let cert = std::fs::read(&files.cert_file).map_err(|e| format!("{}: {e}", files.cert_file.display()))?;
    let key = std::fs::read(&files.key_file).map_err(|e| format!("{}: {e}", files.key_file.display()))?;
    Ok(Contents { cert, key: zeroize::Zeroizing::new(key) })
}

impl CertStore {
    /// Loads every certificate; any failure is an error naming the file.
    pub fn load(files: &[CertFiles]) -> Result<CertStore, String> {
        let mut entries = Vec::with_capacity(files.len());
        for f in files {
            let contents = read_files(f)?;
            let key = load_pair(&contents.cert, &contents.key, f)?;
            entries.push(Entry { files: f.clone(), key, loaded: contents.fingerprint() });
        }
        if entries.is_empty() {
            return Err("no TLS certificate configured".into());
        }
        let store = CertStore { entries: RwLock::new(Arc::new(entries)) };
        store.export_expiry();
        Ok(store)
    }

    /// Sets the expiry gauge to the earliest `notAfter` of the leaf certificates served.
    fn export_expiry(&self) {
        let earliest = self
            .snapshot()
            .iter()
            .filter_map(|e| e.key.cert.first())
            .filter_map(|leaf| x509_parser::parse_x509_certificate(leaf.as_ref()).ok())
            .map(|(_, c)| c.validity().not_after.timestamp())
            .min();
        if let Some(t) = earliest {
            crate::metrics::certificate_expiry(t);
        }
    }

    fn snapshot(&self) -> Arc<Vec<Entry>> {
        match self.entries.read() {
            Ok(g) => Arc::clone(&g),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Re-reads the files; swaps in certificates whose files changed and parse. Returns how many changed.
    /// A file that fails to load keeps the previous certificate (and is reported).
    pub fn reload(&self) -> (usize, Vec<String>) {
        let current = self.snapshot();
        let mut changed = 0;
        let mut errors = Vec::new();
        let mut next = Vec::with_capacity(current.len());
        for e in current.iter() {
            match read_files(&e.files) {
                Ok(contents) if contents.fingerprint() != e.loaded => {
                    match load_pair(&contents.cert, &contents.key, &e.files) {
                        Ok(key) => {
                            changed += 1;
                            next.push(Entry { files: e.files.clone(), key, loaded: contents.fingerprint() });
                            continue;
                        }
                        Err(err) => errors.push(err),
                    }
                }
                Ok(_) => {}
                Err(err) => errors.push(err),
            }
            next.push(Entry { files: e.files.clone(), key: Arc::clone(&e.key), loaded: e.loaded });
        }
        if changed > 0 {
            match self.entries.write() {
                Ok(mut g) => *g = Arc::new(next),
                Err(poisoned) => *poisoned.into_inner() = Arc::new(next),
            }
            self.export_expiry();
        }
        (changed, errors)
    }
}

fn valid_for(key: &CertifiedKey, name: &str) -> bool {
    let Some(leaf) = key.cert.first() else {
        return false;
    };
    let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else {
        return false;
    };
    let Ok(sn) = ServerName::try_from(name) else {
        return false;
    };
    ee.verify_is_valid_for_subject_name(&sn).is_ok()
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let entries = self.snapshot();
        if let Some(name) = hello.server_name()
            && let Some(e) = entries.iter().find(|e| valid_for(&e.key, name))
        {
            return Some(Arc::clone(&e.key));
        }
        entries.first().map(|e| Arc::clone(&e.key))
    }
}

/// The rustls server configuration: TLS 1.2 and 1.3, ALPN h2 and http/1.1, certificates from `store`.
pub fn server_config(store: Arc<CertStore>) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(store);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Polls the certificate files every `interval` until `stop` fires.
pub async fn reload_loop(store: Arc<CertStore>, interval: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let (changed, errors) = store.reload();
        if changed > 0 {
            tracing::info!(certificates.changed = changed, "TLS certificates reloaded");
        }
        for e in errors {
            tracing::warn!(error = %e, "TLS certificate reload failed; keeping the previous certificate");
        }
    }
}

/// Paths of a generated development CA and server certificate.
#[derive(Debug, Clone)]
pub struct DevCertificate {
    pub ca_file: PathBuf,
    pub files: CertFiles,
}

/// Creates (or reuses) a development CA and a server certificate for `names` in `dir`.
pub fn ensure_dev_certificate(dir: &Path, names: &[String]) -> Result<DevCertificate, String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_file = dir.join("ca.pem");
    let files = CertFiles { cert_file: dir.join("cert.pem"), key_file: dir.join("key.pem") };
    let reusable = |files: &CertFiles| {
        let Ok(contents) = read_files(files) else {
            return false;
        };
        let Ok(key) = load_pair(&contents.cert, &contents.key, files) else {
            return false;
        };
        ca_file.is_file()
            && names.iter().all(|n| {
                let probe = n.strip_prefix("*.").map_or_else(|| n.clone(), |rest| format!("wildcard-probe.{rest}"));
                probe.parse::<std::net::IpAddr>().is_ok() || valid_for(&key, &probe)
            })
    };
    if reusable(&files) {
        return Ok(DevCertificate { ca_file, files });
    }
    let err = |e: rcgen::Error| format!("generating the development certificate: {e}");
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "s3crypt development CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(err)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut leaf_params = CertificateParams::new(names.to_vec()).map_err(err)?;
    leaf_params.distinguished_name.push(DnType::CommonName, "s3crypt development certificate");
    let leaf_key = KeyPair::generate().map_err(err)?;
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).map_err(err)?;

    write_file(&ca_file, ca_cert.pem().as_bytes(), 0o644)?;
    write_file(&files.cert_file, format!("{}{}", leaf.pem(), ca_cert.pem()).as_bytes(), 0o644)?;
    write_file(&files.key_file, leaf_key.serialize_pem().as_bytes(), 0o600)?;
    Ok(DevCertificate { ca_file, files })
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(data).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dev_certificate_is_generated_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "*.s3.local".to_owned()];
        let a = ensure_dev_certificate(dir.path(), &names).unwrap();
        let first = std::fs::read(&a.files.cert_file).unwrap();
        let b = ensure_dev_certificate(dir.path(), &names).unwrap();
        assert_eq!(first, std::fs::read(&b.files.cert_file).unwrap());
        let store = CertStore::load(std::slice::from_ref(&a.files)).unwrap();
        let key = &store.snapshot()[0].key;
        assert!(valid_for(key, "localhost"));
        assert!(valid_for(key, "bucket.s3.local"));
        assert!(!valid_for(key, "example.com"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&a.files.key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the private key is private");
    }

    #[test]
    fn changed_files_are_reloaded_and_broken_ones_keep_the_old_certificate() {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let a = ensure_dev_certificate(d1.path(), &["one.test".to_owned()]).unwrap();
        let b = ensure_dev_certificate(d2.path(), &["two.test".to_owned()]).unwrap();
        let store = CertStore::load(std::slice::from_ref(&a.files)).unwrap();
        assert_eq!(store.reload().0, 0);
        std::fs::copy(&b.files.cert_file, &a.files.cert_file).unwrap();
        std::fs::copy(&b.files.key_file, &a.files.key_file).unwrap();
        assert_eq!(store.reload().0, 1);
        assert!(valid_for(&store.snapshot()[0].key, "two.test"));
        std::fs::write(&a.files.key_file, "garbage").unwrap();
        let (changed, errors) = store.reload();
        assert_eq!((changed, errors.len()), (0, 1));
        assert!(valid_for(&store.snapshot()[0].key, "two.test"));
    }
}
