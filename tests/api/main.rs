//! Integration tests: the real server on port 0, real WebSockets, real SQLite files.
//! One binary (faster to link); one module per area. `contract` holds the scenarios this binary
//! shares with tests/redis, run here on one node (`topology`).

mod helpers;
mod process;

mod auth;
mod content_store;
mod contract;
mod crash;
mod desk;
mod errors;
mod grafana;
mod kb;
mod limits;
mod ops;
mod pages;
mod parity;
mod parity_one_node;
mod relay;
mod reports;
mod resume;
mod routing;
mod shutdown;
mod topology;
mod transcript_store;
mod transcripts;
mod webhooks;
