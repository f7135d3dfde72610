//! The interpreter: executes [`crate::compile::bytecode::Program`]s.

use super::{CustomerState, Effects, Input};
use crate::compile::bytecode::Bundle;
use std::sync::Arc;

/// Runs a compiled workspace (and any older journey versions still referenced
/// by enrollments).
#[derive(Clone, Debug)]
pub struct Engine {
    bundle: Arc<Bundle>,
}

impl Engine {
    pub fn new(bundle: Arc<Bundle>) -> Engine {
        Engine { bundle }
    }

    pub fn bundle(&self) -> &Arc<Bundle> {
        &self.bundle
    }

    /// Applies one input to one customer. Pure: see the module invariant.
    pub fn apply(&self, state: &mut CustomerState, input: &Input) -> Effects {
        let _ = (state, input);
        todo!("interpreter")
    }
}
