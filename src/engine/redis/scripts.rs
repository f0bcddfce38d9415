//! The Lua scripts. Each runs atomically on one slot (see [`super::keys`]), which is what makes
//! assignment, sequence numbers and rate limits consistent across nodes without locks.
//!
//! Routing scripts take the twelve `{r}` keys in the order of [`super::keys::Keys::routing_all`]
//! and the key prefix as `ARGV[1]` (to build `{r}:of:<agent>`, which shares the slot).

use std::sync::LazyLock;

use redis::Script;

/// Shared by every routing script: the round-robin pick and the queue drain.
///
/// Queue scores: tier * 2^45 + priority * 2^38 + arrival, so a chat returned from a lost agent
/// or transferred (tier 0) precedes new ones (tier 1), then higher priority (rank 0), then first
/// come. The ring is a sorted set agent -> position. Each conversation has a target, any agent
/// (no entry in `target`) or one team (`target` conv -> team id), and each target has its own
/// cursor in `counters` (`cursor` for any agent, `cursor:<team>` for a team): the position of
/// the last agent it served. The next pick for a target is the first agent after its cursor
/// (wrapping) that accepts, has room, is in the team (`teams` agent -> ",t1,t2,") and is not
/// the agent the conversation was taken from (`excl` conv -> agent). As in
/// [`crate::routing::Router`], queued conversations of different targets do not block each
/// other: the drain hands out the earliest conversation some free agent may take, again and
/// again, until none is left.
///
/// Every call must stay cheap however many agents and waiting chats there are, because Redis
/// runs scripts one at a time and every node waits behind the slowest. So each target (`any`,
/// or `t:<team>`) keeps three indexes next to the source of truth, all updated by the same
/// scripts: `free:<target>` (agents accepting with a free slot, scored by ring position, so a
/// pick is one ranged lookup after the cursor), `staff:<target>` (agents accepting, busy or
/// not) and `q:<target>` (that target's queue, same scores as `queue`, so a position is a
/// ZRANK). `queued_targets` lists the targets with someone waiting. [`REINDEX`] rebuilds the
/// indexes from the rest, for data written before they existed.
const ROUTING_PRELUDE: &str = r#"
local K = {queue = KEYS[1], ring = KEYS[2], cap = KEYS[3], load = KEYS[4],
  accepting = KEYS[5], assigned = KEYS[6], counters = KEYS[7], cat = KEYS[8],
  target = KEYS[9], teams = KEYS[10], excl = KEYS[11], queued_targets = KEYS[12]}
local prefix = ARGV[1]
local TIER = 35184372088832   -- 2^45
local PRIO = 274877906944     -- 2^38

local function of(agent) return prefix .. ':{r}:of:' .. agent end
local function index(kind, t)
  if t == '' then return prefix .. ':{r}:' .. kind .. ':any' end
  return prefix .. ':{r}:' .. kind .. ':t:' .. t
end

local function cursor_field(t)
  if t == '' then return 'cursor' end
  return 'cursor:' .. t
end

-- The targets an agent serves: any agent, and each of its teams.
local function targets_of(a)
  local out = {''}
  for team in string.gmatch(redis.call('HGET', K.teams, a) or '', '[^,]+') do
    table.insert(out, team)
  end
  return out
end

-- Takes an agent out of every index (before its teams change, or when it goes).
local function unindex(a)
  for _, t in ipairs(targets_of(a)) do
    redis.call('ZREM', index('free', t), a)
    redis.call('SREM', index('staff', t), a)
  end
end

-- Puts an agent in the indexes its state says: staff when accepting, free when also not full.
local function reindex(a)
  local position = redis.call('ZSCORE', K.ring, a)
  local accepting = position and redis.call('SISMEMBER', K.accepting, a) == 1
  local free = false
  if accepting then
    local load = tonumber(redis.call('HGET', K.load, a) or '0')
    free = load < tonumber(redis.call('HGET', K.cap, a) or '0')
  end
  for _, t in ipairs(targets_of(a)) do
    if free then redis.call('ZADD', index('free', t), position, a)
    else redis.call('ZREM', index('free', t), a) end
    if accepting then redis.call('SADD', index('staff', t), a)
    else redis.call('SREM', index('staff', t), a) end
  end
