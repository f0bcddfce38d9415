//! Who gets which conversation: round-robin over available agents, capacity, and a priority queue.
//!
//! This module is pure (no I/O, no clock, no locks) so that its rules can be checked with
//! property tests and reused by any engine. The in-process engine keeps one [`Router`] behind its
//! lock; a Redis engine implements the same rules in a Lua script.
//!
//! The rules:
//! - An agent is *available* when it accepts chats (online and connected) and its load is below
//!   its capacity. No agent ever goes above capacity; a conversation has at most one agent.
//! - New conversations go to available agents in round-robin order: a cursor walks a fixed ring of
//!   agents and skips the unavailable ones, so agents that stay available get turns in strict
//!   rotation and never more than one assignment more than each other. A new agent enters the
//!   ring right after the "any agent" cursor, so it is served next.
//! - With nobody available, conversations queue by category priority, then arrival. Chats taken
//!   back from a lost agent go to the very front, ahead of new arrivals, because they already
//!   waited once.
//! - Whenever capacity appears (slot freed, agent back online), the queue head is assigned at once.
//!
//! Teams: a conversation has a [`Target`], any agent or one team (its category's team, or the
//! team it was transferred to). Each target has its own cursor over the one ring, so
//! round-robin and capacity hold within the receiving team. Queued conversations of different
//! targets do not block each other: a free agent takes the first conversation in queue order
//! it can serve. A conversation taken from an agent (transferred away, or requeued after a
//! breached target) carries that agent as *excluded*, so it is not handed straight back.
//!
//! The ring is kept the way the Redis scripts keep it (`engine::redis::scripts`), so that both
//! engines make the same placement for the same sequence of operations (the differential test
//! `tests/redis/routing_differential.rs` checks it): each agent has a ring score, each cursor is
//! the score of the agent its target served last (a score that outlives that agent when it
//! leaves), and a pick is the first agent scored above the cursor, wrapping round to the lowest.
//! [`RingScore`] says how a new agent's score is chosen.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use crate::domain::{AgentId, Category, ConversationId, TeamId};

/// The configured categories, highest priority first.
#[derive(Debug, Clone)]
pub struct Categories {
    /// In priority order: index 0 is served first.
    ordered: Vec<Category>,
    /// Name -> priority rank, for parsing and ordering in O(1).
    rank: HashMap<Arc<str>, usize>,
}

impl Categories {
    /// `names` must be non-empty and unique; config validation guarantees both.
    pub fn new<S: AsRef<str>>(names: &[S]) -> Self {
        let ordered: Vec<Category> = names
            .iter()
            .map(|n| Category::new_unchecked(n.as_ref()))
            .collect();
        let rank = ordered
            .iter()
            .enumerate()
            .map(|(i, c)| (Arc::from(c.as_str()), i))
            .collect();
        Self { ordered, rank }
    }

    /// The category named `name`, if it is configured.
    pub fn parse(&self, name: &str) -> Option<Category> {
        self.rank.get(name).map(|&i| self.ordered[i].clone())
    }

    /// 0 is the highest priority.
    pub fn rank(&self, category: &Category) -> usize {
        self.rank
            .get(category.as_str())
            .copied()
            .unwrap_or(self.ordered.len())
    }

    pub fn all(&self) -> &[Category] {
        &self.ordered
    }
}

/// Who may take a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Any,
    Team(TeamId),
}

impl Target {
    pub fn team(&self) -> Option<&TeamId> {
        match self {
            Target::Any => None,
            Target::Team(t) => Some(t),
        }
    }
}

/// The result of asking for an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Assigned(AgentId),
    /// Waiting; `position` 1 is the head of its target's queue.
    Queued {
        position: usize,
    },
}

/// A conversation taken from the queue and given to an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub conversation: ConversationId,
    pub agent: AgentId,
}

/// A conversation taken back from an agent, with what it needs to be queued again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub conversation: ConversationId,
    pub category: Category,
    pub target: Target,
}

