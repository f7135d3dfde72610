//! Scenarios with hand-reviewed traces (`scenarios/<name>/`: a workspace and
//! `events.jsonl`), snapshotted with insta. Every snapshot was checked by
//! hand against the contract (spec §5, §7, §9): the expected instants, with
//! their time-zone and DST arithmetic, are written next to each test.
//!
//! The `version` of `enter` lines (a content hash owned by the compiler) is
//! redacted so that a change of the hash function does not churn every
//! snapshot; send ids are kept, they are the runtime's idempotency keys.

use super::properties::{simulate_dir, simulate_text, simulate_text_with_arrivals};
use journeyc::runtime::stats::Tally;
use journeyc::runtime::{Kind, TraceRecord};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn directory(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/runtime/scenarios")
        .join(name)
}

/// The trace as JSON lines, `version` redacted.
fn trace_text(trace: &[TraceRecord]) -> String {
    assert!(
        trace.windows(2).all(|w| w[0].at <= w[1].at),
        "the trace is in time order"
    );
    let mut out = String::new();
    for record in trace {
        let mut record = record.clone();
        if record.version.is_some() {
            record.version = Some("[hash]".to_string());
        }
        out.push_str(&record.to_json_line());
        out.push('\n');
    }
    out
}

/// Simulates one scenario directory and snapshots its trace.
fn check(name: &str) {
    let trace = simulate_dir(&directory(name));
    insta::assert_snapshot!(name, trace_text(&trace));
}

macro_rules! scenarios {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        $(
            $(#[$doc])*
            #[test]
            fn $name() {
                check(stringify!($name));
            }
        )*
    };
}

