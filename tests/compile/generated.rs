//! Generated journeys: whatever the statement mix, compiling a checked
//! workspace never panics and yields a valid, deterministic, round-tripping
//! bundle whose disassembly and graphs render.

use journeyc::compile::disasm::disassemble;
use journeyc::compile::graph::{render_graph, GraphFormat};
use journeyc::compile::{compile_with_sources, read_bundle, write_bundle};
use journeyc::source::SourceMap;
use journeyc::workspace::MemoryFiles;
use proptest::prelude::*;

const SCHEMA: &str = r#"
customer {
  first_name: string?
  plan: "free" | "pro" | "team"
  points: int
  score: number
  signed_up_at: time
}
event signed_up { source: string }
event purchase { amount: number, sku: string }
event login
segment loyal = count(purchase within 60d) >= 2
message m1 push { body "One" }
message m2 push { body "Two for {{ customer.plan }}" }
"#;

fn condition() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(r#"customer.plan == "pro""#.to_string()),
        Just("loyal".to_string()),
        Just("seen(login within 7d)".to_string()),
        Just("count(purchase within 30d) >= 2 and not exists(customer.first_name)".to_string()),
        Just(r#"customer.plan in ["free", "team"] or customer.points * 2 - 1 > -5"#.to_string()),
        Just("customer.signed_up_at + 3d < now".to_string()),
        (0..1000i64).prop_map(|n| format!("customer.score >= {n}.5")),
    ]
}

/// A statement; `@label: ` and `@split` are made unique afterwards.
fn statement() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("send m1".to_string()),
        Just("send m2".to_string()),
        (1..100u32).prop_map(|n| format!("wait {n}h")),
        (0..24u32, 0..60u32).prop_map(|(h, m)| format!("wait until {h:02}:{m:02} on weekdays")),
        Just("wait until customer.signed_up_at + 3d".to_string()),
        Just("set customer.points = customer.points + 1".to_string()),
        Just("if seen(login within 1d) { exit }".to_string()),
    ];
    let leaf = (leaf, any::<bool>()).prop_map(|(s, labelled)| if labelled { format!("@label: {s}") } else { s });
    leaf.prop_recursive(3, 32, 4, |inner| {
        let block = prop::collection::vec(inner, 0..4).prop_map(|statements| statements.join("\n"));
        prop_oneof![
            (condition(), block.clone()).prop_map(|(c, a)| format!("if {c} {{\n{a}\n}}")),
            (condition(), block.clone(), condition(), block.clone(), block.clone()).prop_map(|(c, a, d, b, e)| {
                format!("if {c} {{\n{a}\n}} else if {d} {{\n{b}\n}} else {{\n{e}\n}}")
            }),
            (block.clone(), block.clone(), 1..72u32).prop_map(|(body, timeout, hours)| format!(
                "@label: wait for purchase where event.amount > 5 within {hours}h {{\n{body}\n}} timeout {{\n{timeout}\n}}"
            )),
            (block.clone(), 1..100u32, block.clone()).prop_map(|(a, p, b)| if p == 100 {
                format!("split @split {{\n a 100% {{\n{a}\n}}\n}}")
            } else {
                format!("split @split {{\n a {p}% {{\n{a}\n}}\n b {}% {{\n{b}\n}}\n}}", 100 - p)
            }),
            (block, 1..4u32).prop_map(|(body, n)| format!("repeat {n} {{\n{body}\nwait 1d\n}}")),
        ]
    })
}

fn journey() -> impl Strategy<Value = String> {
    (prop::collection::vec(statement(), 0..6), any::<bool>()).prop_map(|(statements, migrate)| {
        let mut body = statements.join("\n");
        let mut counter = 0;
        while body.contains("@label") {
            body = body.replacen("@label", &format!("l{counter}"), 1);
            counter += 1;
        }
        while body.contains("@split") {
            body = body.replacen("@split", &format!("s{counter}"), 1);
            counter += 1;
        }
        let migrate = if migrate { "on update migrate\n" } else { "" };
        format!("journey generated {{\ntrigger signed_up\n{migrate}{body}\n}}\n")
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn compiling_checked_generated_journeys_never_fails(journey in journey()) {
        let text = format!("{SCHEMA}\n{journey}");
        let mut sources = SourceMap::new();
        sources.add("generated.journey", text);
        let outcome = journeyc::check::check_workspace(&sources, &MemoryFiles::default());
        let rendered = journeyc::diagnostic::render_human(&sources, &outcome.diagnostics, false);
        let checked = outcome.checked.unwrap_or_else(|| panic!("generated journey does not check:\n{rendered}"));
        let bundle = compile_with_sources(&checked, &sources);
        let bytes = write_bundle(&bundle).expect("a compiled bundle is valid");
        prop_assert_eq!(&read_bundle(&bytes).expect("reads back"), &bundle);
        prop_assert_eq!(write_bundle(&compile_with_sources(&checked, &sources)).expect("valid"), bytes);
        prop_assert!(!disassemble(&bundle).is_empty());
        prop_assert!(render_graph(&bundle, &[], GraphFormat::Mermaid).starts_with("flowchart TD"));
        prop_assert!(render_graph(&bundle, &[], GraphFormat::Dot).starts_with("digraph"));
    }
}

/// An int expression, fully parenthesized.
fn int_expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("customer.points".to_string()),
        (0..50i64).prop_map(|n| n.to_string()),
        (1..90u32).prop_map(|d| format!("count(purchase within {d}d)")),
    ];
    leaf.prop_recursive(3, 16, 2, |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop::sample::select(vec!["+", "-", "*", "/"]),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            inner.prop_map(|a| format!("(-{a})")),
        ]
    })
}

/// A bool expression, fully parenthesized.
fn bool_expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        (
            int_expr(),
            prop::sample::select(vec!["==", "!=", "<", "<=", ">", ">="]),
            int_expr()
        )
            .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
        Just("loyal".to_string()),
        Just("seen(login within 7d)".to_string()),
        Just("exists(customer.first_name)".to_string()),
        Just(r#"(customer.plan in ["free", "pro"])"#.to_string()),
        Just("(customer.signed_up_at + 1d12h < now)".to_string()),
    ];
    leaf.prop_recursive(3, 16, 2, |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop::sample::select(vec!["and", "or", "==", "!="]),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            inner.prop_map(|a| format!("(not {a})")),
        ]
    })
}

fn compile_segment(condition: &str) -> (journeyc::compile::bytecode::Bundle, journeyc::compile::bytecode::Code) {
    let text = format!("{SCHEMA}\nsegment probe = {condition}\njourney j {{\n trigger signed_up\n if probe {{ send m1 }}\n send m2\n}}\n");
    let bundle = super::support::compile_text(&text);
    let probe = bundle
        .segments
        .iter()
        .find(|segment| bundle.name(segment.name) == "probe")
        .expect("probe segment")
        .condition
        .clone();
    (bundle, probe)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The disassembler prints expressions with the fewest parentheses; what
    /// it prints must parse back to the same code.
    #[test]
    fn rendered_expressions_parse_back_to_the_same_code(condition in bool_expr()) {
        let (bundle, code) = compile_segment(&condition);
        let rendered = journeyc::compile::expr::render(&bundle, &code);
        let (_, again) = compile_segment(&rendered);
        prop_assert_eq!(code, again, "rendered as {}", rendered);
    }
}
