//! The desk-wide load figures on the Redis backend ([`Backend::load`](crate::engine::backend::Backend::load)):
//! agents by status, their load and capacity, conversations open and the queue by category, read
//! from the shared routing state so that every node's `/metrics` and ops feed show the whole
//! desk, not this node's share (which no one can add up correctly).
//!
//! Cost per read and node (the desk reads once a second, [`crate::engine::desk`]): one script on
//! `{r}` that is O(categories × log(queue)) for the counts plus O(agents in the ring) for the
//! summed loads and capacities (there are no running totals in the routing state to read
//! instead; adding them means changing every routing script). Then one small pipeline per agent
//! that does not take chats (away, offline, or in its grace period), because statuses live in
//! each agent's own slot. Nothing is proportional to conversations or messages.

use std::collections::HashMap;
use std::sync::LazyLock;

use futures::stream::{self, StreamExt, TryStreamExt};
use redis::Script;

use super::conn::Conn;
use super::keys::{ClientKey, Keys};
use crate::domain::AgentId;
use crate::engine::backend::DeskLoad;
use crate::routing::Categories;

/// Agents' own slots asked at once when their statuses are read: enough to read hundreds of
/// idle agents within a tick without opening a burst of requests on a large desk.
const STATUS_LOOKUPS_IN_FLIGHT: usize = 32;

/// Counts on the `{r}` slot. KEYS: accepting, load, cap, assigned, queue, ring. ARGV: the
/// number of configured categories. Queue scores are `tier * 2^45 + rank * 2^38 + arrival`
/// (see [`super::scripts`]), so the waiting conversations of one category are two score
/// ranges (tier 0 and tier 1): a ZCOUNT each, whatever the queue's length.
///
/// Returns `{online, load, capacity, assigned, queued, {depth per rank}, {idle agents}}`:
/// `online` agents take chats (connected, status online), `load` and `capacity` are summed
/// over them (as [`crate::routing::Router::utilisation`] does), and `idle` lists the agents of
/// the ring that take no chats (away, offline, or within their grace period).
pub static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local TIER = 35184372088832   -- 2^45
local PRIO = 274877906944     -- 2^38
local online = redis.call('SMEMBERS', KEYS[1])
local load, cap = 0, 0
-- In chunks: unpack() of a very large table would overflow Lua's stack.
for i = 1, #online, 500 do
  local chunk = {}
  for j = i, math.min(i + 499, #online) do table.insert(chunk, online[j]) end
  for _, v in ipairs(redis.call('HMGET', KEYS[2], unpack(chunk))) do load = load + (tonumber(v) or 0) end
  for _, v in ipairs(redis.call('HMGET', KEYS[3], unpack(chunk))) do cap = cap + (tonumber(v) or 0) end
end
local depth = {}
for rank = 0, tonumber(ARGV[1]) - 1 do
  local n = 0
  for tier = 0, 1 do
    local low = tier * TIER + rank * PRIO
    n = n + redis.call('ZCOUNT', KEYS[5], string.format('%.0f', low),
      '(' .. string.format('%.0f', low + PRIO))
  end
  table.insert(depth, n)
end
local idle = {}
for _, a in ipairs(redis.call('ZRANGE', KEYS[6], 0, -1)) do
  if redis.call('SISMEMBER', KEYS[1], a) == 0 then table.insert(idle, a) end
end
return {#online, load, cap, redis.call('HLEN', KEYS[4]), redis.call('ZCARD', KEYS[5]), depth, idle}
"#,
    )
});

/// Reads the desk's figures: one script on `{r}`, then the statuses of agents that take no chats.
///
/// # Errors
/// When Redis does not answer or answers something else than the script's shape.
pub async fn read(
    conn: &mut Conn,
    keys: &Keys,
    categories: &Categories,
) -> redis::RedisResult<DeskLoad> {
    type Raw = (i64, i64, i64, i64, i64, Vec<i64>, Vec<String>);
    let (online, load, capacity, assigned, queued, depth, idle): Raw = READ
        .key(keys.routing("accepting"))
        .key(keys.routing("load"))
        .key(keys.routing("cap"))
        .key(keys.routing("assigned"))
        .key(keys.routing("queue"))
        .key(keys.routing("ring"))
        .arg(categories.all().len())
        .invoke_async(conn)
        .await?;
    let mut agents: HashMap<&'static str, i64> = [("online", online), ("away", 0), ("offline", 0)]
        .into_iter()
        .collect();
    // Each agent's presence and status share its own slot: one pipeline per agent. The ring
    // only holds ids Parley parsed when they joined; anything else is not an agent to count.
    let idle: Vec<AgentId> = idle.iter().filter_map(|a| AgentId::parse(a).ok()).collect();
    let statuses: Vec<(usize, Option<String>)> = stream::iter(idle)
        .map(|agent| {
            let mut conn = conn.clone();
            let client = ClientKey::agent(&agent);
            let mut pipe = redis::pipe();
            pipe.cmd("SCARD")
                .arg(keys.client(&client, "nodes"))
                .cmd("GET")
                .arg(keys.agent_status(&agent));
            async move { pipe.query_async::<(usize, Option<String>)>(&mut conn).await }
        })
        .buffered(STATUS_LOOKUPS_IN_FLIGHT)
        .try_collect()
        .await?;
    for (sockets, status) in statuses {
        // Within its grace period: no socket anywhere, so not a connected agent.
        if sockets == 0 {
            continue;
        }
        let status = match status.as_deref() {
            Some("online") => "online",
            Some("offline") => "offline",
            // A connected agent that takes no chats and has no status yet is only joining.
            _ => "away",
        };
        *agents.entry(status).or_default() += 1;
    }
    Ok(DeskLoad {
        agents,
        load,
        capacity,
        conversations_open: assigned + queued,
        queue: categories
            .all()
            .iter()
            .zip(depth.into_iter().chain(std::iter::repeat(0)))
            .map(|(c, n)| (c.to_string(), n))
            .collect(),
    })
}
