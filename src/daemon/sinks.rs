//! Sinks: where outbox records go. The JSONL file sink (every trace record,
//! exactly once) and the webhook sink (each send, at least once, with an
//! idempotency key).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::syntax::ast::Channel;

/// A sink as configured: `jsonl:PATH`, `webhook:URL`, `smtp://…` or `smtps://…`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SinkSpec {
    Jsonl(PathBuf),
    Webhook(String),
    Smtp(SmtpSpec),
}

impl SinkSpec {
    pub fn parse(text: &str) -> Result<SinkSpec, String> {
        if let Some(path) = text.strip_prefix("jsonl:") {
            if path.is_empty() {
                return Err("jsonl sink needs a path: jsonl:PATH".into());
            }
            Ok(SinkSpec::Jsonl(PathBuf::from(path)))
        } else if let Some(url) = text.strip_prefix("webhook:") {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("webhook sink needs an http(s) URL, got {url:?}"));
            }
            Ok(SinkSpec::Webhook(url.to_string()))
        } else if text.starts_with("smtp://") || text.starts_with("smtps://") {
            SmtpSpec::parse(text).map(SinkSpec::Smtp)
        } else {
            Err(format!(
                "unknown sink {text:?}: expected jsonl:PATH, webhook:URL, smtp://HOST:PORT?from=ADDRESS or smtps://…"
            ))
        }
    }

    /// The sink's name: its delivery cursor is stored under it. Never
    /// carries a password.
    pub fn name(&self) -> String {
        match self {
            SinkSpec::Jsonl(path) => format!("jsonl:{}", path.display()),
            SinkSpec::Webhook(url) => format!("webhook:{url}"),
            SinkSpec::Smtp(smtp) => smtp.name(),
        }
    }
}

/// A configured sink and the channel it serves (`[CHANNEL=]SPEC`); without
/// a channel it serves every channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sink {
    pub channel: Option<Channel>,
    pub spec: SinkSpec,
}

impl Sink {
    /// Reads `[CHANNEL=]SPEC`. A prefix before `=` is a channel only when it
    /// is a plain word (so `jsonl:a=b.jsonl` stays a path).
    pub fn parse(text: &str) -> Result<Sink, String> {
        let channel = match text.split_once('=') {
            Some((prefix, _)) if !prefix.is_empty() && prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                Some(Channel::parse(prefix).ok_or_else(|| {
                    format!("unknown channel {prefix:?} in sink {text:?}: expected one of email, sms, push, in_app, webhook")
                })?)
            }
            _ => None,
        };
        let spec_text = match channel {
            Some(channel) => &text[channel.as_str().len() + 1..],
            None => text,
        };
        let spec = SinkSpec::parse(spec_text)?;
        if let (SinkSpec::Smtp(_), Some(other)) = (&spec, channel) {
            if other != Channel::Email {
                return Err(format!(
                    "an SMTP sink delivers email; it cannot serve the {} channel",
                    other.as_str()
                ));
            }
        }
        Ok(Sink { channel, spec })
    }

    /// The sink's name, its cursor's key: the spec's name, after `CHANNEL=`
    /// for a sink of one channel (a sink of every channel keeps the name it
    /// had before channels existed).
    pub fn name(&self) -> String {
        match self.channel {
            Some(channel) => format!("{}={}", channel.as_str(), self.spec.name()),
            None => self.spec.name(),
        }
    }

    /// The channels whose sends this sink delivers: an SMTP sink only email.
    pub fn serves(&self, channel: Channel) -> bool {
        match (&self.spec, self.channel) {
            (_, Some(own)) => own == channel,
            (SinkSpec::Smtp(_), None) => channel == Channel::Email,
            (_, None) => true,
        }
    }

    /// Whether this sink takes an outbox record: a sink of every channel
    /// takes every record; a sink of one channel only the records of that
    /// channel (sends and skips).
    pub fn takes(&self, record: &serde_json::Value) -> bool {
        if self.channel.is_none() && !matches!(self.spec, SinkSpec::Smtp(_)) {
            return true;
        }
        record
            .get("channel")
            .and_then(|c| c.as_str())
            .and_then(Channel::parse)
            .is_some_and(|channel| self.serves(channel))
    }
}

/// How an SMTP sink talks to its server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SmtpTls {
    /// `smtp://…` (default): plain connection upgraded with STARTTLS, required.
    Starttls,
    /// `smtp://…?tls=none`: no encryption (a relay on localhost).
    None,
    /// `smtps://…`: TLS from the first byte.
    Implicit,
}

