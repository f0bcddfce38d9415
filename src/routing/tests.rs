//! Router tests: the routing rules as unit tests and properties.

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
    r.request(other1, cats.parse("other").unwrap(), Target::Any);
    r.request(security, cats.parse("security").unwrap(), Target::Any);
    r.request(other2, cats.parse("other").unwrap(), Target::Any);
    r.request(account, cats.parse("account").unwrap(), Target::Any);
    let order: Vec<_> = r.queue_order().map(|(c, _)| *c).collect();
    assert_eq!(order, vec![security, account, other1, other2]);
    assert_eq!(r.position(&other2), Some(4));
    // One agent with capacity 2 takes the two highest.
    let made = r.set_agent(&agent(0), 2, true, &[]);
    let got: Vec<_> = made.iter().map(|a| a.conversation).collect();
    assert_eq!(got, vec![security, account]);
    assert_eq!(r.position(&other1), Some(1));
    r.check_invariants();
}

#[test]
fn lost_agents_chats_go_to_the_front() {
    let cats = categories();
    let mut r = Router::new(cats.clone());
    r.set_agent(&agent(0), 1, true, &[]);
    let first = ConversationId::new();
    assert_eq!(
        r.request(first, cats.parse("other").unwrap(), Target::Any),
        Placement::Assigned(agent(0))
    );
    let waiting = ConversationId::new();
    r.request(waiting, cats.parse("security").unwrap(), Target::Any);
    let orphans = r.remove_agent(&agent(0));
    assert_eq!(
        orphans,
        vec![Orphan {
            conversation: first,
            category: cats.parse("other").unwrap(),
            target: Target::Any
        }]
    );
    r.requeue_front(&orphans);
    assert_eq!(r.position(&first), Some(1));
    assert_eq!(r.position(&waiting), Some(2));
    r.check_invariants();
}

#[test]
fn paused_agent_keeps_chats_but_gets_no_new_ones() {
    let cats = categories();
    let mut r = Router::new(cats.clone());
    r.set_agent(&agent(0), 3, true, &[]);
    let c = ConversationId::new();
    r.request(c, cats.parse("other").unwrap(), Target::Any);
    r.pause_agent(&agent(0));
    let d = ConversationId::new();
    assert!(matches!(
        r.request(d, cats.parse("other").unwrap(), Target::Any),
        Placement::Queued { position: 1 }
    ));
    assert_eq!(r.agent_of(&c), Some(&agent(0)));
    // Back online: the queued one is assigned at once.
    let made = r.set_agent(&agent(0), 3, true, &[]);
    assert_eq!(made.len(), 1);
    assert_eq!(made[0].conversation, d);
    r.check_invariants();
}

#[test]
fn an_agent_joining_mid_rotation_is_next_in_line() {
    let cats = categories();
    let mut r = Router::new(cats.clone());
    r.set_agent(&agent(0), 10, true, &[]);
    assert_eq!(
        r.request(
            ConversationId::new(),
            cats.parse("other").unwrap(),
            Target::Any
        ),
        Placement::Assigned(agent(0))
    );
    r.set_agent(&agent(1), 10, true, &[]);
    assert_eq!(
        r.request(
            ConversationId::new(),
            cats.parse("other").unwrap(),
            Target::Any
        ),
        Placement::Assigned(agent(1))
    );
    assert_eq!(
        r.request(
            ConversationId::new(),
            cats.parse("other").unwrap(),
            Target::Any
        ),
        Placement::Assigned(agent(0))
    );
}

fn team(i: usize) -> TeamId {
    TeamId::parse(["front", "tech"][i]).unwrap()
}

/// Targets for generated operations: any agent, or one of two teams.
fn target(i: usize) -> Target {
    match i {
        0 => Target::Any,
        t => Target::Team(team(t - 1)),
    }
}

