//! The `local` provider: instances as child processes running `jitsi-scaler sim-instance`.
