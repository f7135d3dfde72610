//! Email over SMTP against a real SMTP server on loopback (a small one in
//! this file: it speaks enough ESMTP for lettre and can answer 4xx/5xx),
//! per-channel routing, recipients, and one-click unsubscribe.

use super::harness::*;
use base64::Engine as _;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_rustls::rustls;

const SMTP_WORKSPACE: &str = r#"
customer {
  email: string?
  locale: locale?
  phone: string?
  push_token: string?
}

event ping { n: int }

message hello email {
  subject "{{ 'خوش آمدید' if customer.locale is startingwith('fa') else 'Welcome' }}"
  body file "templates/hello.html"
}
message nudge push { body "nudge" }

journey pinger {
  trigger ping
  entry always
  send hello
  send nudge
}
"#;

const HELLO_HTML: &str = "<p>Hello <b>friend</b>, see <a href=\"https://shop.example/new\">what is new</a>.</p>";
const HELLO_FA_HTML: &str = "<div dir=\"rtl\"><p>سلام <b>دوست عزیز</b></p></div>";

/// One mail as the server received it.
#[derive(Clone, Debug)]
struct Mail {
    to: Vec<String>,
    data: String,
    /// Whether it came over TLS.
    secure: bool,
}

impl Mail {
    /// A top-level header, unfolded.
    fn header(&self, name: &str) -> Option<String> {
        header_in(self.data.split("\r\n\r\n").next().unwrap_or_default(), name)
    }

    /// `(content type, decoded body)` of each part of the multipart body.
    fn parts(&self) -> Vec<(String, String)> {
        let content_type = self.header("Content-Type").unwrap_or_default();
        let boundary = content_type
            .split("boundary=")
            .nth(1)
            .expect("a multipart boundary")
            .trim_matches('"')
            .to_string();
        self.data
            .split(&format!("--{boundary}"))
            .skip(1)
            .filter(|part| !part.starts_with("--"))
            .map(|part| {
                let (head, body) = part
                    .trim_start_matches("\r\n")
                    .split_once("\r\n\r\n")
                    .expect("part head");
                let encoding = header_in(head, "Content-Transfer-Encoding").unwrap_or_default();
                let kind = header_in(head, "Content-Type").unwrap_or_default();
                (kind, decode(&encoding, body.trim_end()))
            })
            .collect()
    }
}

fn header_in(head: &str, name: &str) -> Option<String> {
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.split("\r\n").find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim().to_string())
    })
}

fn decode(encoding: &str, body: &str) -> String {
    match encoding.to_ascii_lowercase().as_str() {
        "base64" => {
            let joined: String = body.split_whitespace().collect();
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(joined)
                    .expect("base64"),
            )
            .expect("utf-8")
        }
        "quoted-printable" => {
            let joined = body.replace("=\r\n", "");
            let mut bytes = Vec::new();
            let raw = joined.as_bytes();
            let mut i = 0;
            while i < raw.len() {
                if raw[i] == b'=' && i + 3 <= raw.len() {
                    bytes.push(u8::from_str_radix(&joined[i + 1..i + 3], 16).expect("=XX"));
                    i += 3;
                } else {
                    bytes.push(raw[i]);
                    i += 1;
                }
            }
            String::from_utf8(bytes).expect("utf-8")
        }
        _ => body.to_string(),
    }
}

/// RFC 2047 encoded words (`=?utf-8?b?…?=`) decoded and joined.
fn decode_words(value: &str) -> String {
    value
        .split_whitespace()
        .map(|word| {
            let inner = word
                .strip_prefix("=?")
                .and_then(|w| w.strip_suffix("?="))
                .expect("an encoded word");
            let mut pieces = inner.splitn(3, '?');
            let (_charset, kind, text) = (pieces.next(), pieces.next().unwrap_or(""), pieces.next().unwrap_or(""));
            assert!(kind.eq_ignore_ascii_case("b"), "{word}");
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(text).expect("base64")).expect("utf-8")
        })
        .collect()
}

/// What the server answers at the end of DATA: `None` is 250.
type Verdict = dyn Fn(&Mail, usize) -> Option<&'static str> + Send + Sync;

