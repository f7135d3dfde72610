//! One-click unsubscribe (RFC 8058) and the recipients of a send.
//!
//! Every send's outbox record carries the customer's address for its
//! channel, read from the state the send was made in, and the link
//! `PUBLIC_URL/u/TOKEN` that unsubscribes the customer from that channel.
//! TOKEN is base64url of `customer \n channel`, a dot, and base64url of its
//! HMAC-SHA256 under a key made once per data directory
//! (`DATA/unsubscribe.key`, mode 0600): only the daemon can mint one, and
//! a changed byte makes it unknown. On PostgreSQL the key lives in the
//! database instead (`munsubscribe`, [`Links::open_shared`]): the first
//! node to start writes it if absent and every node reads the one stored,
//! so a link sent by one node is honoured by all (`docs/scale-out.md`).
//!
//! `POST /u/TOKEN` with the body `List-Unsubscribe=One-Click` needs no
//! other authentication; it is taken as an intake call is, an
//! `Unsubscribed` track call naming the channel (through the commit
//! thread, or on PostgreSQL the inbox while its customer's earlier calls
//! wait there), so it is durable before the 200 and sends on that channel
//! after it is applied are skipped `unsubscribed`.
//! `GET /u/TOKEN` only shows a page with a button that posts that body:
//! mail scanners follow links, and a GET must change nothing.

use super::http::AppState;
use super::reply::error;
use crate::compile::bytecode::Value;
use crate::runtime::input::parse_received_call;
use crate::runtime::state::CustomerState;
use crate::runtime::trace::{Kind, TraceRecord};
use crate::syntax::ast::Channel;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::Mac as _;
use std::io;
use std::path::Path;

/// The key's file in the data directory.
pub const KEY_FILE: &str = "unsubscribe.key";
/// On PostgreSQL: the key's record (partition -1, written once).
pub const META_KEY: &[u8] = b"munsubscribe";
const KEY_BYTES: usize = 32;
/// The one body RFC 8058 defines for a one-click POST.
pub const ONE_CLICK_BODY: &str = "List-Unsubscribe=One-Click";

/// The attribute holding a customer's address on each channel that has one.
pub fn address_attribute(channel: Channel) -> Option<&'static str> {
    match channel {
        Channel::Email => Some("email"),
        Channel::Sms => Some("phone"),
        Channel::Push => Some("push_token"),
        Channel::InApp | Channel::Webhook => None,
    }
}

/// Mints and checks unsubscribe links.
pub struct Links {
    key: Vec<u8>,
    /// Without a trailing slash: `https://mail.example.com`.
    public_url: String,
}

impl Links {
    /// Reads the key of `data`, making it on first use.
    pub fn open(data: &Path, public_url: &str) -> io::Result<Links> {
        let path = data.join(KEY_FILE);
        let key = match std::fs::read(&path) {
            Ok(key) => key,
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_key(&path)?,
            Err(e) => return Err(e),
        };
        if key.len() != KEY_BYTES {
            return Err(io::Error::other(format!(
                "{}: {} bytes, expected {KEY_BYTES}; delete it to make a new key (old links stop working)",
                path.display(),
                key.len()
            )));
        }
        Ok(Links::with_key(key, public_url))
    }

    /// The key of the nodes of one PostgreSQL database: the one stored
    /// under [`META_KEY`], written by the first node that starts (an
    /// insert-if-absent, so two nodes starting at once agree). The first
    /// one offers its `DATA/unsubscribe.key` if it has one (a daemon moved
    /// from sled keeps its links working), else a new random key. A node
    /// whose own file holds another key logs that its links stop working.
    pub fn open_shared(pg: &super::kv::pg::Pg, data: &Path, public_url: &str) -> Result<Links, String> {
        let path = data.join(KEY_FILE);
        let own = match std::fs::read(&path) {
            Ok(key) if key.len() == KEY_BYTES => Some(key),
            Ok(_) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let offered = own
            .clone()
            .unwrap_or_else(|| rand::random::<[u8; KEY_BYTES]>().to_vec());
        let stored = pg
            .insert_if_absent_unfenced(META_KEY, &offered)
            .map_err(|e| e.to_string())?
            .to_vec();
        if stored.len() != KEY_BYTES {
            return Err(format!(
                "the database's unsubscribe key has {} bytes, expected {KEY_BYTES}",
                stored.len()
            ));
        }
        if own.as_ref().is_some_and(|own| *own != stored) {
            tracing::warn!(
                path = %path.display(),
                "this node's unsubscribe key differs from the database's, which every node uses: links it signed before stop working"
            );
        }
        Ok(Links::with_key(stored, public_url))
    }

    pub fn with_key(key: Vec<u8>, public_url: &str) -> Links {
        Links {
            key,
            public_url: public_url.trim_end_matches('/').to_string(),
        }
    }

    fn mac(&self, payload: &[u8]) -> hmac::Hmac<sha2::Sha256> {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(payload);
        mac
    }

    pub fn token(&self, customer: &str, channel: Channel) -> String {
        let payload = format!("{customer}\n{}", channel.as_str());
        let signature = self.mac(payload.as_bytes()).finalize().into_bytes();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(signature)
        )
    }