end

local function target_of(conv) return redis.call('HGET', K.target, conv) or '' end

-- The first free agent for `t` after its cursor (wrapping), other than `exclude`.
local function pick(t, exclude)
  local cursor = redis.call('HGET', K.counters, cursor_field(t)) or '0'
  local free = index('free', t)
  for _, range in ipairs({{'(' .. cursor, '+inf'}, {'-inf', cursor}}) do
    local got = redis.call('ZRANGEBYSCORE', free, range[1], range[2], 'WITHSCORES', 'LIMIT', 0, 2)
    for i = 1, #got, 2 do
      if got[i] ~= exclude then return got[i], got[i + 1] end
    end
  end
  return nil, nil
end

-- Whether an agent accepting chats serves `t`, busy or not: "is anyone there".
local function anyone(t)
  return redis.call('SCARD', index('staff', t)) > 0
end

-- Takes a conversation out of the queue; true when it was queued.
local function dequeue(conv)
  if redis.call('ZREM', K.queue, conv) == 0 then return false end
  local t = target_of(conv)
  local q = index('q', t)
  redis.call('ZREM', q, conv)
  if redis.call('ZCARD', q) == 0 then redis.call('SREM', K.queued_targets, t) end
  return true
end

local function take(conv, agent)
  redis.call('HSET', K.assigned, conv, agent)
  redis.call('HINCRBY', K.load, agent, 1)
  redis.call('SADD', of(agent), conv)
  dequeue(conv)
  redis.call('HDEL', K.excl, conv)
  reindex(agent)
end

local function assign(conv, agent, score, t)
  take(conv, agent)
  redis.call('HSET', K.counters, cursor_field(t), score)
end

-- Frees the conversation's agent; returns it (nil when it had none).
local function unassign(conv)
  local a = redis.call('HGET', K.assigned, conv)
  if not a then return nil end
  redis.call('HDEL', K.assigned, conv)
  redis.call('SREM', of(a), conv)
  if tonumber(redis.call('HGET', K.load, a) or '0') > 0 then redis.call('HINCRBY', K.load, a, -1) end
  reindex(a)
  return a
end

-- The earliest conversation waiting for `t` that an agent free for `t` may take, and its
-- score. Only a conversation excluded from the one free agent is passed over.
local function head(t)
  local free = index('free', t)
  local nfree = redis.call('ZCARD', free)
  if nfree == 0 then return nil, nil end
  local q, from = index('q', t), 0
  while true do
    local got = redis.call('ZRANGE', q, from, from + 15, 'WITHSCORES')
    if #got == 0 then return nil, nil end
    for i = 1, #got, 2 do
      local ex = redis.call('HGET', K.excl, got[i])
      if not ex or nfree > 1 or not redis.call('ZSCORE', free, ex) then
        return got[i], tonumber(got[i + 1])
      end
    end
    from = from + 16
  end
end

-- Hands out waiting conversations, earliest first, while anyone free may take one.
local function drain(out)
  while redis.call('ZCARD', index('free', '')) > 0 do
    local best, best_score, best_t
    for _, t in ipairs(redis.call('SMEMBERS', K.queued_targets)) do
      local c, s = head(t)
      if c and (not best or s < best_score) then best, best_score, best_t = c, s, t end
    end
    if not best then return end
    local a, score = pick(best_t, redis.call('HGET', K.excl, best))
    if not a then return end  -- head() saw a free agent; kept so a bug cannot loop forever
    assign(best, a, score, best_t)
    table.insert(out, best)
    table.insert(out, a)
  end
end

-- Queues a conversation for its target (set before this).
local function enqueue(conv, tier, rank)
  local arrival = redis.call('HINCRBY', K.counters, 'arrival', 1)
  local score = tier * TIER + rank * PRIO + arrival
  local t = target_of(conv)
  redis.call('ZADD', K.queue, score, conv)
  redis.call('ZADD', index('q', t), score, conv)
  redis.call('SADD', K.queued_targets, t)
  redis.call('HSET', K.cat, conv, rank)
