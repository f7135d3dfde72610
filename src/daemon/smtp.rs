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
//! A transient failure (a 4xx reply, a lost connection) puts the record in
//! the sink's retry set ([`super::retry`]), tried again with the webhook
//! backoff while other customers' mail goes on; a permanent one (a 5xx
//! reply) or the last failed attempt parks the record as a dead letter. The
//! cursor moves after each record, so a crash between the server's 250 and
//! the cursor sends that one message again, with its Message-ID.

use super::outbox::DispatchContext;
use super::rate::{ChannelLimiters, Rates};
use super::retry::{self, Attempt, Sender};
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

/// Runs an SMTP sink until `stopping`.
pub async fn run(
    context: DispatchContext,
    name: String,
    spec: SmtpSpec,
    options: WebhookOptions,
    rates: Rates,
    cursor: super::store::Cursors,
) {
    let mailer = match transport(&spec, options.timeout_ms) {
        Ok(mailer) => mailer,
        Err(error) => {
            tracing::error!(%error, sink = %name, "cannot set up the SMTP sink");
            return;
        }
    };
    let sender = SmtpSender {
        mailer,
        spec,
        limiter: ChannelLimiters::new(&rates),
        context: context.clone(),
    };
    retry::run(context, name, sender, options, cursor).await;
}

/// One SMTP sink's connection pool and rate limiter.
struct SmtpSender {
    mailer: AsyncSmtpTransport<Tokio1Executor>,
    spec: SmtpSpec,
    /// `--rate email=N/s`: one slot per try, taken in order.
    limiter: ChannelLimiters,
    context: DispatchContext,
}

impl SmtpSender {
    /// Mails one record once (its Message-ID is the send id, the same on
    /// every try).
    async fn send(&mut self, record: &serde_json::Value, stopping: &mut tokio::sync::watch::Receiver<bool>) -> Attempt {
        let mail = match message(&self.spec, record) {
            Ok(mail) => mail,
            Err(error) => return Attempt::Permanent(error),
        };
        let wait = self.limiter.reserve(Channel::Email.as_str(), Instant::now());
        if !wait.is_zero() {
            self.context.metrics.rate_limited.inc();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {},
                _ = stopping.changed() => return Attempt::Stopped,
            }
        }
        let started = Instant::now();
        match self.mailer.send(mail).await {
            Ok(_) => {
                self.context.metrics.delivery_latency.observe(started.elapsed());
                Attempt::Done
            }
            Err(error) => {
                self.context.metrics.delivery_failures.inc();
                // A 5xx reply will not get better by asking again.
                if error.is_permanent() {
                    Attempt::Permanent(error.to_string())
                } else {
                    tracing::debug!(%error, "SMTP delivery failed");
                    Attempt::Transient(error.to_string())
                }
            }
        }
    }
}

impl Sender for SmtpSender {
    fn takes(&self, record: &serde_json::Value) -> bool {
        record.get("kind").and_then(|k| k.as_str()) == Some("send")
            && record.get("channel").and_then(|c| c.as_str()) == Some(Channel::Email.as_str())
    }

    fn attempt(
        &mut self,
        record: &serde_json::Value,
        stopping: &mut tokio::sync::watch::Receiver<bool>,
    ) -> impl std::future::Future<Output = Attempt> + Send {
        self.send(record, stopping)
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