/// `smtp://[user:pass@]host:port?from=ADDRESS[&tls=starttls|none]` or
/// `smtps://[user:pass@]host:port?from=ADDRESS`.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SmtpSpec {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    /// The `From` mailbox, `addr@domain` or `Name <addr@domain>`.
    pub from: String,
    pub tls: SmtpTls,
    /// `ca=PATH`: a PEM file of certificates trusted besides the public
    /// roots (a private CA, a self-signed relay).
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for SmtpSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never reaches a log line.
        write!(f, "SmtpSpec({})", self.name())
    }
}

impl SmtpSpec {
    pub fn parse(text: &str) -> Result<SmtpSpec, String> {
        let (implicit, rest) = match text.strip_prefix("smtps://") {
            Some(rest) => (true, rest),
            None => (
                false,
                text.strip_prefix("smtp://")
                    .ok_or("an SMTP sink starts with smtp:// or smtps://")?,
            ),
        };
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.trim_end_matches('/');
        let (credentials, address) = match authority.rsplit_once('@') {
            Some((credentials, address)) => (Some(credentials), address),
            None => (None, authority),
        };
        let (user, password) = match credentials {
            Some(credentials) => {
                let (user, password) = credentials
                    .split_once(':')
                    .ok_or("SMTP credentials are user:password@ (percent-encode `@` and `:` in them)")?;
                (Some(percent_decode(user)?), Some(percent_decode(password)?))
            }
            None => (None, None),
        };
        let default_port = if implicit { 465 } else { 587 };
        let (host, port) = match address.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => (
                host,
                port.parse::<u16>()
                    .map_err(|_| format!("SMTP port {port:?} is not a number from 1 to 65535"))?,
            ),
            _ => (address, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("SMTP sink {:?} has no host", redacted(text)));
        }
        let mut from = None;
        let mut ca_file = None;
        let mut tls = if implicit { SmtpTls::Implicit } else { SmtpTls::Starttls };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value)?;
            match key {
                "from" => from = Some(value),
                "ca" => ca_file = Some(PathBuf::from(value)),
                "tls" if implicit => return Err("smtps:// is always TLS; `tls=` is for smtp://".into()),
                "tls" => {
                    tls = match value.as_str() {
                        "starttls" => SmtpTls::Starttls,
                        "none" => SmtpTls::None,
                        other => return Err(format!("SMTP tls={other:?}: expected starttls or none")),
                    }
                }
                other => {
                    return Err(format!(
                        "unknown SMTP sink parameter {other:?}: expected from, tls or ca"
                    ))
                }
            }
        }
        let from = from.ok_or("an SMTP sink needs a sender: ?from=ADDRESS")?;
        from.parse::<lettre::message::Mailbox>()
            .map_err(|e| format!("SMTP from={from:?} is not a mail address: {e}"))?;
        Ok(SmtpSpec {
            host: host.to_string(),
            port,
            user,
            password,
            from,
            tls,
            ca_file,
        })
    }

    /// `smtp://host:port?from=…` without the credentials.
    pub fn name(&self) -> String {
        let scheme = if self.tls == SmtpTls::Implicit { "smtps" } else { "smtp" };
        let tls = if self.tls == SmtpTls::None { "&tls=none" } else { "" };
        format!("{scheme}://{}:{}?from={}{tls}", self.host, self.port, self.from)
    }

    /// The domain of the sender's address: the right side of every Message-ID.
    pub fn from_domain(&self) -> String {
        self.from
            .parse::<lettre::message::Mailbox>()
            .map(|mailbox| mailbox.email.domain().to_string())
            .unwrap_or_else(|_| self.host.clone())
    }
}

/// The spec text with any password replaced, for error messages.
fn redacted(text: &str) -> String {
    match (text.find("://"), text.rfind('@')) {
        (Some(start), Some(at)) if at > start => format!("{}***{}", &text[..start + 3], &text[at..]),
        _ => text.to_string(),
    }
}

/// Decodes `%XX` escapes (URL userinfo and query values).
fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text
                .get(index + 1..index + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a bad %-escape in the SMTP sink URL")?;
            decoded.push(hex);
            index += 3;
        } else {
            decoded.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| "the SMTP sink URL decodes to invalid UTF-8".to_string())
}