/// Why a transfer to a named agent was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("the conversation has no agent to transfer from")]
    NotAssigned,
    #[error("that agent is not online with a free slot")]
    AgentUnavailable,
}

/// Queue order: tier (0 = returned from an agent, 1 = new), then priority, then arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct QueueKey {
    tier: u8,
    priority: usize,
    arrival: u64,
}

#[derive(Debug, Clone)]
struct QueueEntry {
    conversation: ConversationId,
    category: Category,
    target: Target,
    /// The agent it was taken from, who must not get it straight back.
    exclude: Option<AgentId>,
}

#[derive(Debug, Clone)]
struct AssignedEntry {
    agent: AgentId,
    category: Category,
    target: Target,
}

/// An agent's place on the round-robin ring, or a cursor (the place of the agent a target
/// served last). It is the score the Redis scripts keep in the `{r}:ring` sorted set, computed
/// with the same `f64` arithmetic, so both engines order agents identically.
///
/// Scores are finite and positive (the first agent gets 1, a cursor that served nobody is 0),
/// where `f64::total_cmp` orders them as Redis orders sorted-set scores.
#[derive(Debug, Clone, Copy)]
struct RingScore(f64);

impl RingScore {
    /// Where a target that has served nobody yet starts: before every agent.
    const START: RingScore = RingScore(0.0);

    /// The score for an agent joining the ring: right after `cursor` (the "any agent" cursor),
    /// so the agent is served next. This is the `SET_AGENT` script's rule, step for step: the
    /// cursor plus one when no agent is scored above it, else the midpoint between the cursor and
    /// the next agent; when the two are too close for a midpoint between them (float precision
    /// ran out), one more than the highest score, the end of the ring. The scripts do not
    /// renumber the ring (that would rewrite every score in one script), so neither do we.
    fn for_new_agent(ring: &BTreeMap<RingScore, AgentId>, cursor: RingScore) -> RingScore {
        let after = (Bound::Excluded(cursor), Bound::Unbounded);
        let Some(next) = ring.range(after).next().map(|(s, _)| s.0) else {
            return RingScore(cursor.0 + 1.0);
        };
        let midpoint = (cursor.0 + next) / 2.0;
        if midpoint <= cursor.0 || midpoint >= next {
            let last = ring.last_key_value().map_or(cursor.0, |(s, _)| s.0);
            return RingScore(last + 1.0);
        }
        RingScore(midpoint)
    }
}

impl PartialEq for RingScore {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for RingScore {}

impl PartialOrd for RingScore {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for RingScore {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

#[derive(Debug, Clone)]
struct AgentSlot {
    /// Its key in [`Router::ring`], so leaving the ring is a lookup, not a scan.
    ring_score: RingScore,
    capacity: u32,
    load: u32,
    /// Online and connected: may receive new conversations (when below capacity).
    accepting: bool,
    teams: Vec<TeamId>,
}

impl AgentSlot {
    fn available(&self) -> bool {
        self.accepting && self.load < self.capacity
    }

    fn serves(&self, target: &Target) -> bool {
        match target {
            Target::Any => true,
            Target::Team(t) => self.teams.contains(t),
        }
    }
}

/// Routing state for one desk. Every method keeps the invariants listed in the module docs.
#[derive(Debug)]
pub struct Router {
    categories: Categories,
    /// Every agent the router knows, accepting or not; an agent leaves only by [`Router::remove_agent`].
    agents: HashMap<AgentId, AgentSlot>,
    /// The round-robin ring: every agent in `agents`, in ring-score order. Scores are unique
    /// ([`RingScore::for_new_agent`] always picks a free one).
    ring: BTreeMap<RingScore, AgentId>,
    /// Per target, the ring score of the agent it served last; the next pick for that target
    /// is the first agent scored above it. It stays when that agent leaves, as in the scripts,
    /// so the rotation goes on from where the agent was. A target without one starts at
    /// [`RingScore::START`].
    cursors: HashMap<Target, RingScore>,
    queue: BTreeMap<QueueKey, QueueEntry>,
    /// Reverse index of `queue`, so removal and lookups do not scan.
    queued: HashMap<ConversationId, QueueKey>,
    assigned: HashMap<ConversationId, AssignedEntry>,
    /// Monotonic arrival counter: ties in priority are served first come, first served.
    arrivals: u64,
}

impl Router {
    pub fn new(categories: Categories) -> Self {
        Self {
            categories,
            agents: HashMap::new(),
            ring: BTreeMap::new(),
            cursors: HashMap::new(),
            queue: BTreeMap::new(),
            queued: HashMap::new(),
            assigned: HashMap::new(),
            arrivals: 0,
        }
    }