end

-- 1-based position in its target's queue, nil when not queued.
local function position(conv)
  local rank = redis.call('ZRANK', index('q', target_of(conv)), conv)
  if not rank then return nil end
  return rank + 1
end

local function set_target(conv, t)
  if t == '' then redis.call('HDEL', K.target, conv)
  else redis.call('HSET', K.target, conv, t) end
end
"#;

fn routing(body: &str) -> Script {
    Script::new(&format!("{ROUTING_PRELUDE}\n{body}"))
}

/// A new conversation. ARGV: prefix, conversation, priority rank, target team ("" = any agent).
/// Returns `{"assigned", agent}` or `{"queued", position, anyone}` where `anyone` is "1" when
/// an agent accepting chats serves the target (busy), "0" when nobody who could is there.
pub static REQUEST: LazyLock<Script> = LazyLock::new(|| {
    routing(
        r#"
local conv, rank, t = ARGV[2], tonumber(ARGV[3]), ARGV[4] or ''
local existing = redis.call('HGET', K.assigned, conv)
if existing then return {'assigned', existing} end
local function queued()
  local there = '0'
  if anyone(target_of(conv)) then there = '1' end
  return {'queued', tostring(position(conv)), there}
end
if redis.call('ZSCORE', K.queue, conv) then return queued() end
set_target(conv, t)
redis.call('HSET', K.cat, conv, rank)
-- Work conservation (no waiting conversation has an agent free for it) means an agent free
-- for this target is wanted by nobody waiting: assign directly.
local a, score = pick(t, nil)
if a then
  assign(conv, a, score, t)
  return {'assigned', a}
end
enqueue(conv, 1, rank)
return queued()
"#,
    )
});

/// Positions of conversations in their targets' queues. ARGV: prefix, conversations...
/// Returns one position per conversation, 0 when it is not queued.
pub static POSITIONS: LazyLock<Script> = LazyLock::new(|| {
    routing(
        r#"
local out = {}
for i = 2, #ARGV do table.insert(out, position(ARGV[i]) or 0) end
return out
"#,
    )
});

