//! Rate limits of delivery: `--rate email=50/s` (and `/m`, `/h`).
//!
//! A limit spaces requests evenly: `50/s` lets one request go every 20 ms
//! (a generic cell rate with a burst of one), so no window of the period
//! ever holds more than the limit plus one. Each delivering sink keeps its
//! own limiter per channel (`docs/delivery.md`, "Rate limits"); a sink
//! delivers its records one after another, so waiting for a slot never
//! reorders a customer's sends.

use crate::syntax::ast::Channel;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A number of requests per period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// Reads `N/s`, `N/m` or `N/h` (also `N/sec`, `N/min`, `N/hour`).
    pub fn parse(text: &str) -> Result<Rate, String> {
        let (count, unit) = text
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("expected a rate like \"50/s\" or \"600/m\", got {text:?}"))?;
        let count: u32 = count
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("the count of {text:?} must be a whole number above 0"))?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            other => return Err(format!("unknown period {other:?} in {text:?}: use s, m or h")),
        };
        Ok(Rate { count, per })
    }

    /// The time between two requests.
    pub fn interval(&self) -> Duration {
        self.per / self.count
    }
}

/// Per-channel rates as configured.
pub type Rates = BTreeMap<Channel, Rate>;

/// Reads one `CHANNEL=RATE` (the `--rate` flag) into `rates`.
pub fn parse_channel_rate(text: &str, rates: &mut Rates) -> Result<(), String> {
    let (channel, rate) = text
        .split_once('=')
        .ok_or_else(|| format!("expected CHANNEL=RATE like \"email=50/s\", got {text:?}"))?;
    insert_rate(channel, rate, rates)
}

/// Adds one channel's rate; a channel named twice is refused.
pub fn insert_rate(channel: &str, rate: &str, rates: &mut Rates) -> Result<(), String> {
    let name = channel.trim();
    let channel = Channel::parse(name).ok_or_else(|| {
        let known: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
        format!(
            "unknown channel {name:?} in a rate: expected one of {}",
            known.join(", ")
        )
    })?;
    let rate = Rate::parse(rate)?;
    if rates.insert(channel, rate).is_some() {
        return Err(format!("the rate of channel {name} is given twice"));
    }
    Ok(())
}

/// Spaces requests `interval` apart. Pure: the caller passes the time.
#[derive(Clone, Debug)]
pub struct Limiter {
    interval: Duration,
    next: Option<Instant>,
}

impl Limiter {
    pub fn new(interval: Duration) -> Limiter {
        Limiter { interval, next: None }
    }

    /// Takes the next slot: how long to wait from `now` before sending.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        let slot = self.next.map_or(now, |next| next.max(now));
        self.next = Some(slot + self.interval);
        slot - now
    }
}

/// One sink's limiters: one per rate-limited channel.
#[derive(Clone, Debug, Default)]
pub struct ChannelLimiters {
    limiters: BTreeMap<Channel, Limiter>,
}

impl ChannelLimiters {
    pub fn new(rates: &Rates) -> ChannelLimiters {
        ChannelLimiters {
            limiters: rates
                .iter()
                .map(|(channel, rate)| (*channel, Limiter::new(rate.interval())))
                .collect(),
        }
    }

    /// The wait before a request on `channel` (the channel's name as in an
    /// outbox record); zero for channels without a limit.
    pub fn reserve(&mut self, channel: &str, now: Instant) -> Duration {
        Channel::parse(channel)
            .and_then(|channel| self.limiters.get_mut(&channel))
            .map_or(Duration::ZERO, |limiter| limiter.reserve(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        assert_eq!(
            Rate::parse("50/s"),
            Ok(Rate {
                count: 50,
                per: Duration::from_secs(1)
            })
        );
        assert_eq!(
            Rate::parse("600/m").map(|r| r.interval()),
            Ok(Duration::from_millis(100))
        );
        assert_eq!(Rate::parse("36/h").map(|r| r.interval()), Ok(Duration::from_secs(100)));
        assert!(Rate::parse("50").err().unwrap_or_default().contains("like \"50/s\""));
        assert!(Rate::parse("0/s").err().unwrap_or_default().contains("above 0"));
        assert!(Rate::parse("-3/s").err().unwrap_or_default().contains("above 0"));
        assert!(Rate::parse("5/d").err().unwrap_or_default().contains("unknown period"));
    }

    #[test]
    fn parses_channel_rates() {
        let mut rates = Rates::new();
        parse_channel_rate("email=50/s", &mut rates).expect("email");
        parse_channel_rate("sms = 10/m", &mut rates).expect("sms");
        assert_eq!(rates[&Channel::Email].count, 50);
        assert_eq!(rates[&Channel::Sms].interval(), Duration::from_secs(6));
        let refusal = |text: &str, rates: &mut Rates| parse_channel_rate(text, rates).err().unwrap_or_default();
        assert!(refusal("email=5/s", &mut rates).contains("given twice"));
        assert!(refusal("fax=5/s", &mut rates).contains("unknown channel \"fax\""));
        assert!(refusal("push", &mut rates).contains("CHANNEL=RATE"));
    }

    #[test]
    fn limiter_spaces_requests_and_does_not_save_up_idle_time() {
        let start = Instant::now();
        let mut limiter = Limiter::new(Duration::from_millis(20));
        // Back to back: each waits one interval more than the one before.
        assert_eq!(limiter.reserve(start), Duration::ZERO);
        assert_eq!(limiter.reserve(start), Duration::from_millis(20));
        assert_eq!(
            limiter.reserve(start + Duration::from_millis(5)),
            Duration::from_millis(35)
        );
        // After a pause, the next request goes at once, and only one does:
        // idle time buys no burst.
        let later = start + Duration::from_secs(10);
        assert_eq!(limiter.reserve(later), Duration::ZERO);
        assert_eq!(limiter.reserve(later), Duration::from_millis(20));
    }

    #[test]
    fn channels_are_limited_separately() {
        let mut rates = Rates::new();
        parse_channel_rate("email=10/s", &mut rates).expect("email");
        let mut limiters = ChannelLimiters::new(&rates);
        let now = Instant::now();
        assert_eq!(limiters.reserve("email", now), Duration::ZERO);
        assert_eq!(limiters.reserve("email", now), Duration::from_millis(100));
        // Channels without a limit, and unknown names, never wait.
        for _ in 0..3 {
            assert_eq!(limiters.reserve("sms", now), Duration::ZERO);
            assert_eq!(limiters.reserve("carrier_pigeon", now), Duration::ZERO);
        }
        assert_eq!(limiters.reserve("email", now), Duration::from_millis(200));
    }
}
