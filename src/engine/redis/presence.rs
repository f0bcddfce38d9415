//! The node's background work: presence heartbeats and the reaping of dead nodes, the pub/sub
//! subscription with its liveness probe, the health probe behind readiness, and the refresh of
//! queue positions and agent states for the clients of this node, and the first-response check
//! every `desk.sla_check_interval`.
//!
//! Presence: a node refreshes `node:<id>` (TTL = `redis.presence_ttl`) every third of the TTL.
//! Every node checks the others on the same beat; the first to see a node's key gone cleans up
//! after it (a `SET NX` decides who): its clients leave the presence sets, its agents who are on
//! no other node are removed and their chats go to the front of the queue, its visitors get the
//! usual grace period. So a node that dies silently has its agents offline within one TTL plus
//! one beat. A node judges others only after its own beats have succeeded for a whole TTL, so
//! an outage of Redis itself (every key expired meanwhile) is not mistaken for dead nodes. If
//! Redis loses the node's registration (restart with empty data), the heartbeat notices (`SADD`
//! answers 1 again), re-registers every client of this node and reconciles its conversations.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::time::MissedTickBehavior;

use super::delivery::{Command, Wire};
use super::keys::ClientKey;
use super::Inner;
use crate::domain::ConversationId;
use crate::engine::EngineStats;
use crate::protocol::{AgentStatus, ServerFrame};

/// How often readiness probes Redis (so `/readyz` turns within 2 s: a probe every 500 ms that
/// gives up after 1 s).
const HEALTH_EVERY: Duration = Duration::from_millis(500);
/// The pub/sub connection answers a PING within this, or it is considered dead.
const PUBSUB_PROBE_EVERY: Duration = Duration::from_secs(1);
const PUBSUB_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnection backoff for the subscription.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Queue positions and agent states are refreshed this often.
const REFRESH_EVERY: Duration = Duration::from_millis(500);

pub(super) fn spawn(inner: Arc<Inner>) {
    tokio::spawn(health(inner.clone()));
    tokio::spawn(heartbeat(inner.clone()));
    tokio::spawn(subscription(inner.clone()));
    tokio::spawn(refresh(inner));
}

async fn health(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(HEALTH_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A write, not a PING: a Redis that answers reads but not writes (`CLIENT PAUSE
        // WRITE`, a replica promoted late, out of memory) cannot take new work either.
        let mut conn = inner.conn();
        let mut cmd = redis::cmd("SET");
        cmd.arg(inner.keys.node_probe(&inner.node))
            .arg(1)
            .arg("PX")
            .arg(10_000);
        let probe = cmd.query_async::<()>(&mut conn);
        let ok = matches!(
            tokio::time::timeout(Duration::from_secs(1), probe).await,
            Ok(Ok(()))
        );
        let was = inner.healthy.swap(ok, Ordering::Relaxed);
        if was != ok {
            if ok {
                tracing::info!("redis answers again");
            } else {
                tracing::warn!("redis does not answer; refusing new work with `unavailable`");
            }
        }
    }
}

