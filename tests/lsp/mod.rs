//! `journeyc lsp` driven over stdio with real JSON-RPC messages.

mod client;
mod edits;

use client::{position, range, uri, Client};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

pub const SCHEMA: &str = r#"customer {
  plan: "free" | "pro" | "team"
  email_opt_in: bool
  timezone: timezone?
}

event signed_up { source: string }
event purchase { amount: number, note: string }
"#;

pub const MAIN: &str = r#"message welcome email { subject "خوش آمدید" body "سلام {{ customer.plan }}" consent customer.email_opt_in }

segment pro = customer.plan == "pro"

journey onboarding {
  trigger signed_up
  entry once

  send welcome
  nudge: wait 1d12h
  wait for purchase within 3d {
    if event.note != "سلام 😀" and pro {
      send welcome
    }
  }
}
"#;

pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("schema.journey"), SCHEMA).expect("write");
        std::fs::write(dir.path().join("main.journey"), MAIN).expect("write");
        Workspace { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The protocol position (line, UTF-16 column) of the `nth` occurrence of
/// `needle` in `text`, plus `shift` characters.
pub fn find(text: &str, needle: &str, nth: usize, shift: usize) -> (u32, u32) {
    let offset = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("{needle} #{nth}"))
        .0;
    let offset = offset + text[offset..].chars().take(shift).map(char::len_utf8).sum::<usize>();
    let before = &text[..offset];
    let line = before.matches('\n').count() as u32;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..].encode_utf16().count() as u32;
    (line, column)
}

fn at(path: &Path, (line, character): (u32, u32)) -> Value {
    json!({ "textDocument": { "uri": uri(path) }, "position": position(line, character) })
}

fn started() -> (Workspace, Client) {
    let workspace = Workspace::new();
    let mut client = Client::start(workspace.dir.path());
    client.open(&workspace.path("main.journey"), MAIN);
    (workspace, client)
}

fn hover_text(client: &mut Client, path: &Path, at_: (u32, u32)) -> String {
    let result = client.request("textDocument/hover", at(path, at_));
    result["contents"]["value"].as_str().unwrap_or("").to_string()
}

#[test]
fn diagnostics_follow_a_rename_across_files_and_clear_when_fixed() {
    let (workspace, mut client) = started();
    let schema = workspace.path("schema.journey");
    client.open(&schema, SCHEMA);
    client.drain();
    // Rename the event in the schema: its use in the other file is flagged.
    let (line, column) = find(SCHEMA, "purchase", 0, 0);
    client.change(&schema, 2, range((line, column), (line, column + 8)), "order");
    let main = uri(&workspace.path("main.journey"));
    let diagnostics = client.diagnostics(&main);
    let unknown: Vec<&Value> = diagnostics.iter().filter(|d| d["code"] == "E0106").collect();
    assert_eq!(unknown.len(), 1, "{diagnostics:?}");
    assert_eq!(
        unknown[0]["range"]["start"],
        position(find(MAIN, "purchase", 0, 0).0, find(MAIN, "purchase", 0, 0).1)
    );
    assert!(
        unknown[0]["message"].as_str().unwrap_or("").contains("purchase"),
        "{unknown:?}"
    );
    assert_eq!(unknown[0]["source"], "journeyc");
    // Renaming it back clears them.
    client.change(&schema, 3, range((line, column), (line, column + 5)), "purchase");
    assert_eq!(client.diagnostics(&main), Vec::<Value>::new());
    client.shutdown();
}

#[test]
fn a_syntax_error_is_reported_with_its_code_and_then_cleared() {
    let (workspace, mut client) = started();
    let main = workspace.path("main.journey");
    client.drain();
    let (line, column) = find(MAIN, "send welcome", 0, 4);
    client.change(&main, 2, range((line, column), (line, column + 8)), "");
    let diagnostics = client.diagnostics(&uri(&main));
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    assert_eq!(diagnostics[0]["code"], "E0001");
    assert_eq!(diagnostics[0]["severity"], 1);
    client.change(&main, 3, range((line, column), (line, column)), " welcome");
    assert_eq!(client.diagnostics(&uri(&main)), Vec::<Value>::new());
    client.shutdown();
}