/// Team memberships from a bit mask: 0 none, 1 front, 2 tech, 3 both.
fn teams(mask: u8) -> Vec<TeamId> {
    (0..2).filter(|i| mask & (1 << i) != 0).map(team).collect()
}

#[test]
fn team_conversations_go_round_robin_to_team_members_only() {
    let cats = categories();
    let mut r = Router::new(cats.clone());
    r.set_agent(&agent(0), 10, true, &teams(1));
    r.set_agent(&agent(1), 10, true, &teams(2));
    r.set_agent(&agent(2), 10, true, &teams(3));
    let tech = Target::Team(team(1));
    let mut got = Vec::new();
    for _ in 0..4 {
        match r.request(
            ConversationId::new(),
            cats.parse("security").unwrap(),
            tech.clone(),
        ) {
            Placement::Assigned(a) => got.push(a),
            Placement::Queued { .. } => panic!("queued with tech agents free"),
        }
    }
    assert!(
        !got.contains(&agent(0)),
        "a front-line agent got a tech chat: {got:?}"
    );
    assert_eq!(got.iter().filter(|a| **a == agent(1)).count(), 2);
    assert_eq!(got.iter().filter(|a| **a == agent(2)).count(), 2);
    r.check_invariants();
}

#[test]
fn a_busy_team_does_not_hold_up_another_teams_queue() {
    let cats = categories();
    let mut r = Router::new(cats.clone());
    let tech = Target::Team(team(1));
    // Nobody online: a high-priority tech chat queues ahead of a low-priority general one.
    let tech_chat = ConversationId::new();
    let general = ConversationId::new();
    r.request(tech_chat, cats.parse("security").unwrap(), tech.clone());
    r.request(general, cats.parse("other").unwrap(), Target::Any);
    assert_eq!(r.position(&tech_chat), Some(1));
    assert_eq!(
        r.position(&general),
        Some(1),
        "positions count within a target"
    );
    // A front-line agent arrives: it cannot take the tech chat but takes the general one.
    let made = r.set_agent(&agent(0), 3, true, &teams(1));
    assert_eq!(
        made,
        vec![Assignment {
            conversation: general,
            agent: agent(0)
        }]
    );
    assert_eq!(r.position(&tech_chat), Some(1));
    r.check_invariants();
}

#[test]
fn a_transfer_to_a_team_skips_the_sender_and_waits_at_the_front() {
    let cats = categories();
    let mut r = Router::new(cats.clone());
    r.set_agent(&agent(0), 3, true, &teams(3));
    let c = ConversationId::new();
    assert_eq!(
        r.request(c, cats.parse("other").unwrap(), Target::Any),
        Placement::Assigned(agent(0))
    );
    let waiting = ConversationId::new();
    r.set_agent(&agent(0), 1, true, &teams(3));
    r.request(
        waiting,
        cats.parse("security").unwrap(),
        Target::Team(team(1)),
    );
    // agent 0 is the only tech member: the transfer must not hand the chat back to it.
    let (placement, made) = r.transfer(c, Target::Team(team(1))).unwrap();
    assert_eq!(
        placement,
        Placement::Queued { position: 1 },
        "ahead of new arrivals"
    );
    // The freed slot went to the chat that was waiting.
    assert_eq!(
        made,
        vec![Assignment {
            conversation: waiting,
            agent: agent(0)
        }]
    );
    assert_eq!(r.target_of(&c), Some(&Target::Team(team(1))));
    // A second tech agent comes: it takes the transferred chat.
    let made = r.set_agent(&agent(1), 3, true, &teams(2));
    assert_eq!(
        made,
        vec![Assignment {
            conversation: c,
            agent: agent(1)
        }]
    );
    r.check_invariants();
}

