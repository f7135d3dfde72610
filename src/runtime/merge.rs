//! Identity merge: an anonymous profile folded into the identified one
//! (a call with both `userId` and `anonymousId`, or an `alias`).
//!
//! **Invariant:** [`merge`] is pure and total: two states in, one state and
//! the trace records of the enrollments that could not be kept out. The
//! simulator and the daemon both call it, before the input that carries the
//! identities, so the merged customer is the same in both. Every bound of
//! [`CustomerState`] still holds afterwards.
//!
//! Rules (`docs/daemon.md`, "Identity: anonymous users, identify and alias"):
//!
//! - attributes: the user's values win; the anonymous profile fills only
//!   the attributes the user lacks;
//! - history, sends, seen `messageId`s and sent ids: the union in time
//!   order, cut to the usual bounds (the latest kept);
//! - enrollments: the anonymous one goes on under the user id with its
//!   position and timer, unless the user is in the same journey: then the
//!   user's is kept and the anonymous one exits with reason `merged`;
//! - entry bookkeeping: counts add up, the latest entry wins, so `entry
//!   once` holds across the two identities;
//! - subscriptions: per channel a suppression wins over subscribed (a
//!   person who unsubscribed as a visitor did not opt back in by logging
//!   in), and between two of the same kind the later one;
//! - open goal windows of ended enrollments: the anonymous one is kept in
//!   a journey where the user has neither an enrollment nor a window;
//! - clocks: the later clock, the earlier first-seen time, the later
//!   last-event times.

use super::state::{CustomerState, HISTORY_PER_EVENT_MAX, MESSAGE_IDS_MAX, SENDS_MAX, SENT_MAX};
use super::trace::{Kind, TraceRecord};
use super::Millis;
use crate::compile::bytecode::Value;
use std::collections::VecDeque;

/// The exit reason of an anonymous enrollment dropped by a merge because
/// the user is already in that journey.
pub const MERGED_REASON: &str = "merged";

/// The most ids remembered as aliases of one customer; an id merged beyond
/// that is merged but not remembered (its later calls make a new profile).
pub const ALIASES_MAX: usize = 100;

/// Folds `anonymous` into `user` as of `at`, and returns the trace records
/// it makes: an `exit` with reason [`MERGED_REASON`] for each anonymous
/// enrollment in a journey the user is already in (under the anonymous id,
/// since it is that enrollment that ends).
pub fn merge(user: &mut CustomerState, anonymous: CustomerState, at: Millis) -> Vec<TraceRecord> {
    let CustomerState {
        id: anonymous_id,
        profile,
        first_seen,
        clock,
        last_event,
        last_event_by_name,
        history,
        sends,
        segments,
        enrollments,
        entries,
        schedules,
        segment_check,
        message_ids,
        message_id_index: _,
        subscriptions,
        sent,
        attributions,
        // The user's life of the id goes on.
        incarnation: _,
        settled: _,
        scheduled: _,
    } = anonymous;
    // The profile and the history change: memberships are evaluated again,
    // and so are all the recurring triggers' due times (the time zone, the
    // latest event times, the schedules themselves may change).
    user.settled.clear();
    user.scheduled.clear();
    let mut records = Vec::new();
    for (name, value) in profile {
        if value != Value::Absent && !user.profile.get(name).is_some_and(|v| *v != Value::Absent) {
            user.profile.insert(name, value);
        }
    }
    user.first_seen = earliest(user.first_seen, first_seen);
    user.clock = user.clock.max(clock);
    user.last_event = user.last_event.max(last_event);
    for (name, t) in last_event_by_name {
        let mine = user.last_event_by_name.get_or_insert_with(name, || t);
        *mine = (*mine).max(t);
    }
    for (name, times) in history {
        let mine = user.history.get_or_default(name);
        *mine = union_by(std::mem::take(mine), times, |t| *t, HISTORY_PER_EVENT_MAX);
    }
    user.sends = union_by(std::mem::take(&mut user.sends), sends, |(t, _)| *t, SENDS_MAX);
    for (name, member) in segments {
        user.segments.get_or_insert_with(name, || member);
    }
    for (journey, mut enrollment) in enrollments {
        if user.enrollments.contains_key(journey) {
            let mut record = TraceRecord::new(at.max(clock), &anonymous_id, journey.as_str(), Kind::Exit);
            record.reason = Some(MERGED_REASON.to_string());
            records.push(record);
            continue;
        }
        // Numbered after the user's own enrollments in the journey, so its
        // send ids (which hash customer, journey and ordinal) stay unique.
        let before = user.entries.get(journey).map_or(0, |e| e.count);
        enrollment.ordinal = enrollment.ordinal.saturating_add(before);
        user.enrollments.insert(journey, enrollment);
    }
    for (journey, theirs) in entries {
        let mine = user.entries.get_or_default(journey);
        mine.count = mine.count.saturating_add(theirs.count);
        mine.last_entered = mine.last_entered.max(theirs.last_entered);
        mine.last_inactive_mark = mine.last_inactive_mark.max(theirs.last_inactive_mark);
    }
    for (journey, due) in schedules {
        user.schedules.get_or_insert_with(journey, || due);
    }
    user.segment_check = earliest(user.segment_check, segment_check);
    let mut ids = union_by(
        std::mem::take(&mut user.message_ids),
        message_ids,
        |(t, _)| *t,
        usize::MAX,
    );
    let mut seen = std::collections::HashSet::new();
    // The latest sighting of a digest is kept.
    let mut kept: VecDeque<(Millis, String)> = VecDeque::with_capacity(ids.len());
    while let Some((t, id)) = ids.pop_back() {
        if seen.insert(id.clone()) {
            kept.push_front((t, id));
        }
    }
    while kept.len() > MESSAGE_IDS_MAX {
        kept.pop_front();
    }
    user.message_id_index = kept.iter().map(|(_, id)| id.clone()).collect();
    user.message_ids = kept;
    for (channel, theirs) in subscriptions {
        let keep_theirs = match user.subscriptions.get(&channel) {
            None => true,
            Some(mine) => match (mine.suppressed.is_some(), theirs.suppressed.is_some()) {
                (false, true) => true,
                (true, false) => false,
                _ => theirs.since > mine.since,
            },
        };
        if keep_theirs {
            user.subscriptions.insert(channel, theirs);
        }
    }
    user.sent = union_by(std::mem::take(&mut user.sent), sent, |s| s.at, SENT_MAX);
    for (journey, attribution) in attributions {
        if !user.enrollments.contains_key(journey) && !user.attributions.contains_key(journey) {
            user.attributions.insert(journey, attribution);
        }
    }
    records
}

