//! The `s3crypt` command line: `serve`, `check-config`, `keygen`, `keys`, `decrypt` (disaster recovery with no proxy
//! running), and the bulk key maintenance `rewrap` (rotation) and `migrate` (encrypt legacy objects in place).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::crypto::envelope::Envelope;
use crate::crypto::keys::{LocalKeyring, ObjectIdentity, keygen};
use crate::server::Server;

#[derive(Parser)]
#[command(version = crate::metrics::LONG_VERSION, about = "Transparent encrypting reverse proxy in front of S3")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate a configuration file and print every problem found.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Add a new random 256-bit key to a keyring (creating it, mode 600) and make it the current key.
    Keygen {
        #[arg(long)]
        keyring: PathBuf,
        /// Key id (default: k<date>-<random>).
        #[arg(long)]
        id: Option<String>,
    },
    /// Manage a keyring's keys for a rotation across replicas: list them with fingerprints (never the keys), add
    /// a staged key, promote it to current (docs/KEYS.md, "Rotating a keyring key across replicas").
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Copy a keyring (checked) to a file readable by its owner only: the init step for platforms that mount
    /// secrets group-readable (Kubernetes with fsGroup).
    InstallKeyring {
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        to: PathBuf,
    },
    /// Decrypt an object read straight from the store, without a running proxy: an s3crypt object (keyring), or
    /// an object of the AWS S3 Encryption Client (V2/V3; raw AES keys from --keyring, or KMS).
    Decrypt {
        /// The keyring (s3crypt objects), or the S3 Encryption Client's raw AES keys in the same file format.
        #[arg(long)]
        keyring: Option<PathBuf>,
        /// S3 Encryption Client objects: the object's `.instruction` file, if it keeps its key there.
        #[arg(long)]
        instruction_file: Option<PathBuf>,
        /// S3 Encryption Client objects wrapped by KMS: the KMS endpoint (default AWS's; credentials and region
        /// from the standard AWS chain).
        #[arg(long)]
        kms_endpoint: Option<String>,
        #[arg(long)]
        kms_region: Option<String>,
        /// The object's metadata: `aws s3api head-object` JSON output, a JSON map, or `name: value` lines.
        #[arg(long)]
        metadata: PathBuf,
        #[arg(long)]
        bucket: String,
        #[arg(long)]
        key: String,
        /// Ciphertext file (default: standard input).
        #[arg(long = "in")]
        input: Option<PathBuf>,
        /// Plaintext file, written only if the whole object verifies (default: standard output).
        #[arg(long = "out")]
        output: Option<PathBuf>,
    },
    /// Re-wrap the data keys of a bucket's objects under another key (key rotation): metadata-only server-side
    /// copies, no data re-encrypted. Safe to interrupt and run again.
    Rewrap {
        #[command(flatten)]
        bulk: BulkArgs,
        /// "keyring" (its current key) or "kms:<key ARN>"; default: each object's policy default.
        #[arg(long)]
        to: Option<String>,
    },
    /// Encrypt a bucket's legacy plaintext objects in place (objects the policy keeps plaintext are left alone).
    /// Safe to interrupt and run again.
    Migrate {
        #[command(flatten)]
        bulk: BulkArgs,
        /// Also re-encrypt objects written by the AWS S3 Encryption Client (V2/V3; KMS or the
        /// encryption.s3ec.aes_keyring_file keys), each read whole and verified first. Without it they are skipped.
        #[arg(long)]
        from_s3ec: bool,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Print each key's id, fingerprint and whether it is current.
    List {
        #[arg(long)]
        keyring: PathBuf,
    },
    /// Add a new random 256-bit key (creating the keyring, mode 600). Staged: it unwraps, but new data keys stay
    /// under the current key until `promote` (or `--current`). A new keyring's first key is current.
    Add {
        #[arg(long)]
        keyring: PathBuf,
        /// Key id (default: k<date>-<random>).
        #[arg(long)]
        id: Option<String>,
        /// Make it current at once (as `keygen`): only safe with a single replica.
        #[arg(long)]
        current: bool,
    },
    /// Make a key current: new data keys are wrapped under it.
    Promote {
        #[arg(long)]
        keyring: PathBuf,
        #[arg(long)]
        id: String,
    },
}

