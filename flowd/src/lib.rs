//! flowd: the per-node flow observer.
//!
//! Data flows one way: kernel events (`datapath`) → flows (`parser`) →
//! pod identity (`endpoints`) → flow store and API (`observer`, `filters`) →
//! `metrics` and `export`; `peer` announces the nodes to relays. `config`
//! reads the ConfigMap that drives it all; `certgen` makes and renews the
//! certificates of the Observer API's mTLS.
pub mod certgen;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod datapath;
pub mod endpoints;
pub mod export;
pub mod filters;
pub mod metrics;
pub mod observer;
pub mod options;
pub mod parser;
pub mod peer;
pub mod print_mode;
pub mod shutdown;
pub mod wiring;