    /// The customer and channel of a token this key minted.
    pub fn verify(&self, token: &str) -> Option<(String, Channel)> {
        let (payload, signature) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        // Constant time.
        self.mac(&payload).verify_slice(&signature).ok()?;
        let payload = String::from_utf8(payload).ok()?;
        let (customer, channel) = payload.rsplit_once('\n')?;
        Some((customer.to_string(), Channel::parse(channel)?))
    }

    pub fn url(&self, customer: &str, channel: Channel) -> String {
        format!("{}/u/{}", self.public_url, self.token(customer, channel))
    }
}

fn create_key(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Write as _;
    let key: [u8; KEY_BYTES] = rand::random();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(&key)?;
    file.sync_all()?;
    tracing::info!(path = %path.display(), "made the unsubscribe key");
    Ok(key.to_vec())
}

/// The outbox line of a trace record: a send gets its recipient (the
/// channel's address attribute, when the customer has one) and its
/// unsubscribe link; every other record is the trace line as it is.
pub fn outbox_line(record: &TraceRecord, state: &CustomerState, links: Option<&Links>) -> String {
    let line = record.to_json_line();
    let channel = record.channel.as_deref().and_then(Channel::parse);
    let (Kind::Send, Some(channel)) = (record.kind, channel) else {
        return line;
    };
    let mut extra = Vec::new();
    if let Some(attribute) = address_attribute(channel) {
        if let Some(Value::String(address)) = state.profile.get(attribute) {
            extra.push((attribute, address.clone()));
        }
    }
    if let Some(links) = links {
        extra.push(("unsubscribe_url", links.url(&record.customer, channel)));
    }
    // Appended after the trace fields, as `seq` is by the JSONL sink.
    let mut line = line;
    if line.ends_with('}') && !extra.is_empty() {
        line.pop();
        for (name, value) in extra {
            let value = serde_json::to_string(&value).expect("a string always serializes");
            line.push_str(&format!(",\"{name}\":{value}"));
        }
        line.push('}');
    }
    line
}

/// Whether a POST body is RFC 8058's `List-Unsubscribe=One-Click`, sent
/// as `application/x-www-form-urlencoded` or as `multipart/form-data`.
fn is_one_click(body: &[u8]) -> bool {
    let body = String::from_utf8_lossy(body);
    let urlencoded = body.split('&').any(|pair| pair.trim() == ONE_CLICK_BODY);
    let multipart = body.contains("name=\"List-Unsubscribe\"") && body.lines().any(|line| line.trim() == "One-Click");
    urlencoded || multipart
}

/// `/u/{token}`: outside the API's authentication.
pub fn routes() -> Router<AppState> {
    Router::new().route("/u/{token}", get(confirm_page).post(one_click))
}

fn unknown_link() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "token",
        "this unsubscribe link is not one this server made (mistyped or changed)",
    )
}

/// `GET /u/TOKEN`: a page with a button; changes nothing.
async fn confirm_page(State(state): State<AppState>, token: super::http::PathParam) -> Response {
    confirm(&state.links, &token.0)
}

/// The page of `GET /u/TOKEN` (on the owner and a standby).
pub fn confirm(links: &Links, token: &str) -> Response {
    let Some((_, channel)) = links.verify(token) else {
        return unknown_link();
    };
    let what = match channel {
        Channel::Email => "emails",
        Channel::Sms => "text messages",
        Channel::Push => "push notifications",
        Channel::InApp => "in-app messages",
        Channel::Webhook => "these messages",
    };
    Html(format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>Unsubscribe</title></head>\n<body style=\"font-family:sans-serif;max-width:30em;margin:3em auto\">\n\
         <h1>Unsubscribe</h1>\n<p>Stop receiving {what} from us?</p>\n\
         <form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
         <button type=\"submit\">Unsubscribe</button></form>\n</body></html>\n"
    ))
    .into_response()
}

/// `POST /u/TOKEN` with `List-Unsubscribe=One-Click`: unsubscribes, durably.
async fn one_click(State(state): State<AppState>, token: super::http::PathParam, body: axum::body::Bytes) -> Response {
    let runtime = super::commit::current(&state.runtime);
    let call = match one_click_call(
        &state.links,
        &token.0,
        &body,
        &state.store,
        &runtime,
        state.http.future_max_ms,
    ) {
        Ok(Some(call)) => call,
        Ok(None) => return unsubscribed_page(),
        Err(response) => return *response,
    };
    // Taken as the owner takes an intake call: committed at once, or
    // written to the inbox behind its customer's earlier calls waiting
    // there (or, with `--spread`, for the partition's holder), durable
    // either way before the page (`docs/scale-out.md`, "The order of one
    // customer's calls").
    if let Err(answer) = super::http::take_on_owner(&state, vec![call]).await {
        return answer.into_response();
    }
    unsubscribed_page()
}

