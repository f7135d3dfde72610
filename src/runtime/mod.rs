//! Runtime: the deterministic interpreter shared by the simulator and the daemon.
//!
//! **Architecture invariant:** [`Engine::apply`] is a pure function of
//! (customer state, input) → (new state, [`Effects`]). It does no IO and
//! reads no clock: time comes in with the input. The simulator (virtual clock,
//! memory) and the daemon (real clock, sled) run every line of journey logic
//! through it.

mod eval;
pub mod input;
pub mod interpreter;
pub mod local_time;
pub mod state;
pub mod stats;
pub mod trace;

pub use input::{Input, InputError};
pub use interpreter::Engine;
pub use state::CustomerState;
pub use trace::{Kind, TraceRecord};

/// Milliseconds since the Unix epoch, UTC: the runtime's only notion of time.
pub type Millis = i64;

/// What one step produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Effects {
    /// Trace records in causal order (sends among them carry rendered content).
    pub records: Vec<TraceRecord>,
    /// When the customer next needs a [`Input::Wake`], if ever.
    pub wake_at: Option<Millis>,
    /// Instructions executed (for metrics).
    pub steps: u64,
}
