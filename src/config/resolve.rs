//! From the raw TOML sections to the runtime configuration: one `TryFrom` per section, each returning every
//! problem it finds; `Config`'s own `TryFrom` runs them all, adds the rules that span sections, and reports every
//! problem of every section at once.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use super::check::{Ctx, In, Problems};
use super::keys::EncryptionSettings;
use super::{
    AuditSink, ClientCredential, Config, CredentialSource, DEFAULT_MAX_COPY_SIZE, EMBEDDED_ENDPOINT, Listener,
    LoggingSettings, MAX_WORKER_THREADS, Mode, PlainHttpPolicy, Problem, Protocol, RawCertificate, RawClient,
    RawConfig, RawEmbedded, RawListener, RawLogging, RawServer, RawTls, RawUpstream, ServerSettings, TlsSettings,
    UpstreamCredentials, UpstreamEndpoint, UpstreamSettings,
};

impl TryFrom<In<'_, RawConfig>> for Config {
    type Error = Vec<Problem>;

    fn try_from(r: In<'_, RawConfig>) -> Result<Config, Vec<Problem>> {
        let (raw, ctx) = (r.raw, r.ctx);
        let mut p = Problems::default();
        let server = p.take(ServerSettings::try_from(&raw.server));
        let listeners = p.take(Listeners::try_from(raw.listeners.as_slice()));
        let tls = p.take(TlsSettings::try_from(In::new(&raw.tls, ctx)));
        let has_https = raw.listeners.iter().any(|l| l.protocol == Protocol::Https);
        if has_https && raw.tls.certificates.is_empty() && ctx.mode == Mode::Production {
            p.push(
                "tls.certificates",
                "an https listener needs a certificate in production mode",
                "add [[tls.certificates]] with cert_file and key_file, or set server.mode = \"dev\" to generate a \
                 self-signed certificate",
            );
        }
        let clients = p.take(Clients::try_from(In::new(raw.clients.as_slice(), ctx)));
        let upstream = p.take(UpstreamSettings::try_from(In::new(&(&raw.upstream, &raw.embedded), ctx)));
        let encryption = p.take(EncryptionSettings::try_from(In::new(&raw.encryption, ctx)));
        let logging = LoggingSettings::from(In::new(&raw.logging, ctx));
        let config = match (server, listeners, tls, clients, upstream, encryption) {
            (Some(mut server), Some(listeners), Some(tls), Some(clients), Some(upstream), Some(mut encryption)) => {
                let s = &raw.server;
                let sizing = super::capacity::size(
                    s.memory_budget,
                    super::capacity::cgroup_memory_limit(),
                    s.max_inflight_requests,
                    s.max_connections,
                    &mut encryption.s3ec,
                    &mut p,
                );
                server.memory_budget = sizing.budget;
                server.max_inflight_requests = sizing.max_inflight;
                server.max_connections = sizing.max_connections;
                Some(Config {
                    server,
                    listeners: listeners.0,
                    tls,
                    clients: clients.credentials,
                    client_rates: clients.rates,
                    upstream,
                    encryption,
                    admin: raw.admin.address,
                    logging,
                })
            }
            _incomplete => None,
        };
        p.finish(config, "(file)")
    }
}

impl TryFrom<&RawServer> for ServerSettings {
    type Error = Vec<Problem>;

    fn try_from(s: &RawServer) -> Result<ServerSettings, Vec<Problem>> {
        let mut p = Problems::default();
        if s.region.is_empty() {
            p.push("server.region", "empty", "set the region clients sign for, e.g. \"us-east-1\"");
        }
        for (i, d) in s.base_domains.iter().enumerate() {
            if d.is_empty() || d.contains('/') || d.contains(':') || d.starts_with('.') {
                p.push(
                    format!("server.base_domains[{i}]"),
                    format!("{d:?} is not a bare host name"),
                    "write a domain such as \"s3.example.com\" (no scheme, port or leading dot)",
                );
            }
        }
        p.duration("server.drain_timeout", s.drain_timeout);
        p.duration("server.store_probe_interval", s.store_probe_interval);
        p.duration("server.tls_handshake_timeout", s.tls_handshake_timeout);
        p.duration("server.header_read_timeout", s.header_read_timeout);
        p.duration("server.body_read_timeout", s.body_read_timeout);
        if s.max_connections == Some(0) || s.max_headers < 16 {
            p.push(
                "server.max_connections",
                "max_connections must be at least 1 and max_headers at least 16",
                "use the defaults (10000 and 100)",
            );
        }
        if s.worker_threads > MAX_WORKER_THREADS {
            p.push(
                "server.worker_threads",
                format!("{} is more than {MAX_WORKER_THREADS}", s.worker_threads),
                "use 0 (one per core) or the number of cores the proxy may use",
            );
        }
        let settings = ServerSettings {
            mode: s.mode,
            region: s.region.clone(),
            base_domains: s.base_domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            drain_timeout: s.drain_timeout,
            shutdown_delay: s.shutdown_delay,
            store_outage_tolerance: s.store_outage_tolerance,
            store_probe_interval: s.store_probe_interval,
            // Sized with the rest of the configuration (`capacity::size`).
            memory_budget: None,
            max_inflight_requests: 0,
            tls_handshake_timeout: s.tls_handshake_timeout,
            header_read_timeout: s.header_read_timeout,
            body_read_timeout: s.body_read_timeout,
            allow_sigv2_presigned: s.allow_sigv2_presigned,
            slow_response_keepalive: s.slow_response_keepalive,
            bucket_settings_refresh: s.bucket_settings_refresh,
            max_connections: s.max_connections.unwrap_or(super::DEFAULT_MAX_CONNECTIONS),
            max_headers: s.max_headers,
            worker_threads: s.worker_threads,
            auth_failures_per_address: s.auth_failures_per_address,
        };
        p.finish(Some(settings), "server")
    }
}