#[test]
fn a_transfer_to_a_named_agent_needs_a_free_slot() {
    let cats = categories();
    let mut r = Router::new(cats.clone());
    r.set_agent(&agent(0), 3, true, &[]);
    r.set_agent(&agent(1), 1, true, &[]);
    let first = ConversationId::new();
    let second = ConversationId::new();
    // Round robin: agent 1 was added last, so it is next in line.
    assert_eq!(
        r.request(first, cats.parse("other").unwrap(), Target::Any),
        Placement::Assigned(agent(1))
    );
    assert_eq!(
        r.request(second, cats.parse("other").unwrap(), Target::Any),
        Placement::Assigned(agent(0))
    );
    assert_eq!(
        r.transfer_to_agent(second, &agent(1)),
        Err(TransferError::AgentUnavailable),
        "agent 1 is full"
    );
    assert_eq!(
        r.transfer_to_agent(second, &agent(0)),
        Err(TransferError::AgentUnavailable),
        "to itself"
    );
    r.release(&first);
    assert_eq!(r.transfer_to_agent(second, &agent(1)), Ok(vec![]));
    assert_eq!(r.agent_of(&second), Some(&agent(1)));
    assert_eq!(r.agent_load(&agent(0)).unwrap().0, 0);
    assert_eq!(
        r.transfer_to_agent(ConversationId::new(), &agent(0)),
        Err(TransferError::NotAssigned)
    );
    r.check_invariants();
}

#[test]
fn a_requeued_conversation_goes_to_someone_else_first() {
    let cats = categories();
    let mut r = Router::new(cats.clone());
    r.set_agent(&agent(0), 3, true, &[]);
    let c = ConversationId::new();
    r.request(c, cats.parse("other").unwrap(), Target::Any);
    let (position, made) = r.requeue(c).unwrap();
    assert_eq!(
        (position, made),
        (1, vec![]),
        "the silent agent does not get it back"
    );
    let made = r.set_agent(&agent(1), 3, true, &[]);
    assert_eq!(
        made,
        vec![Assignment {
            conversation: c,
            agent: agent(1)
        }]
    );
    r.check_invariants();
}

/// Asks for an agent for a new "other" conversation and returns who got it.
fn assigned_to(r: &mut Router, target: &Target) -> AgentId {
    let cats = r.categories().clone();
    match r.request(
        ConversationId::new(),
        cats.parse("other").unwrap(),
        target.clone(),
    ) {
        Placement::Assigned(a) => a,
        Placement::Queued { .. } => panic!("queued with agents free for {target:?}"),
    }
}

/// The sequence that told the Router and the Redis scripts apart when the Router kept ring
/// indexes: a team that has served nobody starts at the lowest ring score, as the scripts'
/// cursor `0` does, not at whatever agent was inserted at the front of a list.
#[test]
fn a_team_that_served_nobody_starts_at_the_lowest_ring_score() {
    let front = Target::Team(team(0));
    let mut r = Router::new(categories());
    r.set_agent(&agent(0), 2, true, &teams(1)); // score 1
    assert_eq!(assigned_to(&mut r, &Target::Any), agent(0)); // "any" cursor 1
    r.set_agent(&agent(1), 1, true, &teams(1)); // nobody after 1: score 2
    assert_eq!(assigned_to(&mut r, &front), agent(0));
    assert_eq!(assigned_to(&mut r, &front), agent(1));
    r.check_invariants();
}

