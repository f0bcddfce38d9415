//! The Lua scripts. Each runs atomically on one slot (see [`super::keys`]), which is what makes
//! assignment, sequence numbers and rate limits consistent across nodes without locks.
//!
//! Routing scripts take the eight `{r}` keys in the order of [`super::keys::Keys::routing_all`]
//! and the key prefix as `ARGV[1]` (to build `{r}:of:<agent>`, which shares the slot).

use std::sync::LazyLock;

use redis::Script;

/// Shared by every routing script: the round-robin pick and the queue drain.
///
/// Queue scores: tier * 2^45 + priority * 2^38 + arrival, so a chat returned from a lost agent
/// (tier 0) precedes new ones (tier 1), then higher priority (rank 0), then first come.
/// The ring is a sorted set agent -> position; the cursor is the position of the last agent
/// served, and the next pick is the first agent after it (wrapping) that accepts and has room.
const ROUTING_PRELUDE: &str = r#"
local K = {queue = KEYS[1], ring = KEYS[2], cap = KEYS[3], load = KEYS[4],
  accepting = KEYS[5], assigned = KEYS[6], counters = KEYS[7], cat = KEYS[8]}
local prefix = ARGV[1]
local TIER = 35184372088832   -- 2^45
local PRIO = 274877906944     -- 2^38

local function of(agent) return prefix .. ':{r}:of:' .. agent end

local function pick()
  local cursor = tonumber(redis.call('HGET', K.counters, 'cursor') or '0')
  local lists = {
    redis.call('ZRANGEBYSCORE', K.ring, '(' .. cursor, '+inf', 'WITHSCORES'),
    redis.call('ZRANGEBYSCORE', K.ring, '-inf', cursor, 'WITHSCORES')}
  for _, list in ipairs(lists) do
    for i = 1, #list, 2 do
      local a = list[i]
      if redis.call('SISMEMBER', K.accepting, a) == 1 then
        local load = tonumber(redis.call('HGET', K.load, a) or '0')
        local cap = tonumber(redis.call('HGET', K.cap, a) or '0')
        if load < cap then return a, list[i + 1] end
      end
    end
  end
  return nil, nil
end

local function assign(conv, agent, score)
  redis.call('HSET', K.assigned, conv, agent)
  redis.call('HINCRBY', K.load, agent, 1)
  redis.call('SADD', of(agent), conv)
  redis.call('HSET', K.counters, 'cursor', score)
  redis.call('ZREM', K.queue, conv)
end

local function drain(out)
  while true do
    local head = redis.call('ZRANGE', K.queue, 0, 0)
    if #head == 0 then return end
    local a, score = pick()
    if not a then return end
    assign(head[1], a, score)
    table.insert(out, head[1])
    table.insert(out, a)
  end
end

local function enqueue(conv, tier, rank)
  local arrival = redis.call('HINCRBY', K.counters, 'arrival', 1)
  redis.call('ZADD', K.queue, tier * TIER + rank * PRIO + arrival, conv)
  redis.call('HSET', K.cat, conv, rank)
end
"#;

fn routing(body: &str) -> Script {
    Script::new(&format!("{ROUTING_PRELUDE}\n{body}"))
}

/// A new conversation. ARGV: prefix, conversation, priority rank.
/// Returns `{"assigned", agent}` or `{"queued", position}`.
pub static REQUEST: LazyLock<Script> = LazyLock::new(|| {
    routing(
        r#"
local conv, rank = ARGV[2], tonumber(ARGV[3])
local existing = redis.call('HGET', K.assigned, conv)
if existing then return {'assigned', existing} end
if redis.call('ZSCORE', K.queue, conv) then
  return {'queued', tostring(redis.call('ZRANK', K.queue, conv) + 1)}
end
if redis.call('ZCARD', K.queue) == 0 then
  local a, score = pick()
  if a then
    redis.call('HSET', K.cat, conv, rank)
    assign(conv, a, score)
    return {'assigned', a}
  end
end
enqueue(conv, 1, rank)
return {'queued', tostring(redis.call('ZRANK', K.queue, conv) + 1)}
"#,
    )
});