    pub fn categories(&self) -> &Categories {
        &self.categories
    }

    /// Adds an agent or updates its capacity, teams and whether it accepts new chats, then
    /// hands out queued conversations if capacity appeared. Lowering capacity below the current
    /// load keeps the chats it has; it simply gets no new ones until below the new capacity.
    pub fn set_agent(
        &mut self,
        agent: &AgentId,
        capacity: u32,
        accepting: bool,
        teams: &[TeamId],
    ) -> Vec<Assignment> {
        match self.agents.get_mut(agent) {
            Some(slot) => {
                slot.capacity = capacity;
                slot.accepting = accepting;
                slot.teams = teams.to_vec();
            }
            None => {
                // Next in line: it has had no turn yet, so it goes before everyone who has.
                let ring_score = RingScore::for_new_agent(&self.ring, self.cursor(&Target::Any));
                let displaced = self.ring.insert(ring_score, agent.clone());
                debug_assert!(displaced.is_none(), "ring score {ring_score:?} taken");
                self.agents.insert(
                    agent.clone(),
                    AgentSlot {
                        ring_score,
                        capacity,
                        load: 0,
                        accepting,
                        teams: teams.to_vec(),
                    },
                );
            }
        }
        self.drain_queue()
    }

    /// Marks an agent as not taking new chats (away, offline, or connection lost); it keeps its
    /// current ones.
    pub fn pause_agent(&mut self, agent: &AgentId) {
        if let Some(slot) = self.agents.get_mut(agent) {
            slot.accepting = false;
        }
    }

    /// Forgets an agent (its grace period ran out) and returns its conversations, oldest first,
    /// now without an agent: the caller puts them back with [`Router::requeue_front`].
    pub fn remove_agent(&mut self, agent: &AgentId) -> Vec<Orphan> {
        let Some(slot) = self.agents.remove(agent) else {
            return Vec::new();
        };
        // Cursors at its score stay: the next pick is the agent after the place it left.
        self.ring.remove(&slot.ring_score);
        let mut orphaned: Vec<ConversationId> = self
            .assigned
            .iter()
            .filter(|(_, a)| &a.agent == agent)
            .map(|(c, _)| *c)
            .collect();
        // Oldest first (ids are time-ordered UUIDv7), so the longest waiting is served first.
        orphaned.sort();
        orphaned
            .into_iter()
            .filter_map(|conversation| {
                let entry = self.assigned.remove(&conversation)?;
                Some(Orphan {
                    conversation,
                    category: entry.category,
                    target: entry.target,
                })
            })
            .collect()
    }

    /// Puts conversations taken from a lost agent at the front of their queue (tier 0). It does
    /// not assign them yet, so the caller can tell their visitors first; [`Router::dispatch`]
    /// then hands them out.
    pub fn requeue_front(&mut self, orphans: &[Orphan]) {
        for o in orphans {
            self.push(
                o.conversation,
                o.category.clone(),
                o.target.clone(),
                None,
                0,
            );
        }
    }

    /// Assigns queued conversations while agents are available.
    pub fn dispatch(&mut self) -> Vec<Assignment> {
        self.drain_queue()
    }

