//! Parley: a real-time live-chat gateway for customer support.
//!
//! Visitors chat from an embeddable widget, agents juggle several chats from a console, and ops
//! watch the load. Parley sits between them; after the settings, the modules follow the request
//! path:
//!
//! - [`config`]: every setting and its checks; a leaf that the other modules import, never
//!   the reverse. [`cli`]: the command line, whose flags are the last layer of settings.
//! - [`domain`]: identifier newtypes, parsed at the edge.
//! - [`clock`]: the wall clock the desk reads, which tests can move by hand.
//! - [`protocol`]: the JSON frames of each direction, and the close codes.
//! - [`routing`]: the pure assignment logic (round-robin, capacity, priority queue).
//! - [`outbox`]: each socket's bounded outbound queue.
//! - [`engine`]: presence, routing, conversations and delivery behind one trait, in this
//!   process or shared by several nodes through Redis.
//! - [`connection`]: one WebSocket: reader and writer tasks, limits, the visitor and agent loops.
//! - [`transcript`]: the durable store and the write-behind persister.
//! - [`desk`]: the support desk beside the chat: teams and service levels, satisfaction
//!   surveys, reports, webhooks, the knowledge base and canned replies.
//! - [`limits`]: per-visitor, per-agent and per-IP rate limits (governor).
//! - [`auth`]: agent and admin tokens, visitor identity signatures, allowed origins.
//! - [`metrics`]: Prometheus series.
//! - [`ops`]: a snapshot of the load every second, for the ops dashboard.
//! - [`http`]: the HTTP surface: socket upgrades, REST, health, metrics, the ops feed and the
//!   embedded pages (widget, agent console, ops dashboard).
//! - [`server`]: start-up ([`server::Application`]), the accept loop and the graceful drain.

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
