//! The contract suite's desk in this binary: two nodes on one real `redis-server`, visitors on
//! one node and agents on the other, so every frame between them crosses nodes (see
//! `contract`).

use futures::future::BoxFuture;
use parley::config::Config;

use crate::contract::{Desk, Servers};
use crate::harness::{assert_no_node_panicked, Node, PgServer, RedisServer};

/// Declared in drop order: the nodes stop before their Redis does.
struct TwoNodes {
    _visitors: Node,
    _agents: Node,
    redis: RedisServer,
}

impl Servers for TwoNodes {
    fn check(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.redis.assert_routing_indexes_agree().await;
            assert_no_node_panicked();
        })
    }
}

/// Two nodes configured by `customise` on one new Redis, or `None` when `redis-server` is
/// missing and `PARLEY_SKIP_MISSING_SERVICES=1` asks to skip.
pub async fn start(customise: impl Fn(&mut Config)) -> Option<Desk> {
    let redis = RedisServer::start().await?;
    let visitors = Node::start_with(&redis, &customise).await;
    let agents = Node::start_with(&redis, &customise).await;
    let (v, a, url) = (*visitors, *agents, redis.url());
    let servers = TwoNodes {
        _visitors: visitors,
        _agents: agents,
        redis,
    };
    Some(Desk::new(v, a, Some(url), Box::new(servers)))
}

/// As [`start`], with both nodes on one PostgreSQL store (what a multi-node desk needs for
/// what is checked against the store, such as surveys).
pub async fn start_with_shared_store(customise: impl Fn(&mut Config)) -> Option<Desk> {
    let pg = PgServer::start().await?;
    let url = pg.url();
    let desk = start(move |c| {
        c.database = Some(url.clone());
        customise(c);
    })
    .await?;
    Some(desk.keeping(Box::new(pg)))
}
