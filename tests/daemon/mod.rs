//! Tests of the daemon stage: the real `journeyc serve` binary over loopback.

mod any_node;
mod api;
mod broadcast;
mod crash;
mod delivery;
mod engagement;
mod erasure;
mod faults;
mod harness;
mod http;
mod identity;
mod import;
mod isolation;
mod lifecycle;
mod pg;
mod postgres;
mod readout;
mod rejected;
mod scaleout;
mod smtp;
mod stream;
mod tls;
mod trigger;
mod webhook;
