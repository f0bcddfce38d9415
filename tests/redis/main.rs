//! Integration tests of the Redis engine: real `redis-server` processes on free ports (never the
//! system one on 6379), two Parley nodes in this process, real WebSockets.
//!
//! Each node runs on its own Tokio runtime, so a test can kill one the way SIGKILL would: every
//! task of that node stops at once, nothing says goodbye. A test fails when `redis-server` (or
//! PostgreSQL, for the shared-store test) is not installed, unless
//! `PARLEY_SKIP_MISSING_SERVICES=1` asks to skip it; `.ci/run` installs them.

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

#[allow(dead_code)]
#[path = "../api/process.rs"]
mod process;

#[allow(dead_code)]
#[path = "../api/content_store.rs"]
mod content_store;

/// The scenarios shared with tests/api, run here on two nodes (`topology`).
#[path = "../api/contract/mod.rs"]
mod contract;
mod topology;

#[path = "../api/transcript_store.rs"]
mod transcript_store;

#[allow(dead_code)]
#[path = "../api/parity.rs"]
mod parity;

mod harness;

mod chat;
mod cluster;
mod desk;
mod desk_flow;
mod faults;
mod figures;
mod limits;
mod parity_two_nodes;
mod routing;
mod routing_differential;
mod slow;
mod transcripts;