/// The `[[listeners]]`, resolved.
pub(super) struct Listeners(pub Vec<Listener>);

impl TryFrom<&[RawListener]> for Listeners {
    type Error = Vec<Problem>;

    fn try_from(raw: &[RawListener]) -> Result<Listeners, Vec<Problem>> {
        let mut p = Problems::default();
        if raw.is_empty() {
            p.push(
                "listeners",
                "no listener configured",
                "add a [[listeners]] table with address = \"0.0.0.0:8443\" and protocol = \"https\"",
            );
        }
        let first_https_port = raw
            .iter()
            .filter(|l| l.protocol == Protocol::Https)
            .find_map(|l| l.address.parse::<SocketAddr>().ok())
            .map(|a| a.port());
        let mut listeners = Vec::new();
        for (i, l) in raw.iter().enumerate() {
            let key = format!("listeners[{i}]");
            let address = l.address.parse::<SocketAddr>().ok();
            if address.is_none() {
                p.push(
                    format!("{key}.address"),
                    format!("{:?} is not an IP:port socket address", l.address),
                    "write e.g. \"0.0.0.0:8443\" or \"127.0.0.1:8080\"",
                );
            }
            if l.protocol == Protocol::Https && (l.plain_http.is_some() || l.redirect_port.is_some()) {
                p.push(
                    &key,
                    "plain_http / redirect_port only apply to protocol = \"http\"",
                    "remove them from the https listener",
                );
            }
            let plain_http = l.plain_http.unwrap_or_default();
            if l.protocol == Protocol::Http
                && plain_http == PlainHttpPolicy::Redirect
                && l.redirect_port.is_none()
                && first_https_port.is_none()
            {
                p.push(
                    format!("{key}.redirect_port"),
                    "redirect needs an https port and no https listener is configured",
                    "set redirect_port (e.g. 443) or add an https listener",
                );
            }
            if let Some(address) = address {
                let redirect_port = l.redirect_port.or(first_https_port);
                listeners.push(Listener { address, protocol: l.protocol, plain_http, redirect_port });
            }
        }
        p.finish(Some(Listeners(listeners)), "listeners")
    }
}

impl TryFrom<In<'_, RawTls>> for TlsSettings {
    type Error = Vec<Problem>;

    fn try_from(r: In<'_, RawTls>) -> Result<TlsSettings, Vec<Problem>> {
        let (tls, base) = (r.raw, r.ctx.base);
        let mut p = Problems::default();
        let certificates: Vec<RawCertificate> = tls
            .certificates
            .iter()
            .map(|c| RawCertificate { cert_file: base.join(&c.cert_file), key_file: base.join(&c.key_file) })
            .collect();
        for (i, c) in certificates.iter().enumerate() {
            for (what, path) in [("cert_file", &c.cert_file), ("key_file", &c.key_file)] {
                if !path.is_file() {
                    p.push(
                        format!("tls.certificates[{i}].{what}"),
                        format!("{} does not exist or is not a file", path.display()),
                        "point at a PEM file",
                    );
                }
            }
        }
        p.duration("tls.reload_interval", tls.reload_interval);
        let settings = TlsSettings {
            certificates,
            self_signed_dir: base.join(&tls.self_signed_dir),
            reload_interval: tls.reload_interval,
        };
        p.finish(Some(settings), "tls")
    }
}