/// A cursor is the ring score of the agent served last and outlives that agent. Here the agent
/// leaves and joins again right after the "any agent" cursor, which gives it back the very
/// score the team's cursor holds; so for that team it is the agent served last, and comes after
/// the others, as on Redis (the Router's old list index made it next instead).
#[test]
fn an_agent_that_left_and_rejoined_at_the_teams_cursor_waits_its_turn() {
    let front = Target::Team(team(0));
    let mut r = Router::new(categories());
    r.set_agent(&agent(0), 10, true, &teams(1)); // score 1
    assert_eq!(assigned_to(&mut r, &Target::Any), agent(0)); // "any" cursor 1
    r.set_agent(&agent(1), 10, true, &teams(1)); // score 2
    r.set_agent(&agent(2), 10, true, &teams(1)); // between 1 and 2: 1.5
    assert_eq!(assigned_to(&mut r, &front), agent(0));
    let cats = r.categories().clone();
    let chat = ConversationId::new();
    assert_eq!(
        r.request(chat, cats.parse("other").unwrap(), front.clone()),
        Placement::Assigned(agent(2))
    ); // team cursor 1.5
    r.release(&chat);
    assert!(r.remove_agent(&agent(2)).is_empty());
    r.set_agent(&agent(2), 10, true, &teams(1)); // between 1 and 2 again: 1.5
    assert_eq!(assigned_to(&mut r, &front), agent(1));
    assert_eq!(assigned_to(&mut r, &front), agent(0));
    assert_eq!(assigned_to(&mut r, &front), agent(2));
    r.check_invariants();
}

/// Each agent joining right after the same cursor takes the midpoint to the one before it,
/// until the two are too close for a float between them; then it goes to the end of the ring,
/// as the scripts do, and every score stays distinct.
#[test]
fn joins_after_one_cursor_fall_back_to_the_end_of_the_ring_when_precision_runs_out() {
    let mut r = Router::new(categories());
    r.set_agent(&agent(0), 10, true, &[]); // score 1
    r.set_agent(&agent(1), 10, true, &[]); // nobody after 0 but a0: 0.5
    assert_eq!(assigned_to(&mut r, &Target::Any), agent(1)); // "any" cursor 0.5
    assert_eq!(assigned_to(&mut r, &Target::Any), agent(0)); // "any" cursor 1
    let score = |r: &Router, i: usize| r.agents[&agent(i)].ring_score.0;
    let mut previous = 2.0;
    let mut midpoints = 0;
    for i in 2..70 {
        r.set_agent(&agent(i), 10, true, &[]);
        let s = score(&r, i);
        if s > 1.0 && s < previous {
            midpoints += 1;
            previous = s;
        } else {
            let highest_before = r.ring.keys().rev().nth(1).unwrap().0;
            assert_eq!(s, highest_before + 1.0, "a{i} at the end of the ring");
        }
    }
    assert_eq!(
        midpoints, 52,
        "an f64 has 52 bits of fraction between 1 and 2"
    );
    // The deepest agent is right after the cursor, so it is next.
    let deepest = (2..70)
        .min_by(|a, b| score(&r, *a).total_cmp(&score(&r, *b)))
        .unwrap();
    assert_eq!(assigned_to(&mut r, &Target::Any), agent(deepest));
    r.check_invariants();
}

/// Whether `agent`'s current teams include the target of `conversation`.
fn serves(r: &Router, agents: &HashMap<usize, (u32, u8)>, a: &AgentId, c: &ConversationId) -> bool {
    let mask = agents
        .get(&a.as_str()[1..].parse::<usize>().unwrap())
        .map_or(0, |x| x.1);
    match r.target_of(c) {
        Some(Target::Team(t)) => teams(mask).contains(t),
        _ => true,
    }
}

#[test]
fn a_promoted_conversation_jumps_the_queue_and_can_change_team() {
    let cats = categories();
    let mut r = Router::new(cats.clone());
    let first = ConversationId::new();
    let late = ConversationId::new();
    r.request(first, cats.parse("security").unwrap(), Target::Any);
    r.request(late, cats.parse("other").unwrap(), Target::Any);
    assert_eq!(r.promote(&late, None), Some((1, vec![])));
    assert_eq!(r.position(&first), Some(2));
    let sup = Target::Team(team(0));
    assert_eq!(r.promote(&late, Some(sup.clone())), Some((1, vec![])));
    assert_eq!(r.target_of(&late), Some(&sup));
    assert_eq!(
        r.position(&first),
        Some(1),
        "alone in its target's queue now"
    );
    let made = r.set_agent(&agent(0), 3, true, &teams(1));
    assert_eq!(made.len(), 2);
    assert_eq!(r.promote(&ConversationId::new(), None), None);
    r.check_invariants();
}

