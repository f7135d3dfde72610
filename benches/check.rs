//! Checking a generated 10,000-line workspace (target: < 50 ms in release).
//!
//! `cargo bench --bench check`; the figure is recorded in docs/performance.md.

use criterion::{criterion_group, criterion_main, Criterion};
use journeyc::check::check_workspace;
use journeyc::source::SourceMap;
use journeyc::workspace::MemoryFiles;
use std::fmt::Write as _;
use std::hint::black_box;

/// A workspace of `journeys` files of about 50 lines each, plus a schema.
fn workspace(journeys: usize) -> SourceMap {
    let mut sources = SourceMap::new();
    let mut schema = String::from(
        "customer {\n  email: string\n  first_name: string?\n  plan: \"free\" | \"pro\" | \"team\"\n  \
         points: int\n  lifetime_value: number\n  signed_up_at: time\n  email_opt_in: bool\n}\n\
         event login\nevent purchase { amount: number, sku: string }\n",
    );
    for index in 0..journeys {
        let _ = writeln!(schema, "event started_{index} {{ source: string, value: number }}");
    }
    sources.add("bench/schema.journey", schema);
    for index in 0..journeys {
        let mut text = String::new();
        let _ = write!(
            text,
            r#"// Journey {index}
segment seg_{index} = customer.lifetime_value >= {index} and count(purchase within 90d) >= 3
message hello_{index} email {{
  subject "Welcome, {{{{ customer.first_name | default('friend') }}}} ({{{{ event.source }}}})"
  body "You are on {{{{ customer.plan }}}} with {{{{ customer.points }}}} points."
  consent customer.email_opt_in
}}
message nudge_{index} push {{ body "Come back" }}
message thanks_{index} push {{ body "Thanks for {{{{ event.amount }}}}" }}

journey journey_{index} {{
  trigger started_{index} where event.source != "internal" and event.value > 10
  entry every 30d
  exit when login
  goal purchase where event.amount > 5 within 14d
  quiet hours 21:00 - 08:00
  timezone "Europe/Berlin"
  cap 2 sends per 1d
  holdout 10%

  send hello_{index}
  first: wait 1d
  if customer.plan == "pro" and seg_{index} {{
    send nudge_{index}
  }} else if customer.points > 100 {{
    split test_{index} {{
      a 50% {{ send nudge_{index} }}
      b 50% {{ }}
    }}
  }}
  second: wait for purchase where event.amount >= 1 within 3d {{
    send thanks_{index}
  }} timeout {{
    send nudge_{index}
  }}
  wait until 09:00 on weekdays
  wait until customer.signed_up_at + 30d
  set customer.points = customer.points + 10
  repeat 3 {{
    send nudge_{index}
    wait 7d
    if seen(login within 7d) {{ exit }}
  }}
}}
"#
        );
        sources.add(format!("bench/journey_{index}.journey"), text);
    }
    sources
}

fn check(c: &mut Criterion) {
    let sources = workspace(222);
    let lines: usize = sources.files().map(|(_, f)| f.text.lines().count()).sum();
    let files = MemoryFiles::default();
    let outcome = check_workspace(&sources, &files);
    assert!(outcome.diagnostics.is_empty(), "{:?}", outcome.diagnostics.first());
    c.bench_function(&format!("parse {lines} lines"), |b| {
        b.iter(|| {
            for (id, file) in sources.files() {
                let _ = black_box(journeyc::syntax::parse_file(id, &file.text));
            }
        })
    });
    c.bench_function(&format!("check {lines} lines"), |b| {
        b.iter(|| check_workspace(black_box(&sources), &files))
    });
}

criterion_group!(benches, check);
criterion_main!(benches);