/// Settings of webhook delivery.
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    /// Attempts per record before it is parked as a dead letter.
    pub attempts_max: u32,
    /// First retry delay; doubled each attempt, with jitter.
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Requests per second, per sink.
    pub rate_per_second: f64,
    pub timeout_ms: u64,
    /// The Standard Webhooks signing secret (the bytes of `whsec_<base64>`):
    /// when set, every request is signed.
    pub secret: Option<Vec<u8>>,
    /// PEM certificates of private CAs trusted besides the bundled web
    /// roots (`--ca-file`); empty for none.
    pub ca_pem: Vec<u8>,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            attempts_max: 8,
            retry_base_ms: 500,
            retry_max_ms: 60_000,
            rate_per_second: 100.0,
            timeout_ms: 10_000,
            secret: None,
            ca_pem: Vec::new(),
        }
    }
}

impl WebhookOptions {
    /// Delay before attempt `attempt` (1 = the first retry): exponential with
    /// "equal jitter" (half fixed, half random) so retries of many records spread out.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponential = self
            .retry_base_ms
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
            .min(self.retry_max_ms);
        let half = exponential / 2;
        let jitter = if half > 0 {
            rand::random::<u64>() % (half + 1)
        } else {
            0
        };
        Duration::from_millis(half + jitter)
    }
}

/// Reads a Standard Webhooks secret, `whsec_` followed by base64 of the
/// key bytes.
pub fn parse_webhook_secret(text: &str) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    let encoded = text
        .strip_prefix("whsec_")
        .ok_or("a webhook secret starts with `whsec_` (Standard Webhooks), then base64")?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| format!("the webhook secret after `whsec_` is not base64: {e}"))?;
    if key.len() < 16 {
        return Err(format!(
            "the webhook secret is {} bytes; use at least 16 (24 to 64 are usual)",
            key.len()
        ));
    }
    Ok(key)
}

/// The Standard Webhooks signature of one request: `v1,` and the base64
/// HMAC-SHA256 under `key` of `{id}.{timestamp}.{body}`.
pub fn webhook_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{signature}")
}

/// The JSONL file sink: appends one line per record, each with its outbox
/// sequence number as a last `seq` field, and syncs before the cursor moves.
pub struct JsonlSink {
    path: PathBuf,
    file: File,
    /// The file's length after the last append that succeeded.
    length: u64,
    /// An append failed (part of it may be in the file): the next one first
    /// cuts the file back to `length`, so a retried round leaves no record
    /// twice and no torn line between two.
    failed: bool,
    /// The sequence numbers of the file's last lines when it was opened
    /// ([`JsonlSink::remember_tail`]): records the sink skips.
    tail: std::collections::HashSet<u64>,
    /// Tests: the next append writes this many bytes of its records and then
    /// fails, as a full disk or an I/O error would.
    #[cfg(test)]
    pub(crate) fail_next: Option<usize>,
}