#[derive(Debug, Clone)]
enum Op {
    AddAgent { id: usize, capacity: u32, teams: u8 },
    Pause { id: usize },
    Resume { id: usize },
    Remove { id: usize },
    Request { category: usize, target: usize },
    Release { pick: usize },
    Transfer { pick: usize, target: usize },
    TransferToAgent { pick: usize, id: usize },
    Requeue { pick: usize },
    Promote { pick: usize, target: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..6usize, 1..4u32, 0..4u8).prop_map(|(id, capacity, teams)| Op::AddAgent {
            id,
            capacity,
            teams
        }),
        (0..6usize).prop_map(|id| Op::Pause { id }),
        (0..6usize).prop_map(|id| Op::Resume { id }),
        (0..6usize).prop_map(|id| Op::Remove { id }),
        (0..5usize, 0..3usize).prop_map(|(category, target)| Op::Request { category, target }),
        (0..5usize, 0..3usize).prop_map(|(category, target)| Op::Request { category, target }),
        (0..64usize).prop_map(|pick| Op::Release { pick }),
        (0..64usize, 0..3usize).prop_map(|(pick, target)| Op::Transfer { pick, target }),
        (0..64usize, 0..6usize).prop_map(|(pick, id)| Op::TransferToAgent { pick, id }),
        (0..64usize).prop_map(|pick| Op::Requeue { pick }),
        (0..64usize, 0..3usize).prop_map(|(pick, target)| Op::Promote { pick, target }),
    ]
}

