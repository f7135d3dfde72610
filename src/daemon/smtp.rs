//! The SMTP sink: each email send becomes one MIME message, delivered at
//! least once through a pool of connections (lettre).
//!
//! The message is `multipart/alternative`: a text part made from the
//! rendered body by `html2text`, then the body itself as HTML. `To` is the
//! `email` the send record carries (the customer's at the time of the
//! send), `From` the sink's `from=`, `Message-ID` `<SEND_ID@FROM_DOMAIN>`
//! (the same on every attempt and after a crash, so a provider's events
//! name the send and a duplicate is recognisable), `List-Unsubscribe` the
//! send's one-click link with `List-Unsubscribe-Post` (RFC 8058), and
//! `Content-Language` the locale variant the runtime chose. lettre encodes
//! non-ASCII subjects per RFC 2047.
//!
//! A transient failure (a 4xx reply, a lost connection) is retried with
//! the webhook backoff; a permanent one (a 5xx reply) or the last failed
//! attempt parks the record as a dead letter. The cursor moves after each
//! record, so a crash between the server's 250 and the cursor sends that
//! one message again, with its Message-ID.

use super::dead::{self, Reason};
use super::outbox::DispatchContext;
use super::rate::{ChannelLimiters, Rates};
use super::sinks::{SmtpSpec, SmtpTls, WebhookOptions};
use crate::check::Type;
use crate::compile::bytecode::Bundle;
use crate::syntax::ast::Channel;
use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::{Duration, Instant};

/// Records read from the store per round.
const CHUNK_RECORDS_MAX: usize = 256;
/// Open connections to the server at most.
const POOL_CONNECTIONS_MAX: u32 = 4;
/// Wrap width of the text part.
const TEXT_WIDTH_COLUMNS: usize = 78;

/// Why a workspace cannot be served by an SMTP sink, if it cannot: email
/// messages need an `email: string` customer attribute for their `To`.
pub fn email_attribute_problem(bundle: &Bundle) -> Option<String> {
    let emails: Vec<&str> = bundle
        .messages
        .iter()
        .filter(|message| message.channel == Channel::Email)
        .map(|message| bundle.name(message.name))
        .collect();
    let declared = bundle
        .schema
        .customer
        .get("email")
        .is_some_and(|field| field.ty == Type::String);
    if emails.is_empty() || declared {
        return None;
    }
    let shown: Vec<&str> = emails.iter().take(3).copied().collect();
    let more = if emails.len() > 3 { ", …" } else { "" };
    Some(format!(
        "an SMTP sink delivers the workspace's email messages ({}{more}) to `customer.email`, \
         but the workspace declares no `email: string` customer attribute; add `email: string?` \
         to the `customer {{ … }}` block, or deliver email through another sink",
        shown.join(", ")
    ))
}

#[derive(Clone)]
struct ListUnsubscribe(String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }
    fn parse(text: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribe(text.to_string()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

#[derive(Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }
    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ListUnsubscribePost)
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), super::unsubscribe::ONE_CLICK_BODY.to_string())
    }
}

#[derive(Clone)]
struct ContentLanguage(String);

impl Header for ContentLanguage {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Content-Language")
    }
    fn parse(text: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(ContentLanguage(text.to_string()))
    }
    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), self.0.clone())
    }
}

/// The mail of one send record; `Err` when the record cannot become one
/// (no address, an address that does not parse).
pub fn message(spec: &SmtpSpec, record: &serde_json::Value) -> Result<Message, String> {
    let text = |field: &str| record.get(field).and_then(|v| v.as_str());
    let id = text("id").ok_or("the send record has no id")?;
    let to = text("email").ok_or("the send record has no email address (the customer had none when it was sent)")?;
    let to: Mailbox = to
        .parse()
        .map_err(|e| format!("the email address {to:?} is not valid: {e}"))?;
    let from: Mailbox = spec.from.parse().map_err(|e| format!("from={:?}: {e}", spec.from))?;
    let html = text("body").unwrap_or_default().to_string();
    let plain = html2text::from_read(html.as_bytes(), TEXT_WIDTH_COLUMNS).unwrap_or_else(|_| html.clone());
    let mut builder = Message::builder()
        .from(from)
        .to(to)
        .subject(text("subject").unwrap_or_default())
        .message_id(Some(format!("<{id}@{}>", spec.from_domain())));
    if let Some(url) = text("unsubscribe_url") {
        builder = builder
            .header(ListUnsubscribe(format!("<{url}>")))
            .header(ListUnsubscribePost);
    }
    if let Some(locale) = text("locale") {
        builder = builder.header(ContentLanguage(locale.to_string()));
    }
    builder
        .multipart(
            MultiPart::alternative()
                .singlepart(SinglePart::builder().header(ContentType::TEXT_PLAIN).body(plain))
                .singlepart(SinglePart::builder().header(ContentType::TEXT_HTML).body(html)),
        )
        .map_err(|e| e.to_string())
}

