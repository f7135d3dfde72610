//! Runtime: the deterministic interpreter shared by the simulator and the daemon.
//!
//! **Architecture invariant:** [`Engine::apply`] is a pure function of
//! (customer state, input) → (new state, [`Effects`]). It does no IO and
//! reads no clock: time comes in with the input. The simulator (virtual clock,
//! memory) and the daemon (real clock, sled) run every line of journey logic
//! through it.

pub mod broadcast;
pub mod engagement;
mod eval;
pub mod import;
pub mod input;
pub mod interpreter;
pub mod local_time;
pub mod merge;
pub mod names;
mod per_thread;
mod rendered;
pub mod state;
pub mod stats;
pub mod trace;
pub mod trace_json;

pub use input::{Input, InputError};
pub use interpreter::Engine;
pub use state::CustomerState;
pub use trace::{Kind, TraceRecord};

/// Milliseconds since the Unix epoch, UTC: the runtime's only notion of time.
pub type Millis = i64;

/// Why one input could not be applied to one customer (see
/// [`Engine::apply`]): the input and the customer's state are kept as they
/// were, and the caller isolates the customer (the simulator prints an
/// `error` record and skips it from then on; the daemon retries, then parks
/// it; `docs/runtime.md`, `docs/daemon.md`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, thiserror::Error)]
pub enum ApplyError {
    /// A journey ran this many instructions for one input without waiting
    /// (`wait until` a past time inside nested `repeat`s can get there).
    #[error("journey `{journey}` ran {steps} steps for one input without waiting")]
    StepLimit { journey: String, steps: u32 },
    /// Due work at one instant kept re-arming itself.
    #[error("due work did not settle after {rounds} rounds")]
    DueWorkLimit { rounds: u32 },
    /// A timer `seconds` after `at` is past the last representable date.
    #[error("a timer {seconds} s after {at} ms is outside the representable time range")]
    TimeOutOfRange { at: Millis, seconds: i64 },
    /// A bug in the interpreter (a panic, caught at `apply`).
    #[error("internal error: {0}")]
    Internal(String),
}

/// What one step produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Effects {
    /// Trace records in causal order (sends among them carry rendered content).
    pub records: Vec<TraceRecord>,
    /// Wait steps enrollments arrived at (no trace line marks them): the
    /// journey and step, for the per-step `reached` of the statistics.
    pub arrivals: Vec<(String, trace::Step)>,
    /// When the customer next needs a [`Input::Wake`], if ever.
    pub wake_at: Option<Millis>,
    /// Instructions executed (for metrics).
    pub steps: u64,
}
