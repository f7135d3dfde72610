//! Customers whose input failed: the error, the inputs held back, the retry.
//!
//! When [`crate::runtime::Engine::apply`] returns an error for one customer,
//! the commit thread keeps that customer's state as it was before the input
//! and writes a [`Fault`] record (`f/ID`) in the same batch: the error, the
//! failed input and every later input of the customer (acknowledged, held in
//! order), and when to retry. The customer's timer entry then lists it at the
//! retry time instead of its own next wake-up; retries back off
//! exponentially, and after [`FaultPolicy::retries`] failed retries the
//! customer is *parked*: no timer, inputs still held (up to
//! [`HELD_INPUTS_MAX`]). `POST /v1/customers/ID/retry` and every workspace
//! reload retry at once; a retry that applies every held input removes the
//! record. Other customers never wait on it: they are other lanes, and the
//! failing input is not applied again until its retry is due.
//!
//! **Invariant:** a customer has a fault record iff its last failed input
//! has not been applied since; while it has one, none of its inputs is
//! applied outside a retry, and its timer entry is the record's `retry_at`.

use super::commit::Interpreter;
use super::store::{StoreError, StoreResult};
use crate::runtime::{ApplyError, CustomerState, Input, Millis};
use serde::{Deserialize, Serialize};

/// Key prefix of fault records (`f` + customer id).
pub const PREFIX_FAULT: u8 = b'f';
/// The most inputs held for one failing customer; later ones are counted
/// in [`Fault::dropped`] and not kept.
pub const HELD_INPUTS_MAX: usize = 10_000;
/// Store counters (gauges) of failing and parked customers.
pub const STAT_FAILING: &str = "g/failing";
pub const STAT_PARKED: &str = "g/parked";

/// How often and how fast a failing customer is retried.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FaultPolicy {
    /// Retries before the customer is parked.
    pub retries: u32,
    /// The wait before the first retry; each further one waits twice as long.
    pub backoff_ms: Millis,
}

impl Default for FaultPolicy {
    /// Five retries after 1, 2, 4, 8 and 16 s: parked about 31 s after
    /// the first failure.
    fn default() -> FaultPolicy {
        FaultPolicy {
            retries: 5,
            backoff_ms: 1_000,
        }
    }
}

/// One failing customer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// The latest error.
    pub error: ApplyError,
    /// Wall-clock times of the first and the latest failure.
    pub first_failed_at: Millis,
    pub last_failed_at: Millis,
    /// Failed retries so far.
    pub retries: u32,
    /// When to retry; `None`: parked.
    pub retry_at: Option<Millis>,
    /// The failed input first, then every later one, in order.
    pub held: Vec<Input>,
    /// Inputs not held because [`HELD_INPUTS_MAX`] were.
    pub dropped: u64,
}

impl Fault {
    /// A first failure of `input`, at wall-clock `now`.
    pub fn new(error: ApplyError, input: Input, now: Millis, policy: &FaultPolicy) -> Fault {
        let mut fault = Fault {
            error,
            first_failed_at: now,
            last_failed_at: now,
            retries: 0,
            retry_at: None,
            held: vec![input],
            dropped: 0,
        };
        fault.schedule(now, policy);
        fault
    }

    pub fn parked(&self) -> bool {
        self.retry_at.is_none()
    }

    /// Holds a later input of the customer.
    pub fn hold(&mut self, input: Input) {
        if self.held.len() < HELD_INPUTS_MAX {
            self.held.push(input);
        } else {
            self.dropped += 1;
        }
    }

    /// A retry failed again.
    pub fn failed_again(&mut self, error: ApplyError, now: Millis, policy: &FaultPolicy) {
        self.error = error;
        self.last_failed_at = now;
        self.retries += 1;
        self.schedule(now, policy);
    }

    /// The next retry after `retries` failed ones, or parked.
    fn schedule(&mut self, now: Millis, policy: &FaultPolicy) {
        self.retry_at = (self.retries < policy.retries).then(|| {
            let factor = 1i64.checked_shl(self.retries.min(30)).unwrap_or(i64::MAX);
            now.saturating_add(policy.backoff_ms.saturating_mul(factor))
        });
    }

    /// The customer's timer entry: the retry, not its own next wake-up.
    pub fn wake(fault: Option<&Fault>, state: &CustomerState) -> Option<Millis> {
        match fault {
            Some(fault) => fault.retry_at,
            None => state.next_wake(),
        }
    }

    /// The record as `GET /v1/customers/ID` shows it.
    pub fn to_json(&self) -> serde_json::Value {
        use crate::runtime::trace::format_time;
        serde_json::json!({
            "error": self.error.to_string(),
            "state": if self.parked() { "parked" } else { "retrying" },
            "first_failed_at": format_time(self.first_failed_at),
            "last_failed_at": format_time(self.last_failed_at),
            "retries": self.retries,
            "retry_at": self.retry_at.map(format_time),
            "held_inputs": self.held.len(),
            "dropped_inputs": self.dropped,
        })
    }
}