#[derive(clap::Args)]
struct BulkArgs {
    #[arg(long)]
    config: PathBuf,
    #[arg(long)]
    bucket: String,
    #[arg(long, default_value = "")]
    prefix: String,
    /// Only report what would change.
    #[arg(long)]
    dry_run: bool,
    /// Objects processed at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Stop after changing this many objects.
    #[arg(long)]
    limit: Option<u64>,
}

/// Runs the command line; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve { .. }) {
        init_logging(None);
    }
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: OK", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Keygen { keyring, id } => match keygen(&keyring, id.as_deref()) {
            Ok(id) => {
                println!("added key {id} to {} (now the current key)", keyring.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::Keys { action } => keys(action),
        Command::InstallKeyring { from, to } => match crate::crypto::keys::install_keyring(&from, &to) {
            Ok(current) => {
                println!("installed {} (mode 600, current key {current})", to.display());
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        },
        Command::Rewrap { bulk, to } => run_bulk(bulk, to, true, false),
        Command::Migrate { bulk, from_s3ec } => run_bulk(bulk, None, false, from_s3ec),
        Command::Decrypt {
            keyring,
            instruction_file,
            kms_endpoint,
            kms_region,
            metadata,
            bucket,
            key,
            input,
            output,
        } => {
            let kms = KmsTarget { endpoint: kms_endpoint, region: kms_region };
            let files = DecryptFiles {
                keyring: keyring.as_deref(),
                metadata: &metadata,
                instruction_file: instruction_file.as_deref(),
                input: input.as_deref(),
                output: output.as_deref(),
            };
            match decrypt_any(&files, &kms, &bucket, &key) {
                Ok(n) => {
                    eprintln!("s3crypt: decrypted {n} bytes; the object verified");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
            }
        }
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("s3crypt: {msg}");
    ExitCode::FAILURE
}

/// The configuration and a runtime, or the exit code that says why not (2: the configuration).
fn config_and_runtime(path: &Path) -> Result<(Config, tokio::runtime::Runtime), ExitCode> {
    let config = Config::load(path).map_err(|e| {
        eprint!("{e}");
        ExitCode::from(2)
    })?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.server.worker_threads > 0 {
        builder.worker_threads(config.server.worker_threads);
    }
    let runtime = builder.enable_all().build().map_err(|e| fail(&format!("cannot start the runtime: {e}")))?;
    Ok((config, runtime))
}

/// Logs to standard error, as text or JSON lines (`RUST_LOG` filters them; default `info`), and the audit log
/// (`crate::util::audit`, JSON lines, not filtered by `RUST_LOG`) to standard error, a file, or nowhere.
pub fn init_logging(logging: Option<&crate::config::LoggingSettings>) {
    use crate::config::{AuditSink, LogFormat};
    use crate::util::audit;
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::EnvFilter;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    type Boxed = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let json = logging.is_some_and(|l| l.format == LogFormat::Json);
    let main: Boxed = if json {
        tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr).with_filter(env).boxed()
    } else {
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_filter(env).boxed()
    };
    match logging.map(|l| &l.audit) {
        None | Some(AuditSink::Off) => {}
        Some(AuditSink::Stderr) => audit::install(Box::new(std::io::stderr())),
        Some(AuditSink::File(path)) => match audit::open_file(path) {
            Ok(f) => audit::install(Box::new(f)),
            Err(e) => {
                eprintln!("s3crypt: cannot open the audit log {}: {e}; auditing to standard error", path.display());
                audit::install(Box::new(std::io::stderr()));
            }
        },
    }
    let _ = tracing_subscriber::registry().with(main).try_init();
}

fn serve(path: &Path) -> ExitCode {
    let (config, runtime) = match config_and_runtime(path) {
        Ok(v) => v,
        Err(code) => return code,
    };
    init_logging(Some(&config.logging));
    runtime.block_on(async {
        let mut server = match Server::bind(config).await {
            Ok(s) => s,
            Err(e) => return fail(&e),
        };
        server.reload_on_sighup(path.to_owned());
        crate::server::announce(&server);
        server.run(crate::signal::shutdown()).await;
        crate::util::audit::flush();
        ExitCode::SUCCESS
    })
}

/// `s3crypt keys …`: what changed goes to standard output, never a key.
fn keys(action: KeysAction) -> ExitCode {
    use crate::crypto::keys::{add_key, list_keys, promote_key};
    let done = match action {
        KeysAction::List { keyring } => list_keys(&keyring).map(|keys| {
            println!("{:<24} {:<16} current", "id", "fingerprint");
            for k in keys {
                println!("{:<24} {:<16} {}", k.id, k.fingerprint, if k.current { "yes" } else { "" });
            }
        }),
        KeysAction::Add { keyring, id, current } => add_key(&keyring, id.as_deref(), current).and_then(|id| {
            let ring = LocalKeyring::load(&keyring)?;
            let state = if ring.current().id() == id { "current" } else { "staged, not current" };
            let fp = ring.keys().find(|k| k.id() == id).map(crate::crypto::keys::Kek::fingerprint).unwrap_or_default();
            println!("added key {id} (fingerprint {fp}, {state}) to {}", keyring.display());
            Ok(())
        }),
        KeysAction::Promote { keyring, id } => promote_key(&keyring, &id).map(|()| {
            println!("key {id} is now current in {}", keyring.display());
        }),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// `rewrap` / `migrate`: the proxy's core without listeners, progress on standard error every two seconds.
fn run_bulk(args: BulkArgs, to: Option<String>, rewrap: bool, from_s3ec: bool) -> ExitCode {
    use crate::proxy::maintenance::{BulkOptions, BulkReport, PROGRESS_EVERY};
    let (config, runtime) = match config_and_runtime(&args.config) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let name = if rewrap { "rewrap" } else { "migrate" };
    runtime.block_on(async move {
        let core = match crate::server::Core::start(&config).await {
            Ok(c) => c,
            Err(e) => return fail(&e),
        };
        let opts = BulkOptions {
            bucket: args.bucket,
            prefix: args.prefix,
            to,
            dry_run: args.dry_run,
            concurrency: args.concurrency,
            limit: args.limit,
            from_s3ec,
        };
        let report = Arc::new(BulkReport::default());
        let progress = {
            let report = Arc::clone(&report);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(PROGRESS_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    eprintln!("s3crypt {name}: {}", report.line());
                }
            })
        };
        let result = if rewrap {
            core.proxy.rewrap_bucket(&opts, &report).await
        } else {
            core.proxy.migrate_bucket(&opts, &report).await
        };
        progress.abort();
        let dry = if opts.dry_run { " (dry run: nothing written)" } else { "" };
        eprintln!("s3crypt {name}: done: {}{dry}", report.line());
        match result {
            Err(e) => fail(&e),
            Ok(()) if report.failed.load(std::sync::atomic::Ordering::Relaxed) > 0 => ExitCode::FAILURE,
            Ok(()) => ExitCode::SUCCESS,
        }
    })
}

/// Reads object metadata in the forms people have at hand, as lowercase `x-amz-meta-*` header names.
pub fn parse_metadata(text: &str) -> Result<Vec<(String, String)>, String> {
    let normalise = |k: &str| {
        let k = k.trim().to_ascii_lowercase();
        if k.starts_with("x-amz-meta-") { k } else { format!("x-amz-meta-{k}") }
    };
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(trimmed).map_err(|e| format!("metadata JSON: {e}"))?;
        let map = v.get("Metadata").unwrap_or(&v);
        let obj = map.as_object().ok_or("metadata JSON must be an object (or head-object output)")?;
        return Ok(obj.iter().filter_map(|(k, v)| v.as_str().map(|s| (normalise(k), s.to_owned()))).collect());
    }
    Ok(text.lines().filter_map(|l| l.split_once(':')).map(|(k, v)| (normalise(k), v.trim().to_owned())).collect())
}

/// Where `decrypt` reads and writes.
pub struct DecryptFiles<'a> {
    pub keyring: Option<&'a Path>,
    pub metadata: &'a Path,
    pub instruction_file: Option<&'a Path>,
    pub input: Option<&'a Path>,
    pub output: Option<&'a Path>,
}