/// How the server offers TLS.
#[derive(Clone)]
enum ServerTls {
    None,
    /// `STARTTLS` after EHLO.
    Starttls(Arc<rustls::ServerConfig>),
    /// TLS from the first byte (`smtps://`).
    Implicit(Arc<rustls::ServerConfig>),
}

/// A self-signed certificate for 127.0.0.1 / localhost: the server's TLS
/// configuration and the certificate's PEM (what a client must trust).
fn self_signed() -> (Arc<rustls::ServerConfig>, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("rcgen");
    let pem = certified.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("server config");
    (Arc::new(config), pem)
}

/// A loopback SMTP server. `verdict(mail, attempt)` (attempt 1 for the
/// first time a Message-ID arrives) can refuse a mail; `delay` is waited
/// before each answer to DATA.
struct SmtpServer {
    addr: String,
    accepted: Arc<Mutex<Vec<Mail>>>,
}

struct Shared {
    delay: Duration,
    accepted: Arc<Mutex<Vec<Mail>>>,
    attempts: Mutex<BTreeMap<String, usize>>,
    verdict: Arc<Verdict>,
}

impl SmtpServer {
    fn start(delay: Duration, verdict: Arc<Verdict>) -> SmtpServer {
        SmtpServer::start_with_tls(delay, verdict, ServerTls::None)
    }

    fn start_with_tls(delay: Duration, verdict: Arc<Verdict>, tls: ServerTls) -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let accepted: Arc<Mutex<Vec<Mail>>> = Arc::default();
        let shared = Arc::new(Shared {
            delay,
            accepted: accepted.clone(),
            attempts: Mutex::default(),
            verdict,
        });
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (shared, tls) = (shared.clone(), tls.clone());
                std::thread::spawn(move || {
                    let _ = serve_connection(stream, &tls, &shared);
                });
            }
        });
        SmtpServer { addr, accepted }
    }

    fn accepted(&self) -> Vec<Mail> {
        self.accepted.lock().expect("lock").clone()
    }

    fn sink(&self) -> String {
        format!(
            "email=smtp://{}?from=Shop%20%3Cnews@shop.example%3E&tls=none",
            self.addr
        )
    }
}

fn serve_connection(stream: TcpStream, tls: &ServerTls, shared: &Shared) -> std::io::Result<()> {
    let wrap = |config: &Arc<rustls::ServerConfig>, stream: TcpStream| -> std::io::Result<_> {
        let connection = rustls::ServerConnection::new(config.clone()).map_err(std::io::Error::other)?;
        Ok(rustls::StreamOwned::new(connection, stream))
    };
    match tls {
        ServerTls::None => session(stream, Stage::Plain, shared).map(|_| ()),
        ServerTls::Implicit(config) => session(wrap(config, stream)?, Stage::Implicit, shared).map(|_| ()),
        ServerTls::Starttls(config) => {
            if let Some(plain) = session(stream, Stage::OffersStarttls, shared)? {
                session(wrap(config, plain)?, Stage::Upgraded, shared)?;
            }
            Ok(())
        }
    }
}

/// Where a session is: what it greets with, offers and is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    Plain,
    OffersStarttls,
    /// After STARTTLS: no new greeting.
    Upgraded,
    Implicit,
}