/// An agent joins or changes capacity or status. ARGV: prefix, agent, capacity, accepting (0/1).
/// A new agent enters the ring right after the cursor, so it is served next. Returns the
/// assignments made, flat: conversation, agent, ...
pub static SET_AGENT: LazyLock<Script> = LazyLock::new(|| {
    routing(
        r#"
local agent, cap, accepting = ARGV[2], ARGV[3], ARGV[4]
redis.call('HSET', K.cap, agent, cap)
if accepting == '1' then redis.call('SADD', K.accepting, agent)
else redis.call('SREM', K.accepting, agent) end
if not redis.call('ZSCORE', K.ring, agent) then
  local cursor = tonumber(redis.call('HGET', K.counters, 'cursor') or '0')
  local nxt = redis.call('ZRANGEBYSCORE', K.ring, '(' .. cursor, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  local score
  if #nxt == 0 then
    score = cursor + 1
  else
    score = (cursor + tonumber(nxt[2])) / 2
    if score <= cursor or score >= tonumber(nxt[2]) then
      -- Out of float precision between two neighbours: append at the end of the ring.
      local last = redis.call('ZRANGE', K.ring, -1, -1, 'WITHSCORES')
      score = tonumber(last[2]) + 1
    end
  end
  redis.call('ZADD', K.ring, score, agent)
end
local out = {}
drain(out)
return out
"#,
    )
});

/// Forgets an agent (grace expired, or its node died) and puts its chats at the front of the
/// queue, oldest first, then hands out what it can. ARGV: prefix, agent.
/// Returns `{n, orphan1, position1, ..., orphanN, positionN, conv, agent, conv, agent...}`:
/// positions are those right after requeueing, before anyone was assigned.
pub static REMOVE_AGENT: LazyLock<Script> = LazyLock::new(|| {
    routing(
        r#"
local agent = ARGV[2]
redis.call('SREM', K.accepting, agent)
redis.call('ZREM', K.ring, agent)
redis.call('HDEL', K.cap, agent)
redis.call('HDEL', K.load, agent)
local convs = redis.call('SMEMBERS', of(agent))
table.sort(convs)  -- UUIDv7: lexical order is creation order
redis.call('DEL', of(agent))
local out = {tostring(#convs)}
for _, c in ipairs(convs) do
  redis.call('HDEL', K.assigned, c)
  enqueue(c, 0, tonumber(redis.call('HGET', K.cat, c) or '0'))
end
for _, c in ipairs(convs) do
  table.insert(out, c)
  table.insert(out, tostring(redis.call('ZRANK', K.queue, c) + 1))
end
drain(out)
return out
"#,
    )
});

/// A conversation ended: frees its slot or its place in the queue. ARGV: prefix, conversation.
/// Returns the assignments made, flat.
pub static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    routing(
        r#"
local conv = ARGV[2]
redis.call('HDEL', K.cat, conv)
if redis.call('ZREM', K.queue, conv) == 1 then return {} end
local a = redis.call('HGET', K.assigned, conv)
local out = {}
if a then
  redis.call('HDEL', K.assigned, conv)
  redis.call('SREM', of(a), conv)
  if tonumber(redis.call('HGET', K.load, a) or '0') > 0 then redis.call('HINCRBY', K.load, a, -1) end
  drain(out)
end
return out
"#,
    )
});

/// Appends one message: checks the sender may write, deduplicates the `cid`, takes the next
/// sequence number and writes the message to the capped stream, all at once. The stream is the
/// durable point: the `ack` goes out only after this returns.
///
/// KEYS: meta, log, cids. ARGV: role, sender id, sender name, text, ts, cid ("" = none), origin
/// socket token, stream max length.
/// Returns `{"ok", seq, visitor, agent}`, `{"dup", seq, visitor, agent}` or
/// `{"err", "closed"|"forbidden"}`.
pub static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local meta, log, cids = KEYS[1], KEYS[2], KEYS[3]
local role, sender, name, text, ts, cid, origin, maxlen =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local state = redis.call('HGET', meta, 'state')
if not state or state == 'closed' then return {'err', 'closed'} end
local agent = redis.call('HGET', meta, 'agent') or ''
if role == 'agent' and agent ~= sender then return {'err', 'forbidden'} end
if cid ~= '' then
  local seen = redis.call('HGET', cids, role .. ':' .. cid)
  if seen then return {'dup', seen, redis.call('HGET', meta, 'visitor') or '', agent} end
end
local seq = redis.call('HINCRBY', meta, 'seq', 1)
redis.call('XADD', log, 'MAXLEN', '~', maxlen, seq .. '-1', 'role', role, 'id', sender,
  'name', name, 'text', text, 'ts', ts, 'cid', cid, 'o', origin)
if cid ~= '' then redis.call('HSET', cids, role .. ':' .. cid, seq) end
return {'ok', tostring(seq), redis.call('HGET', meta, 'visitor') or '', agent}
"#,
    )
});

/// Marks a conversation closed once. KEYS: meta, log, cids. ARGV: closed_at, keep (seconds the
/// closed conversation's keys stay for late readers), the `closed` frame (kept so that a node
/// that missed the event can still tell its clients). Returns `{visitor, agent}` or nil when it
/// was closed already.
pub static CLOSE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'closed' then return nil end
redis.call('HSET', KEYS[1], 'state', 'closed', 'closed_at', ARGV[1], 'closed_frame', ARGV[3])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[2]) end
return {redis.call('HGET', KEYS[1], 'visitor') or '', redis.call('HGET', KEYS[1], 'agent') or ''}
"#,
    )
});

/// Deletes a key only if it still holds the expected value (a visitor's open conversation).
pub static DELETE_IF: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"#,
    )
});

/// Sets a key only if it still holds the expected value ("" = absent). Returns 1 when set.
pub static REPLACE_IF: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"#,
    )
});

/// GCRA on Redis' clock, so every node shares one budget per key whatever their own clocks
/// say. KEYS: the budget key. ARGV: emission interval in ms (1000 / rate), burst, and optionally
/// the time in ms to use instead of Redis' clock (nodes never pass it; tests do, to run a
/// minute-long flood in controlled time). Returns `{1, 0}` when allowed, `{0, wait_ms}` when not
/// (nothing is consumed then).
pub static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local emission, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local tolerance = emission * (burst - 1)
if tat - now > tolerance then
  return {0, math.ceil(tat - now - tolerance)}
end
local new = tat + emission
redis.call('SET', KEYS[1], string.format('%.3f', new), 'PX', math.ceil(new - now) + 1000)
return {1, 0}
"#,
    )
});