/// The KMS that `decrypt` asks for S3 Encryption Client objects.
pub struct KmsTarget {
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

/// `s3crypt decrypt`: an s3crypt object, or an object of the AWS S3 Encryption Client.
pub fn decrypt_any(files: &DecryptFiles<'_>, kms: &KmsTarget, bucket: &str, key: &str) -> Result<u64, String> {
    let text = std::fs::read_to_string(files.metadata).map_err(|e| format!("{}: {e}", files.metadata.display()))?;
    let pairs = parse_metadata(&text)?;
    let mut s3ec_map: std::collections::BTreeMap<String, String> = pairs
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("x-amz-meta-")?.to_owned(), v.clone())))
        .filter(|(k, _)| crate::crypto::s3ec::CONTENT_KEYS.contains(&k.as_str()))
        .collect();
    if let Some(f) = files.instruction_file {
        let bytes = std::fs::read(f).map_err(|e| format!("{}: {e}", f.display()))?;
        s3ec_map = crate::crypto::s3ec::merge_instruction_file(&s3ec_map, &bytes).map_err(|e| e.0.to_owned())?;
    }
    let s3ec = crate::crypto::s3ec::Metadata::parse(&s3ec_map).map_err(|e| e.0.to_owned())?;
    match s3ec {
        Some(meta) => decrypt_s3ec(&meta, files, kms),
        None => {
            let keyring = files.keyring.ok_or("--keyring is needed for s3crypt objects")?;
            decrypt(keyring, files.metadata, bucket, key, files.input, files.output)
        }
    }
}