/// An agent joins or changes capacity or status. ARGV: prefix, agent, capacity, accepting (0/1),
/// teams (",t1,t2,", or "" for none). A new agent enters the ring right after the "any agent"
/// cursor, so it is served next; `routing::Router` gives it the same score by the same steps,
/// which the differential test (tests/redis/routing_differential.rs) keeps equal. Returns the
/// assignments made, flat: conversation, agent, ...
pub static SET_AGENT: LazyLock<Script> = LazyLock::new(|| {
    routing(
        r#"
local agent, cap, accepting, teams = ARGV[2], ARGV[3], ARGV[4], ARGV[5] or ''
unindex(agent)  -- under its old teams
redis.call('HSET', K.cap, agent, cap)
redis.call('HSET', K.teams, agent, teams)
if accepting == '1' then redis.call('SADD', K.accepting, agent)
else redis.call('SREM', K.accepting, agent) end
if not redis.call('ZSCORE', K.ring, agent) then
  -- The range takes the stored text, not `cursor`: Lua writes a number with 14 significant
  -- digits, which moves a deep midpoint score (1.00006103515625 becomes 1.0000610351562).
  local stored = redis.call('HGET', K.counters, 'cursor') or '0'
  local cursor = tonumber(stored)
  local nxt = redis.call('ZRANGEBYSCORE', K.ring, '(' .. stored, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
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
reindex(agent)
local out = {}
drain(out)
return out
"#,
    )
});

/// Forgets an agent (grace expired, or its node died) and puts its chats at the front of their
/// queues, oldest first, then hands out what it can. ARGV: prefix, agent.
/// Returns `{n, orphan1, position1, ..., orphanN, positionN, conv, agent, conv, agent...}`:
/// positions are those right after requeueing, before anyone was assigned.
pub static REMOVE_AGENT: LazyLock<Script> = LazyLock::new(|| {
    routing(
        r#"
local agent = ARGV[2]
unindex(agent)
redis.call('SREM', K.accepting, agent)
redis.call('ZREM', K.ring, agent)
redis.call('HDEL', K.cap, agent)
redis.call('HDEL', K.load, agent)
redis.call('HDEL', K.teams, agent)
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
  table.insert(out, tostring(position(c)))
end
drain(out)
return out
"#,
    )
});

/// An agent stops taking new chats without leaving (its connection is lost and its grace
/// period starts): its chats stay, nobody new is handed to it. ARGV: prefix, agent.
pub static STOP_ACCEPTING: LazyLock<Script> = LazyLock::new(|| {
    routing(
        r#"
redis.call('SREM', K.accepting, ARGV[2])
reindex(ARGV[2])
return 1
"#,
    )
});

/// Rebuilds the routing indexes (`free:*`, `staff:*`, `q:*`, `queued_targets`) from the ring,
/// the loads and the queue, then hands out what it can. Run by every node as it starts, so
/// routing data written by a version without the indexes keeps working; on data the scripts
/// kept, it changes nothing. ARGV: prefix. Returns the assignments made, flat.
pub static REINDEX: LazyLock<Script> = LazyLock::new(|| {
    routing(
        r#"
for _, a in ipairs(redis.call('ZRANGE', K.ring, 0, -1)) do reindex(a) end
for _, t in ipairs(redis.call('SMEMBERS', K.queued_targets)) do
  redis.call('DEL', index('q', t))
end
redis.call('DEL', K.queued_targets)
local queue = redis.call('ZRANGE', K.queue, 0, -1, 'WITHSCORES')
for i = 1, #queue, 2 do
  local t = target_of(queue[i])
  redis.call('ZADD', index('q', t), queue[i + 1], queue[i])
  redis.call('SADD', K.queued_targets, t)
end
local out = {}
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
local was_queued = dequeue(conv)
redis.call('HDEL', K.cat, conv)
redis.call('HDEL', K.target, conv)
redis.call('HDEL', K.excl, conv)
if was_queued then return {} end
local out = {}
if unassign(conv) then drain(out) end
return out
"#,
    )
});

/// Moves a conversation away from its agent `from`. ARGV: prefix, conversation, from, mode,
/// to. Mode `requeue`: back to the front of its own queue, excluded from `from`. Mode `team`: to the team `to` ("" = any agent), straight to a free member other than
/// `from`, else to the front of that team's queue (excluded from `from`); a conversation
/// still waiting moves to the front of that team's queue. Mode `agent`: to the agent `to`,
/// who must accept chats and have a free slot (capacity is never exceeded); the target stays.
/// Then hands out what the freed slot can take.
/// Returns `{"assigned", agent, made...}`, `{"queued", position, made...}` (made: flat
/// conversation, agent pairs) or `{"err", "forbidden"|"not_found"|"unavailable"}`.
pub static TRANSFER: LazyLock<Script> = LazyLock::new(|| {
    routing(
        r#"
local conv, from, mode, to = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local current = redis.call('HGET', K.assigned, conv)
local rank = tonumber(redis.call('HGET', K.cat, conv) or '0')
local out
if mode == 'requeue' then
  -- Back to the front of its own queue, not to the agent it leaves (a breached target).
  if current then
    if current ~= from then return {'err', 'forbidden'} end
    unassign(conv)
    enqueue(conv, 0, rank)
    redis.call('HSET', K.excl, conv, from)
  elseif dequeue(conv) then
    enqueue(conv, 0, rank)
  else
    return {'err', 'not_found'}
  end
  out = {'queued', tostring(position(conv))}
elseif mode == 'agent' then
  if current ~= from then return {'err', 'forbidden'} end
  if to == from or redis.call('SISMEMBER', K.accepting, to) == 0 then return {'err', 'unavailable'} end
  local load = tonumber(redis.call('HGET', K.load, to) or '0')
  local cap = tonumber(redis.call('HGET', K.cap, to) or '0')
  if load >= cap then return {'err', 'unavailable'} end
  unassign(conv)
  take(conv, to)
  out = {'assigned', to}
elseif current then
  if current ~= from then return {'err', 'forbidden'} end
  unassign(conv)
  set_target(conv, to)
  local a, score = pick(to, from)
  if a then
    assign(conv, a, score, to)
    out = {'assigned', a}
  else
    enqueue(conv, 0, rank)
    redis.call('HSET', K.excl, conv, from)
    out = {'queued', tostring(position(conv))}
  end
elseif dequeue(conv) then
  set_target(conv, to)
  enqueue(conv, 0, rank)
  out = {'queued', tostring(position(conv))}
else
  return {'err', 'not_found'}
end
drain(out)
return out
"#,
    )
});

/// Claims the first-response clocks due by `now`: pops them from the `sla` set, so each is
/// handled by one node. KEYS: sla. ARGV: now (ms), at most how many. Returns the conversations.
pub static SLA_DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, c in ipairs(due) do redis.call('ZREM', KEYS[1], c) end
return due
"#,
    )
});

