//! Keystroke to published diagnostics in `journeyc lsp` on a 10,000-line
//! workspace (target: ≤ 30 ms median), measured end to end against the real
//! binary over its stdio: the time from writing a `didChange` to reading the
//! `publishDiagnostics` it causes, with the server's default debounce.
//!
//! `cargo bench --bench lsp`; the figures are in docs/performance.md.

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

#[path = "support/workspace.rs"]
mod support;

fn send(stdin: &mut impl Write, message: Value) {
    let body = message.to_string();
    let _ = write!(stdin, "Content-Length: {}\r\n\r\n{body}", body.len());
    let _ = stdin.flush();
}

fn reader(stdout: impl Read + Send + 'static) -> Receiver<Value> {
    let (sender, receiver) = channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        loop {
            let mut length = 0;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 {
                    return;
                }
                if header.trim_end().is_empty() {
                    break;
                }
                if let Some(value) = header.trim_end().strip_prefix("Content-Length: ") {
                    length = value.parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            if let Ok(message) = serde_json::from_slice(&body) {
                if sender.send(message).is_err() {
                    return;
                }
            }
        }
    });
    receiver
}

/// Waits for diagnostics of `uri`; returns how many there were.
fn diagnostics(incoming: &Receiver<Value>, uri: &str) -> usize {
    loop {
        let message = incoming
            .recv_timeout(Duration::from_secs(30))
            .expect("diagnostics in time");
        if message["method"] == "textDocument/publishDiagnostics" && message["params"]["uri"] == uri {
            return message["params"]["diagnostics"].as_array().map_or(0, Vec::len);
        }
    }
}

fn keystroke(c: &mut Criterion) {
    let sources = support::workspace(222);
    let lines: usize = sources.files().map(|(_, f)| f.text.lines().count()).sum();
    let dir = tempfile::tempdir().expect("temp dir");
    for (_, file) in sources.files() {
        let path = dir.path().join(&file.path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, &file.text).expect("write");
    }
    let edited = dir.path().join("bench/journey_100.journey");
    let text = std::fs::read_to_string(&edited).expect("read");
    let uri = format!("file://{}", edited.display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_journeyc"))
        .arg("lsp")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("journeyc lsp");
    let mut stdin = child.stdin.take().expect("stdin");
    let incoming = reader(child.stdout.take().expect("stdout"));
    let root = format!("file://{}", dir.path().display());
    send(
        &mut stdin,
        json!({ "jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": { "processId": null, "rootUri": root, "capabilities": {} } }),
    );
    while incoming.recv_timeout(Duration::from_secs(60)).expect("initialized")["id"] != 1 {}
    send(
        &mut stdin,
        json!({ "jsonrpc": "2.0", "method": "initialized", "params": {} }),
    );
    send(
        &mut stdin,
        json!({ "jsonrpc": "2.0", "method": "textDocument/didOpen",
                "params": { "textDocument": { "uri": uri, "languageId": "journey", "version": 1, "text": text } } }),
    );
    // The `send hello_100` statement: typing one character makes it an
    // unknown message (one diagnostic), deleting it again clears them.
    let at = text.find("  send hello_100").expect("send") + "  send hello_10".len();
    let before = &text[..at];
    let line = before.matches('\n').count();
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1);
    let mut version = 1;
    let mut broken = false;
    c.bench_function(
        &format!(
            "keystroke to diagnostics, {lines} lines, {} files",
            sources.files().count()
        ),
        |b| {
            b.iter_custom(|iterations| {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    version += 1;
                    let (end, insert) = if broken { (column + 1, "") } else { (column, "x") };
                    let change = json!({ "jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
                    "textDocument": { "uri": uri, "version": version },
                    "contentChanges": [{ "range": { "start": { "line": line, "character": column },
                                                    "end": { "line": line, "character": end } }, "text": insert }] } });
                    let started = Instant::now();
                    send(&mut stdin, change);
                    let count = diagnostics(&incoming, &uri);
                    total += started.elapsed();
                    broken = !broken;
                    // The unknown message, and the warning that the one it named is
                    // no longer sent; none once the character is deleted.
                    assert_eq!(count > 0, broken, "diagnostics after the keystroke: {count}");
                }
                total
            })
        },
    );
    send(&mut stdin, json!({ "jsonrpc": "2.0", "id": 2, "method": "shutdown" }));
    send(&mut stdin, json!({ "jsonrpc": "2.0", "method": "exit" }));
    let _ = child.wait();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(10));
    targets = keystroke
}
criterion_main!(benches);
