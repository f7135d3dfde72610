//! Tests of the runtime stage: the spec's worked examples, scenarios with
//! reviewed traces, and properties of the simulator.

mod examples;
mod properties;