scenarios! {
    /// Quiet hours 21:00–08:00, customer-local, five zones:
    /// - tokyo_night: ping 13:00Z = 22:00 JST → hello 08:00 JST = 23:00Z,
    ///   `later` an hour after the deferred send (00:00Z = 09:00 JST).
    /// - tokyo_day: 12:00 JST, outside → hello 03:00Z, later 04:00Z.
    /// - ny_dst: ping 2026-03-08T03:00Z = 22:00 EST on 03-07; the window ends
    ///   08:00 EDT (after the 02:00 spring-forward) = 12:00Z, not 13:00Z.
    /// - berlin_dst: 2026-03-28T21:30Z = 22:30 CET → 08:00 CEST on 03-29 = 06:00Z.
    /// - tehran_edge: 17:30Z = 21:00 IRST exactly (start inclusive) → 08:00 = 04:30Z.
    /// - utc_fallback (no zone → journey zone UTC): 07:59Z → 08:00Z.
    /// - ny_late_wait: hello at 20:30 EDT (00:30Z), `later` due 21:30 EDT →
    ///   held to 08:00 EDT = 12:00Z.
    quiet_hours_zones,
    /// Quiet hours 23:00–02:30 in Europe/Berlin:
    /// - spring: ping 03-28T22:30Z = 23:30 CET; 02:30 on 03-29 does not exist
    ///   (02:00 → 03:00), so the first valid instant after it: 03:00 CEST = 01:00Z.
    /// - autumn: ping 10-24T22:30Z = 00:30 CEST; 02:30 exists twice on 10-25,
    ///   the earlier (CEST) = 00:30Z.
    /// - ordinary: 05-01T22:30Z = 00:30 CEST → 02:30 CEST = 00:30Z on 05-02.
    quiet_hours_dst_gap,
    /// `trigger left engaged` (`seen(login within 7d)`): logins 05-01, 05-03
    /// → left at 05-10T10:00 (7d after the last); login 05-12T08:00 re-enters
    /// the segment, left again 05-19T08:00 (the horizon: last event + 7d).
    left_segment,
    /// Settings (quiet hours 21:00–08:00, zone New York) inherited by
    /// `inherits`; `overrides` has quiet hours 01:00–02:00 and zone Tokyo:
    /// - no_zone: ping 16:30Z = 12:30 EDT → hello at once; = 01:30 JST →
    ///   hi held to 02:00 JST = 17:00Z.
    /// - berlin (customer zone wins over both): 23:30Z = 01:30 CEST → hello
    ///   held to 08:00 CEST = 06:00Z; hi held to 02:00 CEST = 00:00Z.
    settings_inherit,
    /// Quiet hours 21:00–08:00 UTC with cap 2/1d, a `wait for` and an exit rule:
    /// - c1: signed_up 22:00 → a, b at 08:00 (c: cap); opened 05-02T23:00 →
    ///   `thanks` (with event.campaign) held to 05-03T08:00, when a and b
    ///   (exactly 1d earlier) have left the cap window → sent.
    /// - c2: unsubscribed during the deferral → exit_rule at 23:00, nothing sent.
    /// - c3: 12:00 → a, b, c (cap) at once; no open → nudge due 05-02T12:00 →
    ///   the cap window (05-01T12:00, 05-02T12:00] excludes a and b → sent.
    quiet_hours_interplay,
    /// `where` filters, each with its own event in scope:
    /// - c1: order 10 filtered out; order 25.5 enters; purchase 50 is no
    ///   goal, 150 is (14:00); partial refund does not exit; dhl delivery
    ///   does not end the wait, ups at 15:00 does ("ups: ups").
    /// - c2: full refund → exit_rule at 12:00.
    /// - c3: order 20 (>= is inclusive); only dhl → no_ups at 05-03T10:00.
    filters,
    /// `hot_vip = customer.vip and count(purchase within 3d) >= 2`:
    /// - c1 (vip): entered at the second purchase 05-02T10:00; left when the
    ///   first ages out, 05-04T10:00, with no input.
    /// - c2: purchases while not vip; entered on the identify 05-03T00:00;
    ///   left 05-04T10:00.
    /// - c3 (vip): entered 05-02T10:00; left on the identify vip=false 05-03T00:00.
    segment_attributes_and_windows,
    /// New York, ping Sat 03-07 15:00Z = 10:00 EST; `wait 1d` → 03-08T15:00Z
    /// (11:00 EDT: elapsed time, not wall clock); then `wait until 10:00` →
    /// the next local 10:00, 03-09 10:00 EDT = 14:00Z.
    wait_exact_dst,
    /// `wait until 09:00 on weekdays`:
    /// - la_friday: Fri 10:00 PDT → Mon 05-11 09:00 PDT = 16:00Z.
    /// - utc_saturday: Sat → Mon 05-11 09:00Z.
    /// - tokyo_monday: 05-10T23:30Z is Mon 08:30 JST (Sunday in UTC) → 05-11T00:00Z.
    /// - utc_exact: Wed 09:00:00Z exactly → at once.
    /// - kolkata_wed: 07:30 IST → 09:00 IST = 03:30Z.
    /// - ny_dst_weekend: Sat 03-07 10:00 EST → Mon 03-09 09:00 EDT = 13:00Z.
    /// - utc_friday_after: Fri 09:00:01Z → Mon 05-11 09:00Z.
    wait_until_weekdays,
    /// `wait until customer.signed_up_at + 30d` and `wait until customer.trial_ends_at`:
    /// - past: 01-01 + 30d is past → at once; trial absent → at once.
    /// - future: 02-20T10:00 + 30d = 03-22T10:00; trial 03-25T00:00.
    /// - exactly_now: 01-30T10:00 + 30d = 03-01T10:00 = now → at once.
    wait_until_expr,
    /// Goals `purchase within 3d` and segment `repeat_buyer within 10d`, entry 05-01T10:00:
    /// - inside: purchase goal 05-03T10:00 (once, not again at 22:00);
    ///   repeat_buyer goal at the second purchase 05-03T22:00.
    /// - boundary: purchase at exactly +3d counts (window inclusive).
    /// - outside: +3d+1s does not count.
    /// - after_end: a purchase after the exit counts for nothing.
    /// - before_entry: purchase before entry is no goal; the second purchase
    ///   (+4d) is outside 3d but makes repeat_buyer → that goal only.
    goals,
    /// `entry once`, `entry every 1d`, `entry always` (each: send, wait 2h):
    /// - 10:00 all enter; 11:00 all busy (one enrollment at a time).
    /// - 12:00: the event comes before the 12:00 timers (spec: an event at a
    ///   deadline counts), so all are still enrolled → ignored; all exit 12:00.
    /// - 13:00: only always; 05-02T09:59:59: only always (every: < 1d);
    ///   05-02T10:00: every (exactly 1d after its entry); always busy till 11:59:59.
    /// - 05-02T11:00: every and always busy, once never again.
    reentry,
    /// `messageId` dedupe: the second identify `m0` (name Bob) is ignored so the
    /// send says Ada; the second `m1` ping is ignored; pings without a
    /// messageId are never deduplicated; dedupe is per customer (c2's `m1`).
    message_id_dedupe,
    /// Journey cap 2/1d and workspace cap 3/1d (alpha: m1 10:00, m2 11:00, m3
    /// 12:00, m4 05-02T12:00; beta on pong: n1, n2 an hour later):
    /// - m3 12:00: 2 alpha sends in the day → skip `cap`.
    /// - n1 12:30: 2 sends in the day → sent; n2 13:30: 3 → skip `global_cap`.
    /// - 05-02T10:00 n1: window (05-01T10:00, now] holds m2, n1 → sent;
    ///   n2 11:00: m2 at 11:00 left the window → n1, n1 → sent.
    /// - m4 05-02T12:00: no alpha send in the day (m3 was skipped, skips do
    ///   not count) but n1 12:30, n1, n2 → skip `global_cap`.
    caps,
    /// Holdout 30% and consent: holdout customers get `holdout` for every
    /// send (even without consent, even for a message without a consent rule);
    /// treatment customers get `consent` where their opt-in is false or absent.
    /// Odd customers have email_opt_in false; c1–c4 push_opt_in true, c5–c8 absent.
    consent_holdout,
    /// Unsubscribing (sends 05-01/02/03 at 10:00: welcome; tips + reminder; tips + reminder):
    /// - c1: `Unsubscribed` at 12:00 naming its welcome (email) → tips on
    ///   05-02 `unsubscribed`, the sms reminder still goes; `email_subscribe:
    ///   "subscribed"` on 05-02 12:00 → both go on 05-03.
    /// - c2: `Unsubscribed` with `channel: "sms"` → reminders skipped, tips sent.
    /// - c3: an `email_id` that names no send of ours → email suppressed.
    /// - c4: `sms_subscribe: "unsubscribed"` before entering → reminders skipped.
    /// - c5: 05-02 11:00 names its 05-02 sms reminder → only the 05-03
    ///   reminder is skipped; tips (email) keep going.
    unsubscribe,
    /// `set` seen by later steps, by a segment (`entered rich`) and by another
    /// journey's trigger `where`:
    /// - c1 (50): review 09:30 no; purchase → 110 → gold "110", club enters
    ///   (rich) "110"; review 11:00 → reviewers.
    /// - c2 (0): purchase → 60 → basic; review no; purchase → 120 → gold, club.
    set_visible,
    /// `entered dormant` by the passing of time, `left dormant` on a login:
    /// - c1: login 05-01T10:00 → left (returning); dormant exactly 14d later,
    ///   05-15T10:00, with no input → winback.
    /// - c2: last login 05-10T10:00 → winback 05-24T10:00.
    /// - c3: first seen with its login. Membership after the first input is
    ///   the baseline (not dormant), so there is no `left dormant`;
    ///   winback 05-15T10:00.
    dormant_segment,
    /// `trigger every mon at 09:00`, customer-local (first Monday 2026-03-09;
    /// the horizon is the last event + 7d = 03-16T09:00Z):
    /// - tokyo: 09:00 JST = 03-09T00:00Z (weekly and weekly_pro), 03-16T00:00Z.
    /// - new_york: 09:00 EDT (DST since 03-08) = 13:00Z, once (not pro);
    ///   03-16T13:00Z is past the horizon.
    /// - utc: no zone → 09:00Z, although a login arrives at that very
    ///   instant; 03-16T09:00Z (at the horizon, inclusive).
    /// - moves: zone set to Sydney a day after first seen: 09:00 AEDT =
    ///   03-08T22:00Z, 03-15T22:00Z.
    every_monday,
    /// `trigger inactive 3d since login`:
    /// - c1: logins 05-02T10:00, 05-04T10:00 → 05-07T10:00.
    /// - never: no login, first seen 05-01T00:00 → 05-04T00:00, once.
    /// - other_events: login 05-01, a purchase does not reset → 05-04T00:00.
    /// - twice: login 05-01 → 05-04T00:00; login 05-05 → 05-08T00:00.
    inactive,
    /// `wait for delivered within 2d { } timeout { }` with `event.*` bound:
    /// - delivered_ups: got_it "ups", ups_survey "UPS", then `after` sees the
    ///   trigger's event again ("42.5").
    /// - never_delivered: timeout 05-03T10:00 → late "19.99".
    /// - at_deadline: delivered exactly at 48h counts (event before timer).
    /// - too_late: one second after → timeout at 10:00.
    wait_for,
    /// Wire names (`"Order Completed"`, `orderId`, `firstName`) in the calls,
    /// identifiers in the trace and the templates:
    /// - ada: welcome at 09:30 ("Hello Ada"); receipt for o-1 at 10:00
    ///   ("Thanks Ada, 42.5 received"); o-2 (5) is filtered out.
    /// - bob: opted out (`emailOptIn` false) → skip `consent` at 12:00.
    wire_names,
    /// `trigger inactive 3d` (no `since`: any event) with CDP-shaped calls:
    /// - anon-1: only an undeclared `screen` (anonymousId) 05-01T10:00 → nudge
    ///   "Hi there" 05-04T10:00.
    /// - u1: identify with context.traits only (Ada) 05-01; an undeclared
    ///   `page` 05-03T10:00 is activity → nudge "Hi Ada" 05-06T10:00.
    /// - u2: identify 05-01; a `group` call 05-02T10:00 is activity → 05-05T10:00.
    cdp_stream,
    /// Anonymous profiles merged into identified ones (`runtime::merge`):
    /// - anon-1 enters browse 05-01T10:00; identify u1 + anon-1 at 12:00
    ///   (firstName Ada) → the enrollment goes on as u1: "Hi Ada, A1"
    ///   05-02T10:00. Later calls with only anon-1 are u1's: A2 enters
    ///   05-03 (ordinal 2), the repeated messageId m1 is a duplicate.
    /// - u2 (05-01T09:00) and anon-2 (10:00) both in browse; alias at
    ///   11:00 → the user's is kept, anon-2's exits `merged`; one send.
    /// - anon-3's wait is due 05-02T10:00, the instant u3 + anon-3 is
    ///   identified → it fires once, as u3 ("Hi Cy").
    /// - u4 subscribed, anon-4 unsubscribed → merged, the suppression
    ///   wins: skip `unsubscribed`.
    identity_merge,
    /// `context.timezone` / `context.locale` fill what the profile lacks;
    /// `wait until 09:00` is customer-local:
    /// - c1: only the context (Tokyo, ja-JP) → 09:00 JST = 05-02T00:00Z.
    /// - c2: profile New York wins over the context's Tokyo → 09:00 EDT =
    ///   05-01T13:00Z; the locale (en-US) was missing, so it is filled.
    /// - c3: the identify's own trait (London) wins over its context →
    ///   09:00 BST = 05-02T08:00Z.
    /// - c4: an invalid context zone is ignored → UTC, 05-02T09:00Z.
    context_fill,
    /// `trigger api { coupon: string, amount: number? }`, `entry every 7d`:
    /// - ada: trigger 05-01T10:00 (amount 25) → big_coupon "SPRING: 25 off,
    ///   Ada", reminder 05-02T10:00; the same messageId again is dropped; the
    ///   trigger of 05-04 is refused by `entry every 7d` (no enter); 05-09 (5)
    ///   → small_coupon "LATER for you", reminder 05-10. The trigger calls are
    ///   no activity: `inactive 3d` fires 05-04T09:00, 3d after the identify.
    /// - bob: known by his trigger call only (05-02T12:00, no amount) →
    ///   small_coupon, reminder 05-03T12:00; inactive 3d from that first
    ///   appearance → 05-05T12:00.
    api_trigger,
    /// `exit when unsubscribed` and `exit when churned` (a segment):
    /// - unsub: day0, day1, exit_rule 05-02T22:00.
    /// - churn: plan cancelled at 22:00 → exit_rule then.
    /// - stays: day0 day1 day2, end.
    /// - same_instant: unsubscribed at the instant day1 is due → exits first.
    /// - churned_at_entry: in the exit segment when the trigger fires → leaves
    ///   at once, nothing sent.
    exit_when,
    /// `repeat 3 { send; wait 7d; if seen(login within 7d) { exit } }`:
    /// - never_logs_in: reminders 05-01, 05-08, 05-15, final 05-22.
    /// - logs_in: login 05-10 → exit_statement at 05-15T10:00 after 2 reminders.
    repeat_exit,
    /// `body file` variants fa, fa-IR, pt-BR: fa-IR → fa-IR, fa-AF → fa,
    /// fa → fa, pt-PT → plain, pt-BR → pt-BR, pt → plain, en-US → plain,
    /// no locale → plain.
    locale_variants,
    /// `{{ customer.code | int }}` with code "abc" → skip render_error with
    /// the error; the journey continues (`after` at 11:00).
    render_error,
    /// The file is out of order; processing is in timestamp order:
    /// - c1: the identify (Tokyo) is last in the file but first in time:
    ///   signed_up 14:00Z = 23:00 JST → welcome 07:00 JST = 22:00Z; day1
    ///   05-02T22:00Z (07:00 JST, just outside); purchase goal 05-02T12:00Z.
    /// - c2 (UTC): the purchase precedes the entry → no goal; welcome
    ///   05-02T07:00Z, day1 05-03T07:00Z.
    out_of_order,
    /// Goals after the end (`quick` ends right after its send; `trial`
    /// splits, with a holdout, and ends):
    /// - late: purchase a day after the end → goal purchase 05-02T10:00;
    ///   the second purchase 05-03 makes it a repeat_buyer → goal
    ///   repeat_buyer (a segment goal), and no second purchase goal.
    /// - boundary: purchase at exactly 3d → counts (the window is inclusive).
    /// - too_late: one second after 3d → nothing.
    /// - reentered: a second enrollment 05-02T10:00 closes the first one's
    ///   window; the purchase at 12:00 is the second's goal, once.
    /// - t0…t9 upgrade a day after the end (twice, counted once each);
    ///   t_late one second after its 2d window → nothing.
    goals_after_end,
}