/// Appends one message: checks the sender may write, deduplicates the `cid`, takes the next
/// sequence number and writes the message to the capped stream, all at once. The stream is the
/// durable point: the `ack` goes out only after this returns.
///
/// KEYS: meta, log, cids. ARGV: role, sender id, sender name ("" for a visitor: the name the
/// conversation keeps), text, ts, cid ("" = none), origin socket token, stream max length, kind
/// ("note" for a private note, "" for a message). The script checks what a caller would
/// otherwise read first (open, and the agent's own), so a send is one round trip.
/// Returns `{"ok", seq, visitor, agent, first, name}` (`first` "1" when this is the first agent
/// reply, `name` the sender name stored), `{"dup", seq, visitor, agent}` or
/// `{"err", "closed"|"forbidden"}`.
pub static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local meta, log, cids = KEYS[1], KEYS[2], KEYS[3]
local role, sender, name, text, ts, cid, origin, maxlen, kind =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9] or ''
local state = redis.call('HGET', meta, 'state')
if not state or state == 'closed' then return {'err', 'closed'} end
local agent = redis.call('HGET', meta, 'agent') or ''
if role == 'agent' and agent ~= sender then return {'err', 'forbidden'} end
if role == 'visitor' and name == '' then name = redis.call('HGET', meta, 'visitor_name') or '' end
if cid ~= '' then
  local seen = redis.call('HGET', cids, role .. ':' .. cid)
  if seen then return {'dup', seen, redis.call('HGET', meta, 'visitor') or '', agent} end
end
local seq = redis.call('HINCRBY', meta, 'seq', 1)
redis.call('XADD', log, 'MAXLEN', '~', maxlen, seq .. '-1', 'role', role, 'id', sender,
  'name', name, 'text', text, 'ts', ts, 'cid', cid, 'o', origin, 'k', kind)
if cid ~= '' then redis.call('HSET', cids, role .. ':' .. cid, seq) end
-- The report figures, as on one node: the first agent reply stops the first-response clock;
-- each agent reply ends the visitor's wait that came before it. Notes count for neither.
local first = 0
if kind ~= 'note' then
  if role == 'visitor' then
    redis.call('HSETNX', meta, 'awaiting_since', ts)
  elseif role == 'agent' then
    first = redis.call('HSETNX', meta, 'first_response_at', ts)
    local since = redis.call('HGET', meta, 'awaiting_since')
    if since then
      redis.call('HINCRBY', meta, 'response_ms_total', math.max(0, tonumber(ts) - tonumber(since)))
      redis.call('HINCRBY', meta, 'responses', 1)
      redis.call('HDEL', meta, 'awaiting_since')
    end
  end
end
return {'ok', tostring(seq), redis.call('HGET', meta, 'visitor') or '', agent, tostring(first), name}
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

/// Opens a closed conversation again (a visitor back within the reopen window): queued, without
/// an agent, one more `reopened`, its keys kept. KEYS: meta, log, cids. Returns 1, or 0 when
/// it was not closed.
pub static REOPEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], 'state') ~= 'closed' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'queued', 'agent', '')
redis.call('HDEL', KEYS[1], 'closed_frame', 'closed_at', 'assigned_at')
redis.call('HINCRBY', KEYS[1], 'reopened', 1)
for i = 1, 3 do redis.call('PERSIST', KEYS[i]) end
return 1
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
