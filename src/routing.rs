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
//!   rotation and never more than one assignment more than each other.
//! - With nobody available, conversations queue by category priority, then arrival. Chats taken
//!   back from a lost agent go to the very front, ahead of new arrivals, because they already
//!   waited once.
//! - Whenever capacity appears (slot freed, agent back online), the queue head is assigned at once.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::domain::{AgentId, Category, ConversationId};

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

/// The result of asking for an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Assigned(AgentId),
    /// Waiting; `position` 1 is the head.
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

/// Queue order: tier (0 = returned from a lost agent, 1 = new), then priority, then arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct QueueKey {
    tier: u8,
    priority: usize,
    arrival: u64,
}

#[derive(Debug, Clone)]
struct AgentSlot {
    capacity: u32,
    load: u32,
    /// Online and connected: may receive new conversations (when below capacity).
    accepting: bool,
}

impl AgentSlot {
    fn available(&self) -> bool {
        self.accepting && self.load < self.capacity
    }
}

/// Routing state for one desk. Every method keeps the invariants listed in the module docs.
#[derive(Debug)]
pub struct Router {
    categories: Categories,
    /// Every agent the router knows, accepting or not; an agent leaves only by [`Router::remove_agent`].
    agents: HashMap<AgentId, AgentSlot>,
    /// The round-robin ring. A new agent is inserted at the cursor, so it is served next.
    ring: Vec<AgentId>,
    /// Index in `ring` where the next search for an available agent starts.
    cursor: usize,
    queue: BTreeMap<QueueKey, (ConversationId, Category)>,
    /// Reverse index of `queue`, so removal and lookups do not scan.
    queued: HashMap<ConversationId, QueueKey>,
    assigned: HashMap<ConversationId, AgentId>,
    /// Monotonic arrival counter: ties in priority are served first come, first served.
    arrivals: u64,
}

impl Router {
    pub fn new(categories: Categories) -> Self {
        Self {
            categories,
            agents: HashMap::new(),
            ring: Vec::new(),
            cursor: 0,
            queue: BTreeMap::new(),
            queued: HashMap::new(),
            assigned: HashMap::new(),
            arrivals: 0,
        }
    }

    pub fn categories(&self) -> &Categories {
        &self.categories
    }