// ------------------------------------------------------------------ splits

const SPLIT_JOURNEY: &str = r#"
event signed_up
event purchase
message a push { body "a" }
message b push { body "b" }
message c push { body "c" }

journey experiment {
  trigger signed_up
  entry always
  holdout 10%
  goal purchase within 7d
  split cta {
    short 50% { send a }
    medium 30% { send b }
    long 20% { send c }
  }
  wait 1d
}
"#;

/// 200 customers enter twice (05-01 and 05-10); every third purchases a
/// day after each entry.
fn split_events() -> String {
    let mut out = String::new();
    for index in 0..200 {
        for (day, second) in [("01", "02"), ("10", "11")] {
            out.push_str(&format!(
                "{{\"type\":\"track\",\"userId\":\"c{index:03}\",\"event\":\"signed_up\",\"properties\":{{}},\"timestamp\":\"2026-05-{day}T10:00:00Z\"}}\n"
            ));
            if index % 3 == 0 {
                out.push_str(&format!(
                    "{{\"type\":\"track\",\"userId\":\"c{index:03}\",\"event\":\"purchase\",\"properties\":{{}},\"timestamp\":\"2026-05-{second}T10:00:00Z\"}}\n"
                ));
            }
        }
    }
    out
}

/// Split arms and holdout: stable per customer across enrollments, and
/// roughly proportional over 200 customers (the funnel is snapshotted).
#[test]
fn split_and_holdout_shares() {
    let workspace = tempfile::tempdir().expect("temp dir");
    std::fs::write(workspace.path().join("w.journey"), SPLIT_JOURNEY).expect("write journey");
    let (trace, arrivals) = simulate_text_with_arrivals(workspace.path(), &split_events());

    let mut arms: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for record in &trace {
        match record.kind {
            Kind::Split => arms
                .entry(record.customer.as_str())
                .or_default()
                .push(record.arm.as_deref().expect("a split names its arm")),
            Kind::Enter => groups
                .entry(record.customer.as_str())
                .or_default()
                .push(record.arm.as_deref().expect("a holdout journey names the group")),
            _ => {}
        }
    }
    assert_eq!(arms.len(), 200);
    for (customer, chosen) in arms.iter().chain(groups.iter()) {
        assert_eq!(chosen.len(), 2, "{customer} entered twice");
        assert_eq!(chosen[0], chosen[1], "{customer}: the same arm every time");
    }
    let share = |map: &BTreeMap<&str, Vec<&str>>, name: &str| map.values().filter(|c| c[0] == name).count();
    let (short, medium, long) = (share(&arms, "short"), share(&arms, "medium"), share(&arms, "long"));
    let holdout = share(&groups, "holdout");
    // Binomial, 200 draws: within about 3 standard deviations.
    assert!((79..=121).contains(&short), "short {short}");
    assert!((40..=80).contains(&medium), "medium {medium}");
    assert!((23..=57).contains(&long), "long {long}");
    assert!((8..=33).contains(&holdout), "holdout {holdout}");
    // Holdout customers take the split too (their sends are skipped).
    let skipped = trace
        .iter()
        .filter(|r| r.kind == Kind::Skip && r.reason.as_deref() == Some("holdout"))
        .count();
    assert_eq!(skipped, holdout * 2);

    let mut tally = Tally::default();
    trace.iter().for_each(|record| tally.add(record));
    tally.add_arrivals(&arrivals);
    let readout = tally.readouts(&bundle(SPLIT_JOURNEY)).remove(0);
    insta::assert_snapshot!("split_and_holdout_shares", readout.render());
}

