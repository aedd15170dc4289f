//! The configuration as shipped: proxy.toml.example loads, and `check-config` reports every problem at once.

use std::path::Path;

#[test]
fn the_shipped_example_configuration_loads_and_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml.example");
    let c = s3crypt::Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listeners.len(), 2);
    assert!(matches!(c.upstream.endpoint, s3crypt::config::UpstreamEndpoint::Embedded { .. }));
}

#[test]
fn check_config_prints_every_problem_with_its_key_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        r#"
[server]
drain_timeout = "0s"
[[listeners]]
address = "localhost:99999"
protocol = "https"
[[clients]]
access_key_id = "ok-key"
[upstream]
endpoint = "s3.example.com"
[encryption.s3ec]
enabled = true
kms_keys = ["alias/app"]
aes_keyring_file = "missing-s3ec-keys.toml"
max_object_size = 0
list_buckets = ["Not A Bucket", "unscoped"]
"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3crypt"))
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stderr);
    for key in [
        "server.drain_timeout",
        "listeners[0].address",
        "tls.certificates",
        "clients[0].secret_access_key",
        "upstream.endpoint",
        "upstream.access_key_id",
        "encryption.s3ec.aes_keyring_file",
        "encryption.s3ec.max_object_size",
        "encryption.s3ec.list_buckets[0]",
        "encryption.s3ec.list_buckets[1]",
        "encryption.s3ec.scope",
        "encryption.s3ec.kms_keys[0]",
    ] {
        assert!(text.contains(key), "{key} missing from:\n{text}");
    }
    assert!(text.contains("fix:"), "{text}");

    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_s3crypt"))
        .args(["check-config", "--config"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml.example"))
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
}

#[test]
fn the_version_names_the_release_and_the_source_revision() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_s3crypt")).arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.trim(), format!("s3crypt {}", s3crypt::metrics::LONG_VERSION));
    assert!(text.contains(env!("CARGO_PKG_VERSION")) && text.contains("(revision "), "{text}");
}

#[test]
fn the_deployment_configurations_use_only_known_keys_and_valid_values() {
    // Secrets come from the environment in deploy/; only the files that exist on a cluster (certificates, the
    // keyring) may be missing here.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for rel in [
        "deploy/kubernetes/gateway/proxy.toml",
        "deploy/kubernetes/aws-gateway/proxy.toml",
        "deploy/kubernetes/sidecar/proxy.toml",
    ] {
        let text = std::fs::read_to_string(root.join(rel)).unwrap();
        match s3crypt::Config::from_toml(&text, root, &|_| Some("from-the-environment".to_owned())) {
            Ok(_) => {}
            Err(problems) => {
                let unexpected: Vec<_> = problems
                    .iter()
                    .filter(|p| !p.problem.contains("does not exist") && !p.problem.contains("No such file"))
                    .collect();
                assert!(unexpected.is_empty(), "{rel}: {unexpected:?}");
            }
        }
    }
}

#[test]
fn store_credentials_are_static_keys_or_the_aws_chain_never_both() {
    let base = "[[listeners]]\naddress = \"127.0.0.1:0\"\nprotocol = \"http\"\nplain_http = \"allow\"\n\
                [[clients]]\naccess_key_id = \"AKIDCLIENT\"\nsecret_access_key = \"s\"\n\
                [encryption]\nkeyring_file = \"k.toml\"\n[upstream]\nendpoint = \"https://s3.example.com\"\n";
    let dir = tempfile::tempdir().unwrap();
    s3crypt::crypto::keys::keygen(&dir.path().join("k.toml"), Some("k")).unwrap();
    let load = |extra: &str| {
        let text = format!("{base}{extra}");
        s3crypt::Config::from_toml(&text, dir.path(), &|_| None)
            .map(|c| format!("{:?}", c.upstream.credentials))
            .map_err(|problems| problems.iter().map(|p| p.key.clone()).collect::<Vec<_>>())
    };
    let chain = load("credentials = \"aws\"\n").unwrap_or_else(|keys| keys.join(","));
    assert!(chain.contains("AwsChain") && chain.contains("300s"), "{chain}");
    let both = load("credentials = \"aws\"\naccess_key_id = \"AKID\"\nsecret_access_key = \"x\"\n");
    assert!(both.unwrap_err().contains(&"upstream.credentials".to_owned()));
    let keys = load("access_key_id = \"AKID\"\nsecret_access_key = \"x\"\n").unwrap_or_else(|k| k.join(","));
    assert!(keys.contains("Static") && !keys.contains("\"x\""), "static keys, the secret not shown: {keys}");
}