/// Fault injection for tests of this machinery through the real binary:
/// `JOURNEYC_INJECT_FAULTS="ID:N,…"` makes the first N inputs applied for
/// customer ID fail with an internal error (counted per process). A checked
/// workspace gives the interpreter nothing that fails (arithmetic is
/// checked, every wait and loop is bounded), so without it the daemon's
/// handling of a failure could only be tested with a fake interpreter.
pub const INJECT_FAULTS_ENV: &str = "JOURNEYC_INJECT_FAULTS";

/// Wraps the interpreter when [`INJECT_FAULTS_ENV`] is set; else returns it.
pub fn with_injected_faults(inner: std::sync::Arc<dyn Interpreter>) -> std::sync::Arc<dyn Interpreter> {
    static TABLE: std::sync::OnceLock<Option<Remaining>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let spec = std::env::var(INJECT_FAULTS_ENV).ok()?;
        let table = (spec.split(','))
            .filter_map(|item| item.rsplit_once(':'))
            .filter_map(|(id, n)| Some((id.to_string(), n.parse().ok()?)))
            .collect();
        tracing::warn!(%spec, "fault injection is on ({INJECT_FAULTS_ENV})");
        Some(std::sync::Arc::new(std::sync::Mutex::new(table)))
    });
    match table {
        Some(remaining) => std::sync::Arc::new(Injecting {
            inner,
            remaining: remaining.clone(),
        }),
        None => inner,
    }
}

/// Injected failures left per customer, shared by every runtime built.
type Remaining = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, u32>>>;

struct Injecting {
    inner: std::sync::Arc<dyn Interpreter>,
    remaining: Remaining,
}

impl Interpreter for Injecting {
    fn apply(&self, state: &mut CustomerState, input: &Input) -> Result<crate::runtime::Effects, ApplyError> {
        {
            let mut remaining = self.remaining.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(left) = remaining.get_mut(&state.id).filter(|left| **left > 0) {
                *left -= 1;
                return Err(ApplyError::Internal("injected fault".into()));
            }
        }
        self.inner.apply(state, input)
    }

    fn migrate(&self, state: &mut CustomerState, now: Millis) -> usize {
        self.inner.migrate(state, now)
    }
}

pub fn fault_key(customer: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(customer.len() + 1);
    key.push(PREFIX_FAULT);
    key.extend_from_slice(customer.as_bytes());
    key
}

pub fn encode(fault: &Fault) -> Vec<u8> {
    postcard::to_allocvec(fault).expect("a fault record always serializes")
}

pub fn decode(key: &[u8], bytes: &[u8]) -> StoreResult<Fault> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

/// The fault record of `customer`, if it is failing.
pub fn read(db: &crate::daemon::kv::Kv, customer: &str) -> StoreResult<Option<Fault>> {
    let key = fault_key(customer);
    match db.get(&key)? {
        Some(bytes) => decode(&key, &bytes).map(Some),
        None => Ok(None),
    }
}

/// Every failing customer, with whether it is parked (read at startup).
pub fn all(db: &crate::daemon::kv::Kv) -> StoreResult<std::collections::HashMap<String, bool>> {
    let mut faults = std::collections::HashMap::new();
    for item in db.scan_prefix([PREFIX_FAULT]) {
        let (key, value) = item?;
        let fault = decode(&key, &value)?;
        faults.insert(String::from_utf8_lossy(&key[1..]).into_owned(), fault.parked());
    }
    Ok(faults)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_then_park() {
        let policy = FaultPolicy {
            retries: 3,
            backoff_ms: 100,
        };
        let error = ApplyError::Internal("x".into());
        let mut fault = Fault::new(error.clone(), Input::Wake { at: 5 }, 1_000, &policy);
        assert_eq!(fault.retry_at, Some(1_100));
        fault.failed_again(error.clone(), 1_100, &policy);
        assert_eq!(fault.retry_at, Some(1_300));
        fault.failed_again(error.clone(), 1_300, &policy);
        assert_eq!(fault.retry_at, Some(1_700));
        fault.failed_again(error, 1_700, &policy);
        assert!(fault.parked());
        let bytes = encode(&fault);
        assert_eq!(decode(b"fx", &bytes).expect("decode"), fault);
    }

    #[test]
    fn held_inputs_are_bounded() {
        let mut fault = Fault::new(
            ApplyError::Internal("x".into()),
            Input::Wake { at: 0 },
            0,
            &FaultPolicy::default(),
        );
        for at in 0..HELD_INPUTS_MAX as Millis + 5 {
            fault.hold(Input::Wake { at });
        }
        assert_eq!((fault.held.len(), fault.dropped), (HELD_INPUTS_MAX, 6));
    }
}