    /// Adds an agent or updates its capacity and whether it accepts new chats, then hands out
    /// queued conversations if capacity appeared. Lowering capacity below the current load keeps
    /// the chats it has; it simply gets no new ones until below the new capacity.
    pub fn set_agent(
        &mut self,
        agent: &AgentId,
        capacity: u32,
        accepting: bool,
    ) -> Vec<Assignment> {
        match self.agents.get_mut(agent) {
            Some(slot) => {
                slot.capacity = capacity;
                slot.accepting = accepting;
            }
            None => {
                self.agents.insert(
                    agent.clone(),
                    AgentSlot {
                        capacity,
                        load: 0,
                        accepting,
                    },
                );
                // Next in line: it has had no turn yet, so it goes before everyone who has.
                self.ring.insert(self.cursor, agent.clone());
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
    pub fn remove_agent(&mut self, agent: &AgentId) -> Vec<ConversationId> {
        if self.agents.remove(agent).is_none() {
            return Vec::new();
        }
        if let Some(i) = self.ring.iter().position(|a| a == agent) {
            self.ring.remove(i);
            if i < self.cursor {
                self.cursor -= 1;
            }
            if self.cursor >= self.ring.len() {
                self.cursor = 0;
            }
        }
        let mut orphaned: Vec<ConversationId> = self
            .assigned
            .iter()
            .filter(|(_, a)| *a == agent)
            .map(|(c, _)| *c)
            .collect();
        // Oldest first (ids are time-ordered UUIDv7), so the longest waiting is served first.
        orphaned.sort();
        for conversation in &orphaned {
            self.assigned.remove(conversation);
        }
        orphaned
    }

    /// Puts conversations taken from a lost agent at the front of the queue (tier 0). It does not
    /// assign them yet, so the caller can tell their visitors first; [`Router::dispatch`] then
    /// hands them out.
    pub fn requeue_front(&mut self, items: &[(ConversationId, Category)]) {
        for (conversation, category) in items {
            self.push(*conversation, category.clone(), 0);
        }
    }

    /// Assigns queued conversations while agents are available.
    pub fn dispatch(&mut self) -> Vec<Assignment> {
        self.drain_queue()
    }

    /// Asks for an agent for a new conversation.
    pub fn request(&mut self, conversation: ConversationId, category: Category) -> Placement {
        debug_assert!(!self.queued.contains_key(&conversation));
        debug_assert!(!self.assigned.contains_key(&conversation));
        // Someone already waiting has precedence over a newcomer, whatever the newcomer's
        // priority: only assign directly when the queue is empty.
        if self.queue.is_empty() {
            if let Some(agent) = self.next_available() {
                self.assign(conversation, agent.clone());
                return Placement::Assigned(agent);
            }
        }
        self.push(conversation, category, 1);
        Placement::Queued {
            position: self.position(&conversation).unwrap_or(1),
        }
    }

    /// A conversation ended (closed, or its visitor left): frees its agent's slot or its place
    /// in the queue, then hands out queued conversations.
    pub fn release(&mut self, conversation: &ConversationId) -> Vec<Assignment> {
        if let Some(key) = self.queued.remove(conversation) {
            self.queue.remove(&key);
            return Vec::new();
        }
        if let Some(agent) = self.assigned.remove(conversation) {
            if let Some(slot) = self.agents.get_mut(&agent) {
                slot.load = slot.load.saturating_sub(1);
            }
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
    ) {
        if !self.agents.contains_key(agent) {
            self.set_agent(agent, capacity, false);
        }
        self.assign(conversation, agent.clone());
    }

    /// 1-based position in the queue, if queued.
    pub fn position(&self, conversation: &ConversationId) -> Option<usize> {
        let key = self.queued.get(conversation)?;
        Some(self.queue.range(..key).count() + 1)
    }

    /// Queued conversations in serving order.
    pub fn queue_order(&self) -> impl Iterator<Item = (&ConversationId, &Category)> + '_ {
        self.queue.values().map(|(c, cat)| (c, cat))
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub fn agent_of(&self, conversation: &ConversationId) -> Option<&AgentId> {
        self.assigned.get(conversation)
    }

    /// (load, capacity, accepting) of an agent.
    pub fn agent_load(&self, agent: &AgentId) -> Option<(u32, u32, bool)> {
        self.agents
            .get(agent)
            .map(|s| (s.load, s.capacity, s.accepting))
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

    fn push(&mut self, conversation: ConversationId, category: Category, tier: u8) {
        self.arrivals += 1;
        let key = QueueKey {
            tier,
            priority: self.categories.rank(&category),
            arrival: self.arrivals,
        };
        self.queue.insert(key, (conversation, category));
        self.queued.insert(conversation, key);
    }

    fn assign(&mut self, conversation: ConversationId, agent: AgentId) {
        if let Some(slot) = self.agents.get_mut(&agent) {
            slot.load += 1;
        }
        self.assigned.insert(conversation, agent);
    }

    /// The next available agent after the cursor, advancing the cursor past it.
    fn next_available(&mut self) -> Option<AgentId> {
        let n = self.ring.len();
        for step in 0..n {
            let i = (self.cursor + step) % n;
            let agent = &self.ring[i];
            if self.agents.get(agent).is_some_and(AgentSlot::available) {
                self.cursor = (i + 1) % n;
                return Some(agent.clone());
            }
        }
        None
    }

    fn drain_queue(&mut self) -> Vec<Assignment> {
        let mut made = Vec::new();
        while let Some((&key, _)) = self.queue.first_key_value() {
            let Some(agent) = self.next_available() else {
                break;
            };
            let (conversation, _) = self.queue.remove(&key).expect("key just seen");
            self.queued.remove(&conversation);
            self.assign(conversation, agent.clone());
            made.push(Assignment {
                conversation,
                agent,
            });
        }
        made
    }

    /// Checks every invariant; for tests.
    #[cfg(test)]
    fn check_invariants(&self) {
        let mut loads: HashMap<&AgentId, u32> = HashMap::new();
        for (conversation, agent) in &self.assigned {
            assert!(
                !self.queued.contains_key(conversation),
                "{conversation} both queued and assigned"
            );
            assert!(self.agents.contains_key(agent), "{agent} unknown");
            *loads.entry(agent).or_default() += 1;
        }
        for (agent, slot) in &self.agents {
            assert_eq!(
                slot.load,
                loads.get(agent).copied().unwrap_or(0),
                "load of {agent}"
            );
        }
        assert_eq!(self.queue.len(), self.queued.len());
        if !self.queue.is_empty() {
            assert!(
                !self.agents.values().any(AgentSlot::available),
                "an agent is idle while conversations wait"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn categories() -> Categories {
        Categories::new(&[
            "security",
            "account",
            "transaction",
            "feature_question",
            "other",
        ])
    }

    fn agent(i: usize) -> AgentId {
        AgentId::parse(&format!("a{i}")).unwrap()
    }

    #[test]
    fn queue_orders_by_priority_then_arrival() {
        let cats = categories();
        let mut r = Router::new(cats.clone());
        let other1 = ConversationId::new();
        let security = ConversationId::new();
        let other2 = ConversationId::new();
        let account = ConversationId::new();
        r.request(other1, cats.parse("other").unwrap());
        r.request(security, cats.parse("security").unwrap());
        r.request(other2, cats.parse("other").unwrap());
        r.request(account, cats.parse("account").unwrap());
        let order: Vec<_> = r.queue_order().map(|(c, _)| *c).collect();
        assert_eq!(order, vec![security, account, other1, other2]);
        assert_eq!(r.position(&other2), Some(4));
        // One agent with capacity 2 takes the two highest.
        let made = r.set_agent(&agent(0), 2, true);
        let got: Vec<_> = made.iter().map(|a| a.conversation).collect();
        assert_eq!(got, vec![security, account]);
        assert_eq!(r.position(&other1), Some(1));
        r.check_invariants();
    }

    #[test]
    fn lost_agents_chats_go_to_the_front() {
        let cats = categories();
        let mut r = Router::new(cats.clone());
        r.set_agent(&agent(0), 1, true);
        let first = ConversationId::new();
        assert_eq!(
            r.request(first, cats.parse("other").unwrap()),
            Placement::Assigned(agent(0))
        );
        let waiting = ConversationId::new();
        r.request(waiting, cats.parse("security").unwrap());
        let orphans = r.remove_agent(&agent(0));
        assert_eq!(orphans, vec![first]);
        r.requeue_front(&[(first, cats.parse("other").unwrap())]);
        assert_eq!(r.position(&first), Some(1));
        assert_eq!(r.position(&waiting), Some(2));
        r.check_invariants();
    }

    #[test]
    fn paused_agent_keeps_chats_but_gets_no_new_ones() {
        let cats = categories();
        let mut r = Router::new(cats.clone());
        r.set_agent(&agent(0), 3, true);
        let c = ConversationId::new();
        r.request(c, cats.parse("other").unwrap());
        r.pause_agent(&agent(0));
        let d = ConversationId::new();
        assert!(matches!(
            r.request(d, cats.parse("other").unwrap()),
            Placement::Queued { position: 1 }
        ));
        assert_eq!(r.agent_of(&c), Some(&agent(0)));
        // Back online: the queued one is assigned at once.
        let made = r.set_agent(&agent(0), 3, true);
        assert_eq!(made.len(), 1);
        assert_eq!(made[0].conversation, d);
        r.check_invariants();
    }

    #[test]
    fn an_agent_joining_mid_rotation_is_next_in_line() {
        let cats = categories();
        let mut r = Router::new(cats.clone());
        r.set_agent(&agent(0), 10, true);
        assert_eq!(
            r.request(ConversationId::new(), cats.parse("other").unwrap()),
            Placement::Assigned(agent(0))
        );
        r.set_agent(&agent(1), 10, true);
        assert_eq!(
            r.request(ConversationId::new(), cats.parse("other").unwrap()),
            Placement::Assigned(agent(1))
        );
        assert_eq!(
            r.request(ConversationId::new(), cats.parse("other").unwrap()),
            Placement::Assigned(agent(0))
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        AddAgent { id: usize, capacity: u32 },
        Pause { id: usize },
        Resume { id: usize },
        Remove { id: usize },
        Request { category: usize },
        Release { pick: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..6usize, 1..4u32).prop_map(|(id, capacity)| Op::AddAgent { id, capacity }),
            (0..6usize).prop_map(|id| Op::Pause { id }),
            (0..6usize).prop_map(|id| Op::Resume { id }),
            (0..6usize).prop_map(|id| Op::Remove { id }),
            (0..5usize).prop_map(|category| Op::Request { category }),
            (0..5usize).prop_map(|category| Op::Request { category }),
            (0..64usize).prop_map(|pick| Op::Release { pick }),
        ]
    }

    proptest! {
        /// Capacity, single assignment, work conservation and queue consistency hold after any
        /// sequence of operations.
        #[test]
        fn invariants_hold_under_any_operations(ops in prop::collection::vec(op(), 1..200)) {
            let cats = categories();
            let mut r = Router::new(cats.clone());
            let mut live: Vec<(ConversationId, Category)> = Vec::new();
            let mut capacities: HashMap<usize, u32> = HashMap::new();
            for op in ops {
                let made = match op {
                    Op::AddAgent { id, capacity } => {
                        capacities.insert(id, capacity);
                        r.set_agent(&agent(id), capacity, true)
                    }
                    Op::Pause { id } => { r.pause_agent(&agent(id)); vec![] }
                    Op::Resume { id } => match capacities.get(&id) {
                        Some(&c) => r.set_agent(&agent(id), c, true),
                        None => vec![],
                    },
                    Op::Remove { id } => {
                        capacities.remove(&id);
                        let orphans = r.remove_agent(&agent(id));
                        let items: Vec<_> = orphans
                            .iter()
                            .map(|c| live.iter().find(|(l, _)| l == c).unwrap().clone())
                            .collect();
                        r.requeue_front(&items);
                        r.dispatch()
                    }
                    Op::Request { category } => {
                        let c = ConversationId::new();
                        let cat = cats.all()[category].clone();
                        live.push((c, cat.clone()));
                        match r.request(c, cat) {
                            Placement::Assigned(a) => {
                                let (load, cap, _) = r.agent_load(&a).unwrap();
                                prop_assert!(load <= cap);
                            }
                            Placement::Queued { position } => {
                                prop_assert_eq!(r.position(&c), Some(position));
                            }
                        }
                        vec![]
                    }
                    Op::Release { pick } => {
                        if live.is_empty() { vec![] } else {
                            let (c, _) = live.remove(pick % live.len());
                            r.release(&c)
                        }
                    }
                };
                for a in made {
                    let (load, cap, accepting) = r.agent_load(&a.agent).unwrap();
                    prop_assert!(load <= cap, "{} over capacity", a.agent);
                    prop_assert!(accepting);
                }
                r.check_invariants();
            }
        }

        /// With a fixed set of always-available agents, round-robin keeps the assignment counts
        /// within one of each other, whatever the number of agents and requests.
        #[test]
        fn round_robin_is_fair(agents in 1..12usize, requests in 1..300usize) {
            let cats = categories();
            let mut r = Router::new(cats.clone());
            for i in 0..agents {
                r.set_agent(&agent(i), u32::MAX, true);
            }
            let mut counts: HashMap<AgentId, usize> = HashMap::new();
            for _ in 0..requests {
                match r.request(ConversationId::new(), cats.parse("other").unwrap()) {
                    Placement::Assigned(a) => *counts.entry(a).or_default() += 1,
                    Placement::Queued { .. } => prop_assert!(false, "queued with free agents"),
                }
            }
            let max = (0..agents).map(|i| counts.get(&agent(i)).copied().unwrap_or(0)).max().unwrap();
            let min = (0..agents).map(|i| counts.get(&agent(i)).copied().unwrap_or(0)).min().unwrap();
            prop_assert!(max - min <= 1, "spread {max}-{min}");
        }

        /// Fairness also holds while conversations close in between (slots free and refill).
        #[test]
        fn round_robin_is_fair_with_releases(agents in 2..8usize, steps in prop::collection::vec(any::<bool>(), 1..300)) {
            let cats = categories();
            let mut r = Router::new(cats.clone());
            for i in 0..agents {
                r.set_agent(&agent(i), 1000, true);
            }
            let mut counts: HashMap<AgentId, usize> = HashMap::new();
            let mut open: Vec<ConversationId> = Vec::new();
            for close_one in steps {
                if close_one && !open.is_empty() {
                    let c = open.remove(0);
                    prop_assert!(r.release(&c).is_empty());
                } else {
                    let c = ConversationId::new();
                    open.push(c);
                    if let Placement::Assigned(a) = r.request(c, cats.parse("other").unwrap()) {
                        *counts.entry(a).or_default() += 1;
                    }
                }
            }
            let all: Vec<usize> = (0..agents).map(|i| counts.get(&agent(i)).copied().unwrap_or(0)).collect();
            prop_assert!(all.iter().max().unwrap() - all.iter().min().unwrap() <= 1);
        }

        /// The queue always serves higher priorities first, and arrival order within one.
        #[test]
        fn queue_serves_by_priority_then_arrival(cats_in in prop::collection::vec(0..5usize, 1..60)) {
            let cats = categories();
            let mut r = Router::new(cats.clone());
            let mut arrivals = Vec::new();
            for (i, &c) in cats_in.iter().enumerate() {
                let id = ConversationId::new();
                r.request(id, cats.all()[c].clone());
                arrivals.push((c, i, id));
            }
            arrivals.sort();
            let expected: Vec<_> = arrivals.iter().map(|(_, _, id)| *id).collect();
            let made = r.set_agent(&agent(0), u32::MAX, true);
            let served: Vec<_> = made.iter().map(|a| a.conversation).collect();
            prop_assert_eq!(served, expected);
        }
    }
}