impl JsonlSink {
    /// Opens the file, truncating a torn last line (a crash mid-write), and
    /// returns the sequence number of the last complete line.
    pub fn open(path: &Path) -> io::Result<(JsonlSink, Option<u64>)> {
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)?;
            }
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let last_seq = recover_tail(&mut file)?;
        let length = file.seek(SeekFrom::End(0))?;
        Ok((
            JsonlSink {
                path: path.to_path_buf(),
                file,
                length,
                failed: false,
                tail: std::collections::HashSet::new(),
                #[cfg(test)]
                fail_next: None,
            },
            last_seq,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the sequence numbers of the file's last `lines` lines: the
    /// records a round may have appended before a crash kept its cursors
    /// from being stored (one round appends at most `lines`), which
    /// [`JsonlSink::holds`] then names. Where the file interleaves
    /// partitions (PostgreSQL), the last line's number alone does not say
    /// what is there.
    pub fn remember_tail(&mut self, lines: usize) -> io::Result<()> {
        self.tail = tail_seqs(&mut self.file, self.length, lines)?;
        self.file.seek(SeekFrom::Start(self.length))?;
        Ok(())
    }

    /// Whether the record `seq` was among the file's last lines at open
    /// ([`JsonlSink::remember_tail`]).
    pub fn holds(&self, seq: u64) -> bool {
        self.tail.contains(&seq)
    }

    /// Appends records (`(seq, JSON line)`) and syncs the file. When that
    /// fails, what it may have written is cut off (at once, or before the
    /// next append if cutting failed too).
    pub fn append(&mut self, records: &[(u64, String)]) -> io::Result<()> {
        if self.failed {
            self.cut_back()?;
        }
        let mut buffer = String::with_capacity(records.iter().map(|(_, l)| l.len() + 24).sum());
        for (seq, line) in records {
            buffer.push_str(&with_seq(line, *seq));
            buffer.push('\n');
        }
        match self.write_synced(buffer.as_bytes()) {
            Ok(()) => {
                self.length += buffer.len() as u64;
                Ok(())
            }
            Err(error) => {
                self.failed = true;
                let _ = self.cut_back();
                Err(error)
            }
        }
    }

    fn write_synced(&mut self, bytes: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if let Some(written) = self.fail_next.take() {
            self.file.write_all(&bytes[..written.min(bytes.len())])?;
            return Err(io::Error::other("injected sink error"));
        }
        self.file.write_all(bytes)?;
        self.file.sync_data()
    }

    /// Cuts the file back to its length after the last good append.
    fn cut_back(&mut self) -> io::Result<()> {
        self.file.set_len(self.length)?;
        self.file.seek(SeekFrom::Start(self.length))?;
        self.file.sync_data()?;
        self.failed = false;
        Ok(())
    }
}

/// Adds `"seq":N` as the last field of a JSON object line.
pub fn with_seq(line: &str, seq: u64) -> String {
    match line.strip_suffix('}') {
        Some(body) if body.len() > 1 => format!("{body},\"seq\":{seq}}}"),
        Some(_) => format!("{{\"seq\":{seq}}}"),
        None => line.to_string(),
    }
}

/// The `seq` fields of the last `lines` complete lines of the file's first
/// `length` bytes (each is the line's last field, [`with_seq`]).
fn tail_seqs(file: &mut File, length: u64, lines: usize) -> io::Result<std::collections::HashSet<u64>> {
    let mut window: u64 = 256 * 1024;
    loop {
        let start = length.saturating_sub(window);
        let mut tail = Vec::with_capacity((length - start) as usize);
        file.seek(SeekFrom::Start(start))?;
        Read::by_ref(file).take(length - start).read_to_end(&mut tail)?;
        let newlines = tail.iter().filter(|b| **b == b'\n').count();
        if newlines <= lines && start > 0 {
            window *= 4;
            continue;
        }
        let mut text: &[u8] = &tail;
        if start > 0 {
            // The first line of the window may be cut.
            let first = text.iter().position(|b| *b == b'\n').map_or(text.len(), |at| at + 1);
            text = &text[first..];
        }
        let seqs = (text.split(|b| *b == b'\n').rev())
            .filter(|line| !line.is_empty())
            .take(lines)
            .filter_map(|line| {
                let line = std::str::from_utf8(line).ok()?;
                let at = line.rfind("\"seq\":")? + 6;
                line[at..].trim_end_matches('}').trim().parse().ok()
            })
            .collect();
        return Ok(seqs);
    }
}

/// Truncates an incomplete last line and returns the `seq` of the last
/// complete one.
fn recover_tail(file: &mut File) -> io::Result<Option<u64>> {
    let length = file.metadata()?.len();
    if length == 0 {
        return Ok(None);
    }
    let mut window: u64 = 64 * 1024;
    loop {
        let start = length.saturating_sub(window);
        let mut tail = Vec::with_capacity((length - start) as usize);
        file.seek(SeekFrom::Start(start))?;
        Read::by_ref(file).take(length - start).read_to_end(&mut tail)?;
        // End of the last complete line (exclusive of its newline).
        let complete_end = match tail.iter().rposition(|b| *b == b'\n') {
            Some(end) => end,
            None if start == 0 => {
                // Not one complete line: the whole file is torn.
                file.set_len(0)?;
                file.sync_all()?;
                return Ok(None);
            }
            None => {
                window *= 4;
                continue;
            }
        };
        let line_start = match tail[..complete_end].iter().rposition(|b| *b == b'\n') {
            Some(position) => position + 1,
            None if start == 0 => 0,
            None => {
                window *= 4;
                continue;
            }
        };
        let kept = start + complete_end as u64 + 1;
        if kept < length {
            tracing::warn!(
                torn_bytes = length - kept,
                "truncating a torn last line in the JSONL sink"
            );
            file.set_len(kept)?;
            file.sync_all()?;
        }
        let last_line = &tail[line_start..complete_end];
        let seq = serde_json::from_slice::<serde_json::Value>(last_line)
            .ok()
            .and_then(|v| v.get("seq").and_then(|s| s.as_u64()));
        return Ok(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn signs_as_the_standard_webhooks_example() {
        let key = parse_webhook_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("secret");
        assert_eq!(
            webhook_signature(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        let refusal = |text: &str| parse_webhook_secret(text).err().unwrap_or_default();
        assert!(refusal("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").contains("whsec_"));
        assert!(refusal("whsec_not base64!").contains("not base64"));
        assert!(refusal("whsec_c2hvcnQ=").contains("at least 16"));
    }

    #[test]
    fn parses_sink_specs() {
        assert_eq!(
            SinkSpec::parse("jsonl:out.jsonl"),
            Ok(SinkSpec::Jsonl("out.jsonl".into()))
        );
        assert_eq!(
            SinkSpec::parse("webhook:http://127.0.0.1:9/x"),
            Ok(SinkSpec::Webhook("http://127.0.0.1:9/x".into()))
        );
        assert!(SinkSpec::parse("kafka:x").is_err());
        let smtp = SinkSpec::parse("smtps://apikey:p%40ss@smtp.example.com?from=Shop%20%3Cshop@example.com%3E")
            .expect("smtps");
        let SinkSpec::Smtp(smtp) = smtp else { panic!("not smtp") };
        assert_eq!(
            (smtp.host.as_str(), smtp.port, smtp.tls),
            ("smtp.example.com", 465, SmtpTls::Implicit)
        );
        assert_eq!(
            (smtp.user.as_deref(), smtp.password.as_deref()),
            (Some("apikey"), Some("p@ss"))
        );
        assert_eq!(smtp.from, "Shop <shop@example.com>");
        assert_eq!(smtp.from_domain(), "example.com");
        assert!(!smtp.name().contains("p@ss") && !format!("{smtp:?}").contains("p@ss"));
        let plain = SmtpSpec::parse("smtp://127.0.0.1:2525?from=a@b.example&tls=none").expect("smtp");
        assert_eq!((plain.port, plain.tls, plain.user), (2525, SmtpTls::None, None));
        let private = SmtpSpec::parse("smtp://relay.internal?from=a@b.example&ca=/etc/ca%20files/ca.pem").expect("ca");
        assert_eq!(private.ca_file, Some(PathBuf::from("/etc/ca files/ca.pem")));
        assert_eq!((private.port, private.tls), (587, SmtpTls::Starttls));
        assert!(SinkSpec::parse("smtp://h:25").expect_err("refused").contains("from="));
        assert!(SinkSpec::parse("smtp://h:25?from=nobody")
            .expect_err("refused")
            .contains("not a mail address"));
        assert!(SinkSpec::parse("smtp://h:25?from=a@b.c&tls=maybe")
            .expect_err("refused")
            .contains("starttls or none"));
        assert!(SinkSpec::parse("smtp://h:x?from=a@b.c")
            .expect_err("refused")
            .contains("port"));
        assert!(SinkSpec::parse("webhook:ftp://x").is_err());
    }

    #[test]
    fn routes_sinks_by_channel() {
        let email = Sink::parse("email=webhook:http://127.0.0.1:9/mail").expect("email sink");
        assert_eq!(email.channel, Some(Channel::Email));
        assert_eq!(email.name(), "email=webhook:http://127.0.0.1:9/mail");
        let send = |channel: &str| serde_json::json!({"kind": "send", "channel": channel});
        assert!(email.takes(&send("email")) && !email.takes(&send("sms")));
        assert!(!email.takes(&serde_json::json!({"kind": "enter"})));
        let every = Sink::parse("jsonl:a=b.jsonl").expect("a path with =");
        assert_eq!((every.channel, every.name()), (None, "jsonl:a=b.jsonl".to_string()));
        assert!(every.takes(&serde_json::json!({"kind": "enter"})) && every.takes(&send("push")));
        let smtp = Sink::parse("smtp://h:25?from=a@b.example").expect("smtp");
        assert!(smtp.takes(&send("email")) && !smtp.takes(&send("sms")));
        assert!(Sink::parse("fax=jsonl:x")
            .expect_err("refused")
            .contains("unknown channel"));
        assert!(Sink::parse("sms=smtp://h:25?from=a@b.example")
            .expect_err("refused")
            .contains("delivers email"));
    }

    #[test]
    fn seq_is_appended_as_last_field() {
        assert_eq!(with_seq("{\"a\":1}", 7), "{\"a\":1,\"seq\":7}");
    }

    #[test]
    fn torn_tail_is_truncated_and_last_seq_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sends.jsonl");
        std::fs::write(&path, "{\"a\":1,\"seq\":1}\n{\"a\":2,\"seq\":2}\n{\"a\":3,\"se").expect("write");
        let (mut sink, last) = JsonlSink::open(&path).expect("open");
        assert_eq!(last, Some(2));
        sink.append(&[(3, "{\"a\":3}".into())]).expect("append");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text, "{\"a\":1,\"seq\":1}\n{\"a\":2,\"seq\":2}\n{\"a\":3,\"seq\":3}\n");
        let (_, last) = JsonlSink::open(&path).expect("reopen");
        assert_eq!(last, Some(3));
    }

    #[test]
    fn a_failed_append_leaves_nothing_and_its_retry_writes_each_record_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sends.jsonl");
        let (mut sink, _) = JsonlSink::open(&path).expect("open");
        sink.append(&[(1, "{\"a\":1}".into())]).expect("append");
        let round = [(2, "{\"a\":2}".to_string()), (3, "{\"a\":3}".to_string())];
        // Part of the round reaches the file (one whole line and a torn one), then the write fails.
        sink.fail_next = Some(22);
        assert!(sink.append(&round).is_err());
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "{\"a\":1,\"seq\":1}\n");
        sink.append(&round).expect("retry");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "{\"a\":1,\"seq\":1}\n{\"a\":2,\"seq\":2}\n{\"a\":3,\"seq\":3}\n"
        );
    }

    #[test]
    fn the_tail_names_the_numbers_of_the_last_lines_in_any_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sends.jsonl");
        // Partitions interleaved: numbers do not ascend through the file.
        let seqs = [5u64, 9_223_372_036_855_038_009, 3, 9_223_372_036_854_841_345, 7];
        let text: String = seqs.iter().map(|seq| format!("{{\"a\":1,\"seq\":{seq}}}\n")).collect();
        std::fs::write(&path, format!("{text}{{\"a\":2,\"se")).expect("write");
        let (mut sink, _) = JsonlSink::open(&path).expect("open");
        sink.remember_tail(3).expect("tail");
        for seq in &seqs[2..] {
            assert!(sink.holds(*seq), "{seq}");
        }
        assert!(!sink.holds(seqs[0]) && !sink.holds(seqs[1]));
        sink.append(&[(11, "{\"a\":3}".to_string())])
            .expect("append after the tail");
        let written = std::fs::read_to_string(&path).expect("read");
        assert_eq!(written, format!("{text}{{\"a\":3,\"seq\":11}}\n"));
        // A long file: the window grows until it holds enough lines.
        let long: String = (1..=5000u64)
            .map(|seq| format!("{{\"b\":\"{}\",\"seq\":{seq}}}\n", "x".repeat(100)))
            .collect();
        std::fs::write(&path, long).expect("write");
        let (mut sink, _) = JsonlSink::open(&path).expect("open");
        sink.remember_tail(2048).expect("tail");
        assert!((2953..=5000).all(|seq| sink.holds(seq)));
        assert!(!sink.holds(2952));
    }

    #[test]
    fn fully_torn_file_is_emptied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sends.jsonl");
        std::fs::write(&path, "{\"a\":1,\"se").expect("write");
        let (_, last) = JsonlSink::open(&path).expect("open");
        assert_eq!(last, None);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "");
    }

    #[test]
    fn long_lines_are_found_beyond_the_first_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sends.jsonl");
        let big = "x".repeat(200_000);
        std::fs::write(&path, format!("{{\"b\":\"{big}\",\"seq\":41}}\n{{\"b\":\"{big}")).expect("write");
        let (_, last) = JsonlSink::open(&path).expect("open");
        assert_eq!(last, Some(41));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let options = WebhookOptions {
            retry_base_ms: 100,
            retry_max_ms: 1_000,
            ..WebhookOptions::default()
        };
        for _ in 0..20 {
            let first = options.backoff(1).as_millis();
            assert!((50..=100).contains(&first), "{first}");
            let late = options.backoff(12).as_millis();
            assert!((500..=1_000).contains(&late), "{late}");
        }
    }
}
