//! Parley: a real-time live-chat gateway for customer support.
//!
//! Visitors chat from an embeddable widget, agents juggle several chats from a console, and ops
//! watch the load. Parley sits between them; the modules follow the request path:
//!
//! - [`domain`]: identifier newtypes, parsed at the edge.
//! - [`clock`]: the wall clock the desk reads, which tests can move by hand.
//! - [`protocol`]: the JSON frames of each direction, and the close codes.
//! - [`routing`]: the pure assignment logic (round-robin, capacity, priority queue).
//! - [`outbox`]: each socket's bounded outbound queue.
//! - [`engine`]: presence, routing, conversations and delivery behind one trait; in-process now.
//! - [`connection`]: one WebSocket: reader and writer tasks, limits, the visitor and agent loops.
//! - [`desk`]: the support-desk features beside the gateway (webhooks so far).
//! - [`transcript`]: the durable store and the write-behind persister.
//! - [`desk`]: the support desk beside the chat: knowledge base (search, deflections) and canned
//!   replies.
//! - [`limits`]: per-visitor, per-agent and per-IP rate limits (governor).
//! - [`desk`]: the support-desk features: teams, business hours, service levels, reports.
//! - [`auth`]: agent and admin tokens, visitor identity signatures, allowed origins.
//! - [`metrics`]: Prometheus series.
//! - [`ops`]: a snapshot of the load every second, for the ops dashboard.
//! - [`http`]: the HTTP surface: socket upgrades, REST, health, metrics, the ops feed and the
//!   embedded pages (widget, agent console, ops dashboard).
//! - [`server`]: the accept loop, start-up and the graceful drain.
//! - [`config`] and [`cli`]: settings from flags, a TOML file and the environment.

pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connection;
pub mod desk;
pub mod domain;
pub mod engine;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod ops;
pub mod outbox;
pub mod protocol;
pub mod routing;
pub mod server;
pub mod transcript;
