//! Tests of the daemon stage: the real `journeyc serve` binary over loopback.

mod api;
mod crash;
mod delivery;
mod erasure;
mod faults;
mod harness;
mod http;
mod import;
mod lifecycle;
mod readout;
mod rejected;
mod stream;
mod trigger;
mod webhook;