/// An S3 Encryption Client object: read whole (it is one GCM message), written out only once it verified.
fn decrypt_s3ec(
    meta: &crate::crypto::s3ec::Metadata,
    files: &DecryptFiles<'_>,
    kms: &KmsTarget,
) -> Result<u64, String> {
    use crate::crypto::s3ec::Wrap;
    let dek = match meta.wrap {
        Wrap::AesGcm => {
            let path = files.keyring.ok_or("--keyring (the S3 Encryption Client's AES keys) is needed")?;
            Arc::new(
                meta.unwrap_aes(&LocalKeyring::load(path)?)
                    .ok_or("no key in the keyring unwraps this object's data key")?,
            )
        }
        Wrap::KmsContext => {
            let settings = crate::config::KmsSettings {
                region: kms.region.clone(),
                endpoint: kms.endpoint.clone(),
                credentials: None,
                default_key: None,
                allowed_keys: Vec::new(),
                readable_keys: Vec::new(),
                bucket_key: false,
                bucket_key_uses: 1,
                cache_ttl: std::time::Duration::from_secs(1),
                cache_entries: 1,
                timeout: crate::config::DEFAULT_KMS_TIMEOUT,
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the runtime: {e}"))?;
            let key = runtime.block_on(async {
                let provider = crate::crypto::kms::KmsProvider::new(&settings).await;
                provider.decrypt_reporting(None, &meta.edk, &meta.context).await.map(|(k, _)| k)
            });
            key.map_err(|e| format!("KMS did not unwrap the data key: {}", crate::error::ProxyError::from(e).code()))?
        }
    };
    let mut buf = Vec::new();
    match files.input {
        Some(p) => buf = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?,
        None => {
            std::io::stdin().lock().read_to_end(&mut buf).map_err(|e| format!("standard input: {e}"))?;
        }
    }
    meta.plaintext_len(buf.len() as u64).map_err(|e| e.0.to_owned())?;
    meta.decrypt_in_place(&dek, &mut buf).map_err(|e| e.0.to_owned())?;
    match files.output {
        None => std::io::stdout().lock().write_all(&buf).map_err(|e| format!("standard output: {e}"))?,
        Some(p) => std::fs::write(p, &buf).map_err(|e| format!("{}: {e}", p.display()))?,
    }
    Ok(buf.len() as u64)
}

/// `s3crypt decrypt`: unwraps the data key with the keyring and decrypts the object.
pub fn decrypt(
    keyring: &Path,
    metadata: &Path,
    bucket: &str,
    key: &str,
    input: Option<&Path>,
    output: Option<&Path>,
) -> Result<u64, String> {
    let ring = LocalKeyring::load(keyring)?;
    let text = std::fs::read_to_string(metadata).map_err(|e| format!("{}: {e}", metadata.display()))?;
    let pairs = parse_metadata(&text)?;
    let env = Envelope::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| format!("the metadata is not a valid s3crypt envelope: {}", e.0))?
        .ok_or("the metadata has no s3crypt envelope: the object is not encrypted by s3crypt")?;
    let kek = ring
        .by_reference(&env.kek_ref)
        .ok_or_else(|| format!("the keyring has no key {} (the object was encrypted under it)", env.kek_ref))?;
    let id = ObjectIdentity { bucket: bucket.to_owned(), key: key.to_owned() };
    let dek = kek
        .unwrap(&env.wrapped_dek, &env.wrap_aad(&id))
        .ok_or("the data key does not unwrap: wrong bucket or key name, or the metadata was altered")?;
    let layout = env.layout().unwrap_or_else(|e| {
        eprintln!("warning: {}; decrypting it in order (trailing parts dropped by the store go unnoticed)", e.0);
        crate::crypto::stream::Layout::Unsealed
    });
    let mut reader: Box<dyn Read> = match input {
        Some(p) => {
            Box::new(std::io::BufReader::new(std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?))
        }
        None => Box::new(std::io::stdin().lock()),
    };
    match output {
        None => {
            let mut out = std::io::stdout().lock();
            crate::crypto::stream::decrypt_object(Arc::new(dek), env.segment_size, layout, &mut reader, &mut out)
        }
        Some(p) => {
            let partial = p.with_extension("partial");
            let mut file = std::io::BufWriter::new(
                std::fs::File::create(&partial).map_err(|e| format!("{}: {e}", partial.display()))?,
            );
            let result =
                crate::crypto::stream::decrypt_object(Arc::new(dek), env.segment_size, layout, &mut reader, &mut file);
            let flushed = file.flush().map_err(|e| format!("{}: {e}", partial.display()));
            match result.and_then(|n| flushed.map(|()| n)) {
                Ok(n) => {
                    std::fs::rename(&partial, p).map_err(|e| format!("{}: {e}", p.display()))?;
                    Ok(n)
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&partial);
                    Err(e)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_read_from_head_object_json_plain_maps_and_header_lines() {
        let head = r#"{"ContentLength": 5, "Metadata": {"s3crypt-v": "1", "s3crypt-seg": "65536"}}"#;
        let m = parse_metadata(head).unwrap();
        assert!(m.contains(&("x-amz-meta-s3crypt-v".into(), "1".into())));
        let lines = "X-Amz-Meta-S3crypt-V: 1\nx-amz-meta-s3crypt-seg: 65536\n";
        let m = parse_metadata(lines).unwrap();
        assert!(m.contains(&("x-amz-meta-s3crypt-seg".into(), "65536".into())));
    }
}
