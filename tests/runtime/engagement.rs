//! Engagement events (`Email Opened`, `Push Notification Tapped`, …, not
//! declared in the workspace): attribution to the send they name, counts
//! unique per send, unknown sends, and suppression after a hard bounce or a
//! spam complaint. The send ids are taken from a first run's trace (ids hash
//! customer, journey, enrollment and step, so later events do not move them).

use super::properties::simulate_text;
use journeyc::check::check_workspace;
use journeyc::compile::bytecode::Bundle;
use journeyc::compile::compile;
use journeyc::runtime::stats::{Readout, Tally};
use journeyc::runtime::{Kind, TraceRecord};
use journeyc::workspace::{load, DiskFiles};

const JOURNEY: &str = r#"
customer {
  email: string?
}
event signed_up
message welcome email { subject "Welcome" body "Hello" }
message tips email { subject "Tips" body "Try this" }
message nudge push { body "Come back" }

journey onboard {
  trigger signed_up
  send welcome
  split offer {
    a 50% {
      send nudge
    }
    b 50% {
      send nudge
    }
  }
  wait 1d
  send tips
  send nudge
}
"#;

struct Workspace {
    dir: tempfile::TempDir,
    bundle: Bundle,
}

impl Workspace {
    fn new(source: &str) -> Workspace {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("w.journey"), source).expect("write journey");
        let sources = load(&[dir.path().to_path_buf()]).expect("workspace loads");
        let outcome = check_workspace(&sources, &DiskFiles);
        let checked = outcome
            .checked
            .unwrap_or_else(|| panic!("workspace has errors: {:#?}", outcome.diagnostics));
        Workspace {
            bundle: compile(&checked),
            dir,
        }
    }

    fn simulate(&self, events: &[String]) -> Vec<TraceRecord> {
        simulate_text(self.dir.path(), &(events.join("\n") + "\n"))
    }

    fn readout(&self, trace: &[TraceRecord]) -> (Readout, Tally) {
        let mut tally = Tally::default();
        trace.iter().for_each(|record| tally.add(record));
        (tally.readouts(&self.bundle).remove(0), tally)
    }
}

fn signed_up(customer: &str) -> String {
    format!(
        r#"{{"type":"track","userId":"{customer}","event":"signed_up","properties":{{}},"timestamp":"2026-05-01T10:00:00Z"}}"#
    )
}

/// An engagement event at 2026-05-01T`hour`:00Z.
fn engagement(customer: &str, event: &str, properties: serde_json::Value, hour: u32) -> String {
    serde_json::json!({
        "type": "track", "userId": customer, "event": event, "properties": properties,
        "timestamp": format!("2026-05-01T{hour:02}:00:00Z"),
    })
    .to_string()
}

/// The id of `customer`'s first send of `message`.
fn send_id(trace: &[TraceRecord], customer: &str, message: &str) -> String {
    trace
        .iter()
        .find(|r| r.kind == Kind::Send && r.customer == customer && r.message.as_deref() == Some(message))
        .and_then(|r| r.id.clone())
        .unwrap_or_else(|| panic!("{customer} was sent {message}"))
}

fn engagements<'t>(trace: &'t [TraceRecord], customer: &str) -> Vec<&'t TraceRecord> {
    trace
        .iter()
        .filter(|r| r.kind == Kind::Engagement && r.customer == customer)
        .collect()
}

#[test]
fn engagement_is_attributed_to_its_send_and_counted_once_per_send() {
    let workspace = Workspace::new(JOURNEY);
    let customers = ["c1", "c2", "c3"];
    let first: Vec<String> = customers.iter().map(|c| signed_up(c)).collect();
    let before = workspace.simulate(&first);
    let mut events = first.clone();
    for customer in customers {
        let welcome = send_id(&before, customer, "welcome");
        let nudge = send_id(&before, customer, "nudge");
        let email = serde_json::json!({"email_id": welcome, "email_subject": "Welcome"});
        events.push(engagement(customer, "Email Delivered", email.clone(), 11));
        events.push(engagement(customer, "Email Opened", email.clone(), 12));
        // A second open of the same email counts once.
        events.push(engagement(customer, "Email Opened", email.clone(), 13));
        if customer == "c1" {
            let link = serde_json::json!({"email_id": welcome, "link_url": "https://example.com"});
            events.push(engagement(customer, "Email Link Clicked", link, 14));
            events.push(engagement(
                customer,
                "Push Notification Tapped",
                serde_json::json!({"message_id": nudge}),
                15,
            ));
        }
    }
    let trace = workspace.simulate(&events);

    let c1 = engagements(&trace, "c1");
    let kinds: Vec<(&str, Option<&str>)> = c1
        .iter()
        .map(|r| (r.engagement.as_deref().unwrap_or_default(), r.reason.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("delivered", None),
            ("opened", None),
            ("opened", Some("repeat")),
            ("clicked", None),
            ("opened", None)
        ]
    );
    let enter = trace
        .iter()
        .find(|r| r.kind == Kind::Enter && r.customer == "c1")
        .expect("c1 entered");
    let split = trace
        .iter()
        .find(|r| r.kind == Kind::Split && r.customer == "c1")
        .expect("c1 took the split");
    for record in &c1 {
        assert_eq!(record.journey, "onboard");
        assert_eq!(record.version, enter.version, "the version that sent it");
    }
    let tapped = c1[4];
    assert_eq!(tapped.message.as_deref(), Some("nudge"));
    assert_eq!(tapped.channel.as_deref(), Some("push"));
    assert_eq!(tapped.id, Some(send_id(&before, "c1", "nudge")));
    assert_eq!(
        (&tapped.split, &tapped.arm),
        (&split.split, &split.arm),
        "the arm it was sent in"
    );
    assert_eq!(
        (&c1[0].split, &c1[0].arm),
        (&None, &None),
        "welcome is sent before the split"
    );

    // Nothing else changed: the same sends and skips as without engagement.
    let journey_lines = |trace: &[TraceRecord]| -> Vec<String> {
        trace
            .iter()
            .filter(|r| r.kind != Kind::Engagement)
            .map(TraceRecord::to_json_line)
            .collect()
    };
    assert_eq!(journey_lines(&trace), journey_lines(&before));

    let (readout, _) = workspace.readout(&trace);
    let welcome = &readout.messages["welcome"];
    assert_eq!(welcome.sent, 3);
    assert_eq!((welcome.delivered, welcome.opened, welcome.clicked), (3, 3, 1));
    assert_eq!((welcome.bounced, welcome.complained, welcome.unsubscribed), (0, 0, 0));
    let nudge = &readout.messages["nudge"];
    assert_eq!((nudge.sent, nudge.opened, nudge.clicked), (6, 1, 0));
    let funnel = readout.render();
    assert!(funnel.contains("sent 3  delivered 3  opened 3  clicked 1"), "{funnel}");
}