    /// Asks for an agent for a new conversation.
    pub fn request(
        &mut self,
        conversation: ConversationId,
        category: Category,
        target: Target,
    ) -> Placement {
        debug_assert!(!self.queued.contains_key(&conversation));
        debug_assert!(!self.assigned.contains_key(&conversation));
        // Work conservation (no waiting conversation has an available agent) means an agent
        // free for this target is not wanted by anyone already waiting: assign directly.
        if let Some(agent) = self.next_available(&target, None) {
            self.assign(conversation, agent.clone(), category, target);
            return Placement::Assigned(agent);
        }
        self.push(conversation, category, target, None, 1);
        Placement::Queued {
            position: self.position(&conversation).unwrap_or(1),
        }
    }

    /// Moves an assigned conversation to another target (a team). The agent it leaves is
    /// excluded from taking it back. Returns where it went and what the freed slot took.
    ///
    /// # Errors
    /// [`TransferError::NotAssigned`] when the conversation has no agent.
    pub fn transfer(
        &mut self,
        conversation: ConversationId,
        target: Target,
    ) -> Result<(Placement, Vec<Assignment>), TransferError> {
        let entry = self.unassign(&conversation)?;
        let placement = match self.next_available(&target, Some(&entry.agent)) {
            Some(agent) => {
                self.assign(conversation, agent.clone(), entry.category, target);
                Placement::Assigned(agent)
            }
            None => {
                self.push(conversation, entry.category, target, Some(entry.agent), 0);
                Placement::Queued {
                    position: self.position(&conversation).unwrap_or(1),
                }
            }
        };
        Ok((placement, self.drain_queue()))
    }

    /// Moves an assigned conversation to a named agent, who must be accepting chats with a free
    /// slot (capacity is never exceeded, not even by a transfer). The conversation keeps its
    /// target. Returns what the freed slot took.
    ///
    /// # Errors
    /// When the conversation has no agent, or the named agent is not available.
    pub fn transfer_to_agent(
        &mut self,
        conversation: ConversationId,
        to: &AgentId,
    ) -> Result<Vec<Assignment>, TransferError> {
        let from = self
            .assigned
            .get(&conversation)
            .ok_or(TransferError::NotAssigned)?;
        if &from.agent == to || !self.agents.get(to).is_some_and(AgentSlot::available) {
            return Err(TransferError::AgentUnavailable);
        }
        let entry = self.unassign(&conversation)?;
        self.assign(conversation, to.clone(), entry.category, entry.target);
        Ok(self.drain_queue())
    }

    /// Takes an assigned conversation back from its agent (who did not answer in time) and puts
    /// it at the head of its queue, excluded from that agent. Returns its position and what
    /// was assigned afterwards (possibly this conversation, to someone else).
    ///
    /// # Errors
    /// [`TransferError::NotAssigned`] when the conversation has no agent.
    pub fn requeue(
        &mut self,
        conversation: ConversationId,
    ) -> Result<(usize, Vec<Assignment>), TransferError> {
        let entry = self.unassign(&conversation)?;
        self.push(
            conversation,
            entry.category,
            entry.target,
            Some(entry.agent),
            0,
        );
        let position = self.position(&conversation).unwrap_or(1);
        Ok((position, self.drain_queue()))
    }

    /// Moves a waiting conversation to the head of its queue (tier 0), optionally to another
    /// target (an escalation while it waits), then hands out what can be. Returns its position
    /// and the assignments made, or `None` when it was not queued.
    pub fn promote(
        &mut self,
        conversation: &ConversationId,
        target: Option<Target>,
    ) -> Option<(usize, Vec<Assignment>)> {
        let key = self.queued.remove(conversation)?;
        let entry = self.queue.remove(&key)?;
        self.push(
            entry.conversation,
            entry.category,
            target.unwrap_or(entry.target),
            entry.exclude,
            0,
        );
        let position = self.position(conversation).unwrap_or(1);
        Some((position, self.drain_queue()))
    }

    /// A conversation ended (closed, or its visitor left): frees its agent's slot or its place
    /// in the queue, then hands out queued conversations.
    pub fn release(&mut self, conversation: &ConversationId) -> Vec<Assignment> {
        if let Some(key) = self.queued.remove(conversation) {
            self.queue.remove(&key);
            return Vec::new();
        }
        if self.unassign(conversation).is_ok() {
            return self.drain_queue();
        }
        Vec::new()
    }