async fn heartbeat(inner: Arc<Inner>) {
    let ttl = inner.redis_settings.presence_ttl;
    let mut tick = tokio::time::interval((ttl / 3).max(Duration::from_millis(200)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut registered = false;
    // Since when this node's beats succeed without a break. Other nodes' keys are judged only
    // after a whole TTL of that: when Redis was away for everyone (stopped, paused, restarted),
    // their keys may have expired meanwhile too, and they need one TTL to refresh them before
    // they can be told from dead ones.
    let mut beating_since: Option<tokio::time::Instant> = None;
    // Listed here but without a socket at the last beat: a join takes milliseconds, so a client
    // still in that state one beat later really left.
    let mut suspects = std::collections::HashSet::new();
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => {
                // A clean stop: leave at once rather than after the TTL.
                let _ = tokio::time::timeout(Duration::from_secs(1), redis::cmd("DEL")
                    .arg(inner.keys.node_alive(&inner.node))
                    .query_async::<()>(&mut inner.conn())).await;
                return;
            }
            _ = tick.tick() => {}
        }
        let beat = tokio::time::timeout(Duration::from_secs(1), async {
            redis::cmd("SET")
                .arg(inner.keys.node_alive(&inner.node))
                .arg(1)
                .arg("PX")
                .arg(ttl.as_millis() as u64)
                .query_async::<()>(&mut inner.conn())
                .await?;
            let added: u32 = redis::cmd("SADD")
                .arg(inner.keys.nodes())
                .arg(&inner.node)
                .query_async(&mut inner.conn())
                .await?;
            Ok::<_, redis::RedisError>(added)
        })
        .await;
        match beat {
            Ok(Ok(added)) => {
                if added == 1 && registered {
                    tracing::warn!("this node's registration was lost (redis restarted empty?); registering again");
                    if let Err(err) = reregister(&inner).await {
                        tracing::warn!(error = %err, "re-registration failed; will retry");
                        let _: Result<(), _> = redis::cmd("SREM")
                            .arg(inner.keys.nodes())
                            .arg(&inner.node)
                            .query_async(&mut inner.conn())
                            .await;
                        continue;
                    }
                }
                if !registered {
                    // Once per start: routing data from a version without the indexes (or
                    // left by a bug) is made whole before this node routes anything.
                    if let Err(err) = inner.reindex_routing().await {
                        tracing::warn!(error = %err, "rebuilding the routing indexes failed; will retry");
                        continue;
                    }
                }
                registered = true;
            }
            _ => {
                beating_since = None;
                continue;
            }
        }
        let since = *beating_since.get_or_insert_with(tokio::time::Instant::now);
        if let Err(err) = reconcile(&inner, &mut suspects).await {
            tracing::debug!(error = %err, "presence reconciliation failed; next beat retries");
        }
        if since.elapsed() >= ttl {
            if let Err(err) = reap(&inner).await {
                tracing::debug!(error = %err, "reaping dead nodes failed; next beat retries");
            }
        }
    }
}

/// Puts every client of this node back into the presence sets, and its agents back into
/// routing.
async fn reregister(inner: &Arc<Inner>) -> Result<(), crate::engine::EngineError> {
    let clients = inner.registry().clients();
    for client in &clients {
        inner.arrive(client).await?;
    }
    for client in clients {
        if let Some(a) = client.as_agent() {
            let status: Option<String> = redis::cmd("GET")
                .arg(inner.keys.agent_status(&a))
                .query_async(&mut inner.conn())
                .await
                .map_err(super::unavailable)?;
            let status = super::parse_status(status.as_deref()).unwrap_or(AgentStatus::Online);
            if status == AgentStatus::Online && status.as_str() == "online" {
                let _: Result<(), _> = redis::cmd("SET")
                    .arg(inner.keys.agent_status(&a))
                    .arg(status.as_str())
                    .query_async(&mut inner.conn())
                    .await;
            }
            let capacity = inner.agent_profile(a.as_str()).1;
            inner
                .set_agent(&a, capacity, status == AgentStatus::Online)
                .await?;
            inner.registry().agent_state.remove(&a);
        }
    }
    inner.resync().await?;
    inner.close_lost_in_store().await.map(drop)
}

/// Repairs this node's presence: a client that left while Redis was away is still listed as
/// here; it is removed now, and what follows from its absence (grace period, requeue) starts.
async fn reconcile(
    inner: &Arc<Inner>,
    suspects: &mut std::collections::HashSet<String>,
) -> Result<(), crate::engine::EngineError> {
    let listed = members(inner, &inner.keys.node_clients(&inner.node)).await?;
    let departed = std::mem::take(&mut inner.registry().departed);
    for (i, client) in departed.iter().enumerate() {
        if inner.registry().has(client) {
            continue;
        }
        let recorded = async {
            let (left, generation) = inner.depart(client).await.map_err(super::unavailable)?;
            if left == 0 {
                inner.found_absent(client.clone(), generation).await?;
            }
            Ok::<_, crate::engine::EngineError>(())
        }
        .await;
        if let Err(err) = recorded {
            inner
                .registry()
                .departed
                .extend(departed[i..].iter().cloned());
            return Err(err);
        }
        tracing::info!(client = %client.0, "left while redis was away; recorded now");
    }
    let previous = std::mem::take(suspects);
    for c in listed {
        let client = ClientKey(c);
        if inner.registry().has(&client) {
            continue;
        }
        if !previous.contains(&client.0) {
            suspects.insert(client.0);
            continue;
        }
        let (left, generation) = inner.depart(&client).await.map_err(super::unavailable)?;
        if left == 0 {
            tracing::info!(client = %client.0, "left while redis was away; recording it now");
            inner.found_absent(client, generation).await?;
        }
    }
    Ok(())
}

