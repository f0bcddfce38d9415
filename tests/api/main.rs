//! Integration tests: the real server on port 0, real WebSockets, real SQLite files.
//! One binary (faster to link); one module per area.

mod helpers;

mod auth;
mod content_store;
mod desk;
mod desk_common;
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
mod transcripts;
mod webhooks;