    /// Records an assignment that exists already (restored after a restart), even if the agent
    /// is above capacity or not accepting: the chat was theirs before the restart.
    pub fn restore_assignment(
        &mut self,
        conversation: ConversationId,
        agent: &AgentId,
        capacity: u32,
        teams: &[TeamId],
        category: Category,
        target: Target,
    ) {
        if !self.agents.contains_key(agent) {
            self.set_agent(agent, capacity, false, teams);
        }
        self.assign(conversation, agent.clone(), category, target);
    }

    /// 1-based position in its target's queue, if queued.
    pub fn position(&self, conversation: &ConversationId) -> Option<usize> {
        let key = self.queued.get(conversation)?;
        let target = &self.queue.get(key)?.target;
        Some(
            self.queue
                .range(..key)
                .filter(|(_, e)| &e.target == target)
                .count()
                + 1,
        )
    }

    /// Queued conversations in serving order, each with its position in its target's queue.
    pub fn queue_positions(&self) -> Vec<(ConversationId, &Category, usize)> {
        let mut seen: HashMap<&Target, usize> = HashMap::new();
        self.queue
            .values()
            .map(|e| {
                let n = seen.entry(&e.target).or_default();
                *n += 1;
                (e.conversation, &e.category, *n)
            })
            .collect()
    }

    /// Queued conversations in serving order.
    pub fn queue_order(&self) -> impl Iterator<Item = (&ConversationId, &Category)> + '_ {
        self.queue.values().map(|e| (&e.conversation, &e.category))
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub fn agent_of(&self, conversation: &ConversationId) -> Option<&AgentId> {
        self.assigned.get(conversation).map(|a| &a.agent)
    }

    /// The target of an assigned or queued conversation.
    pub fn target_of(&self, conversation: &ConversationId) -> Option<&Target> {
        if let Some(a) = self.assigned.get(conversation) {
            return Some(&a.target);
        }
        let key = self.queued.get(conversation)?;
        self.queue.get(key).map(|e| &e.target)
    }

    /// (load, capacity, accepting) of an agent.
    pub fn agent_load(&self, agent: &AgentId) -> Option<(u32, u32, bool)> {
        self.agents
            .get(agent)
            .map(|s| (s.load, s.capacity, s.accepting))
    }

    /// Whether any agent accepting chats serves `target` (busy or not): "is anyone there".
    pub fn anyone_accepting(&self, target: &Target) -> bool {
        self.agents
            .values()
            .any(|s| s.accepting && s.serves(target))
    }

    /// Agents taking chats, and the sum of their loads and capacities: for utilisation metrics.
    pub fn utilisation(&self) -> (u32, u32, u32) {
        self.agents
            .values()
            .filter(|s| s.accepting)
            .fold((0, 0, 0), |(n, load, cap), s| {
                (n + 1, load + s.load, cap + s.capacity)
            })
    }

    fn push(
        &mut self,
        conversation: ConversationId,
        category: Category,
        target: Target,
        exclude: Option<AgentId>,
        tier: u8,
    ) {
        self.arrivals += 1;
        let key = QueueKey {
            tier,
            priority: self.categories.rank(&category),
            arrival: self.arrivals,
        };
        self.queue.insert(
            key,
            QueueEntry {
                conversation,
                category,
                target,
                exclude,
            },
        );
        self.queued.insert(conversation, key);
    }

    fn assign(
        &mut self,
        conversation: ConversationId,
        agent: AgentId,
        category: Category,
        target: Target,
    ) {
        if let Some(slot) = self.agents.get_mut(&agent) {
            slot.load += 1;
        }
        self.assigned.insert(
            conversation,
            AssignedEntry {
                agent,
                category,
                target,
            },
        );
    }