#[test]
fn hover_shows_types_definitions_bounds_and_durations() {
    let (workspace, mut client) = started();
    let main = workspace.path("main.journey");
    let plan = hover_text(&mut client, &main, find(MAIN, "customer.plan ==", 0, 9));
    assert!(plan.contains("plan: \"free\" | \"pro\" | \"team\""), "{plan}");
    assert!(plan.contains("one of `free`, `pro`, `team`"), "{plan}");
    let segment = hover_text(&mut client, &main, find(MAIN, "and pro", 0, 5));
    assert!(segment.contains("segment pro = customer.plan == \"pro\""), "{segment}");
    let event = hover_text(&mut client, &main, find(MAIN, "purchase", 0, 2));
    assert!(
        event.contains("amount: number") && event.contains("note: string"),
        "{event}"
    );
    let message = hover_text(&mut client, &main, find(MAIN, "send welcome", 0, 6));
    assert!(
        message.contains("channel: `email`") && message.contains("subject: خوش آمدید"),
        "{message}"
    );
    let journey = hover_text(&mut client, &main, find(MAIN, "onboarding", 0, 1));
    assert!(
        journey.contains("longest stay: 4d 12h") && journey.contains("most sends: 2"),
        "{journey}"
    );
    let duration = hover_text(&mut client, &main, find(MAIN, "1d12h", 0, 1));
    assert_eq!(duration, "`1d12h` = 36 hours");
    let label = hover_text(&mut client, &main, find(MAIN, "nudge", 0, 1));
    assert!(
        label.contains("label `nudge`") && label.contains("wait 1d12h"),
        "{label}"
    );
    let property = hover_text(&mut client, &main, find(MAIN, "event.note", 0, 7));
    assert!(property.contains("property of event `purchase`"), "{property}");
    client.shutdown();
}

#[test]
fn positions_are_utf16_on_persian_lines() {
    let (workspace, mut client) = started();
    let main = workspace.path("main.journey");
    // `pro` comes after Persian letters and an emoji (two UTF-16 units) on its line.
    let (line, column) = find(MAIN, "and pro", 0, 4);
    assert_ne!(
        column as usize,
        MAIN.lines()
            .nth(line as usize)
            .and_then(|l| l.find("pro {"))
            .unwrap_or(0)
    );
    let definition = client.request("textDocument/definition", at(&main, (line, column)));
    assert_eq!(
        definition["range"]["start"],
        position(find(MAIN, "pro =", 0, 0).0, find(MAIN, "pro =", 0, 0).1)
    );
    // The attribute after Persian strings on the message line.
    let (line, column) = find(MAIN, "email_opt_in", 0, 0);
    let definition = client.request("textDocument/definition", at(&main, (line, column)));
    let schema_position = find(SCHEMA, "email_opt_in", 0, 0);
    assert_eq!(definition["uri"], uri(&workspace.path("schema.journey")));
    assert_eq!(
        definition["range"]["start"],
        position(schema_position.0, schema_position.1)
    );
    assert_eq!(
        definition["range"]["end"],
        position(schema_position.0, schema_position.1 + 12)
    );
    client.shutdown();
}

#[test]
fn definition_references_and_rename_work_across_files_and_from_the_declaration() {
    let (workspace, mut client) = started();
    let main = workspace.path("main.journey");
    let schema = workspace.path("schema.journey");
    let definition = client.request("textDocument/definition", at(&main, find(MAIN, "signed_up", 0, 2)));
    assert_eq!(definition["uri"], uri(&schema));
    // References of the message from its declaration: the declaration and both sends.
    let mut params = at(&main, find(MAIN, "welcome", 0, 0));
    params["context"] = json!({ "includeDeclaration": true });
    let references = client.request("textDocument/references", params.clone());
    assert_eq!(references.as_array().map(Vec::len), Some(3), "{references}");
    params["context"] = json!({ "includeDeclaration": false });
    let references = client.request("textDocument/references", params);
    assert_eq!(references.as_array().map(Vec::len), Some(2), "{references}");
    // Rename the attribute from its declaration in the schema: both files change.
    let prepared = client.request("textDocument/prepareRename", at(&schema, find(SCHEMA, "plan", 0, 1)));
    assert_eq!(prepared["placeholder"], "plan");
    let mut params = at(&schema, find(SCHEMA, "plan", 0, 1));
    params["newName"] = json!("tier");
    let edit = client.request("textDocument/rename", params);
    let changes = edit["changes"].as_object().expect("changes");
    assert_eq!(changes[&uri(&schema)].as_array().map(Vec::len), Some(1));
    // The segment's `customer.plan` and the template's `{{ customer.plan }}`.
    assert_eq!(changes[&uri(&main)].as_array().map(Vec::len), Some(2), "{edit}");
    assert_eq!(changes[&uri(&main)][0]["newText"], "tier");
    // Keywords and built-ins are refused.
    let refused = client.call("textDocument/prepareRename", at(&main, find(MAIN, "trigger", 0, 1)));
    assert!(
        refused["error"]["message"].as_str().unwrap_or("").contains("keyword"),
        "{refused}"
    );
    let refused = client.call("textDocument/prepareRename", at(&schema, find(SCHEMA, "string", 0, 1)));
    assert!(refused.get("error").is_some(), "{refused}");
    let mut params = at(&main, find(MAIN, "pro {", 0, 0));
    params["newName"] = json!("send");
    assert!(client.call("textDocument/rename", params).get("error").is_some());
    client.shutdown();
}