/// The `[[clients]]`, resolved: credentials, and request rates by access key id.
pub(super) struct Clients {
    pub credentials: Vec<ClientCredential>,
    pub rates: HashMap<String, u32>,
}

impl TryFrom<In<'_, [RawClient]>> for Clients {
    type Error = Vec<Problem>;

    fn try_from(r: In<'_, [RawClient]>) -> Result<Clients, Vec<Problem>> {
        let mut p = Problems::default();
        let mut clients = Clients { credentials: Vec::new(), rates: HashMap::new() };
        let mut seen = HashSet::new();
        if r.raw.is_empty() {
            p.push(
                "clients",
                "no client credentials configured: nobody could authenticate",
                "add a [[clients]] table with access_key_id and secret_access_key (or _env / _file)",
            );
        }
        for (i, c) in r.raw.iter().enumerate() {
            let key = format!("clients[{i}]");
            if c.access_key_id.len() < 3 || !c.access_key_id.chars().all(|ch| ch.is_ascii_graphic() && ch != '/') {
                p.push(
                    format!("{key}.access_key_id"),
                    "must be at least 3 printable ASCII characters without '/'",
                    "use e.g. \"AKIAEXAMPLE123\"",
                );
            }
            if !seen.insert(c.access_key_id.clone()) {
                p.push(
                    format!("{key}.access_key_id"),
                    format!("{:?} is configured twice", c.access_key_id),
                    "give each client its own access key id",
                );
            }
            if c.buckets.as_ref().is_some_and(Vec::is_empty) {
                p.push(
                    format!("{key}.buckets"),
                    "an empty list would deny every bucket",
                    "list at least one bucket, or remove the key to allow all buckets",
                );
            }
            let secret = p.secret(
                &format!("{key}.secret_access_key"),
                &c.secret_access_key,
                &c.secret_access_key_env,
                &c.secret_access_key_file,
                r.ctx,
            );
            match c.requests_per_second {
                Some(0) => p.push(
                    format!("{key}.requests_per_second"),
                    "0 would refuse every request",
                    "give a positive number, or remove the key for no limit",
                ),
                Some(rps) => {
                    clients.rates.insert(c.access_key_id.clone(), rps);
                }
                None => {}
            }
            if let Some(secret) = secret {
                clients.credentials.push(ClientCredential {
                    access_key_id: c.access_key_id.clone(),
                    secret_access_key: secret,
                    buckets: c.buckets.as_ref().map(|b| b.iter().cloned().collect()),
                    bucket_admin: c.bucket_admin,
                });
            }
        }
        p.finish(Some(clients), "clients")
    }
}

impl TryFrom<In<'_, (&RawUpstream, &RawEmbedded)>> for UpstreamSettings {
    type Error = Vec<Problem>;

    fn try_from(r: In<'_, (&RawUpstream, &RawEmbedded)>) -> Result<UpstreamSettings, Vec<Problem>> {
        let ((u, embedded), ctx) = (*r.raw, r.ctx);
        let mut p = Problems::default();
        let (endpoint, credentials) = if u.endpoint == EMBEDDED_ENDPOINT {
            (embedded_endpoint(u, embedded, ctx, &mut p), None)
        } else {
            remote_endpoint(u, ctx, &mut p)
        };
        if u.region.is_empty() {
            p.push("upstream.region", "empty", "set the upstream region, e.g. \"us-east-1\"");
        }
        if !(5 * 1024 * 1024..=DEFAULT_MAX_COPY_SIZE).contains(&u.max_copy_size) {
            p.push(
                "upstream.max_copy_size",
                format!("{} is outside 5 MiB ..= 5 GiB", u.max_copy_size),
                "set the store's CopyObject limit in bytes, e.g. 5368709120",
            );
        }
        if crate::s3::validate_bucket_name(&u.system_bucket, false).is_err() {
            p.push(
                "upstream.system_bucket",
                format!("{:?} is not a valid bucket name", u.system_bucket),
                "name a bucket (3-63 lowercase letters, digits, '-', '.') the proxy may create and use for its records",
            );
        }
        let ca_file = u.ca_file.as_ref().map(|f| ctx.base.join(f));
        if let Some(ca) = &ca_file
            && !ca.is_file()
        {
            p.push("upstream.ca_file", format!("{} does not exist", ca.display()), "point at a PEM CA bundle");
        }
        p.duration("upstream.connect_timeout", u.connect_timeout);
        p.duration("upstream.response_timeout", u.response_timeout);
        p.duration("upstream.pool_idle_timeout", u.pool_idle_timeout);
        let settings = endpoint.map(|endpoint| UpstreamSettings {
            endpoint,
            region: u.region.clone(),
            addressing: u.addressing,
            credentials,
            ca_file,
            resolve_to: u.resolve_to,
            upload_checksum: u.upload_checksum,
            connect_timeout: u.connect_timeout,
            response_timeout: u.response_timeout,
            pool_idle_timeout: u.pool_idle_timeout,
            pool_max_idle_per_host: u.pool_max_idle_per_host,
            max_copy_size: u.max_copy_size,
            system_bucket: u.system_bucket.clone(),
        });
        p.finish(settings, "upstream.endpoint")
    }
}