/// Every member of a set, read a page at a time (`SSCAN`): a node's client set holds one entry
/// per socket, and one `SMEMBERS` of 16,000 of them kept Redis busy for 12 ms, every beat, on
/// every node, with everyone else's commands waiting behind it. Members added or removed during
/// the scan may be missed or seen: the callers judge a client on two beats in a row.
async fn members(inner: &Arc<Inner>, key: &str) -> Result<Vec<String>, crate::engine::EngineError> {
    let mut out = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SSCAN")
            .arg(key)
            .arg(cursor)
            .arg("COUNT")
            .arg(500)
            .query_async(&mut inner.conn())
            .await
            .map_err(super::unavailable)?;
        out.extend(page);
        if next == 0 {
            return Ok(out);
        }
        cursor = next;
    }
}

/// Finds nodes whose presence key expired and cleans up after them (one node does it).
async fn reap(inner: &Arc<Inner>) -> Result<(), crate::engine::EngineError> {
    let nodes: Vec<String> = redis::cmd("SMEMBERS")
        .arg(inner.keys.nodes())
        .query_async(&mut inner.conn())
        .await
        .map_err(super::unavailable)?;
    for node in nodes.into_iter().filter(|n| *n != inner.node) {
        let alive: bool = redis::cmd("EXISTS")
            .arg(inner.keys.node_alive(&node))
            .query_async(&mut inner.conn())
            .await
            .map_err(super::unavailable)?;
        if alive {
            continue;
        }
        let won: Option<String> = redis::cmd("SET")
            .arg(inner.keys.node_reaper(&node))
            .arg(&inner.node)
            .arg("NX")
            .arg("PX")
            .arg(30_000)
            .query_async(&mut inner.conn())
            .await
            .map_err(super::unavailable)?;
        if won.is_none() {
            continue;
        }
        let clients = members(inner, &inner.keys.node_clients(&node)).await?;
        tracing::warn!(node = %node, clients = clients.len(), "node stopped refreshing its presence; cleaning up after it");
        for c in clients {
            let client = ClientKey(c);
            let (left, generation): (usize, Option<u64>) = redis::pipe()
                .cmd("SREM")
                .arg(inner.keys.client(&client, "nodes"))
                .arg(&node)
                .ignore()
                .cmd("SCARD")
                .arg(inner.keys.client(&client, "nodes"))
                .cmd("GET")
                .arg(inner.keys.client(&client, "gen"))
                .query_async(&mut inner.conn())
                .await
                .map_err(super::unavailable)?;
            if left > 0 {
                continue;
            }
            if let Some(a) = client.as_agent() {
                // The TTL was its grace period: its chats go back to the queue now.
                inner.remove_agent(&a).await?;
            } else {
                inner.found_absent(client, generation.unwrap_or(0)).await?;
            }
        }
        redis::cmd("DEL")
            .arg(inner.keys.node_clients(&node))
            .query_async::<()>(&mut inner.conn())
            .await
            .map_err(super::unavailable)?;
        redis::cmd("SREM")
            .arg(inner.keys.nodes())
            .arg(&node)
            .query_async::<()>(&mut inner.conn())
            .await
            .map_err(super::unavailable)?;
    }
    Ok(())
}

