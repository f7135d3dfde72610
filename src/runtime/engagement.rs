//! Engagement events: what the Segment email and mobile specs report back
//! about a send (`Email Opened`, `Push Notification Tapped`, …). They are
//! understood without being declared in the workspace, name the send by its
//! `id` (`properties.email_id` for email, `properties.message_id` for push),
//! and are attributed to that send's journey, version, step, message and
//! split arm (`docs/analytics.md`, "Engagement").

use crate::syntax::ast::Channel;
use serde::{Deserialize, Serialize};

/// What a customer did with (or what happened to) a send. Each is counted at
/// most once per send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engagement {
    Delivered,
    Opened,
    Clicked,
    Bounced,
    Complained,
    Unsubscribed,
}

impl Engagement {
    pub const ALL: [Engagement; 6] = [
        Engagement::Delivered,
        Engagement::Opened,
        Engagement::Clicked,
        Engagement::Bounced,
        Engagement::Complained,
        Engagement::Unsubscribed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Engagement::Delivered => "delivered",
            Engagement::Opened => "opened",
            Engagement::Clicked => "clicked",
            Engagement::Bounced => "bounced",
            Engagement::Complained => "complained",
            Engagement::Unsubscribed => "unsubscribed",
        }
    }

    pub fn parse(text: &str) -> Option<Engagement> {
        Engagement::ALL.into_iter().find(|e| e.as_str() == text)
    }

    /// Its bit in [`crate::runtime::state::Sent::engaged`].
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The event name a `wait for ENGAGEMENT MESSAGE` waits on in the bytecode:
/// `opened(welcome)`, which no declared event can be named.
pub fn wait_name(engagement: Engagement, message: &str) -> String {
    format!("{}({message})", engagement.as_str())
}

/// The engagement and message of a [`wait_name`].
pub fn parse_wait_name(name: &str) -> Option<(Engagement, &str)> {
    let (word, rest) = name.split_once('(')?;
    Some((Engagement::parse(word)?, rest.strip_suffix(')')?))
}

/// One engagement event of the Segment specs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngagementEvent {
    /// The event name on the wire.
    pub name: &'static str,
    pub engagement: Engagement,
    /// The channel the event speaks of; `None` for `Unsubscribed`, which
    /// names its channel or takes the send's.
    pub channel: Option<Channel>,
    /// The property that holds the send's id.
    pub id_property: &'static str,
}

const fn event(
    name: &'static str,
    engagement: Engagement,
    channel: Option<Channel>,
    id_property: &'static str,
) -> EngagementEvent {
    EngagementEvent {
        name,
        engagement,
        channel,
        id_property,
    }
}

/// The engagement events, by their Segment names. A push notification has no
/// links: a tap is its open.
pub const EVENTS: [EngagementEvent; 9] = [
    event(
        "Email Delivered",
        Engagement::Delivered,
        Some(Channel::Email),
        "email_id",
    ),
    event("Email Opened", Engagement::Opened, Some(Channel::Email), "email_id"),
    event(
        "Email Link Clicked",
        Engagement::Clicked,
        Some(Channel::Email),
        "email_id",
    ),
    event("Email Bounced", Engagement::Bounced, Some(Channel::Email), "email_id"),
    event(
        "Email Marked as Spam",
        Engagement::Complained,
        Some(Channel::Email),
        "email_id",
    ),
    event("Unsubscribed", Engagement::Unsubscribed, None, "email_id"),
    event(
        "Push Notification Received",
        Engagement::Delivered,
        Some(Channel::Push),
        "message_id",
    ),
    event(
        "Push Notification Tapped",
        Engagement::Opened,
        Some(Channel::Push),
        "message_id",
    ),
    event(
        "Push Notification Bounced",
        Engagement::Bounced,
        Some(Channel::Push),
        "message_id",
    ),
];

/// The engagement event with this wire name.
pub fn event_named(name: &str) -> Option<&'static EngagementEvent> {
    EVENTS.iter().find(|e| e.name == name)
}

/// The properties of an engagement event the runtime reads, by their wire
/// names; all strings. Others (`email_subject`, `link_url`, …) are accepted
/// and not kept.
pub const PROPERTIES: [&str; 5] = ["email_id", "message_id", "channel", "type", "bounce_type"];

/// Whether a bounce is hard (the address or device token is gone), from its
/// `type` or `bounce_type`: absent, `hard`, `hardbounce`, `permanent`,
/// `bounce` (SendGrid's word for a hard bounce) are hard, case and `_`, `-`,
/// spaces ignored; anything else (`soft`, `transient`, `blocked`,
/// `deferred`, …) is soft.
pub fn hard_bounce(kind: Option<&str>) -> bool {
    let Some(kind) = kind else {
        return true;
    };
    let word: String = kind
        .chars()
        .filter(|c| !matches!(c, '_' | '-' | ' '))
        .flat_map(char::to_lowercase)
        .collect();
    matches!(word.as_str(), "hard" | "hardbounce" | "permanent" | "bounce")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounce_words() {
        for hard in [
            None,
            Some("hard"),
            Some("HardBounce"),
            Some("Permanent"),
            Some("bounce"),
        ] {
            assert!(hard_bounce(hard), "{hard:?}");
        }
        for soft in [
            Some("soft"),
            Some("SoftBounce"),
            Some("transient"),
            Some("blocked"),
            Some(""),
        ] {
            assert!(!hard_bounce(soft), "{soft:?}");
        }
    }

    #[test]
    fn every_engagement_has_its_own_bit_and_name() {
        let bits: u8 = Engagement::ALL.iter().map(|e| e.bit()).fold(0, |a, b| {
            assert_eq!(a & b, 0);
            a | b
        });
        assert_eq!(bits.count_ones(), 6);
        for e in Engagement::ALL {
            assert_eq!(Engagement::parse(e.as_str()), Some(e));
        }
        assert_eq!(
            event_named("Email Opened").map(|e| e.engagement),
            Some(Engagement::Opened)
        );
        assert_eq!(event_named("email opened"), None);
        let name = wait_name(Engagement::Clicked, "welcome");
        assert_eq!(parse_wait_name(&name), Some((Engagement::Clicked, "welcome")));
        assert_eq!(parse_wait_name("welcome"), None);
    }
}
