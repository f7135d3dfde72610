//! `journeyc serve [WORKSPACE] --data DIR --listen ADDR --sink [CHANNEL=]SPEC… [--public-url URL] [--token TOKEN] [--config FILE]`
//!
//! Raw flags here; validated settings are a [`crate::daemon::Config`]. Flags
//! win over the TOML config file, which wins over the defaults (workspace
//! `journeys/`, data `./data`, listen `127.0.0.1:8080`, sink
//! `jsonl:DATA/sends.jsonl`).

use crate::daemon::rate::{insert_rate, parse_channel_rate, Rates};
use crate::daemon::server::HttpOptions;
use crate::daemon::sinks::{parse_webhook_secret, Sink, SinkSpec, WebhookOptions};
use crate::daemon::store::StoreOptions;
use crate::daemon::{Config, DaemonError};
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The workspace: a directory searched recursively for .journey files [default: journeys]
    pub workspace: Option<PathBuf>,
    /// Data directory (store, sink files, `addr`) [default: ./data]
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Keep the store in PostgreSQL, `postgres://USER@HOST:PORT/DB`, instead of sled under DATA
    /// (DATA still holds the sink files, `addr` and the unsubscribe key)
    #[arg(long, env = "JOURNEYC_STORE", hide_env_values = true)]
    pub store: Option<String>,
    /// Address to listen on; port 0 picks a free port (written to DATA/addr) [default: 127.0.0.1:8080]
    #[arg(long)]
    pub listen: Option<String>,
    /// A sink, `[CHANNEL=]SPEC` with SPEC `jsonl:PATH`, `webhook:URL`, `smtp://…` or `smtps://…`;
    /// without CHANNEL it takes every channel; repeatable [default: jsonl:DATA/sends.jsonl]
    #[arg(long = "sink")]
    pub sinks: Vec<String>,
    /// The daemon's address as recipients reach it, for unsubscribe links [default: http://LISTEN]
    #[arg(long)]
    pub public_url: Option<String>,
    /// API token for `Authorization: Bearer` (or Basic auth user name)
    #[arg(long, env = "JOURNEYC_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A TOML file with the same settings (workspace, data, listen, sinks, token, webhook_*, ca_file, rate)
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Webhook: attempts per send before it is dead-lettered
    #[arg(long)]
    pub webhook_attempts: Option<u32>,
    /// Webhook: first retry delay in milliseconds (doubles per attempt, with jitter)
    #[arg(long)]
    pub webhook_retry_ms: Option<u64>,
    /// Webhook: requests per second per sink
    #[arg(long)]
    pub webhook_rate: Option<f64>,
    /// Webhook: Standard Webhooks signing secret, `whsec_<base64>`; signs every request
    #[arg(long, env = "JOURNEYC_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Webhook: a PEM file of private CA certificates trusted for https:// besides the web roots
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// A channel's rate limit per delivering sink, `CHANNEL=N/s` (or /m, /h); repeatable
    #[arg(long = "rate")]
    pub rates: Vec<String>,
    /// sled page cache size in MiB
    #[arg(long)]
    pub cache_mib: Option<u64>,
    /// With --store: seconds the store's lease lasts unrenewed (renewed every second) before a
    /// standby node takes over, 1 to 10 [default: 10]
    #[arg(long)]
    pub lease_seconds: Option<u64>,
    /// With --store: take a fair share of the partitions (ceil(P / live nodes)) and apply them here,
    /// instead of standing by while another node applies them all
    #[arg(long)]
    pub spread: bool,
    /// Keep transparent huge pages for the heap: about a tenth less CPU per wake-up, 30–50 MiB more memory
    #[arg(long)]
    pub huge_pages: bool,
    /// Time a client has to send a request's head; also the idle keep-alive limit [default: 10s]
    #[arg(long)]
    pub header_timeout: Option<String>,
    /// Time a client has to send a request's body [default: 30s]
    #[arg(long)]
    pub body_timeout: Option<String>,
    /// Open HTTP connections at most; more wait in the listen backlog [default: 1024]
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Refuse events stamped further ahead of the daemon's clock than this [default: 24h]
    #[arg(long)]
    pub max_future: Option<String>,
    /// A customer whose input fails: retries before it is parked [default: 5]
    #[arg(long)]
    pub fault_retries: Option<u32>,
    /// A customer whose input fails: first retry delay in milliseconds (doubles per retry) [default: 1000]
    #[arg(long)]
    pub fault_retry_ms: Option<u64>,
    /// Customers a segment broadcast visits per commit, between other work [default: 256, at most 10000]
    #[arg(long)]
    pub broadcast_batch: Option<usize>,
    /// The longest an erased customer's bytes stay in the data directory while the daemon runs
    /// (an online compaction pauses intake and delivery briefly); `off`: only at the next stop or start [default: 1h]
    #[arg(long)]
    pub erasure_within: Option<String>,
    /// Require the token for the dashboard and the aggregates too (/ui, /v1/journeys…, /metrics)
    #[arg(long)]
    pub protect_ui: bool,
}

