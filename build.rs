//! The build's source revision, for `s3crypt --version` and the `s3crypt_build_info` metric: `S3CRYPT_REVISION`
//! when the builder sets it (an image built without `.git`), else `git rev-parse --short=12 HEAD`, else "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=S3CRYPT_REVISION");
    for f in [".git/HEAD", ".git/refs", ".git/packed-refs"] {
        if std::path::Path::new(f).exists() {
            println!("cargo:rerun-if-changed={f}");
        }
    }
    let revision = std::env::var("S3CRYPT_REVISION").ok().filter(|r| !r.is_empty()).or_else(|| {
        let out = Command::new("git").args(["rev-parse", "--short=12", "HEAD"]).output().ok()?;
        let rev = String::from_utf8(out.stdout).ok()?.trim().to_owned();
        (out.status.success() && !rev.is_empty()).then_some(rev)
    });
    println!("cargo:rustc-env=S3CRYPT_REVISION={}", revision.unwrap_or_else(|| "unknown".to_owned()));
}
