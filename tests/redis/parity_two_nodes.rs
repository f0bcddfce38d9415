//! The parity scenarios (tests/api/parity.rs) on two nodes sharing one Redis, visitors on one
//! and agents on the other, both reading one controlled clock; tests/api/parity_one_node.rs
//! runs the same bodies on one in-process node.

use parley::clock::Clock;
use parley::config::Config;
use serde_json::Value;

use crate::harness::{Gateway, Node, RedisServer};
use crate::helpers::{Agent, Visitor, ADMIN_TOKEN};
use crate::parity::{self, Desk, Hook, MONDAY_10, SATURDAY_10};

impl parity::Node for Gateway {
    async fn visitor(&self) -> Visitor {
        Gateway::visitor(self).await
    }
    async fn reconnect_visitor(&self, id: &str, token: &str, last_seq: Option<u64>) -> Visitor {
        Gateway::reconnect_visitor(self, id, token, last_seq).await
    }
    async fn agent(&self, name: &str) -> Agent {
        Gateway::agent(self, name).await
    }
    async fn get_json(&self, path: &str) -> Value {
        let response = reqwest::Client::new()
            .get(format!("http://{}{path}", self.addr))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("http request");
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.expect("json body")
    }
    async fn metric(&self, name: &str, label: &str) -> f64 {
        Gateway::metric(self, name, label).await
    }
}

/// Two nodes on `redis` reading one manual clock started at `start`: `visitors` configures the
/// first (where visitors connect) after `both`, `agents` the second.
struct TwoNodes {
    visitors: Node,
    agents: Node,
    clock: Clock,
}

impl TwoNodes {
    async fn start(
        redis: &RedisServer,
        start: u64,
        both: impl Fn(&mut Config),
        agents: impl FnOnce(&mut Config),
    ) -> Self {
        let clock = Clock::manual(start);
        let v = Node::start_at(redis, clock.clone(), &both).await;
        let a = Node::start_at(redis, clock.clone(), |c| {
            both(c);
            agents(c);
        })
        .await;
        Self {
            visitors: v,
            agents: a,
            clock,
        }
    }

    fn desk(&self) -> Desk<'_, Gateway> {
        Desk {
            visitors: &self.visitors,
            agents: &self.agents,
            nodes: vec![&self.visitors, &self.agents],
            clock: self.clock.clone(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_response_clock_reads_the_desk_clock_across_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let desk = TwoNodes::start(&redis, MONDAY_10, parity::sla_desk, |_| {}).await;
    parity::the_first_response_clock_reads_the_desk_clock(&desk.desk()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sla_check_interval_is_honoured_across_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let desk = TwoNodes::start(&redis, MONDAY_10, parity::hourly_sla_checks, |_| {}).await;
    parity::the_sla_check_interval_is_honoured(&desk.desk()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopen_window_longer_than_a_day_is_honoured_across_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let desk = TwoNodes::start(&redis, MONDAY_10, parity::three_day_reopen, |_| {}).await;
    parity::a_reopen_window_longer_than_a_day_is_honoured(&desk.desk()).await;
    // The closed conversation's keys outlive the window, on Redis's own clock too.
    let mut conn = redis.conn().await;
    let metas: Vec<String> = redis::cmd("KEYS")
        .arg("*meta*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!metas.is_empty());
    for key in metas {
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(
            ttl == -1 || ttl > 3 * 24 * 3600,
            "{key} expires in {ttl} s, before the reopen window ends"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_hours_a_chat_is_offline_from_the_start_across_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let hook = Hook::start().await;
    let endpoint = hook.endpoint();
    let desk = TwoNodes::start(
        &redis,
        SATURDAY_10,
        |c| {
            parity::weekday_supervisors(c);
            c.webhooks = vec![endpoint.clone()];
        },
        |_| {},
    )
    .await;
    parity::outside_hours_a_chat_is_offline_from_the_start(&desk.desk(), &hook).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_follow_the_transfer_outcome_across_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let desk = TwoNodes::start(&redis, MONDAY_10, |_| {}, |_| {}).await;
    parity::notes_follow_the_transfer_outcome(&desk.desk()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_estimate_is_learnt_across_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let desk = TwoNodes::start(&redis, MONDAY_10, parity::one_chat_each, |_| {}).await;
    parity::the_queue_estimate_is_learnt(&desk.desk()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcript_has_what_the_store_lacks_across_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    // The agents' node writes an hour behind: its messages are only in Redis meanwhile.
    let desk = TwoNodes::start(&redis, MONDAY_10, |_| {}, parity::writes_an_hour_behind).await;
    parity::a_transcript_has_what_the_store_lacks(&desk.desk()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_visitor_sees_no_internal_figures_across_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let desk = TwoNodes::start(&redis, MONDAY_10, |_| {}, |_| {}).await;
    parity::a_returning_visitor_sees_no_internal_figures(&desk.desk()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reopened_unanswered_conversation_keeps_its_first_response_clock_across_nodes() {
    let Some(redis) = RedisServer::start().await else {
        return;
    };
    let desk = TwoNodes::start(&redis, MONDAY_10, parity::sla_desk, |_| {}).await;
    parity::a_reopened_unanswered_conversation_keeps_its_first_response_clock(&desk.desk()).await;
}