/// The node's subscription. A PING every second proves the connection alive; when it fails or
/// the stream ends, the node resubscribes with backoff and then catches up every conversation
/// it tracks from the streams, so nothing published meanwhile is missed.
async fn subscription(inner: Arc<Inner>) {
    let channel = inner.keys.channel(&inner.node);
    let mut backoff = BACKOFF_MIN;
    let mut first = true;
    loop {
        if inner.shutdown.is_cancelled() {
            return;
        }
        let connected = tokio::time::timeout(Duration::from_secs(2), async {
            let mut pubsub = inner.client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        let pubsub = match connected {
            Ok(Ok(p)) => p,
            _ => {
                tokio::select! {
                    _ = inner.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        if !first {
            tracing::info!("resubscribed; catching up from the streams");
            if let Err(err) = inner.resync().await {
                tracing::warn!(error = %err, "cannot bring clients up to date after resubscribing; their next join will");
            }
        }
        first = false;
        let (mut sink, mut stream) = pubsub.split();
        let mut probe = tokio::time::interval(PUBSUB_PROBE_EVERY);
        probe.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = inner.shutdown.cancelled() => return,
                message = stream.next() => {
                    let Some(message) = message else {
                        tracing::warn!("subscription ended; resubscribing");
                        break;
                    };
                    let payload: Vec<u8> = message.get_payload_bytes().to_vec();
                    match serde_json::from_slice::<Wire>(&payload) {
                        Ok(wire) => {
                            if inner.events.send(Command::Wire(wire)).await.is_err() {
                                return;
                            }
                        }
                        Err(err) => tracing::warn!(error = %err, "unreadable event on the channel"),
                    }
                }
                _ = probe.tick() => {
                    let alive = tokio::time::timeout(PUBSUB_PROBE_TIMEOUT, sink.ping::<redis::Value>()).await;
                    if !matches!(alive, Ok(Ok(_))) {
                        tracing::warn!("subscription does not answer its probe; resubscribing");
                        break;
                    }
                }
            }
        }
    }
}

/// Pushes queue positions to this node's waiting visitors and agent states to its agents, and
/// refreshes the figures behind readiness and the ops view.
async fn refresh(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(REFRESH_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !inner.healthy.load(Ordering::Relaxed) {
            continue;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), refresh_once(&inner)).await;
    }
}

async fn refresh_once(inner: &Arc<Inner>) {
    inner.read_wait_estimate().await;
    let waiting: Vec<ConversationId> = inner.registry().waiting.keys().copied().collect();
    if !waiting.is_empty() {
        if let Ok(positions) = inner.positions(&waiting).await {
            // Not in a queue index: stop tracking it only once its record says it no longer
            // waits (assigned, closed, gone). An index can be missing for a moment (a node
            // rebuilding them) while the conversation still waits; dropping it then would leave
            // its visitor without position updates for good.
            let mut left = Vec::new();
            for (id, position) in waiting.iter().zip(&positions) {
                if position.is_none() {
                    let still_waits = match inner.meta(*id).await {
                        Ok(Some(m)) => m.state == "queued",
                        Ok(None) => false,
                        // Unknown now: kept; the next tick looks again.
                        Err(_) => true,
                    };
                    if !still_waits {
                        left.push(*id);
                    }
                }
            }
            let mut reg = inner.registry();
            for id in &left {
                reg.waiting.remove(id);
            }
            for (id, position) in waiting.iter().zip(positions) {
                let Some(position) = position else {
                    continue;
                };
                let now = inner.wait.bucket(position);
                let Some(w) = reg.waiting.get_mut(id) else {
                    continue;
                };
                if w.last == Some(now) {
                    continue;
                }
                w.last = Some(now);
                let visitor = w.visitor.clone();
                let frame = ServerFrame::Queued {
                    conversation_id: *id,
                    position,
                    estimated_wait_ms: inner.wait.estimate(position),
                    reason: w.reason,
                }
                .to_text();
                for o in reg.sockets(&ClientKey::visitor(&visitor)) {
                    o.push(&frame);
                }
            }
        }
    }
    let agents: Vec<_> = inner.registry().agents.keys().cloned().collect();
    for a in agents {
        inner.push_agent_state(&a).await;
    }
    let figures: Result<(usize, usize), _> = redis::pipe()
        .cmd("ZCARD")
        .arg(inner.keys.routing("queue"))
        .cmd("HLEN")
        .arg(inner.keys.routing("assigned"))
        .query_async(&mut inner.conn())
        .await;
    if let Ok((queued, assigned)) = figures {
        *inner.stats.lock().expect("stats lock poisoned") = EngineStats {
            conversations_open: queued + assigned,
            queued,
        };
    }
}
