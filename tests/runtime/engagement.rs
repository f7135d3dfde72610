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
    // An event that names no send at all writes nothing.
    events.push(engagement(
        "c1",
        "Email Opened",
        serde_json::json!({"email_subject": "Hi"}),
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

// ------------------------------------------------ engagement in the language

const ACTION_PATHS: &str = r#"
event signed_up
message welcome email { subject "Welcome" body "Hello" }
message welcome_resend email { subject "Welcome again" body "Hello again" }
message tips email { subject "Tips" body "Try this" }
message nudge email { subject "Nudge" body "Have a look" }
message later email { subject "Later" body "One day on" }

journey onboard {
  trigger signed_up
  send welcome
  wait for opened welcome within 2d {
    if clicked(welcome) {
      send tips
    } else {
      send nudge
    }
  } timeout {
    send welcome_resend
  }
}

journey patient {
  trigger signed_up
  send later
  wait 1d
  wait for opened later within 1d {
    send tips
  } timeout {
    send nudge
  }
}
"#;

/// What `customer` was sent, in order: `(time, journey, message)`.
fn sends<'t>(trace: &'t [TraceRecord], customer: &str) -> Vec<(String, &'t str, &'t str)> {
    trace
        .iter()
        .filter(|r| r.kind == Kind::Send && r.customer == customer)
        .map(|r| {
            (
                journeyc::runtime::trace::format_time(r.at),
                r.journey.as_str(),
                r.message.as_deref().unwrap_or_default(),
            )
        })
        .collect()
}

fn at(day: u32, hour: u32) -> String {
    format!("2026-05-{day:02}T{hour:02}:00:00Z")
}

/// An engagement event at 2026-05-`day`T`hour`:00Z.
fn engagement_on(customer: &str, event: &str, email_id: &str, day: u32, hour: u32) -> String {
    serde_json::json!({
        "type": "track", "userId": customer, "event": event, "properties": {"email_id": email_id},
        "timestamp": at(day, hour),
    })
    .to_string()
}

/// Sign-ups at 05-01T10:00. `wait for opened welcome within 2d`:
/// - clicked: a click at 11:00 (not what the wait waits for), the open at
///   12:00 ends the wait, and `clicked(welcome)` holds: `tips` at 12:00;
/// - opened: the open at 12:00 without a click: `nudge` at 12:00;
/// - silent: no event: the timeout at 05-03T10:00 sends `welcome_resend`;
/// - late: the open at 05-04 comes after the timeout (it is still counted);
/// - stranger: an open naming no send of ours is ignored: timeout.
///
/// `patient` waits a day, then for the open of `later`, which came an hour
/// after it was sent: it goes on at once (05-02T10:00) for those who opened.
#[test]
fn a_journey_waits_for_and_branches_on_engagement() {
    let workspace = Workspace::new(ACTION_PATHS);
    let customers = ["clicked", "opened", "silent", "late", "stranger"];
    let first: Vec<String> = customers.iter().map(|c| signed_up(c)).collect();
    let before = workspace.simulate(&first);
    let welcome = |customer: &str| send_id(&before, customer, "welcome");
    let later = |customer: &str| send_id(&before, customer, "later");
    let mut events = first.clone();
    events.push(engagement_on(
        "clicked",
        "Email Link Clicked",
        &welcome("clicked"),
        1,
        11,
    ));
    events.push(engagement_on("clicked", "Email Opened", &welcome("clicked"), 1, 12));
    events.push(engagement_on("clicked", "Email Opened", &later("clicked"), 1, 11));
    events.push(engagement_on("opened", "Email Opened", &welcome("opened"), 1, 12));
    events.push(engagement_on("late", "Email Opened", &welcome("late"), 4, 9));
    events.push(engagement_on("stranger", "Email Opened", "not-ours", 1, 12));
    let trace = workspace.simulate(&events);

    assert_eq!(
        sends(&trace, "clicked"),
        [
            (at(1, 10), "onboard", "welcome"),
            (at(1, 10), "patient", "later"),
            (at(1, 12), "onboard", "tips"),
            (at(2, 10), "patient", "tips"),
        ]
    );
    assert_eq!(
        sends(&trace, "opened"),
        [
            (at(1, 10), "onboard", "welcome"),
            (at(1, 10), "patient", "later"),
            (at(1, 12), "onboard", "nudge"),
            (at(3, 10), "patient", "nudge"),
        ]
    );
    for customer in ["silent", "late", "stranger"] {
        assert_eq!(
            sends(&trace, customer),
            [
                (at(1, 10), "onboard", "welcome"),
                (at(1, 10), "patient", "later"),
                (at(3, 10), "onboard", "welcome_resend"),
                (at(3, 10), "patient", "nudge"),
            ],
            "{customer}"
        );
    }
    let (readout, tally) = workspace.readout(&trace);
    assert_eq!(readout.messages["welcome"].opened, 3, "clicked, opened, late");
    assert_eq!(readout.messages["welcome"].clicked, 1);
    assert_eq!(tally.counters.get("unattributed/opened"), Some(&1));
    let wait = readout
        .steps
        .iter()
        .find(|s| s.kind == "wait_for")
        .expect("the wait step");
    assert_eq!(wait.name.as_deref(), Some("opened(welcome)"));
}

/// `wait for opened within 1d` still waits for an event named `opened`, and
/// a segment named `clicked` is still a segment: only a message after the
/// word, or a parenthesis, makes it engagement.
#[test]
fn an_event_or_segment_named_like_an_engagement_keeps_its_meaning() {
    let workspace = Workspace::new(
        r#"
customer {
  plan: string?
}
event signed_up
event opened
segment clicked = customer.plan == "pro"
message m email { subject "M" body "m" }

journey j {
  trigger signed_up
  send m
  wait for opened within 1d {
    if clicked and not opened(m) {
      send m
    }
  }
}
"#,
    );
    let events = [
        r#"{"type":"identify","userId":"c1","traits":{"plan":"pro"},"timestamp":"2026-05-01T09:00:00Z"}"#.to_string(),
        signed_up("c1"),
        r#"{"type":"track","userId":"c1","event":"opened","properties":{},"timestamp":"2026-05-01T11:00:00Z"}"#
            .to_string(),
    ];
    let trace = workspace.simulate(&events);
    let times: Vec<String> = trace
        .iter()
        .filter(|r| r.kind == Kind::Send)
        .map(|r| journeyc::runtime::trace::format_time(r.at))
        .collect();
    assert_eq!(times, [at(1, 10), at(1, 11)], "the event `opened` ended the wait");
}