#[test]
fn an_event_naming_an_unknown_send_is_ignored_and_counted() {
    let workspace = Workspace::new(JOURNEY);
    let first = vec![signed_up("c1")];
    let before = workspace.simulate(&first);
    let mut events = first.clone();
    events.push(engagement(
        "c1",
        "Email Opened",
        serde_json::json!({"email_id": "not-ours"}),
        12,
    ));
    events.push(engagement(
        "c1",
        "Email Bounced",
        serde_json::json!({"email_id": "not-ours", "type": "soft"}),
        12,
    ));
    // An event of a customer never seen before.
    events.push(engagement(
        "c9",
        "Email Link Clicked",
        serde_json::json!({"email_id": "x"}),
        12,
    ));
    let trace = workspace.simulate(&events);
    let unknown: Vec<&TraceRecord> = trace.iter().filter(|r| r.kind == Kind::Engagement).collect();
    assert_eq!(unknown.len(), 3);
    for record in &unknown {
        assert_eq!(record.reason.as_deref(), Some("unknown_send"));
        assert_eq!((record.journey.as_str(), &record.message), ("", &None));
    }
    let sends = |trace: &[TraceRecord]| trace.iter().filter(|r| r.kind == Kind::Send).count();
    assert_eq!(
        sends(&trace),
        sends(&before),
        "a soft bounce of an unknown send suppresses nothing"
    );
    let (readout, tally) = workspace.readout(&trace);
    assert_eq!(readout.messages["welcome"].opened, 0);
    assert_eq!(tally.counters.get("unattributed/opened"), Some(&1));
    assert_eq!(tally.counters.get("unattributed/clicked"), Some(&1));
    assert_eq!(tally.counters.get("unattributed/bounced"), Some(&1));
}

#[test]
fn a_hard_bounce_or_a_complaint_suppresses_the_channel_and_a_soft_bounce_does_not() {
    let workspace = Workspace::new(JOURNEY);
    let customers = ["hard", "soft", "spam", "push"];
    let first: Vec<String> = customers.iter().map(|c| signed_up(c)).collect();
    let before = workspace.simulate(&first);
    let mut events = first.clone();
    let welcome = |customer: &str| send_id(&before, customer, "welcome");
    events.push(engagement(
        "hard",
        "Email Bounced",
        serde_json::json!({"email_id": welcome("hard"), "type": "HardBounce"}),
        12,
    ));
    events.push(engagement(
        "soft",
        "Email Bounced",
        serde_json::json!({"email_id": welcome("soft"), "bounce_type": "soft"}),
        12,
    ));
    events.push(engagement(
        "spam",
        "Email Marked as Spam",
        serde_json::json!({"email_id": welcome("spam")}),
        12,
    ));
    events.push(engagement(
        "push",
        "Push Notification Bounced",
        serde_json::json!({"message_id": send_id(&before, "push", "nudge")}),
        12,
    ));
    let trace = workspace.simulate(&events);
    let outcome = |customer: &str, message: &str| -> Vec<String> {
        trace
            .iter()
            .filter(|r| r.customer == customer && r.message.as_deref() == Some(message))
            .filter(|r| matches!(r.kind, Kind::Send | Kind::Skip))
            .map(|r| match r.kind {
                Kind::Skip => format!("skip {}", r.reason.as_deref().unwrap_or_default()),
                _ => "send".to_string(),
            })
            .collect()
    };
    assert_eq!(outcome("hard", "tips"), ["skip bounced"]);
    assert_eq!(outcome("hard", "nudge"), ["send", "send"], "push is another channel");
    assert_eq!(outcome("soft", "tips"), ["send"]);
    assert_eq!(outcome("spam", "tips"), ["skip complained"]);
    assert_eq!(outcome("push", "tips"), ["send"]);
    assert_eq!(outcome("push", "nudge"), ["send", "skip bounced"]);
    let soft = engagements(&trace, "soft");
    assert_eq!(soft[0].reason.as_deref(), Some("soft_bounce"));

    let (readout, _) = workspace.readout(&trace);
    let welcome = &readout.messages["welcome"];
    assert_eq!(
        (welcome.bounced, welcome.complained),
        (1, 1),
        "the soft bounce is not counted"
    );
    assert_eq!(readout.messages["nudge"].bounced, 1);
    assert_eq!(readout.messages["tips"].skipped.get("bounced"), Some(&1));
    assert_eq!(readout.messages["tips"].skipped.get("complained"), Some(&1));
}