fn transport(spec: &SmtpSpec, timeout_ms: u64) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let parameters = || -> Result<TlsParameters, String> {
        let mut builder = TlsParameters::builder(spec.host.clone());
        if let Some(path) = &spec.ca_file {
            let pem = std::fs::read(path).map_err(|e| format!("ca={}: {e}", path.display()))?;
            let certificate =
                Certificate::from_pem(&pem).map_err(|e| format!("ca={}: not PEM certificates: {e}", path.display()))?;
            builder = builder.add_root_certificate(certificate);
        }
        builder.build_rustls().map_err(|e| e.to_string())
    };
    let tls = match spec.tls {
        SmtpTls::Implicit => Tls::Wrapper(parameters()?),
        SmtpTls::Starttls => Tls::Required(parameters()?),
        SmtpTls::None => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&spec.host)
        .port(spec.port)
        .tls(tls)
        .timeout(Some(Duration::from_millis(timeout_ms)))
        .pool_config(PoolConfig::new().max_size(POOL_CONNECTIONS_MAX));
    if let (Some(user), Some(password)) = (&spec.user, &spec.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    Ok(builder.build())
}

/// Checks what can be checked before the daemon starts: the `ca=` file.
pub fn check(spec: &SmtpSpec) -> Result<(), String> {
    transport(spec, 1_000).map(|_| ())
}

enum Outcome {
    Sent,
    Stopped,
    GaveUp {
        reason: Reason,
        error: String,
        attempts: u32,
    },
}