/// The optional config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    workspace: Option<PathBuf>,
    data: Option<PathBuf>,
    store: Option<String>,
    listen: Option<String>,
    #[serde(default)]
    sinks: Vec<String>,
    public_url: Option<String>,
    token: Option<String>,
    webhook_attempts: Option<u32>,
    webhook_retry_ms: Option<u64>,
    webhook_rate: Option<f64>,
    webhook_secret: Option<String>,
    ca_file: Option<PathBuf>,
    /// `rate = { email = "50/s", sms = "10/s" }`
    #[serde(default)]
    rate: std::collections::BTreeMap<String, String>,
    cache_mib: Option<u64>,
    lease_seconds: Option<u64>,
    spread: Option<bool>,
    huge_pages: Option<bool>,
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    max_connections: Option<usize>,
    max_future: Option<String>,
    fault_retries: Option<u32>,
    fault_retry_ms: Option<u64>,
    broadcast_batch: Option<usize>,
    protect_ui: Option<bool>,
    erasure_within: Option<String>,
}

/// Merges flags, config file and defaults.
fn settle(args: Args) -> Result<Config, String> {
    let file = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            toml::from_str::<FileConfig>(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let data = args.data.or(file.data).unwrap_or_else(|| PathBuf::from("data"));
    let sink_texts = if args.sinks.is_empty() { file.sinks } else { args.sinks };
    let mut sinks = sink_texts
        .iter()
        .map(|s| Sink::parse(s).map_err(|e| format!("--sink: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if sinks.is_empty() {
        sinks.push(Sink {
            channel: None,
            spec: SinkSpec::Jsonl(data.join("sends.jsonl")),
        });
    }
    let (mut names, mut files) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
    for sink in &sinks {
        if !names.insert(sink.name()) {
            return Err(format!("--sink: {} is given twice", sink.name()));
        }
        // One writer per file: its tail is the authority for what it has.
        if let SinkSpec::Jsonl(path) = &sink.spec {
            if !files.insert(path.clone()) {
                return Err(format!("--sink: two JSONL sinks write {}", path.display()));
            }
        }
    }
    let public_url = match args.public_url.or(file.public_url) {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            Some(url.trim_end_matches('/').to_string())
        }
        Some(url) => return Err(format!("--public-url: expected an http(s) URL, got {url:?}")),
        None => None,
    };
    let defaults = WebhookOptions::default();
    let webhook = WebhookOptions {
        attempts_max: args
            .webhook_attempts
            .or(file.webhook_attempts)
            .unwrap_or(defaults.attempts_max)
            .clamp(1, 100),
        retry_base_ms: args
            .webhook_retry_ms
            .or(file.webhook_retry_ms)
            .unwrap_or(defaults.retry_base_ms),
        rate_per_second: args
            .webhook_rate
            .or(file.webhook_rate)
            .unwrap_or(defaults.rate_per_second),
        secret: match args.webhook_secret.or(file.webhook_secret) {
            Some(text) => Some(parse_webhook_secret(&text).map_err(|e| format!("--webhook-secret: {e}"))?),
            None => None,
        },
        ca_pem: match args.ca_file.or(file.ca_file) {
            Some(path) => read_ca_file(&path)?,
            None => Vec::new(),
        },
        ..defaults
    };
    let mut rates = Rates::new();
    if args.rates.is_empty() {
        for (channel, rate) in &file.rate {
            insert_rate(channel, rate, &mut rates).map_err(|e| format!("rate: {e}"))?;
        }
    } else {
        for text in &args.rates {
            parse_channel_rate(text, &mut rates).map_err(|e| format!("--rate: {e}"))?;
        }
    }
    if webhook.rate_per_second.is_nan() || webhook.rate_per_second <= 0.0 {
        return Err("--webhook-rate must be above 0".into());
    }
    let defaults = HttpOptions::default();
    let duration =
        |flag: &str, given: Option<String>, default: std::time::Duration| -> Result<std::time::Duration, String> {
            match given {
                None => Ok(default),
                Some(text) => match crate::syntax::parse_duration(&text) {
                    Some(seconds) if seconds > 0 && text.starts_with(|c: char| c.is_ascii_digit()) => {
                        Ok(std::time::Duration::from_secs(seconds as u64))
                    }
                    _ => Err(format!(
                        "{flag}: expected a duration like \"10s\" or \"24h\", got {text:?}"
                    )),
                },
            }
        };
    let http = HttpOptions {
        header_timeout: duration(
            "--header-timeout",
            args.header_timeout.or(file.header_timeout),
            defaults.header_timeout,
        )?,
        body_timeout: duration(
            "--body-timeout",
            args.body_timeout.or(file.body_timeout),
            defaults.body_timeout,
        )?,
        connections_max: args
            .max_connections
            .or(file.max_connections)
            .unwrap_or(defaults.connections_max)
            .max(1),
        future_max_ms: duration(
            "--max-future",
            args.max_future.or(file.max_future),
            std::time::Duration::from_millis(defaults.future_max_ms as u64),
        )?
        .as_millis()
        .min(i64::MAX as u128) as i64,
        protect_ui: args.protect_ui || file.protect_ui.unwrap_or(false),
    };
    let erasure_within = match args.erasure_within.or(file.erasure_within) {
        Some(text) if text == "off" => None,
        Some(text) if text == "0" => Some(std::time::Duration::ZERO),
        given => Some(duration(
            "--erasure-within",
            given,
            crate::daemon::erasure::WITHIN_DEFAULT,
        )?),
    };
    let mut store = StoreOptions::default();
    if let Some(mib) = args.cache_mib.or(file.cache_mib) {
        store.cache_bytes = mib.max(1) * 1024 * 1024;
    }
    store.postgres = args.store.or(file.store).filter(|url| !url.is_empty());
    if let Some(seconds) = args.lease_seconds.or(file.lease_seconds) {
        if !(1..=10).contains(&seconds) {
            return Err(format!("--lease-seconds: expected 1 to 10, got {seconds}"));
        }
        store.lease = std::time::Duration::from_secs(seconds);
    }
    store.spread = args.spread || file.spread.unwrap_or(false);
    if store.spread && store.postgres.is_none() {
        return Err("--spread: only with --store postgres://… (one sled store has one node)".into());
    }
    if let Some(url) = &store.postgres {
        if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(format!("--store: expected postgres://USER@HOST:PORT/DB, got {url:?}"));
        }
    }
    let fault_defaults = crate::daemon::faults::FaultPolicy::default();
    let faults = crate::daemon::faults::FaultPolicy {
        retries: args
            .fault_retries
            .or(file.fault_retries)
            .unwrap_or(fault_defaults.retries)
            .min(100),
        backoff_ms: args
            .fault_retry_ms
            .or(file.fault_retry_ms)
            .map_or(fault_defaults.backoff_ms, |ms| ms.clamp(1, 86_400_000) as i64),
    };
    Ok(Config {
        workspace: args
            .workspace
            .or(file.workspace)
            .unwrap_or_else(|| PathBuf::from("journeys")),
        data,
        listen: args.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:8080".into()),
        sinks,
        public_url,
        token: args.token.or(file.token).filter(|t| !t.is_empty()),
        webhook,
        rates,
        store,
        http,
        faults,
        broadcast_batch: crate::daemon::broadcast::batch_customers(args.broadcast_batch.or(file.broadcast_batch)),
        erasure_within,
        huge_pages: args.huge_pages || file.huge_pages.unwrap_or(false),
    })
}

/// Reads `--ca-file`: a PEM bundle with at least one certificate.
fn read_ca_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
    crate::daemon::outbox::ca_certificates(&pem).map_err(|e| format!("--ca-file {}: {e}", path.display()))?;
    Ok(pem)
}

pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

pub fn run(args: Args) -> u8 {
    init_logging();
    let config = match settle(args) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return super::EXIT_USAGE;
        }
    };
    if config.token.is_none() {
        tracing::warn!("no --token / JOURNEYC_TOKEN: the API accepts unauthenticated requests");
    }
    match crate::daemon::run(config) {
        Ok(()) => super::EXIT_OK,
        Err(DaemonError::Workspace(diagnostics)) => {
            eprint!("{diagnostics}");
            eprintln!("error: the workspace has errors; not starting");
            super::EXIT_ERRORS
        }
        Err(error) => {
            eprintln!("error: {error}");
            super::EXIT_USAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::ast::Channel;
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: Args,
    }

    fn settle_with(flags: &[&str]) -> Result<Config, String> {
        let args = Wrapper::try_parse_from([&["serve"][..], flags].concat())
            .map_err(|e| e.to_string())?
            .args;
        settle(args)
    }

    #[test]
    fn erasure_within_is_a_duration_off_or_zero() {
        let within = |flags: &[&str]| settle_with(flags).map(|config| config.erasure_within);
        assert_eq!(within(&[]), Ok(Some(std::time::Duration::from_secs(3600))));
        assert_eq!(
            within(&["--erasure-within", "10m"]),
            Ok(Some(std::time::Duration::from_secs(600)))
        );
        assert_eq!(within(&["--erasure-within", "0"]), Ok(Some(std::time::Duration::ZERO)));
        assert_eq!(within(&["--erasure-within", "off"]), Ok(None));
        assert!(within(&["--erasure-within", "soon"]).is_err());
    }

    #[test]
    fn the_lease_is_1_to_10_seconds() {
        let lease = |flags: &[&str]| settle_with(flags).map(|config| config.store.lease);
        assert_eq!(lease(&[]), Ok(crate::daemon::store::LEASE_DEFAULT));
        assert_eq!(lease(&["--lease-seconds", "2"]), Ok(std::time::Duration::from_secs(2)));
        assert!(lease(&["--lease-seconds", "0"]).is_err());
        assert!(lease(&["--lease-seconds", "11"]).is_err());
    }

    #[test]
    fn rates_and_ca_file_come_from_the_config_file_unless_flags_say_otherwise() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        let key = rcgen::KeyPair::generate().expect("key");
        let certificate = rcgen::CertificateParams::new(vec!["ca.test".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("certificate");
        std::fs::write(&ca, certificate.pem()).expect("write CA");
        let config = dir.path().join("serve.toml");
        std::fs::write(
            &config,
            format!(
                "ca_file = {:?}\nrate = {{ email = \"50/s\", sms = \"600/m\" }}\n",
                ca.display().to_string()
            ),
        )
        .expect("write config");
        let path = config.to_str().expect("path");
        let from_file = settle_with(&["--config", path]).expect("settle");
        assert_eq!(from_file.rates.len(), 2);
        assert_eq!(
            from_file.rates[&Channel::Sms].interval(),
            std::time::Duration::from_millis(100)
        );
        assert_eq!(from_file.webhook.ca_pem, certificate.pem().into_bytes());
        // Flags replace the file's rates as a whole.
        let flagged = settle_with(&["--config", path, "--rate", "push=5/s"]).expect("settle");
        assert_eq!(flagged.rates.keys().collect::<Vec<_>>(), vec![&Channel::Push]);
        assert!(settle_with(&[]).expect("defaults").rates.is_empty());
        std::fs::write(&config, "rate = { fax = \"1/s\" }\n").expect("write config");
        let refusal = settle_with(&["--config", path]).err().unwrap_or_default();
        assert!(refusal.starts_with("rate: unknown channel \"fax\""), "{refusal}");
    }

    #[test]
    fn sinks_take_a_channel_in_flags_and_in_the_config_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("journeyc.toml");
        std::fs::write(
            &config,
            "sinks = [\"email=smtp://127.0.0.1:2525?from=news@shop.example&tls=none\", \"sms=webhook:https://sms.example/send\", \"jsonl:all.jsonl\"]\npublic_url = \"https://mail.shop.example/\"\n",
        )
        .expect("write");
        let settled = settle_with(&["--config", config.to_str().expect("path")]).expect("settles");
        let channels: Vec<Option<Channel>> = settled.sinks.iter().map(|s| s.channel).collect();
        assert_eq!(channels, [Some(Channel::Email), Some(Channel::Sms), None]);
        assert!(matches!(settled.sinks[0].spec, SinkSpec::Smtp(_)));
        assert_eq!(settled.public_url.as_deref(), Some("https://mail.shop.example"));
        // Flags win over the file.
        let flags = settle_with(&[
            "--config",
            config.to_str().expect("path"),
            "--sink",
            "push=jsonl:push.jsonl",
        ])
        .expect("settles");
        assert_eq!(flags.sinks.len(), 1);
        assert_eq!(flags.sinks[0].name(), "push=jsonl:push.jsonl");
        let twice = settle_with(&["--sink", "jsonl:a.jsonl", "--sink", "jsonl:a.jsonl"]).expect_err("refused");
        assert!(twice.contains("twice"), "{twice}");
        let same_file = settle_with(&["--sink", "jsonl:a.jsonl", "--sink", "sms=jsonl:a.jsonl"]).expect_err("refused");
        assert!(same_file.contains("two JSONL sinks"), "{same_file}");
        let url = settle_with(&["--public-url", "mail.example"]).expect_err("refused");
        assert!(url.contains("--public-url"), "{url}");
    }
}
