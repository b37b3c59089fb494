//! Providers outside jitsi-scaler: the reference's external launch script ([`ScriptProvider`],
//! `cloud: "custom"`) and HTTP plugins ([`PluginProvider`], any name).

pub mod plugin;
mod process;
pub mod protocol;
pub mod script;

pub use plugin::{PluginConfig, PluginProvider};
pub use script::{ArgsStyle, ScriptConfig, ScriptProvider};
