//! Rules checked over in-memory workspaces, where a snapshot would say less
//! than an assertion.

use super::{check_texts, codes};
use journeyc::check::Bounds;

const SCHEMA: &str = r#"
customer { first_name: string?, plan: "free" | "pro", locale: locale? }
event signed_up { source: string }
event purchase { amount: number }
"#;

#[test]
fn reports_every_error_not_just_the_first() {
    let (_, outcome) = check_texts(
        &[(
            "w.journey",
            "event a\njourney j {\n trigger b\n send c\n wait 0s\n}\njourney k { send d }\n",
        )],
        &[],
    );
    assert_eq!(codes(&outcome), ["E0106", "E0108", "E0307", "E0301", "E0108"]);
}

#[test]
fn names_resolve_across_files() {
    let (_, outcome) = check_texts(
        &[
            ("a/schema.journey", SCHEMA),
            (
                "b/messages.journey",
                "message hi push { body \"Hi {{ event.source }}\" }",
            ),
            ("c/j.journey", "journey j { trigger signed_up send hi }"),
        ],
        &[],
    );
    assert!(outcome.diagnostics.is_empty(), "{:?}", outcome.diagnostics);
}

#[test]
fn a_syntax_error_in_one_file_reports_only_syntax_errors() {
    let (_, outcome) = check_texts(
        &[("a.journey", "event a {"), ("b.journey", "journey j { trigger nope }")],
        &[],
    );
    assert_eq!(codes(&outcome), ["E0001"]);
}

#[test]
fn template_event_references_are_checked_at_every_send_site() {
    let text = format!(
        "{SCHEMA}
message thanks push {{ body \"{{{{ event.amount }}}}\" }}
journey ok {{ trigger purchase send thanks }}
journey inside_wait_for {{ trigger signed_up wait for purchase within 1d {{ send thanks }} }}
journey wrong_event {{ trigger signed_up send thanks }}
"
    );
    let (_, outcome) = check_texts(&[("w.journey", &text)], &[]);
    assert_eq!(codes(&outcome), ["E0403"]);
    assert!(outcome.diagnostics[0].message.contains("`signed_up`"));
}

#[test]
fn wait_for_shadows_the_trigger_event_and_timeout_does_not() {
    let text = format!(
        "{SCHEMA}
journey j {{
  trigger signed_up
  wait for purchase within 1d {{
    if event.amount > 1 {{ exit }}
  }} timeout {{
    if event.source == \"ads\" {{ exit }}
    if event.amount > 1 {{ exit }}
  }}
}}
"
    );
    let (_, outcome) = check_texts(&[("w.journey", &text)], &[]);
    assert_eq!(codes(&outcome), ["E0110"]);
}

#[test]
fn body_files_and_locale_variants_load_through_the_files_trait() {
    let text = format!(
        "{SCHEMA}
message hi email {{ subject \"Hi\" body file \"t/hi.html\" }}
journey j {{ trigger signed_up send hi }}
"
    );
    let (_, outcome) = check_texts(
        &[("ws/w.journey", &text)],
        &[
            ("ws/t/hi.html", "Hi {{ customer.first_name }}"),
            ("ws/t/hi.fa-IR.html", "سلام {{ customer.first_name }}"),
            ("ws/t/hi.de.html", "Hallo {{ event.source }}"),
            ("ws/t/hi.backup.html", "not a variant: `backup` is no BCP-47 tag"),
            ("ws/t/other.fr.html", "not a variant of hi"),
        ],
    );
    assert!(outcome.diagnostics.is_empty(), "{:?}", outcome.diagnostics);
    let message = &outcome.checked.expect("checked").messages["hi"];
    assert_eq!(message.body.as_deref(), Some("Hi {{ customer.first_name }}"));
    assert_eq!(message.body_variants.keys().collect::<Vec<_>>(), ["de", "fa-IR"]);
}

#[test]
fn missing_customer_block_is_fine_until_an_attribute_is_used() {
    let (_, outcome) = check_texts(
        &[(
            "w.journey",
            "event a\nmessage m push { body \"x\" }\njourney j { trigger a send m }",
        )],
        &[],
    );
    assert!(outcome.diagnostics.is_empty());
    let (_, outcome) = check_texts(
        &[(
            "w.journey",
            "segment s = customer.plan == \"pro\"\njourney j { trigger entered s }",
        )],
        &[],
    );
    assert_eq!(codes(&outcome), ["E0109"]);
    assert!(outcome.diagnostics[0]
        .help
        .as_deref()
        .is_some_and(|h| h.contains("customer {")));
}

fn bounds_of(body: &str, settings: &str) -> Bounds {
    let text = format!(
        "{SCHEMA}
message m push {{ body \"x\" }}
{settings}
journey j {{ trigger signed_up {body} }}
"
    );
    let (_, outcome) = check_texts(&[("w.journey", &text)], &[]);
    assert!(!outcome.has_errors(), "{:?}", outcome.diagnostics);
    outcome.checked.expect("checked").bounds["j"]
}

#[test]
fn bounds_follow_the_documented_rules() {
    const H: i64 = 3_600;
    const D: i64 = 24 * H;
    let b = bounds_of("send m wait 1d send m", "");
    assert_eq!((b.max_duration_seconds, b.max_sends), (D, 2));
    // wait for: the window plus the longer branch; sends: the larger branch.
    let b = bounds_of(
        "wait for purchase within 2d { wait 1d send m } timeout { send m send m }",
        "",
    );
    assert_eq!((b.max_duration_seconds, b.max_sends), (3 * D, 2));
    // if / split take the maximum; repeat multiplies.
    let b = bounds_of(
        "if true { wait 5d } else { send m send m send m } repeat 4 { send m wait 1d }",
        "",
    );
    assert_eq!((b.max_duration_seconds, b.max_sends), (5 * D + 4 * D, 7));
    // wait until a time of day: 1 day + 1 hour; on weekdays: 3 days + 1 hour.
    assert_eq!(bounds_of("wait until 09:00", "").max_duration_seconds, D + H);
    assert_eq!(
        bounds_of("wait until 09:00 on weekdays", "").max_duration_seconds,
        3 * D + H
    );
    assert_eq!(bounds_of("wait until 09:00 on mon", "").max_duration_seconds, 7 * D + H);
    // wait until EXPR: clamped to 365 days at run time.
    assert_eq!(bounds_of("wait until now + 1000d", "").max_duration_seconds, 365 * D);
    // Quiet hours (inherited from settings) defer each send by up to the window.
    let b = bounds_of("send m send m", "settings { quiet hours 22:00 - 06:00 }");
    assert_eq!(b.max_duration_seconds, 2 * 8 * H);
    // exit ends the path: nothing after it counts.
    let b = bounds_of("send m exit send m wait 9d", "");
    assert_eq!((b.max_duration_seconds, b.max_sends), (0, 1));
}

#[test]
fn the_checker_does_not_touch_the_file_system() {
    for dir in ["src/check", "src/syntax"] {
        for entry in std::fs::read_dir(dir).expect("source dir") {
            let path = entry.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("source");
            for forbidden in ["std::fs", "tokio", "sled"] {
                assert!(!text.contains(forbidden), "{} uses {forbidden}", path.display());
            }
        }
    }
}