/// Renaming a property or an attribute edits the templates that use it:
/// inline ones, a `body file` and its locale variant; a template of a
/// message sent with another event in scope is left alone.
#[test]
fn rename_edits_inline_and_body_file_templates() {
    let dir = tempfile::tempdir().expect("temp dir");
    let journeys = r#"customer { plan: string }

event purchase { amount: number }
event refund { amount: number }

message thanks email { subject "Thanks for {{ event.amount }}" body file "thanks.html" }
message sorry email { subject "Refund of {{ event.amount }}" body "Sorry, {{ customer.plan }}" }

journey after_purchase {
  trigger purchase
  send thanks
}

journey after_refund {
  trigger refund
  send sorry
}
"#;
    let html = "<p>{{ event.amount }} for {{ customer.plan }}</p>\n";
    let persian = "<p dir=\"rtl\">{{ event.amount }} / {{ customer.plan }} / {{ event.amount }}</p>\n";
    let main = dir.path().join("main.journey");
    std::fs::write(&main, journeys).expect("write");
    std::fs::write(dir.path().join("thanks.html"), html).expect("write");
    std::fs::write(dir.path().join("thanks.fa.html"), persian).expect("write");
    let mut client = Client::start(dir.path());
    client.open(&main, journeys);
    let edits_of = |edit: &Value, path: &Path| -> Vec<Value> {
        edit["changes"][uri(path)].as_array().cloned().unwrap_or_default()
    };

    let mut params = at(&main, find(journeys, "amount", 0, 1));
    params["newName"] = json!("total");
    let edit = client.request("textDocument/rename", params);
    // The declaration and the subject of `thanks`, not `sorry`'s (refund).
    assert_eq!(edits_of(&edit, &main).len(), 2, "{edit}");
    let html_edits = edits_of(&edit, &dir.path().join("thanks.html"));
    assert_eq!(html_edits.len(), 1, "{edit}");
    assert_eq!(html_edits[0]["range"], range((0, 12), (0, 18)));
    assert_eq!(html_edits[0]["newText"], "total");
    assert_eq!(edits_of(&edit, &dir.path().join("thanks.fa.html")).len(), 2, "{edit}");

    let mut params = at(&main, find(journeys, "plan", 0, 1));
    params["context"] = json!({ "includeDeclaration": true });
    let references = client.request("textDocument/references", params.clone());
    let files: Vec<&str> = references
        .as_array()
        .expect("references")
        .iter()
        .filter_map(|r| r["uri"].as_str())
        .collect();
    assert_eq!(
        files,
        [
            uri(&main),
            uri(&main),
            uri(&dir.path().join("thanks.html")),
            uri(&dir.path().join("thanks.fa.html"))
        ],
        "{references}"
    );
    client.shutdown();
}