// --------------------------------------------------------------- migration

fn bundle(source: &str) -> std::sync::Arc<journeyc::compile::bytecode::Bundle> {
    use journeyc::workspace::{load, DiskFiles};
    let workspace = tempfile::tempdir().expect("temp dir");
    std::fs::write(workspace.path().join("w.journey"), source).expect("write journey");
    let sources = load(&[workspace.path().to_path_buf()]).expect("workspace loads");
    let outcome = journeyc::check::check_workspace(&sources, &DiskFiles);
    let checked = outcome
        .checked
        .unwrap_or_else(|| panic!("workspace has errors: {:#?}", outcome.diagnostics));
    std::sync::Arc::new(journeyc::compile::compile(&checked))
}

const MIGRATE_V1: &str = r#"
event signed_up
event opened
message a push { body "a" }
message late push { body "late" }
journey onboarding {
  trigger signed_up
  on update migrate
  first: wait 1d
  send a
}
"#;

const MIGRATE_V2: &str = r#"
event signed_up
event opened
message a push { body "a" }
message late push { body "late" }
journey onboarding {
  trigger signed_up
  on update migrate
  first: wait for opened within 1d {
    send a
  } timeout {
    send late
  }
}
"#;

/// `on update migrate` onto a different kind of statement under the same
/// label starts that statement: enrolled at 10:00 on v1 (waiting at
/// `first: wait 1d`), migrated at 12:00 to v2's `first: wait for opened
/// within 1d`, the enrollment waits for `opened` (until 12:00 the next day)
/// rather than taking the timeout at once.
#[test]
fn migration_onto_another_kind_of_step_starts_it() {
    use journeyc::runtime::{CustomerState, Engine, Input};
    let at = |text: &str| journeyc::runtime::trace::parse_time(text).expect("time");
    let v1 = bundle(MIGRATE_V1);
    let v2 = bundle(MIGRATE_V2);
    let track = |event: &str, time: &str| Input::Track {
        event: event.to_string(),
        properties: BTreeMap::new(),
        at: at(time),
        message_id: None,
    };
    let mut state = CustomerState::new("c1");
    let old = Engine::new(v1.clone());
    let entered = old
        .apply(&mut state, &track("signed_up", "2026-05-01T10:00:00Z"))
        .expect("applies");
    assert_eq!(entered.wake_at, Some(at("2026-05-02T10:00:00Z")));

    let new = Engine::with_retained(v2, vec![v1]);
    let mut records = Vec::new();
    let mut effects = new
        .apply(
            &mut state,
            &Input::Wake {
                at: at("2026-05-01T12:00:00Z"),
            },
        )
        .expect("applies");
    records.extend(effects.records);
    while let Some(wake) = effects.wake_at {
        effects = new.apply(&mut state, &Input::Wake { at: wake }).expect("applies");
        records.extend(effects.records);
    }
    let summary: Vec<String> = records
        .iter()
        .map(|r| {
            format!(
                "{} {:?} {}",
                journeyc::runtime::trace::format_time(r.at),
                r.kind,
                r.message.as_deref().or(r.reason.as_deref()).unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        summary,
        ["2026-05-02T12:00:00Z Send late", "2026-05-02T12:00:00Z Exit end"],
        "{records:#?}"
    );
}

/// A `messageId` is remembered for exactly seven days from its input, even
/// when nothing woke the customer in between: the repeat after three days
/// is ignored, the one after eight days is a new input.
#[test]
fn a_message_id_is_remembered_for_seven_days() {
    use journeyc::runtime::{CustomerState, Engine, Input};
    let engine = Engine::new(bundle(
        r#"
event ping
message hello push { body "hello" }
journey echo {
  trigger ping
  entry always
  send hello
}
"#,
    ));
    let at = |text: &str| journeyc::runtime::trace::parse_time(text).expect("time");
    let ping = |time: &str| Input::Track {
        event: "ping".to_string(),
        properties: BTreeMap::new(),
        at: at(time),
        message_id: Some("m1".to_string()),
    };
    let mut state = CustomerState::new("c1");
    let first = engine
        .apply(&mut state, &ping("2026-05-01T10:00:00Z"))
        .expect("applies");
    assert_eq!(first.records.len(), 3, "enter, send, exit: {:#?}", first.records);
    assert_eq!(first.wake_at, None, "nothing wakes the customer in between");
    assert!(engine
        .apply(&mut state, &ping("2026-05-04T10:00:00Z"))
        .expect("applies")
        .records
        .is_empty());
    let later = engine
        .apply(&mut state, &ping("2026-05-09T10:00:00Z"))
        .expect("applies");
    assert_eq!(later.records.len(), 3, "{:#?}", later.records);
}

/// `set customer.timezone` moves the pending `every` occurrence at once,
/// even when it runs on a timer: the customer is in UTC, so the digest is
/// due Monday 2026-05-11 09:00Z; at 11:00Z on Thursday a journey moves them
/// to Tokyo, and the digest is then due Monday 09:00 JST = 00:00Z.
#[test]
fn setting_the_timezone_moves_the_pending_every_occurrence() {
    use journeyc::runtime::{CustomerState, Engine, Input};
    let engine = Engine::new(bundle(
        r#"
customer { timezone: timezone? }
event moved
message digest email { subject "d" body "d" }
journey weekly {
  trigger every mon at 09:00
  entry always
  send digest
}
journey relocate {
  trigger moved
  wait 1h
  set customer.timezone = "Asia/Tokyo"
}
"#,
    ));
    let at = |text: &str| journeyc::runtime::trace::parse_time(text).expect("time");
    let mut state = CustomerState::new("c1");
    let identify = Input::Identify {
        traits: BTreeMap::from([(
            "timezone".to_string(),
            journeyc::compile::bytecode::Value::String("UTC".to_string()),
        )]),
        subscriptions: BTreeMap::new(),
        at: at("2026-05-06T10:00:00Z"),
        message_id: None,
    };
    assert_eq!(
        engine.apply(&mut state, &identify).expect("applies").wake_at,
        Some(at("2026-05-11T09:00:00Z"))
    );
    let moved = Input::Track {
        event: "moved".to_string(),
        properties: BTreeMap::new(),
        at: at("2026-05-07T10:00:00Z"),
        message_id: None,
    };
    assert_eq!(
        engine.apply(&mut state, &moved).expect("applies").wake_at,
        Some(at("2026-05-07T11:00:00Z"))
    );
    let woken = engine
        .apply(
            &mut state,
            &Input::Wake {
                at: at("2026-05-07T11:00:00Z"),
            },
        )
        .expect("applies");
    assert!(woken.records.iter().any(|r| r.attribute.as_deref() == Some("timezone")));
    assert_eq!(woken.wake_at, Some(at("2026-05-11T00:00:00Z")));
}

/// `journeyc test` takes events, attributes and properties by identifier or
/// by wire name.
#[test]
fn wire_names_in_journey_tests() {
    journey_tests_pass("wire_names", "wire.jtest", 2);
}

/// `journeyc test` enters a journey by API with `trigger = "JOURNEY"`.
#[test]
fn api_trigger_in_journey_tests() {
    journey_tests_pass("api_trigger", "coupon.jtest", 2);
}

/// The compiled workspace of a scenario directory.
fn scenario_bundle(name: &str) -> std::sync::Arc<journeyc::compile::bytecode::Bundle> {
    let sources = journeyc::workspace::load(&[directory(name)]).expect("workspace loads");
    let checked = journeyc::check::check_workspace(&sources, &journeyc::workspace::DiskFiles)
        .checked
        .expect("checks");
    std::sync::Arc::new(journeyc::compile::compile(&checked))
}

/// Runs a scenario's `.jtest` file: it has `count` tests, all passing.
fn journey_tests_pass(name: &str, test_file: &str, count: usize) {
    let bundle = scenario_bundle(name);
    let text = std::fs::read_to_string(directory(name).join(test_file)).expect("test file");
    let file = journeyc::testing::parse(&text).expect("parses");
    let outcomes = journeyc::testing::run_file(&bundle, &file);
    assert_eq!(outcomes.len(), count);
    for outcome in outcomes {
        assert!(outcome.failure.is_none(), "{}: {:?}", outcome.name, outcome.failure);
    }
}

/// A workspace that declares the event under another identifier
/// (`event unsubscribed "Unsubscribed" { … }`) can trigger on it, and it
/// still suppresses: the runtime reads it and its properties by their names
/// on the wire.
#[test]
fn a_declared_unsubscribed_event_still_suppresses() {
    let workspace = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        workspace.path().join("w.journey"),
        r#"
event ping
event unsubscribed "Unsubscribed" { route "channel": string? }
message hello sms { body "hi" }
message bye email { subject "Bye" body "sorry to see you go" }
journey pinger {
  trigger ping
  entry always
  send hello
}
journey farewell {
  trigger unsubscribed
  send bye
}
"#,
    )
    .expect("write journey");
    let events = r#"{"type":"track","userId":"c1","event":"Unsubscribed","properties":{"channel":"sms"},"timestamp":"2026-05-01T10:00:00Z"}
{"type":"track","userId":"c1","event":"ping","properties":{},"timestamp":"2026-05-01T11:00:00Z"}
"#;
    let trace = simulate_text(workspace.path(), events);
    let outcome: Vec<(String, Kind, Option<String>)> = trace
        .iter()
        .filter(|r| matches!(r.kind, Kind::Send | Kind::Skip))
        .map(|r| (r.message.clone().unwrap_or_default(), r.kind, r.reason.clone()))
        .collect();
    assert_eq!(
        outcome,
        vec![
            ("bye".to_string(), Kind::Send, None),
            ("hello".to_string(), Kind::Skip, Some("unsubscribed".to_string())),
        ]
    );
}

/// The readout of `goals_after_end`: goals reached after the end count for
/// the enrollment, its holdout group and its split arm.
#[test]
fn goals_after_the_end_count_for_their_enrollment_group_and_arm() {
    let trace = simulate_dir(&directory("goals_after_end"));
    let mut tally = Tally::default();
    trace.iter().for_each(|record| tally.add(record));
    let c = |name: &str| tally.counters.get(name).copied().unwrap_or(0);
    // late, boundary, too_late, reentered twice.
    assert_eq!(c("j/quick/entered"), 5);
    // late, boundary, reentered's second enrollment.
    assert_eq!(c("j/quick/converted"), 3);
    assert_eq!(c("j/quick/goal/purchase"), 3);
    assert_eq!(c("j/quick/goal/repeat_buyer"), 2);
    assert_eq!(c("j/quick/exits/end"), 5);

    // t0…t9 converted, t_late did not; each in its own group and arm.
    assert_eq!(c("j/trial/entered"), 11);
    assert_eq!(c("j/trial/converted"), 10);
    let group_of = |customer: &str| {
        trace
            .iter()
            .find(|r| r.kind == Kind::Enter && r.customer == customer)
            .and_then(|r| r.arm.clone())
            .expect("a holdout journey names the group")
    };
    let arm_of = |customer: &str| {
        trace
            .iter()
            .find(|r| r.kind == Kind::Split && r.customer == customer)
            .and_then(|r| r.arm.clone())
            .expect("every trial customer takes the split")
    };
    let mut groups: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    let mut arms: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for index in 0..11 {
        let customer = if index < 10 {
            format!("t{index}")
        } else {
            "t_late".to_string()
        };
        let converted = i64::from(index < 10);
        let group = groups.entry(group_of(&customer)).or_default();
        group.0 += 1;
        group.1 += converted;
        if group_of(&customer) == "treatment" {
            let arm = arms.entry(arm_of(&customer)).or_default();
            arm.0 += 1;
            arm.1 += converted;
        }
    }
    assert!(
        groups.contains_key("holdout") && groups.contains_key("treatment"),
        "{groups:?}"
    );
    for (group, (entered, converted)) in &groups {
        assert_eq!(c(&format!("j/trial/group/{group}/entered")), *entered, "{group}");
        assert_eq!(c(&format!("j/trial/group/{group}/converted")), *converted, "{group}");
    }
    for (arm, (entered, converted)) in &arms {
        assert_eq!(c(&format!("j/trial/arm/offer/{arm}/entered")), *entered, "{arm}");
        assert_eq!(c(&format!("j/trial/arm/offer/{arm}/converted")), *converted, "{arm}");
    }
}

/// `journeyc test` asserts readout numbers (`stats`), over every customer
/// of the test, with the numbers of `runtime::stats`.
#[test]
fn journey_tests_assert_the_readout() {
    journey_tests_pass("goals_after_end", "readout.jtest", 2);
}

/// A readout that differs fails, with one line per difference naming its
/// path; a journey the workspace lacks is an error in the test.
#[test]
fn a_journey_test_fails_on_a_readout_number_that_differs() {
    let bundle = scenario_bundle("goals_after_end");
    let run = |stats: &str| {
        let text = format!(
            r#"
[[test]]
name = "numbers"
start = "2026-05-01T10:00:00Z"
events = [
  {{ at = "+0", event = "signed_up", customer = "a" }},
  {{ at = "+1d", event = "purchase", properties = {{ amount = 1 }}, customer = "a" }},
  {{ at = "+0", event = "signed_up", customer = "b" }},
]
stats = {stats}
"#
        );
        let file = journeyc::testing::parse(&text).expect("parses");
        journeyc::testing::run_file(&bundle, &file).remove(0).failure
    };
    assert_eq!(run("{ quick = { entered = 2, converted = 1, rate = 0.5 } }"), None);
    let failure = run(
        "{ quick = { entered = 3, messages = { welcome = { sent = 2, opened = 1 } }, nope = 1, \
         steps = [{ kind = \"wait\" }] } }",
    )
    .expect("it fails");
    assert!(
        failure.contains("stats.quick.entered: expected 3, actual 2"),
        "{failure}"
    );
    assert!(
        failure.contains("stats.quick.messages.welcome.opened: expected 1, actual 0"),
        "{failure}"
    );
    assert!(!failure.contains("welcome.sent"), "sent is right: {failure}");
    assert!(failure.contains("stats.quick.nope: not in the readout"), "{failure}");
    assert!(
        failure.contains("stats.quick.steps[0]: expected an element like"),
        "{failure}"
    );
    let failure = run("{ missing = { entered = 0 } }").expect("it fails");
    assert!(
        failure.contains("stats: no journey `missing` (journeys: quick, trial)"),
        "{failure}"
    );
    let text = "[[test]]\nname = \"nothing\"\nevents = []\n";
    let file = journeyc::testing::parse(text).expect("parses");
    let failure = journeyc::testing::run_file(&bundle, &file).remove(0).failure;
    assert_eq!(failure.as_deref(), Some("give `expect`, `stats` or both"));
}

/// The open goal window of an ended enrollment is part of the state while
/// the window is open, sets no timer, and is forgotten at the first input
/// after it closes, or once its goal is reached.
#[test]
fn an_ended_enrollment_keeps_its_goal_window_only_while_it_is_open() {
    use journeyc::runtime::{CustomerState, Engine, Input};
    let engine = Engine::new(bundle(
        r#"
event signed_up
event purchase
event login
message welcome push { body "hello" }
journey quick {
  trigger signed_up
  goal purchase within 3d
  send welcome
}
"#,
    ));
    let at = |text: &str| journeyc::runtime::trace::parse_time(text).expect("time");
    let track = |event: &str, time: &str| Input::Track {
        event: event.to_string(),
        properties: BTreeMap::new(),
        at: at(time),
        message_id: None,
    };
    let kinds = |records: &[TraceRecord]| records.iter().map(|r| r.kind).collect::<Vec<_>>();

    let mut state = CustomerState::new("c1");
    let entered = engine
        .apply(&mut state, &track("signed_up", "2026-05-01T10:00:00Z"))
        .expect("applies");
    assert_eq!(kinds(&entered.records), [Kind::Enter, Kind::Send, Kind::Exit]);
    assert_eq!(entered.wake_at, None, "an open window sets no timer");
    let window = state.attributions.get("quick").expect("the window is open");
    assert_eq!(window.until, at("2026-05-04T10:00:00Z"));
    let login = engine
        .apply(&mut state, &track("login", "2026-05-04T10:00:00Z"))
        .expect("applies");
    assert!(login.records.is_empty());
    assert!(
        state.attributions.contains_key("quick"),
        "open through its last instant"
    );
    engine
        .apply(&mut state, &track("login", "2026-05-04T10:00:01Z"))
        .expect("applies");
    assert!(state.attributions.is_empty(), "closed, forgotten");
    let late = engine
        .apply(&mut state, &track("purchase", "2026-05-04T10:00:02Z"))
        .expect("applies");
    assert!(late.records.is_empty(), "{:#?}", late.records);

    // Reached: counted once and forgotten.
    let mut state = CustomerState::new("c2");
    engine
        .apply(&mut state, &track("signed_up", "2026-05-01T10:00:00Z"))
        .expect("applies");
    let goal = engine
        .apply(&mut state, &track("purchase", "2026-05-02T10:00:00Z"))
        .expect("applies");
    assert_eq!(kinds(&goal.records), [Kind::Goal]);
    assert!(state.attributions.is_empty());
    let again = engine
        .apply(&mut state, &track("purchase", "2026-05-02T11:00:00Z"))
        .expect("applies");
    assert!(again.records.is_empty());
}
