//! parley-load: the load generator, the bare-relay floor and the side-by-side comparison for
//! Parley. The modules follow a run:
//!
//! - [`scenario`]: the TOML scenario files (who connects, how fast, what they do).
//! - [`wire`]: Parley's protocol and Socket.IO's, and opening sockets from chosen source
//!   addresses.
//! - [`client`]: the simulated visitors and agents.
//! - [`stats`]: HDR histograms and counters.
//! - [`procfs`]: server CPU and RSS, kernel socket memory, this machine's limits.
//! - [`run`]: one run, from the limit checks to the report.
//! - [`report`]: the summary table, JSON, `compare` and `merge`.
//! - [`chart`]: SVG charts.
//! - [`relay`]: the bare relay (the floor).
//! - [`server_config`]: a parley.toml with load agents and raised limits.

#![forbid(unsafe_code)]

pub mod chart;
pub mod client;
pub mod procfs;
pub mod relay;
pub mod report;
pub mod run;
pub mod scenario;
pub mod server_config;
pub mod stats;
pub mod wire;