fn earliest(a: Option<Millis>, b: Option<Millis>) -> Option<Millis> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Two time-ordered queues as one, in time order (the first's items first
/// among equal times), keeping the latest `max`.
fn union_by<T>(first: VecDeque<T>, second: VecDeque<T>, at: impl Fn(&T) -> Millis, max: usize) -> VecDeque<T> {
    let mut out = VecDeque::with_capacity(first.len() + second.len());
    let (mut first, mut second) = (first.into_iter().peekable(), second.into_iter().peekable());
    loop {
        let take_first = match (first.peek(), second.peek()) {
            (Some(a), Some(b)) => at(a) <= at(b),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        let next = if take_first { first.next() } else { second.next() };
        out.extend(next);
    }
    while out.len() > max {
        out.pop_front();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::state::{Enrollment, EntryHistory, Sent, Suppression};
    use crate::syntax::ast::Channel;

    fn enrollment(ordinal: u32, wake_at: Option<Millis>) -> Box<Enrollment> {
        Box::new(Enrollment {
            version: "v".into(),
            entered_at: 10,
            ordinal,
            pc: 3,
            suspended: true,
            wake_at,
            loop_counters: Vec::new(),
            events: Vec::new(),
            goals_reached: Vec::new(),
            holdout: false,
            steps: 4,
        })
    }

    fn string(s: &str) -> Value {
        Value::String(s.into())
    }

    #[test]
    fn the_users_attributes_win_and_missing_ones_are_filled() {
        let mut user = CustomerState::new("u");
        user.profile.insert("plan".into(), string("pro"));
        let mut anonymous = CustomerState::new("a");
        anonymous.profile.insert("plan".into(), string("free"));
        anonymous.profile.insert("country".into(), string("IR"));
        anonymous.first_seen = Some(5);
        user.first_seen = Some(50);
        anonymous.clock = 70;
        user.clock = 60;
        assert!(merge(&mut user, anonymous, 80).is_empty());
        assert_eq!(user.profile["plan"], string("pro"));
        assert_eq!(user.profile["country"], string("IR"));
        assert_eq!((user.first_seen, user.clock), (Some(5), 70));
        assert_eq!(user.id, "u");
    }

    #[test]
    fn an_open_goal_window_moves_where_the_user_has_none_and_no_enrollment() {
        let window = |entered_at: Millis| crate::runtime::state::Attribution {
            version: "v".into(),
            entered_at,
            until: entered_at + 1_000,
            goals_reached: vec![false],
        };
        let mut user = CustomerState::new("u");
        user.attributions.insert("mine".into(), window(1));
        user.enrollments.insert("busy".into(), enrollment(1, None));
        let mut anonymous = CustomerState::new("a");
        for journey in ["mine", "busy", "theirs"] {
            anonymous.attributions.insert(journey.into(), window(2));
        }
        assert!(merge(&mut user, anonymous, 80).is_empty());
        let kept: Vec<(&str, Millis)> = (user.attributions.iter())
            .map(|(journey, w)| (journey.as_str(), w.entered_at))
            .collect();
        assert_eq!(kept, [("mine", 1), ("theirs", 2)]);
    }

    #[test]
    fn enrollments_move_unless_the_user_is_in_the_journey() {
        let mut user = CustomerState::new("u");
        user.enrollments.insert("welcome".into(), enrollment(1, Some(500)));
        user.entries.insert(
            "cart".into(),
            EntryHistory {
                count: 2,
                last_entered: 5,
                last_inactive_mark: None,
            },
        );
        let mut anonymous = CustomerState::new("a");
        anonymous.enrollments.insert("welcome".into(), enrollment(1, Some(100)));
        anonymous.enrollments.insert("cart".into(), enrollment(1, Some(200)));
        anonymous.entries.insert(
            "cart".into(),
            EntryHistory {
                count: 1,
                last_entered: 9,
                last_inactive_mark: None,
            },
        );
        let records = merge(&mut user, anonymous, 300);
        assert_eq!(records.len(), 1);
        let exit = &records[0];
        assert_eq!((exit.customer.as_str(), exit.journey.as_str()), ("a", "welcome"));
        assert_eq!(
            (exit.kind, exit.reason.as_deref(), exit.at),
            (Kind::Exit, Some(MERGED_REASON), 300)
        );
        // The user's own enrollment is untouched.
        assert_eq!(user.enrollments["welcome"].wake_at, Some(500));
        // The anonymous one goes on, with its timer, numbered after the user's.
        let cart = &user.enrollments["cart"];
        assert_eq!((cart.wake_at, cart.pc, cart.ordinal), (Some(200), 3, 3));
        assert_eq!((user.entries["cart"].count, user.entries["cart"].last_entered), (3, 9));
        assert_eq!(user.next_wake(), Some(200));
    }

    #[test]
    fn a_suppression_wins_over_subscribed() {
        let mut user = CustomerState::new("u");
        user.set_subscription(Channel::Email, None, 90, None);
        user.set_subscription(Channel::Sms, Some(Suppression::Bounced), 10, None);
        user.set_subscription(Channel::Push, None, 10, None);
        let mut anonymous = CustomerState::new("a");
        anonymous.set_subscription(Channel::Email, Some(Suppression::Unsubscribed), 20, None);
        anonymous.set_subscription(Channel::Sms, None, 99, None);
        anonymous.set_subscription(Channel::Push, None, 40, None);
        anonymous.set_subscription(Channel::InApp, None, 40, None);
        merge(&mut user, anonymous, 100);
        assert_eq!(user.suppression(Channel::Email), Some(Suppression::Unsubscribed));
        assert_eq!(user.suppression(Channel::Sms), Some(Suppression::Bounced));
        assert_eq!(user.subscriptions[&Channel::Push].since, 40, "the later of two alike");
        assert!(user.subscriptions.contains_key(&Channel::InApp));
    }

    #[test]
    fn history_and_dedupe_memory_are_unioned_within_bounds() {
        let mut user = CustomerState::new("u");
        let mut anonymous = CustomerState::new("a");
        user.history.insert(
            "order".into(),
            (0..HISTORY_PER_EVENT_MAX as Millis).map(|t| t * 2).collect(),
        );
        anonymous.history.insert("order".into(), VecDeque::from([1, 3, 5_000]));
        anonymous.history.insert("page".into(), VecDeque::from([7]));
        assert!(user.remember_message_id("m1", 10));
        assert!(anonymous.remember_message_id("m2", 20));
        assert!(anonymous.remember_message_id("m1", 5));
        anonymous.remember_sent(Sent {
            at: 3,
            id: "s1".into(),
            journey: "j".into(),
            message: "m".into(),
            channel: Channel::Email,
            version: "v".into(),
            pc: 0,
            arm: None,
            engaged: 0,
        });
        anonymous.last_event_by_name.insert("order".into(), 5_000);
        user.last_event_by_name.insert("order".into(), 1_998);
        merge(&mut user, anonymous, 6_000);
        let orders = &user.history["order"];
        assert_eq!(orders.len(), HISTORY_PER_EVENT_MAX);
        assert!(
            orders.iter().zip(orders.iter().skip(1)).all(|(a, b)| a <= b),
            "in time order"
        );
        assert_eq!(orders.back(), Some(&5_000));
        assert_eq!(user.history["page"], VecDeque::from([7]));
        assert_eq!(user.last_event_by_name["order"], 5_000);
        // Both ids are remembered, each once.
        assert_eq!(user.message_ids.len(), 2);
        assert!(!user.remember_message_id("m1", 6_000));
        assert!(!user.remember_message_id("m2", 6_000));
        assert!(user.sent("s1").is_some());
    }

    #[test]
    fn merging_into_a_fresh_user_keeps_everything() {
        let mut anonymous = CustomerState::new("a");
        anonymous.profile.insert("plan".into(), string("free"));
        anonymous.enrollments.insert("welcome".into(), enrollment(1, Some(100)));
        anonymous.schedules.insert("weekly".into(), 700);
        anonymous.segment_check = Some(900);
        let mut user = CustomerState::new("u");
        let expected = CustomerState {
            id: "u".into(),
            ..anonymous.clone()
        };
        assert!(merge(&mut user, anonymous, 50).is_empty());
        assert_eq!(user, expected);
    }
}