fn labels(result: &Value) -> Vec<String> {
    let items = result
        .as_array()
        .or_else(|| result["items"].as_array())
        .cloned()
        .unwrap_or_default();
    items
        .iter()
        .filter_map(|i| i["label"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn completion_follows_the_context() {
    let (workspace, mut client) = started();
    let main = workspace.path("main.journey");
    let mut version = 1;
    let mut complete = |client: &mut Client, line_text: &str, extra: &str| -> Vec<String> {
        // Replace the `send welcome` line inside the wait with the text and complete at its end.
        version += 1;
        let (line, _) = find(MAIN, "      send welcome", 0, 0);
        let text = format!("      {line_text}{extra}");
        client.change(&main, version, range((line, 0), (line + 1, 0)), &format!("{text}\n"));
        let column = format!("      {line_text}").encode_utf16().count() as u32;
        let result = client.request("textDocument/completion", at(&main, (line, column)));
        version += 1;
        client.change(&main, version, range((line, 0), (line + 1, 0)), "      send welcome\n");
        labels(&result)
    };
    assert_eq!(complete(&mut client, "send ", ""), ["welcome"]);
    let attributes = complete(&mut client, "set customer.", "");
    assert!(
        attributes.contains(&"plan".to_string()) && attributes.contains(&"email_opt_in".to_string()),
        "{attributes:?}"
    );
    // `event.` inside `wait for purchase`: purchase's properties.
    let properties = complete(&mut client, "if event.", "");
    assert_eq!(properties, ["amount", "note"]);
    let events = complete(&mut client, "wait for ", "");
    assert_eq!(events, ["purchase", "signed_up", "opened", "clicked", "delivered"]);
    // Engagement with a message: the messages.
    assert_eq!(complete(&mut client, "wait for opened ", ""), ["welcome"]);
    assert_eq!(complete(&mut client, "if clicked(", ""), ["welcome"]);
    let counted = complete(&mut client, "if count(", "");
    assert_eq!(counted, ["purchase", "signed_up"]);
    let days = complete(&mut client, "wait until 09:00 on ", "");
    assert!(
        days.contains(&"mon".to_string()) && days.contains(&"weekdays".to_string()),
        "{days:?}"
    );
    let segments = complete(&mut client, "if ", "");
    assert!(segments.contains(&"pro".to_string()), "{segments:?}");
    let zones = complete(&mut client, "timezone \"Europe/", "");
    assert!(zones.contains(&"Europe/Berlin".to_string()), "{} zones", zones.len());
    let template = complete(&mut client, "x \"Hi {{ customer.", "");
    assert!(template.contains(&"plan".to_string()), "{template:?}");
    let keywords = complete(&mut client, "", "");
    assert!(
        keywords.contains(&"wait for".to_string()) && keywords.contains(&"send".to_string()),
        "{keywords:?}"
    );
    client.shutdown();
}

#[test]
fn quick_fixes_apply_did_you_mean_and_declare() {
    let (workspace, mut client) = started();
    let main = workspace.path("main.journey");
    client.drain();
    let (line, column) = find(MAIN, "send welcome", 1, 5);
    client.change(&main, 2, range((line, column), (line, column + 7)), "welcom");
    let diagnostics = client.diagnostics(&uri(&main));
    let typo = diagnostics
        .iter()
        .find(|d| d["code"] == "E0108")
        .cloned()
        .expect("unknown message");
    let actions = client.request(
        "textDocument/codeAction",
        json!({ "textDocument": { "uri": uri(&main) }, "range": typo["range"], "context": { "diagnostics": [typo] } }),
    );
    let fix = &actions[0];
    assert_eq!(fix["title"], "change to `welcome`");
    assert_eq!(fix["edit"]["changes"][&uri(&main)][0]["newText"], "welcome");

    // An unknown event: declare it in the schema file (where the events are).
    client.change(&main, 3, range((line, column), (line, column + 6)), "welcome");
    let (line, column) = find(MAIN, "purchase within", 0, 0);
    client.change(&main, 4, range((line, column), (line, column + 8)), "refund");
    let diagnostics = client.diagnostics(&uri(&main));
    let unknown = diagnostics
        .iter()
        .find(|d| d["code"] == "E0106")
        .cloned()
        .expect("unknown event");
    let actions = client.request(
        "textDocument/codeAction",
        json!({ "textDocument": { "uri": uri(&main) }, "range": unknown["range"], "context": { "diagnostics": [unknown] } }),
    );
    let titles: Vec<&str> = actions
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["title"].as_str())
        .collect();
    assert!(titles.contains(&"declare event `refund`"), "{titles:?}");
    let declare = actions
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["title"] == "declare event `refund`")
        .expect("declare");
    let schema_edits = &declare["edit"]["changes"][&uri(&workspace.path("schema.journey"))];
    assert_eq!(schema_edits[0]["newText"], "event refund\n");
    client.shutdown();
}

/// The properties of `trigger api { … }` are `event.*` of that journey:
/// hover, definition and rename reach them, in templates too.
#[test]
fn api_trigger_properties_are_navigable() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = r#"message coupon_ready email { subject "Your code {{ event.coupon }}" body "Use {{ event.coupon }}" }

journey coupon_drop {
  trigger api { coupon: string, amount: number? }
  if event.amount > 10 {
    send coupon_ready
  }
}
"#;
    let main = dir.path().join("main.journey");
    std::fs::write(&main, text).expect("write");
    let mut client = Client::start(dir.path());
    client.open(&main, text);
    let hover = client.request("textDocument/hover", at(&main, find(text, "amount > 10", 0, 1)));
    let value = hover["contents"]["value"].as_str().unwrap_or_default();
    assert!(
        value.contains("API trigger of journey `coupon_drop`") && value.contains("amount: number?"),
        "{hover}"
    );
    let definition = client.request("textDocument/definition", at(&main, find(text, "amount > 10", 0, 1)));
    let (line, column) = find(text, "amount:", 0, 0);
    assert_eq!(definition["range"]["start"], position(line, column), "{definition}");
    let mut params = at(&main, find(text, "coupon:", 0, 1));
    params["newName"] = json!("code");
    let edit = client.request("textDocument/rename", params);
    // The declaration, and both template uses (the message is sent in the journey).
    assert_eq!(edit["changes"][uri(&main)].as_array().map(Vec::len), Some(3), "{edit}");
    client.shutdown();
}

