//! `jitsi-scaler sim-instance`: a simulated Jitsi component speaking the sidecar protocol.