proptest! {
    /// Capacity, single assignment, team membership, work conservation and queue
    /// consistency hold after any sequence of operations, transfers included.
    #[test]
    fn invariants_hold_under_any_operations(ops in prop::collection::vec(op(), 1..200)) {
        let cats = categories();
        let mut r = Router::new(cats.clone());
        let mut live: Vec<ConversationId> = Vec::new();
        let mut agents: HashMap<usize, (u32, u8)> = HashMap::new();
        let pick = |live: &Vec<ConversationId>, i: usize| (!live.is_empty()).then(|| live[i % live.len()]);
        for op in ops {
            let made = match op {
                Op::AddAgent { id, capacity, teams: mask } => {
                    agents.insert(id, (capacity, mask));
                    r.set_agent(&agent(id), capacity, true, &teams(mask))
                }
                Op::Pause { id } => { r.pause_agent(&agent(id)); vec![] }
                Op::Resume { id } => match agents.get(&id) {
                    Some(&(c, mask)) => r.set_agent(&agent(id), c, true, &teams(mask)),
                    None => vec![],
                },
                Op::Remove { id } => {
                    agents.remove(&id);
                    let orphans = r.remove_agent(&agent(id));
                    r.requeue_front(&orphans);
                    r.dispatch()
                }
                Op::Request { category, target: t } => {
                    let c = ConversationId::new();
                    live.push(c);
                    match r.request(c, cats.all()[category].clone(), target(t)) {
                        Placement::Assigned(a) => {
                            let (load, cap, _) = r.agent_load(&a).unwrap();
                            prop_assert!(load <= cap);
                            prop_assert!(serves(&r, &agents, &a, &c));
                        }
                        Placement::Queued { position } => {
                            prop_assert_eq!(r.position(&c), Some(position));
                        }
                    }
                    vec![]
                }
                Op::Release { pick: i } => match pick(&live, i) {
                    Some(c) => { live.retain(|l| *l != c); r.release(&c) }
                    None => vec![],
                },
                Op::Transfer { pick: i, target: t } => match pick(&live, i) {
                    Some(c) => {
                        let from = r.agent_of(&c).cloned();
                        match r.transfer(c, target(t)) {
                            Ok((placement, made)) => {
                                if let Placement::Assigned(a) = placement {
                                    prop_assert!(serves(&r, &agents, &a, &c));
                                    prop_assert!(Some(a) != from, "transferred back to the sender");
                                }
                                made
                            }
                            Err(e) => { prop_assert!(from.is_none(), "{e}"); vec![] }
                        }
                    }
                    None => vec![],
                },
                Op::TransferToAgent { pick: i, id } => match pick(&live, i) {
                    Some(c) => r.transfer_to_agent(c, &agent(id)).unwrap_or_default(),
                    None => vec![],
                },
                Op::Requeue { pick: i } => match pick(&live, i) {
                    Some(c) => r.requeue(c).map(|(_, made)| made).unwrap_or_default(),
                    None => vec![],
                },
                Op::Promote { pick: i, target: t } => match pick(&live, i) {
                    Some(c) => r.promote(&c, Some(target(t))).map(|(_, made)| made).unwrap_or_default(),
                    None => vec![],
                },
            };
            for a in made {
                let (load, cap, accepting) = r.agent_load(&a.agent).unwrap();
                prop_assert!(load <= cap, "{} over capacity", a.agent);
                prop_assert!(accepting);
                prop_assert!(serves(&r, &agents, &a.agent, &a.conversation), "{} is not in the team of {}", a.agent, a.conversation);
            }
            r.check_invariants();
        }
    }

    /// Within one team, with its members always available, round-robin keeps their counts
    /// within one of each other while other agents and targets are busy around them.
    #[test]
    fn round_robin_is_fair_within_a_team(members in 1..6usize, others in 0..4usize, requests in prop::collection::vec(0..3usize, 1..300)) {
        let cats = categories();
        let mut r = Router::new(cats.clone());
        for i in 0..members {
            r.set_agent(&agent(i), u32::MAX, true, &teams(2));
        }
        for i in members..members + others {
            r.set_agent(&agent(i), u32::MAX, true, &teams(1));
        }
        let mut counts: HashMap<AgentId, usize> = HashMap::new();
        for t in requests {
            let placed = r.request(ConversationId::new(), cats.parse("other").unwrap(), target(t));
            if t == 2 {
                match placed {
                    Placement::Assigned(a) => *counts.entry(a).or_default() += 1,
                    Placement::Queued { .. } => prop_assert!(false, "queued with free members"),
                }
            }
        }
        let all: Vec<usize> = (0..members).map(|i| counts.get(&agent(i)).copied().unwrap_or(0)).collect();
        prop_assert!(all.iter().max().unwrap() - all.iter().min().unwrap() <= 1, "{all:?}");
    }

    /// With a fixed set of always-available agents, round-robin keeps the assignment counts
    /// within one of each other, whatever the number of agents and requests.
    #[test]
    fn round_robin_is_fair(agents in 1..12usize, requests in 1..300usize) {
        let cats = categories();
        let mut r = Router::new(cats.clone());
        for i in 0..agents {
            r.set_agent(&agent(i), u32::MAX, true, &[]);
        }
        let mut counts: HashMap<AgentId, usize> = HashMap::new();
        for _ in 0..requests {
            match r.request(ConversationId::new(), cats.parse("other").unwrap(), Target::Any) {
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
            r.set_agent(&agent(i), 1000, true, &[]);
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
                if let Placement::Assigned(a) = r.request(c, cats.parse("other").unwrap(), Target::Any) {
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
            r.request(id, cats.all()[c].clone(), Target::Any);
            arrivals.push((c, i, id));
        }
        arrivals.sort();
        let expected: Vec<_> = arrivals.iter().map(|(_, _, id)| *id).collect();
        let made = r.set_agent(&agent(0), u32::MAX, true, &[]);
        let served: Vec<_> = made.iter().map(|a| a.conversation).collect();
        prop_assert_eq!(served, expected);
    }
}
