//! The contract suite's desk in this binary: one node, the in-process engine, visitors and
//! agents on the same server (see `contract`).

use futures::future::BoxFuture;
use parley::config::Config;

use crate::contract::{Desk, Servers};
use crate::helpers::{spawn_app_with, TestApp};

impl Servers for TestApp {
    /// Nothing beyond the protocol to check: the router's invariants are checked by its own
    /// unit and property tests.
    fn check(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// One node configured by `customise` on top of the test configuration. Always `Some`: the
/// Redis binary's twin returns `None` when `redis-server` is missing and may be skipped.
pub async fn start(customise: impl Fn(&mut Config)) -> Option<Desk> {
    let app = spawn_app_with(customise).await;
    Some(Desk::new(*app, *app, None, Box::new(app)))
}

/// As [`start`]: one node has one store already.
pub async fn start_with_shared_store(customise: impl Fn(&mut Config)) -> Option<Desk> {
    start(customise).await
}