    fn unassign(&mut self, conversation: &ConversationId) -> Result<AssignedEntry, TransferError> {
        let entry = self
            .assigned
            .remove(conversation)
            .ok_or(TransferError::NotAssigned)?;
        if let Some(slot) = self.agents.get_mut(&entry.agent) {
            slot.load = slot.load.saturating_sub(1);
        }
        Ok(entry)
    }

    fn cursor(&self, target: &Target) -> RingScore {
        self.cursors
            .get(target)
            .copied()
            .unwrap_or(RingScore::START)
    }

    /// The next available agent for `target` after its cursor (other than `exclude`),
    /// moving that cursor to it. As the scripts' `pick`: agents scored above the cursor, then
    /// round from the lowest score up to the cursor itself, so the agent served last (if it is
    /// still there) comes last.
    fn next_available(&mut self, target: &Target, exclude: Option<&AgentId>) -> Option<AgentId> {
        let cursor = self.cursor(target);
        let after = self.ring.range((Bound::Excluded(cursor), Bound::Unbounded));
        let wrapped = self.ring.range(..=cursor);
        let (score, agent) = after.chain(wrapped).find(|(_, agent)| {
            Some(*agent) != exclude
                && self
                    .agents
                    .get(*agent)
                    .is_some_and(|s| s.available() && s.serves(target))
        })?;
        let (score, agent) = (*score, agent.clone());
        self.cursors.insert(target.clone(), score);
        Some(agent)
    }

    /// Hands out queued conversations in queue order, each to the next available agent of its
    /// target. A conversation nobody can take now is skipped, not blocking others behind it.
    fn drain_queue(&mut self) -> Vec<Assignment> {
        let mut made = Vec::new();
        // Targets with nobody available in this pass, so a long queue for a busy team is not
        // searched again for every entry.
        let mut exhausted: HashSet<Target> = HashSet::new();
        let keys: Vec<QueueKey> = self.queue.keys().copied().collect();
        for key in keys {
            if !self.agents.values().any(AgentSlot::available) {
                break;
            }
            let Some(entry) = self.queue.get(&key) else {
                continue;
            };
            if entry.exclude.is_none() && exhausted.contains(&entry.target) {
                continue;
            }
            let target = entry.target.clone();
            let exclude = entry.exclude.clone();
            let Some(agent) = self.next_available(&target, exclude.as_ref()) else {
                if exclude.is_none() {
                    exhausted.insert(target);
                }
                continue;
            };
            let entry = self.queue.remove(&key).expect("key just seen");
            self.queued.remove(&entry.conversation);
            self.assign(
                entry.conversation,
                agent.clone(),
                entry.category,
                entry.target,
            );
            made.push(Assignment {
                conversation: entry.conversation,
                agent,
            });
        }
        made
    }

    /// Checks every invariant; for tests.
    #[cfg(test)]
    fn check_invariants(&self) {
        let mut loads: HashMap<&AgentId, u32> = HashMap::new();
        for (conversation, a) in &self.assigned {
            assert!(
                !self.queued.contains_key(conversation),
                "{conversation} both queued and assigned"
            );
            assert!(self.agents.contains_key(&a.agent), "{} unknown", a.agent);
            *loads.entry(&a.agent).or_default() += 1;
        }
        for (agent, slot) in &self.agents {
            assert_eq!(
                slot.load,
                loads.get(agent).copied().unwrap_or(0),
                "load of {agent}"
            );
        }
        assert_eq!(self.ring.len(), self.agents.len(), "ring and agents");
        for (agent, slot) in &self.agents {
            assert_eq!(
                self.ring.get(&slot.ring_score),
                Some(agent),
                "{agent} at its ring score"
            );
        }
        assert_eq!(self.queue.len(), self.queued.len());
        for entry in self.queue.values() {
            let idle = self.agents.iter().find(|(id, s)| {
                s.available() && s.serves(&entry.target) && Some(*id) != entry.exclude.as_ref()
            });
            assert!(
                idle.is_none(),
                "{:?} is idle while {} waits for {:?}",
                idle.map(|(id, _)| id),
                entry.conversation,
                entry.target
            );
        }
    }
}

#[cfg(test)]
mod tests;