/// Runs an SMTP sink until `stopping`.
pub async fn run(
    context: DispatchContext,
    name: String,
    spec: SmtpSpec,
    options: WebhookOptions,
    rates: Rates,
    mut cursor: u64,
) {
    // `--rate email=N/s`: one slot per mail, taken in outbox order.
    let mut limiter = ChannelLimiters::new(&rates);
    let mailer = match transport(&spec, options.timeout_ms) {
        Ok(mailer) => mailer,
        Err(error) => {
            tracing::error!(%error, sink = %name, "cannot set up the SMTP sink");
            return;
        }
    };
    let mut committed = context.committed.clone();
    let mut stopping = context.stopping.clone();
    let mut retries = context.dead_retry.clone();
    // Letters queued while the daemon was stopped (`journeyc outbox retry`).
    let mut retry_pending = true;
    let mut retries_open = true;
    loop {
        if *stopping.borrow() {
            return;
        }
        if retry_pending {
            retry_pending = false;
            retries.borrow_and_update();
            if redeliver(&context, &name, &mailer, &spec, &options, &mut stopping)
                .await
                .is_err()
            {
                return;
            }
            continue;
        }
        let target = *committed.borrow_and_update();
        if cursor < target {
            let records = match context.store.outbox_range(cursor + 1, target, CHUNK_RECORDS_MAX) {
                Ok(records) => records,
                Err(error) => {
                    tracing::error!(%error, "reading the outbox failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let complete = records.len() < CHUNK_RECORDS_MAX;
            for (seq, line) in &records {
                let record = serde_json::from_str::<serde_json::Value>(line).unwrap_or_default();
                let email = record.get("kind").and_then(|k| k.as_str()) == Some("send")
                    && record.get("channel").and_then(|c| c.as_str()) == Some(Channel::Email.as_str());
                if email {
                    let wait = limiter.reserve(Channel::Email.as_str(), Instant::now());
                    if !wait.is_zero() {
                        context.metrics.rate_limited.inc();
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {},
                            _ = stopping.changed() => return,
                        }
                    }
                    match deliver(&mailer, &spec, &record, &options, &mut stopping, &context).await {
                        Outcome::Sent => context.metrics.records_delivered.inc(),
                        Outcome::Stopped => return,
                        Outcome::GaveUp {
                            reason,
                            error,
                            attempts,
                        } => {
                            super::outbox::park_dead_letter(&context, &name, *seq, &record, reason, &error, attempts);
                        }
                    }
                }
                cursor = *seq;
                if let Err(error) = context.store.set_cursor(&name, cursor) {
                    tracing::warn!(%error, "could not store the SMTP cursor");
                }
            }
            if complete {
                cursor = target;
                let _ = context.store.set_cursor(&name, cursor);
            }
            super::outbox::collect_garbage(&context.store, &context.sink_names);
            continue;
        }
        tokio::select! {
            changed = committed.changed() => if changed.is_err() { return; },
            _ = stopping.changed() => {},
            changed = retries.changed(), if retries_open => match changed {
                Ok(()) => retry_pending = true,
                Err(_) => retries_open = false,
            },
        }
    }
}

/// Mails the sink's requeued dead letters once more, oldest first (the same
/// Message-ID: it is the send id). `Err` when the daemon stops meanwhile.
async fn redeliver(
    context: &DispatchContext,
    name: &str,
    mailer: &AsyncSmtpTransport<Tokio1Executor>,
    spec: &SmtpSpec,
    options: &WebhookOptions,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), ()> {
    let letters = match dead::requeued(&context.store, name) {
        Ok(letters) => letters,
        Err(error) => {
            tracing::error!(%error, "reading the dead letters failed");
            return Ok(());
        }
    };
    for letter in letters {
        let outcome = match deliver(mailer, spec, letter.record(), options, stopping, context).await {
            Outcome::Stopped => return Err(()),
            Outcome::Sent => {
                context.metrics.records_delivered.inc();
                dead::settle(&context.store, &letter, None)
            }
            Outcome::GaveUp {
                reason,
                error,
                attempts,
            } => {
                context.metrics.dead_letters.inc();
                dead::settle(&context.store, &letter, Some((reason, &error, attempts)))
            }
        };
        if let Err(error) = outcome {
            tracing::error!(%error, "could not update a dead letter");
        }
    }
    Ok(())
}

async fn deliver(
    mailer: &AsyncSmtpTransport<Tokio1Executor>,
    spec: &SmtpSpec,
    record: &serde_json::Value,
    options: &WebhookOptions,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
    context: &DispatchContext,
) -> Outcome {
    let mail = match message(spec, record) {
        Ok(mail) => mail,
        Err(error) => {
            return Outcome::GaveUp {
                reason: Reason::Refused,
                error,
                attempts: 0,
            }
        }
    };
    let mut last_error = String::new();
    let attempts_max = options.attempts_max.max(1);
    for attempt in 1..=attempts_max {
        if attempt > 1 {
            tokio::select! {
                _ = tokio::time::sleep(options.backoff(attempt - 1)) => {},
                _ = stopping.changed() => return Outcome::Stopped,
            }
        }
        let started = Instant::now();
        match mailer.send(mail.clone()).await {
            Ok(_) => {
                context.metrics.delivery_latency.observe(started.elapsed());
                return Outcome::Sent;
            }
            Err(error) => {
                context.metrics.delivery_failures.inc();
                last_error = error.to_string();
                // A 5xx reply will not get better by asking again.
                if error.is_permanent() {
                    return Outcome::GaveUp {
                        reason: Reason::Refused,
                        error: last_error,
                        attempts: attempt,
                    };
                }
                tracing::debug!(%error, attempt, "SMTP delivery failed; retrying");
            }
        }
    }
    Outcome::GaveUp {
        reason: Reason::AttemptsExhausted,
        error: last_error,
        attempts: attempts_max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_an_alternative_message_with_the_list_headers() {
        let spec = SmtpSpec::parse("smtp://127.0.0.1:25?from=Shop%20%3Cshop@mail.example%3E&tls=none").expect("spec");
        let record = serde_json::json!({
            "kind": "send", "channel": "email", "id": "abc123", "email": "ana@example.org",
            "subject": "خوش آمدید", "body": "<p dir=\"rtl\">سلام <b>آنا</b></p>", "locale": "fa",
            "unsubscribe_url": "http://127.0.0.1:8080/u/T.S",
        });
        let text = String::from_utf8(message(&spec, &record).expect("message").formatted()).expect("utf-8");
        assert!(text.contains("Message-ID: <abc123@mail.example>"), "{text}");
        assert!(
            text.contains("List-Unsubscribe: <http://127.0.0.1:8080/u/T.S>"),
            "{text}"
        );
        assert!(
            text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
            "{text}"
        );
        assert!(text.contains("Subject: =?utf-8?b?"), "{text}");
        assert!(text.contains("Content-Language: fa"), "{text}");
        assert!(text.contains("multipart/alternative"), "{text}");
        let without = serde_json::json!({"kind": "send", "channel": "email", "id": "x"});
        assert!(message(&spec, &without)
            .expect_err("refused")
            .contains("no email address"));
    }
}
