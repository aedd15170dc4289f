//! Secret strings: zeroized on drop, redacted in `Debug`, never serialised; secret files with safe modes.

use std::fmt;
use std::path::Path;

use zeroize::Zeroizing;

/// A secret string (client secret key, upstream secret key).
#[derive(Clone)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    pub fn new(s: String) -> Self {
        SecretString(Zeroizing::new(s))
    }

    /// The secret itself. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

/// Reads a secret from a file, refusing files that others may read or anyone but the owner may change.
///
/// Group read is allowed (Kubernetes `fsGroup` mounts secrets 0440); world access and group write are not.
pub fn read_secret_file(path: &Path) -> Result<SecretString, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o027 != 0 {
        return Err(format!(
            "{} has mode {:o}: secret files must not be world-accessible or group-writable (chmod 600)",
            path.display(),
            mode & 0o777
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let trimmed = text.trim_end_matches(['\n', '\r']).to_owned();
    drop(Zeroizing::new(text));
    Ok(SecretString::new(trimmed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_secret() {
        let s = SecretString::new("hunter2".into());
        assert_eq!(format!("{s:?}"), "[REDACTED]");
    }

    #[test]
    fn world_readable_secret_files_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        std::fs::write(&p, "abc\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_secret_file(&p).unwrap_err().contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&p).unwrap().expose(), "abc");
    }
}