/// Speaks SMTP on `stream` until QUIT; answers the stream back when the
/// client asks for STARTTLS (offered in [`Stage::OffersStarttls`]).
fn session<S: std::io::Read + Write>(stream: S, stage: Stage, shared: &Shared) -> std::io::Result<Option<S>> {
    let secure = matches!(stage, Stage::Upgraded | Stage::Implicit);
    let starttls = stage == Stage::OffersStarttls;
    let mut reader = BufReader::new(stream);
    if stage != Stage::Upgraded {
        reader.get_mut().write_all(b"220 test.local ESMTP\r\n")?;
    }
    let mut to = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        let command = line.trim_end().to_ascii_uppercase();
        let reply: String = if command.starts_with("EHLO") {
            let offer = if starttls { "250-STARTTLS\r\n" } else { "" };
            format!("250-test.local\r\n{offer}250-8BITMIME\r\n250 SMTPUTF8\r\n")
        } else if command == "STARTTLS" && starttls {
            reader.get_mut().write_all(b"220 go ahead\r\n")?;
            return Ok(Some(reader.into_inner()));
        } else if command.starts_with("HELO") || command.starts_with("NOOP") {
            "250 ok\r\n".into()
        } else if command.starts_with("MAIL FROM") || command.starts_with("RSET") {
            to.clear();
            "250 ok\r\n".into()
        } else if command.starts_with("RCPT TO") {
            let address = line.trim_end()[8..]
                .trim()
                .trim_matches(|c| c == '<' || c == '>')
                .to_string();
            to.push(address);
            "250 ok\r\n".into()
        } else if command == "DATA" {
            reader.get_mut().write_all(b"354 go on\r\n")?;
            let mut data = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 {
                    return Ok(None);
                }
                if line == ".\r\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            let mail = Mail {
                to: std::mem::take(&mut to),
                data,
                secure,
            };
            let id = mail.header("Message-ID").unwrap_or_default();
            let attempt = {
                let mut attempts = shared.attempts.lock().expect("lock");
                let count = attempts.entry(id).or_default();
                *count += 1;
                *count
            };
            std::thread::sleep(shared.delay);
            match (shared.verdict)(&mail, attempt) {
                None => {
                    shared.accepted.lock().expect("lock").push(mail);
                    "250 queued\r\n".into()
                }
                Some(reply) => format!("{reply}\r\n"),
            }
        } else if command == "QUIT" {
            reader.get_mut().write_all(b"221 bye\r\n")?;
            return Ok(None);
        } else {
            "502 not implemented\r\n".into()
        };
        reader.get_mut().write_all(reply.as_bytes())?;
        reader.get_mut().flush()?;
    }
}

fn always_accept() -> Arc<Verdict> {
    Arc::new(|_: &Mail, _: usize| None)
}

fn smtp_env() -> Env {
    let env = Env::new(SMTP_WORKSPACE);
    let templates = env.workspace().join("templates");
    std::fs::create_dir_all(&templates).expect("mkdir");
    std::fs::write(templates.join("hello.html"), HELLO_HTML).expect("write");
    std::fs::write(templates.join("hello.fa.html"), HELLO_FA_HTML).expect("write");
    env
}