/// What a one-click `POST /u/TOKEN` asks for, checked as on every node:
/// the `Unsubscribed` track call to take (the owner commits it, a standby
/// writes it to the inbox), `None` when the customer is not stored (erased
/// or never stored: nothing to unsubscribe, and no record is made again for
/// it; answered with the page), or the refusal's answer.
pub fn one_click_call(
    links: &Links,
    token: &str,
    body: &[u8],
    store: &super::store::Store,
    runtime: &super::commit::Runtime,
    future_max_ms: i64,
) -> Result<Option<crate::runtime::input::Call>, Box<Response>> {
    let Some((customer, channel)) = links.verify(token) else {
        return Err(Box::new(unknown_link()));
    };
    if !is_one_click(body) {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "body",
            format!("a one-click unsubscribe posts the body {ONE_CLICK_BODY}"),
        )));
    }
    match store.customer(&customer) {
        Ok(None) => return Ok(None),
        Ok(Some(_)) => {}
        Err(failure) => {
            return Err(Box::new(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "",
                failure.to_string(),
            )))
        }
    }
    let received_at = super::timers::now_ms();
    let call = serde_json::json!({
        "type": "track",
        "userId": customer,
        "event": "Unsubscribed",
        "properties": {"channel": channel.as_str()},
    });
    let call = parse_received_call(&call, &runtime.bundle.schema, received_at, future_max_ms)
        .map_err(|refusal| Box::new(error(StatusCode::UNPROCESSABLE_ENTITY, &refusal.field, refusal.reason)))?;
    tracing::info!(customer = %customer, channel = channel.as_str(), "unsubscribed by one-click link");
    Ok(Some(call))
}

/// The page answering a one-click unsubscribe.
pub fn unsubscribed_page() -> Response {
    Html(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Unsubscribed</title></head>\n\
         <body style=\"font-family:sans-serif;max-width:30em;margin:3em auto\"><h1>You are unsubscribed</h1></body></html>\n",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_changes() {
        let links = Links::with_key(vec![7; KEY_BYTES], "https://mail.example.com/");
        let token = links.token("c/1 ü", Channel::Sms);
        assert_eq!(links.verify(&token), Some(("c/1 ü".to_string(), Channel::Sms)));
        assert_eq!(
            links.url("c1", Channel::Email),
            format!("https://mail.example.com/u/{}", links.token("c1", Channel::Email))
        );
        let other = Links::with_key(vec![8; KEY_BYTES], "https://x");
        assert_eq!(other.verify(&token), None);
        let (payload, signature) = token.split_once('.').expect("dot");
        let forged = format!("{}.{signature}", URL_SAFE_NO_PAD.encode("c2\nsms"));
        assert_eq!(links.verify(&forged), None);
        assert_eq!(links.verify(payload), None);
        assert_eq!(links.verify("not-a-token"), None);
    }

    #[test]
    fn a_send_line_gets_its_recipient_and_link_and_other_lines_stay() {
        let links = Links::with_key(vec![1; KEY_BYTES], "https://m.example");
        let mut state = CustomerState::new("c\"1");
        state
            .profile
            .insert("email".into(), Value::String("a\"b@example.org".into()));
        state
            .profile
            .insert("phone".into(), Value::String("+14155550123".into()));
        let mut send = TraceRecord::new(0, "c\"1", "j", Kind::Send);
        send.channel = Some("email".into());
        let line: serde_json::Value = serde_json::from_str(&outbox_line(&send, &state, Some(&links))).expect("JSON");
        assert_eq!(line["email"], "a\"b@example.org");
        assert!(line.get("phone").is_none(), "only the channel's address");
        assert_eq!(line["unsubscribe_url"], links.url("c\"1", Channel::Email));
        assert_eq!(line["kind"], "send");
        let enter = TraceRecord::new(0, "c\"1", "j", Kind::Enter);
        assert_eq!(outbox_line(&enter, &state, Some(&links)), enter.to_json_line());
        let mut skip = TraceRecord::new(0, "c\"1", "j", Kind::Skip);
        skip.channel = Some("sms".into());
        assert_eq!(outbox_line(&skip, &state, Some(&links)), skip.to_json_line());
        let mut push = send.clone();
        push.channel = Some("push".into());
        assert_eq!(
            outbox_line(&push, &state, None),
            push.to_json_line(),
            "no token, no link"
        );
    }

    #[test]
    fn one_click_bodies() {
        assert!(is_one_click(b"List-Unsubscribe=One-Click"));
        assert!(is_one_click(b"List-Unsubscribe=One-Click\r\n"));
        let multipart =
            b"--b\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--b--\r\n";
        assert!(is_one_click(multipart));
        assert!(!is_one_click(b"List-Unsubscribe=Later") && !is_one_click(b""));
    }

    #[test]
    fn the_key_is_made_once_and_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = Links::open(dir.path(), "http://a").expect("make");
        let second = Links::open(dir.path(), "http://a").expect("read");
        assert_eq!(first.token("c", Channel::Email), second.token("c", Channel::Email));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .expect("stat")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