/// `endpoint = "embedded"`: the `[embedded]` store, whose credentials are generated at start.
fn embedded_endpoint(u: &RawUpstream, e: &RawEmbedded, ctx: Ctx<'_>, p: &mut Problems) -> Option<UpstreamEndpoint> {
    if !cfg!(feature = "embedded") {
        p.push(
            "upstream.endpoint",
            "this build has no embedded store (cargo feature \"embedded\" is off)",
            "rebuild with default features or point at a real S3 endpoint",
        );
    }
    let has_creds = u.access_key_id.is_some()
        || u.access_key_id_env.is_some()
        || u.secret_access_key.is_some()
        || u.secret_access_key_env.is_some()
        || u.secret_access_key_file.is_some();
    if has_creds {
        p.push(
            "upstream.access_key_id",
            "credentials are generated for the embedded store and must not be set",
            "remove the upstream credential keys, or set endpoint to a real S3 URL",
        );
    }
    for (i, b) in e.buckets.iter().enumerate() {
        if crate::s3::validate_bucket_name(b, true).is_err() {
            p.push(
                format!("embedded.buckets[{i}]"),
                format!("{b:?} is not a valid bucket name"),
                "use 3-63 lowercase letters, digits, '.' and '-'",
            );
        }
    }
    Some(UpstreamEndpoint::Embedded { data_dir: ctx.base.join(&e.data_dir), buckets: e.buckets.clone() })
}

/// A real S3 endpoint and the credentials the proxy signs with.
fn remote_endpoint(
    u: &RawUpstream,
    ctx: Ctx<'_>,
    p: &mut Problems,
) -> (Option<UpstreamEndpoint>, Option<UpstreamCredentials>) {
    let endpoint = match u.endpoint.parse::<http::Uri>() {
        Ok(uri)
            if matches!(uri.scheme_str(), Some("http") | Some("https"))
                && uri.host().is_some()
                && uri.path() == "/"
                && uri.query().is_none() =>
        {
            Some(UpstreamEndpoint::Remote { uri })
        }
        _other => {
            p.push(
                "upstream.endpoint",
                format!("{:?} is not \"embedded\" or an http(s)://host[:port] URL without a path", u.endpoint),
                "write e.g. \"https://s3.us-east-1.amazonaws.com\" or \"embedded\"",
            );
            None
        }
    };
    if u.credentials == CredentialSource::Aws {
        let static_keys = [
            u.access_key_id.is_some(),
            u.access_key_id_env.is_some(),
            u.secret_access_key.is_some(),
            u.secret_access_key_env.is_some(),
            u.secret_access_key_file.is_some(),
        ];
        if static_keys.contains(&true) {
            p.push(
                "upstream.credentials",
                "\"aws\" takes credentials from the AWS chain, but static keys are set too",
                "remove upstream.access_key_id* and secret_access_key*, or set credentials = \"static\"",
            );
        }
        p.duration("upstream.credentials_refresh_before", u.credentials_refresh_before);
        let chain = UpstreamCredentials::AwsChain { refresh_before: u.credentials_refresh_before };
        return (endpoint, Some(chain));
    }
    let akid = p.access_key_id(
        "upstream.access_key_id",
        (&u.access_key_id, &u.access_key_id_env),
        ctx,
        (
            "set exactly one of access_key_id or access_key_id_env",
            "give the upstream access key id the proxy signs with",
        ),
    );
    let secret = p.secret(
        "upstream.secret_access_key",
        &u.secret_access_key,
        &u.secret_access_key_env,
        &u.secret_access_key_file,
        ctx,
    );
    (endpoint, akid.zip(secret).map(|(access_key_id, secret)| UpstreamCredentials::Static { access_key_id, secret }))
}

impl From<In<'_, RawLogging>> for LoggingSettings {
    fn from(r: In<'_, RawLogging>) -> LoggingSettings {
        LoggingSettings {
            format: r.raw.format,
            audit: match r.raw.audit.as_deref() {
                None | Some("stderr") => AuditSink::Stderr,
                Some("off") => AuditSink::Off,
                Some(path) => AuditSink::File(r.ctx.base.join(path)),
            },
        }
    }
}