/// "Declare this property/attribute" gives the type the use suggests.
#[test]
fn declare_fixes_take_the_type_the_use_suggests() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = r#"customer { plan: string }

event purchase { amount: number }

journey big_orders {
  trigger purchase where event.items > 2 and event.gift
  if customer.vip == true or customer.since < now {
    exit
  }
}
"#;
    let main = dir.path().join("main.journey");
    std::fs::write(&main, text).expect("write");
    let mut client = Client::start(dir.path());
    client.open(&main, text);
    let diagnostics = client.diagnostics(&uri(&main));
    let declared = |client: &mut Client, name: &str| -> String {
        let (line, column) = find(text, name, 0, 0);
        let diagnostic = diagnostics
            .iter()
            .find(|d| d["range"]["start"] == position(line, column))
            .cloned()
            .unwrap_or_else(|| panic!("a diagnostic at {name}: {diagnostics:?}"));
        let actions = client.request(
            "textDocument/codeAction",
            json!({ "textDocument": { "uri": uri(&main) }, "range": diagnostic["range"], "context": { "diagnostics": [diagnostic] } }),
        );
        let declare = actions
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["title"].as_str().is_some_and(|t| t.starts_with("declare")))
            .cloned()
            .unwrap_or_else(|| panic!("a declare fix for {name}: {actions}"));
        declare["edit"]["changes"][&uri(&main)][0]["newText"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(declared(&mut client, "items"), ", items: int");
    assert_eq!(declared(&mut client, "gift"), ", gift: bool");
    assert_eq!(declared(&mut client, "vip"), ", vip: bool");
    assert_eq!(declared(&mut client, "since"), ", since: time");
    client.shutdown();
}

#[test]
fn formatting_symbols_tokens_and_bounds() {
    let (workspace, mut client) = started();
    let main = workspace.path("main.journey");
    let edits = client.request(
        "textDocument/formatting",
        json!({ "textDocument": { "uri": uri(&main) }, "options": { "tabSize": 2, "insertSpaces": true } }),
    );
    let expected = journeyc::fmt::format(journeyc::source::FileId(0), MAIN).expect("formats");
    assert_eq!(edits[0]["newText"], expected.as_str());

    let symbols = client.request(
        "textDocument/documentSymbol",
        json!({ "textDocument": { "uri": uri(&main) } }),
    );
    let names: Vec<&str> = symbols
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["welcome", "pro", "onboarding"]);
    let journey = &symbols[2];
    assert_eq!(journey["children"][0]["name"], "nudge");

    let found = client.request("workspace/symbol", json!({ "query": "purch" }));
    let names: Vec<&str> = found
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["purchase"]);

    let tokens = client.request(
        "textDocument/semanticTokens/full",
        json!({ "textDocument": { "uri": uri(&main) } }),
    );
    let data = tokens["data"].as_array().expect("data");
    assert_eq!(data.len() % 5, 0);
    assert!(data.len() / 5 > 30, "{} tokens", data.len() / 5);

    let hints = client.request(
        "textDocument/inlayHint",
        json!({ "textDocument": { "uri": uri(&main) }, "range": range((0, 0), (40, 0)) }),
    );
    assert_eq!(hints[0]["label"], "≤ 4d12h · ≤ 2 sends");
    assert_eq!(
        hints[0]["position"],
        position(find(MAIN, "onboarding", 0, 10).0, find(MAIN, "onboarding", 0, 10).1)
    );
    client.shutdown();
}