fn identify(customer: &str, traits: &str) -> String {
    format!(r#"{{"type":"identify","userId":"{customer}","traits":{traits},"messageId":"i-{customer}"}}"#)
}

/// Gives `customer` the address `CUSTOMER@example.org` and pings it;
/// answers the address.
fn address_and_ping(daemon: &Daemon, customer: &str) -> String {
    let address = format!("{customer}@example.org");
    let traits = format!(r#"{{"email":"{address}"}}"#);
    assert_eq!(daemon.post("/v1/identify", &identify(customer, &traits)).status, 200);
    let track = ping(customer, &format!("p-{customer}"), 1);
    assert_eq!(daemon.post("/v1/track", &track).status, 200);
    address
}

/// [`address_and_ping`], then waits for the customer's mail at `server`.
fn mail_for(daemon: &Daemon, server: &SmtpServer, customer: &str) -> Mail {
    let address = address_and_ping(daemon, customer);
    eventually("the mail", || {
        server.accepted().into_iter().find(|mail| mail.to == [address.clone()])
    })
}

fn sends(env: &Env, customer: &str) -> Vec<serde_json::Value> {
    sink_lines(&env.sends())
        .into_iter()
        .filter(|l| l["customer"] == customer && (l["kind"] == "send" || l["kind"] == "skip"))
        .collect()
}

/// The mail of a Persian-speaking customer: multipart/alternative with a
/// text part made from the Persian variant and the variant as HTML, an RFC
/// 2047 subject, Message-ID from the send id, one-click List-Unsubscribe.
/// Push goes to its own sink with the device token; the SMTP sink takes
/// only email, the JSONL sink of every channel still has every record.
#[test]
fn smtp_mail_carries_the_locale_variant_message_id_and_list_unsubscribe() {
    let server = SmtpServer::start(Duration::ZERO, always_accept());
    let env = smtp_env();
    let push_sink = format!("push=jsonl:{}", env.data().join("push.jsonl").display());
    let all_sink = format!("jsonl:{}", env.sends().display());
    let daemon = env.start(&["--sink", &server.sink(), "--sink", &push_sink, "--sink", &all_sink]);
    let traits = r#"{"email":"sara@example.org","locale":"fa-IR","push_token":"tok-sara"}"#;
    assert_eq!(daemon.post("/v1/identify", &identify("sara", traits)).status, 200);
    assert_eq!(daemon.post("/v1/track", &ping("sara", "p1", 1)).status, 200);
    let mail = eventually("the mail", || server.accepted().into_iter().next());
    let send = sends(&env, "sara")
        .into_iter()
        .find(|l| l["channel"] == "email")
        .expect("the email send in the JSONL sink");
    let id = send["id"].as_str().expect("id");

    assert_eq!(mail.to, vec!["sara@example.org".to_string()]);
    assert_eq!(mail.header("To").as_deref(), Some("sara@example.org"));
    assert_eq!(mail.header("From").as_deref(), Some("Shop <news@shop.example>"));
    assert_eq!(mail.header("Message-ID"), Some(format!("<{id}@shop.example>")));
    let subject = mail.header("Subject").expect("subject");
    assert!(subject.to_ascii_lowercase().starts_with("=?utf-8?b?"), "{subject}");
    assert_eq!(decode_words(&subject), "خوش آمدید");
    assert_eq!(mail.header("Content-Language").as_deref(), Some("fa"));
    let url = send["unsubscribe_url"].as_str().expect("unsubscribe_url in the record");
    assert!(url.starts_with(&format!("http://{}/u/", daemon.addr)), "{url}");
    assert_eq!(mail.header("List-Unsubscribe"), Some(format!("<{url}>")));
    assert_eq!(
        mail.header("List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    assert!(mail
        .header("Content-Type")
        .is_some_and(|t| t.starts_with("multipart/alternative")));
    let parts = mail.parts();
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert!(parts[0].0.starts_with("text/plain"), "{parts:?}");
    assert!(parts[1].0.starts_with("text/html"), "{parts:?}");
    assert_eq!(parts[1].1, HELLO_FA_HTML);
    assert!(
        parts[0].1.contains("سلام") && parts[0].1.contains("دوست عزیز"),
        "{parts:?}"
    );
    assert!(!parts[0].1.contains('<'), "the text part has no markup: {parts:?}");

    // Routing: the push sink has the push send alone, with its token.
    let push = eventually("the push record", || {
        let lines = sink_lines(&env.data().join("push.jsonl"));
        (!lines.is_empty()).then_some(lines)
    });
    assert!(push.iter().all(|l| l["channel"] == "push"), "{push:?}");
    assert_eq!(push[0]["push_token"], "tok-sara");
    assert!(push[0].get("email").is_none(), "{push:?}");
    // The sink of every channel keeps every record (enter and exit too).
    let kinds: BTreeSet<String> = sink_lines(&env.sends())
        .iter()
        .filter_map(|l| l["kind"].as_str().map(str::to_string))
        .collect();
    assert!(kinds.contains("enter") && kinds.contains("send"), "{kinds:?}");
    assert_eq!(server.accepted().len(), 1, "one email, no push over SMTP");
    assert_eq!(daemon.terminate(), Some(0));
}

/// `GET /u/TOKEN` only shows a page; a tampered token changes nothing; the
/// one-click POST unsubscribes durably, and the next email is a skip.
#[test]
fn one_click_unsubscribe_with_a_good_and_a_tampered_token() {
    let server = SmtpServer::start(Duration::ZERO, always_accept());
    let env = smtp_env();
    let all_sink = format!("jsonl:{}", env.sends().display());
    let daemon = env.start(&["--sink", &server.sink(), "--sink", &all_sink]);
    let mail = mail_for(&daemon, &server, "ana");
    let link = mail.header("List-Unsubscribe").expect("List-Unsubscribe");
    let url = link.trim_matches(|c| c == '<' || c == '>');
    let path = &url[url.find("/u/").expect("/u/")..];
    let status = |daemon: &Daemon| daemon.get("/v1/customers/ana").json()["subscriptions"]["email"]["status"].clone();

    let page = daemon.request_with("GET", path, None, None);
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(
        page.body.contains("<form method=\"post\"") && page.body.contains("One-Click"),
        "{}",
        page.body
    );
    assert_eq!(status(&daemon), "subscribed", "GET never unsubscribes");

    let token = path.trim_start_matches("/u/");
    let (payload, signature) = token.split_once('.').expect("token");
    let other = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("bob\nemail");
    for tampered in [
        format!("/u/{other}.{signature}"),
        format!("/u/{payload}.{signature}x"),
        "/u/nonsense".into(),
    ] {
        let refused = daemon.request_with("POST", &tampered, Some("List-Unsubscribe=One-Click"), None);
        assert_eq!(refused.status, 404, "{tampered}: {}", refused.body);
        assert_eq!(refused.json()["error"]["field"], "token", "{}", refused.body);
    }
    let wrong_body = daemon.request_with("POST", path, Some("unsubscribe=yes"), None);
    assert_eq!(wrong_body.status, 400, "{}", wrong_body.body);
    assert_eq!(status(&daemon), "subscribed");
    assert_eq!(
        daemon.get("/v1/customers/bob").status,
        404,
        "the forged customer was not made"
    );

    let done = daemon.request_with("POST", path, Some("List-Unsubscribe=One-Click"), None);
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(status(&daemon), "unsubscribed");
    // Durable: still so after a restart, and the next email is skipped.
    assert_eq!(daemon.terminate(), Some(0));
    let daemon = env.start(&["--sink", &server.sink(), "--sink", &all_sink]);
    assert_eq!(status(&daemon), "unsubscribed");
    assert_eq!(daemon.post("/v1/track", &ping("ana", "p2", 2)).status, 200);
    let skip = eventually("the skip", || {
        sends(&env, "ana")
            .into_iter()
            .find(|l| l["kind"] == "skip" && l["channel"] == "email")
    });
    assert_eq!(skip["reason"], "unsubscribed");
    assert_eq!(server.accepted().len(), 1, "no second mail");
    // An erased customer's link answers, and makes no record again.
    assert_eq!(daemon.request("DELETE", "/v1/customers/ana", None).status, 200);
    let again = daemon.request_with("POST", path, Some("List-Unsubscribe=One-Click"), None);
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(daemon.get("/v1/customers/ana").status, 404);
    assert_eq!(daemon.terminate(), Some(0));
}

/// With an SMTP sink, an email to a customer without an address is a skip
/// `no_address` decided by the runtime; without one, it is a send.
#[test]
fn email_without_an_address_is_skipped_no_address_when_smtp_delivers() {
    let server = SmtpServer::start(Duration::ZERO, always_accept());
    let env = smtp_env();
    let all_sink = format!("jsonl:{}", env.sends().display());
    let daemon = env.start(&["--sink", &server.sink(), "--sink", &all_sink]);
    assert_eq!(daemon.post("/v1/track", &ping("nomail", "p1", 1)).status, 200);
    let records = eventually("the push send", || {
        let records = sends(&env, "nomail");
        (records.len() == 2).then_some(records)
    });
    let email = records.iter().find(|l| l["channel"] == "email").expect("email record");
    assert_eq!(email["kind"], "skip");
    assert_eq!(email["reason"], "no_address");
    assert_eq!(daemon.terminate(), Some(0));
    assert!(server.accepted().is_empty());

    // The same workspace without an SMTP sink sends as before.
    let plain = smtp_env();
    let daemon = plain.start(&[]);
    assert_eq!(daemon.post("/v1/track", &ping("nomail", "p1", 1)).status, 200);
    let email = eventually("the email send", || {
        sends(&plain, "nomail").into_iter().find(|l| l["channel"] == "email")
    });
    assert_eq!(email["kind"], "send");
}

/// A workspace with email messages but no `email: string` attribute cannot
/// be served by an SMTP sink: `serve` says why and exits 2.
#[test]
fn serve_refuses_an_smtp_sink_without_an_email_attribute() {
    let env = Env::new(WORKSPACE);
    let (code, stderr) = serve_refused(&env, &["--sink", "email=smtp://127.0.0.1:9?from=a@b.example"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("email: string") && stderr.contains("hello"), "{stderr}");
    let (code, stderr) = serve_refused(&env, &["--sink", "sms=smtp://127.0.0.1:9?from=a@b.example"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--sink") && stderr.contains("delivers email"),
        "{stderr}"
    );
}

/// With an SMTP sink running, a reload to a workspace without the `email`
/// attribute is refused and the running version keeps delivering.
#[test]
fn a_reload_that_drops_the_email_attribute_is_refused_with_an_smtp_sink() {
    let server = SmtpServer::start(Duration::ZERO, always_accept());
    let env = smtp_env();
    let daemon = env.start(&["--sink", &server.sink()]);
    let file = env.workspace().join("test.journey");
    std::fs::write(&file, SMTP_WORKSPACE.replace("  email: string?\n", "")).expect("write");
    let refused = daemon.post("/v1/reload", "");
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert!(
        refused.json()["diagnostics"]
            .as_str()
            .is_some_and(|d| d.contains("email: string")),
        "{}",
        refused.body
    );
    mail_for(&daemon, &server, "r1");
    assert_eq!(daemon.terminate(), Some(0));
}

/// A 4xx is retried (same Message-ID) until accepted; a 5xx becomes a dead
/// letter at once, and the mails after it still go out.
#[test]
fn transient_smtp_errors_are_retried_and_permanent_ones_dead_lettered() {
    let verdict: Arc<Verdict> = Arc::new(|mail: &Mail, attempt: usize| {
        if mail.to.iter().any(|t| t.starts_with("gone@")) {
            Some("550 5.1.1 no such mailbox")
        } else if attempt <= 2 {
            Some("451 4.3.0 try again later")
        } else {
            None
        }
    });
    let server = SmtpServer::start(Duration::ZERO, verdict);
    let env = smtp_env();
    let all_sink = format!("jsonl:{}", env.sends().display());
    let daemon = env.start(&[
        "--sink",
        &server.sink(),
        "--sink",
        &all_sink,
        "--webhook-retry-ms",
        "20",
    ]);
    for customer in ["gone", "kept"] {
        address_and_ping(&daemon, customer);
    }
    let mail = eventually("the retried mail", || server.accepted().into_iter().next());
    assert_eq!(mail.to, vec!["kept@example.org".to_string()]);
    let metrics = daemon.get("/metrics").body;
    let dead = metrics
        .lines()
        .find(|l| l.starts_with("journeyc_dead_letters_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse::<f64>().ok());
    assert_eq!(dead, Some(1.0), "{metrics}");
    assert_eq!(server.accepted().len(), 1);
    assert_eq!(daemon.terminate(), Some(0));
}

/// A mailbox that keeps answering 451 holds back only its own customer's
/// mail: the others' arrive while it waits in the retry set, and it
/// arrives once the server takes it.
#[test]
fn a_failing_mailbox_does_not_hold_back_other_customers_mail() {
    let failing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = failing.clone();
    let verdict: Arc<Verdict> = Arc::new(move |mail: &Mail, _: usize| {
        let slow = mail.to.iter().any(|t| t.starts_with("slow@"));
        (slow && flag.load(std::sync::atomic::Ordering::SeqCst)).then_some("451 4.2.2 mailbox busy")
    });
    let server = SmtpServer::start(Duration::ZERO, verdict);
    let env = smtp_env();
    let all_sink = format!("jsonl:{}", env.sends().display());
    let daemon = env.start(&[
        "--sink",
        &server.sink(),
        "--sink",
        &all_sink,
        "--webhook-attempts",
        "30",
        "--webhook-retry-ms",
        "500",
    ]);
    address_and_ping(&daemon, "slow");
    eventually("the slow mailbox's first failure", || {
        (super::webhook::metric(&daemon, "journeyc_outbox_retry_waiting") == 1).then_some(())
    });
    let others: Vec<String> = (1..=5).map(|n| address_and_ping(&daemon, &format!("b{n}"))).collect();
    let arrived = eventually("the other customers' mail", || {
        let to: Vec<String> = server.accepted().iter().flat_map(|mail| mail.to.clone()).collect();
        (to.len() >= 5).then_some(to)
    });
    assert_eq!(arrived, others);
    assert_eq!(super::webhook::metric(&daemon, "journeyc_outbox_retry_waiting"), 1);
    assert_eq!(super::webhook::metric(&daemon, "journeyc_outbox_dead_letters"), 0);
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let mail = eventually("the slow mailbox's mail", || {
        server
            .accepted()
            .into_iter()
            .find(|mail| mail.to == ["slow@example.org".to_string()])
    });
    let send = sends(&env, "slow").remove(0);
    let id = send["id"].as_str().expect("id");
    assert_eq!(
        mail.header("Message-ID").as_deref(),
        Some(format!("<{id}@shop.example>").as_str())
    );
    eventually("an empty retry set", || {
        (super::webhook::metric(&daemon, "journeyc_outbox_retry_waiting") == 0).then_some(())
    });
    assert_eq!(server.accepted().len(), 6);
    assert_eq!(daemon.terminate(), Some(0));
}

/// SIGKILL while mails are being delivered (the server is slow to answer
/// DATA); after a restart every send reached the server, and a mail that
/// arrived twice has the same Message-ID both times.
#[test]
fn sigkill_during_smtp_delivery_loses_no_mail_and_keeps_message_ids() {
    const CUSTOMERS: usize = 12;
    let server = SmtpServer::start(Duration::from_millis(150), always_accept());
    let env = smtp_env();
    let all_sink = format!("jsonl:{}", env.sends().display());
    let daemon = env.start(&["--sink", &server.sink(), "--sink", &all_sink]);
    let calls: Vec<String> = (0..CUSTOMERS)
        .flat_map(|i| {
            let customer = format!("k{i}");
            [
                identify(&customer, &format!(r#"{{"email":"{customer}@example.org"}}"#)),
                ping(&customer, &format!("p-{customer}"), 1),
            ]
        })
        .collect();
    let response = daemon.post("/v1/batch", &format!("{{\"batch\":[{}]}}", calls.join(",")));
    assert_eq!(response.status, 200, "{}", response.body);
    eventually("a few mails", || (server.accepted().len() >= 3).then_some(()));
    daemon.kill();
    let delivered_before = server.accepted().len();
    assert!(delivered_before < CUSTOMERS, "the kill came too late to test anything");

    let daemon = env.start(&["--sink", &server.sink(), "--sink", &all_sink]);
    let ids: BTreeSet<String> = eventually("every email send in the JSONL sink", || {
        let ids: BTreeSet<String> = sink_lines(&env.sends())
            .into_iter()
            .filter(|l| l["kind"] == "send" && l["channel"] == "email")
            .filter_map(|l| l["id"].as_str().map(str::to_string))
            .collect();
        (ids.len() == CUSTOMERS).then_some(ids)
    });
    let expected: BTreeSet<String> = ids.iter().map(|id| format!("<{id}@shop.example>")).collect();
    let mails = eventually("every mail at the server", || {
        let mails = server.accepted();
        let seen: BTreeSet<String> = mails.iter().filter_map(|m| m.header("Message-ID")).collect();
        (seen == expected).then_some(mails)
    });
    // Duplicates (at least once) are the same mail: same Message-ID, same recipient.
    let mut recipients: BTreeMap<String, BTreeSet<Vec<String>>> = BTreeMap::new();
    for mail in &mails {
        recipients
            .entry(mail.header("Message-ID").expect("Message-ID"))
            .or_default()
            .insert(mail.to.clone());
    }
    assert!(recipients.values().all(|to| to.len() == 1), "{recipients:?}");
    assert!(
        mails.len() <= CUSTOMERS + 4,
        "at most the mails in flight again: {}",
        mails.len()
    );
    assert_eq!(daemon.terminate(), Some(0));
}

/// STARTTLS and implicit TLS against a self-signed certificate trusted
/// through `ca=`: the mail arrives, over TLS.
#[test]
fn smtp_over_starttls_and_implicit_tls_with_a_private_ca() {
    let (config, pem) = self_signed();
    let env = smtp_env();
    let ca = env.root.path().join("ca.pem");
    std::fs::write(&ca, &pem).expect("write");
    for (tls, scheme) in [
        (ServerTls::Starttls(config.clone()), "smtp"),
        (ServerTls::Implicit(config.clone()), "smtps"),
    ] {
        let server = SmtpServer::start_with_tls(Duration::ZERO, always_accept(), tls);
        let port = server.addr.rsplit(':').next().expect("port");
        let sink = format!(
            "email={scheme}://127.0.0.1:{port}?from=news@shop.example&ca={}",
            ca.display()
        );
        let daemon = env.start(&["--sink", &sink]);
        let mail = mail_for(&daemon, &server, &format!("t-{scheme}"));
        assert!(mail.secure, "{scheme}: not over TLS");
        assert_eq!(daemon.terminate(), Some(0));
    }
    let (code, stderr) = serve_refused(
        &env,
        &[
            "--sink",
            "email=smtps://127.0.0.1:1?from=a@b.example&ca=/nonexistent.pem",
        ],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("ca=/nonexistent.pem"), "{stderr}");
}

/// A blocking HTTP receiver on loopback: answers 200 to every request and
/// keeps the bodies.
fn webhook_receiver() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let bodies: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let kept = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                line.clear();
            }
            let mut body = vec![0; length];
            if std::io::Read::read_exact(&mut reader, &mut body).is_ok() {
                if let Ok(json) = serde_json::from_slice(&body) {
                    kept.lock().expect("lock").push(json);
                }
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (addr, bodies)
}

/// An `sms=` webhook gets the SMS sends alone, each with the customer's
/// E.164 `phone` and its unsubscribe link; intake refuses a phone that is
/// not E.164, naming the trait.
#[test]
fn an_sms_webhook_gets_the_phone_and_the_unsubscribe_url() {
    let env = Env::new(
        "customer { phone: string? }\nevent ping { n: int }\nmessage code sms { body \"your code\" }\n\
         message hi email { subject \"Hi\" body \"hi\" }\n\
         journey j {\n  trigger ping\n  entry always\n  send hi\n  send code\n}\n",
    );
    let (addr, bodies) = webhook_receiver();
    let sink = format!("sms=webhook:http://{addr}/sms");
    let all_sink = format!("jsonl:{}", env.sends().display());
    let daemon = env.start(&["--sink", &sink, "--sink", &all_sink]);
    let refused = daemon.post("/v1/identify", &identify("p1", r#"{"phone":"0415 555 0123"}"#));
    assert_eq!(refused.status, 422, "{}", refused.body);
    assert_eq!(refused.json()["error"]["field"], "traits.phone", "{}", refused.body);
    assert_eq!(
        daemon
            .post("/v1/identify", &identify("p1", r#"{"phone":"+14155550123"}"#))
            .status,
        200
    );
    assert_eq!(daemon.post("/v1/track", &ping("p1", "t1", 1)).status, 200);
    let body = eventually("the SMS at the webhook", || {
        bodies.lock().expect("lock").first().cloned()
    });
    assert_eq!(body["channel"], "sms");
    assert_eq!(body["phone"], "+14155550123");
    assert_eq!(body["body"], "your code");
    let url = body["unsubscribe_url"].as_str().expect("unsubscribe_url");
    assert!(url.starts_with(&format!("http://{}/u/", daemon.addr)), "{url}");
    // The email went to the JSONL sink only.
    eventually("the email in the JSONL sink", || {
        sends(&env, "p1").into_iter().find(|l| l["channel"] == "email")
    });
    assert_eq!(daemon.terminate(), Some(0));
    assert_eq!(
        bodies.lock().expect("lock").len(),
        1,
        "{:?}",
        bodies.lock().expect("lock")
    );
}
