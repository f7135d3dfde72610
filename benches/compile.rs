//! Parse + check + compile a generated 10,000-line workspace (target: under
//! 100 ms in release). Run: `cargo bench --bench compile`.

use criterion::{criterion_group, criterion_main, Criterion};
use journeyc::source::SourceMap;
use journeyc::workspace::MemoryFiles;
use std::fmt::Write as _;
use std::hint::black_box;

const SCHEMA: &str = r#"customer {
  email: string
  first_name: string?
  plan: "free" | "pro" | "team"
  points: int
  signed_up_at: time
  email_opt_in: bool
}
event signed_up { source: string }
event purchase { amount: number, sku: string }
event login
event unsubscribed
settings {
  quiet hours 21:00 - 08:00
  timezone "UTC"
  cap 5 sends per 1d
}
"#;

/// One journey with its own messages and segment (about 40 lines).
fn journey(out: &mut String, index: usize) {
    let days = index % 90 + 1;
    let _ = write!(
        out,
        r#"
// Journey {index}: a welcome flow with every kind of statement.
segment s{index} = customer.points > {index} and count(purchase within {days}d) >= 1
message m{index}_a email {{
  subject "Hi {{{{ customer.first_name | default('there') }}}}"
  body "Welcome to journey {index}, {{{{ customer.email }}}}"
  consent customer.email_opt_in
}}
message m{index}_b push {{ body "Push {index}" }}
journey j{index} {{
  trigger signed_up where event.source != "internal"
  exit when unsubscribed
  goal purchase within 14d
  on update migrate
  send m{index}_a
  first: wait 1d
  if customer.plan == "pro" and s{index} {{
    send m{index}_b
  }} else if seen(login within 7d) {{
    wait until 09:00 on weekdays
  }} else {{
    split t{index} {{
      a 50% {{ send m{index}_a }}
      b 50% {{ send m{index}_b }}
    }}
  }}
  bought: wait for purchase where event.amount > 10 within 3d {{
    set customer.points = customer.points + 1
  }} timeout {{
    send m{index}_b
  }}
  wait until customer.signed_up_at + 30d
  repeat 3 {{
    wait 2d
    if seen(login within 1d) {{ exit }}
    send m{index}_b
  }}
}}
"#
    );
}

/// A workspace of at least `lines` lines.
pub fn workspace(lines: usize) -> String {
    let mut text = String::from(SCHEMA);
    let mut index = 0;
    while text.lines().count() < lines {
        journey(&mut text, index);
        index += 1;
    }
    text
}

fn parse_check_compile(text: &str) -> journeyc::compile::bytecode::Bundle {
    let mut sources = SourceMap::new();
    sources.add("generated.journey", text);
    let outcome = journeyc::check::check_workspace(&sources, &MemoryFiles::default());
    let checked = outcome.checked.expect("the generated workspace checks");
    journeyc::compile::compile_with_sources(&checked, &sources)
}

fn bench(c: &mut Criterion) {
    let text = workspace(10_000);
    let bundle = parse_check_compile(&text);
    eprintln!(
        "workspace: {} lines, {} journeys, {} instructions",
        text.lines().count(),
        bundle.journeys.len(),
        bundle.journeys.iter().map(|p| p.code.len()).sum::<usize>()
    );
    c.bench_function("parse only 10k lines", |b| {
        b.iter(|| journeyc::syntax::parse_file(journeyc::source::FileId(0), black_box(&text)))
    });
    c.bench_function("parse + check + compile 10k lines", |b| {
        b.iter(|| parse_check_compile(black_box(&text)))
    });

    let mut sources = SourceMap::new();
    sources.add("generated.journey", text.as_str());
    let checked = journeyc::check::check_workspace(&sources, &MemoryFiles::default())
        .checked
        .expect("checks");
    c.bench_function("compile only 10k lines", |b| {
        b.iter(|| journeyc::compile::compile_with_sources(black_box(&checked), &sources))
    });
    c.bench_function("compile + write_bundle 10k lines", |b| {
        b.iter(|| journeyc::compile::write_bundle(&journeyc::compile::compile(black_box(&checked))))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
