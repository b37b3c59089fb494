//! Fixtures the benchmarks share: synthetic fleets ([`fleet`]), sidecar payloads
//! ([`payload`]), ASAP keys and a key server ([`asap`]), and measurements ([`measure`]).
//! Nothing here is part of jitsi-scaler; it exists so that each benchmark states only what
//! it measures.

pub mod asap;
pub mod cloud;
pub mod fleet;
pub mod measure;
pub mod payload;
pub mod server;
