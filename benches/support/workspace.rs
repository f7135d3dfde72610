//! The generated workspace the benchmarks share: a schema, then files of
//! about 45 lines each with a segment, three messages and a journey using
//! every kind of statement.

use journeyc::source::SourceMap;
use std::fmt::Write as _;

/// A workspace of `journeys` files of about 50 lines each, plus a schema.
pub fn workspace(journeys: usize) -> SourceMap {
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
