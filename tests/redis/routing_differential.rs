//! The routing rules exist twice: in Rust ([`parley::routing::Router`], what the in-process
//! engine runs under its lock) and in Lua (`parley::engine::redis::scripts`, what the Redis
//! engine runs atomically). This differential test keeps the two equal: proptest drives the same
//! random sequences of desk operations (agents joining, leaving, losing their connection,
//! changing status or teams; conversations starting in a category and a team, closing, being
//! transferred to a team or an agent, requeued) through both, on a real `redis-server`, and
//! after every operation compares what each said (assigned to whom, queued at which position,
//! what the queue handed out, in which order) and the whole placement state (every open
//! conversation's agent and queue position, every agent's load, capacity and status).
//!
//! Each operation is called the way the engines call it (`src/engine/local/` and
//! `src/engine/redis/mod.rs`), so a difference here is a difference a user of one engine or
//! the other would see. Nothing in the generator is held back: agents join in any order, at
//! any time, and an agent that left can join again, so where a new agent enters the ring
//! relative to every target's cursor is compared too. The cases are small (4 agents, 2 teams,
//! 3 categories, at most 40 operations) so that 64 cases run in seconds;
//! `PROPTEST_CASES=5000 cargo test --test redis routing_differential` runs more. A second test
//! takes the ring where small cases never go: scores so close that float precision runs out.

use std::cell::RefCell;
use std::collections::BTreeMap;

use parley::domain::{AgentId, ConversationId, TeamId};
use parley::engine::redis::keys::Keys;
use parley::engine::redis::scripts;
use parley::routing::{Assignment, Categories, Placement, Router, Target};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

use crate::harness::RedisServer;

const AGENTS: usize = 4;
const TEAMS: [&str; 2] = ["t0", "t1"];
const CATEGORIES: [&str; 3] = ["security", "account", "other"];
/// The prefix the nodes use, so [`RedisServer::assert_routing_indexes_agree`] reads our keys.
const PREFIX: &str = "parley";

/// One desk operation. `pick` chooses among the open conversations (modulo their number).
#[derive(Debug, Clone)]
enum Op {
    /// An agent connects and goes online (again, possibly with another capacity).
    Join {
        agent: usize,
        capacity: u32,
        teams: u8,
    },
    /// An online agent sets its status (online, or away).
    Status {
        agent: usize,
        online: bool,
    },
    /// An agent's last socket drops while it has chats: its grace period starts.
    ConnectionLost {
        agent: usize,
    },
    /// An agent is forgotten (grace over, or left without chats): its chats go back first.
    Leave {
        agent: usize,
    },
    /// The directory gives an agent other teams.
    Teams {
        agent: usize,
        teams: u8,
    },
    /// A visitor starts a conversation in a category, for any agent or a team.
    Start {
        category: usize,
        target: usize,
    },
    Close {
        pick: usize,
    },
    TransferToTeam {
        pick: usize,
        target: usize,
    },
    TransferToAgent {
        pick: usize,
        agent: usize,
    },
    /// A breached first-response target takes it back from a silent agent.
    Requeue {
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let agent = 0..AGENTS;
    prop_oneof![
        3 => (agent.clone(), 1..=3u32, 0..4u8).prop_map(|(agent, capacity, teams)| Op::Join { agent, capacity, teams }),
        1 => (agent.clone(), any::<bool>()).prop_map(|(agent, online)| Op::Status { agent, online }),
        1 => agent.clone().prop_map(|agent| Op::ConnectionLost { agent }),
        1 => agent.clone().prop_map(|agent| Op::Leave { agent }),
        1 => (agent.clone(), 0..4u8).prop_map(|(agent, teams)| Op::Teams { agent, teams }),
        5 => (0..CATEGORIES.len(), 0..3usize).prop_map(|(category, target)| Op::Start { category, target }),
        2 => (0..64usize).prop_map(|pick| Op::Close { pick }),
        2 => (0..64usize, 0..3usize).prop_map(|(pick, target)| Op::TransferToTeam { pick, target }),
        1 => (0..64usize, agent).prop_map(|(pick, agent)| Op::TransferToAgent { pick, agent }),
        1 => (0..64usize).prop_map(|pick| Op::Requeue { pick }),
    ]
}

fn agent_id(i: usize) -> AgentId {
    AgentId::parse(&format!("a{i}")).unwrap()
}

fn teams(mask: u8) -> Vec<TeamId> {
    TEAMS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, t)| TeamId::parse(t).unwrap())
        .collect()
}

/// The scripts' form of an agent's teams: ",t0,t1," (or "" for none), as `teams_arg` builds it.
fn teams_arg(mask: u8) -> String {
    let teams = teams(mask);
    if teams.is_empty() {
        return String::new();
    }
    let mut s = String::from(",");
    for t in teams {
        s.push_str(t.as_str());
        s.push(',');
    }
    s
}

/// 0: any agent; 1, 2: a team.
fn target(i: usize) -> Target {
    match i {
        0 => Target::Any,
        n => Target::Team(TeamId::parse(TEAMS[n - 1]).unwrap()),
    }
}

fn target_arg(t: &Target) -> &str {
    t.team().map_or("", TeamId::as_str)
}

/// What one operation answered, in a form both sides can produce.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Nothing to compare but the assignments made (joins, status, closes).
    Done,
    Assigned(String),
    /// Queued at this position; for a new conversation, also whether anyone serving its
    /// target is accepting chats (the reason the visitor is told).
    Queued(usize, Option<bool>),
    /// Refused (not its agent, nobody free, no such conversation): the engines turn the
    /// distinct reasons into error frames of their own, so only the refusal is compared.
    Refused,
    /// Conversations returned to the queue by a leaving agent, with their positions.
    Orphans(Vec<(String, usize)>),
}

/// What both sides said about one operation: the answer and the queue's hand-outs in order.
#[derive(Debug, PartialEq, Eq)]
struct Said {
    answer: Answer,
    made: Vec<(String, String)>,
}

fn made_by_router(made: Vec<Assignment>) -> Vec<(String, String)> {
    made.into_iter()
        .map(|a| (a.conversation.to_string(), a.agent.to_string()))
        .collect()
}

/// Flat `conversation, agent, ...` as the scripts return assignments.
fn pairs(flat: &[String]) -> Vec<(String, String)> {
    flat.chunks(2)
        .map(|p| (p[0].clone(), p.get(1).cloned().unwrap_or_default()))
        .collect()
}

/// The Lua side: the routing scripts on a real Redis, called as the Redis engine calls them.
struct Lua {
    con: redis::Connection,
    keys: Keys,
}

impl Lua {
    fn run<T: redis::FromRedisValue>(&mut self, script: &redis::Script, args: &[&str]) -> T {
        let mut inv = script.prepare_invoke();
        for k in self.keys.routing_all() {
            inv.key(k);
        }
        inv.arg(self.keys.prefix());
        for a in args {
            inv.arg(*a);
        }
        inv.invoke(&mut self.con).expect("routing script runs")
    }

    fn hget(&mut self, key: &str, field: &str) -> Option<String> {
        redis::cmd("HGET")
            .arg(self.keys.routing(key))
            .arg(field)
            .query(&mut self.con)
            .expect("HGET")
    }

    fn transfer(&mut self, conv: &str, from: &str, mode: &str, to: &str) -> Said {
        let out: Vec<String> = self.run(&scripts::TRANSFER, &[conv, from, mode, to]);
        let answer = match out[0].as_str() {
            "assigned" => Answer::Assigned(out[1].clone()),
            "queued" => Answer::Queued(out[1].parse().unwrap(), None),
            _ => {
                return Said {
                    answer: Answer::Refused,
                    made: Vec::new(),
                }
            }
        };
        Said {
            answer,
            made: pairs(&out[2..]),
        }
    }
}

/// An agent as the desk knows it (the directory and its status), so that a status change or a
/// team change is passed with the rest of what the engines pass.
#[derive(Debug, Clone, Copy)]
struct Known {
    capacity: u32,
    teams: u8,
    accepting: bool,
}

/// Runs one sequence through both sides; fails at the first difference.
fn run_case(lua: &mut Lua, ops: &[Op]) -> Result<(), TestCaseError> {
    redis::cmd("FLUSHALL")
        .query::<()>(&mut lua.con)
        .expect("FLUSHALL");
    let cats = Categories::new(&CATEGORIES);
    let mut router = Router::new(cats.clone());
    let mut known: BTreeMap<usize, Known> = BTreeMap::new();
    // Open conversations, oldest first.
    let mut open: Vec<ConversationId> = Vec::new();
    let pick = |open: &[ConversationId], i: usize| (!open.is_empty()).then(|| open[i % open.len()]);

    for (step, op) in ops.iter().enumerate() {
        let (rust, redis): (Said, Said) = match *op {
            Op::Join {
                agent,
                capacity,
                teams: mask,
            } => {
                known.insert(
                    agent,
                    Known {
                        capacity,
                        teams: mask,
                        accepting: true,
                    },
                );
                let made = router.set_agent(&agent_id(agent), capacity, true, &teams(mask));
                let out: Vec<String> = lua.run(
                    &scripts::SET_AGENT,
                    &[
                        &format!("a{agent}"),
                        &capacity.to_string(),
                        "1",
                        &teams_arg(mask),
                    ],
                );
                (
                    Said {
                        answer: Answer::Done,
                        made: made_by_router(made),
                    },
                    Said {
                        answer: Answer::Done,
                        made: pairs(&out),
                    },
                )
            }
            Op::Status { agent, online } => {
                let Some(k) = known.get_mut(&agent) else {
                    continue;
                };
                k.accepting = online;
                let k = *k;
                // In-process: online is `set_agent`, anything else `pause_agent` (no drain).
                // Redis: `SET_AGENT` with accepting 0 or 1 either way.
                let made = if online {
                    router.set_agent(&agent_id(agent), k.capacity, true, &teams(k.teams))
                } else {
                    router.pause_agent(&agent_id(agent));
                    Vec::new()
                };
                let out: Vec<String> = lua.run(
                    &scripts::SET_AGENT,
                    &[
                        &format!("a{agent}"),
                        &k.capacity.to_string(),
                        if online { "1" } else { "0" },
                        &teams_arg(k.teams),
                    ],
                );
                (
                    Said {
                        answer: Answer::Done,
                        made: made_by_router(made),
                    },
                    Said {
                        answer: Answer::Done,
                        made: pairs(&out),
                    },
                )
            }
            Op::ConnectionLost { agent } => {
                let Some(k) = known.get_mut(&agent) else {
                    continue;
                };
                k.accepting = false;
                router.pause_agent(&agent_id(agent));
                let _: i64 = lua.run(&scripts::STOP_ACCEPTING, &[&format!("a{agent}")]);
                (
                    Said {
                        answer: Answer::Done,
                        made: Vec::new(),
                    },
                    Said {
                        answer: Answer::Done,
                        made: Vec::new(),
                    },
                )
            }
            Op::Leave { agent } => {
                if known.remove(&agent).is_none() {
                    continue;
                }
                let orphans = router.remove_agent(&agent_id(agent));
                router.requeue_front(&orphans);
                let returned: Vec<(String, usize)> = orphans
                    .iter()
                    .map(|o| {
                        (
                            o.conversation.to_string(),
                            router.position(&o.conversation).unwrap_or(0),
                        )
                    })
                    .collect();
                let made = router.dispatch();
                let out: Vec<String> = lua.run(&scripts::REMOVE_AGENT, &[&format!("a{agent}")]);
                let n: usize = out[0].parse().unwrap();
                let lua_returned: Vec<(String, usize)> = out[1..1 + 2 * n]
                    .chunks(2)
                    .map(|p| (p[0].clone(), p[1].parse().unwrap()))
                    .collect();
                (
                    Said {
                        answer: Answer::Orphans(returned),
                        made: made_by_router(made),
                    },
                    Said {
                        answer: Answer::Orphans(lua_returned),
                        made: pairs(&out[1 + 2 * n..]),
                    },
                )
            }
            Op::Teams { agent, teams: mask } => {
                let Some(k) = known.get_mut(&agent) else {
                    continue;
                };
                k.teams = mask;
                let k = *k;
                let made =
                    router.set_agent(&agent_id(agent), k.capacity, k.accepting, &teams(mask));
                let out: Vec<String> = lua.run(
                    &scripts::SET_AGENT,
                    &[
                        &format!("a{agent}"),
                        &k.capacity.to_string(),
                        if k.accepting { "1" } else { "0" },
                        &teams_arg(mask),
                    ],
                );
                (
                    Said {
                        answer: Answer::Done,
                        made: made_by_router(made),
                    },
                    Said {
                        answer: Answer::Done,
                        made: pairs(&out),
                    },
                )
            }
            Op::Start {
                category,
                target: t,
            } => {
                let c = ConversationId::new();
                open.push(c);
                let category = cats.all()[category].clone();
                let rank = cats.rank(&category).to_string();
                let to = target(t);
                let answer = match router.request(c, category, to.clone()) {
                    Placement::Assigned(a) => Answer::Assigned(a.to_string()),
                    Placement::Queued { position } => {
                        Answer::Queued(position, Some(router.anyone_accepting(&to)))
                    }
                };
                let out: Vec<String> =
                    lua.run(&scripts::REQUEST, &[&c.to_string(), &rank, target_arg(&to)]);
                let lua_answer = match out[0].as_str() {
                    "assigned" => Answer::Assigned(out[1].clone()),
                    _ => Answer::Queued(out[1].parse().unwrap(), Some(out[2] == "1")),
                };
                (
                    Said {
                        answer,
                        made: Vec::new(),
                    },
                    Said {
                        answer: lua_answer,
                        made: Vec::new(),
                    },
                )
            }
            Op::Close { pick: i } => {
                let Some(c) = pick(&open, i) else { continue };
                open.retain(|o| *o != c);
                let made = router.release(&c);
                let out: Vec<String> = lua.run(&scripts::RELEASE, &[&c.to_string()]);
                (
                    Said {
                        answer: Answer::Done,
                        made: made_by_router(made),
                    },
                    Said {
                        answer: Answer::Done,
                        made: pairs(&out),
                    },
                )
            }
            Op::TransferToTeam { pick: i, target: t } => {
                let Some(c) = pick(&open, i) else { continue };
                let to = target(t);
                // The engines: an assigned conversation is transferred by its agent; a waiting
                // one moves to the head of the new target's queue.
                let from = router.agent_of(&c).cloned();
                let rust = match &from {
                    Some(_) => match router.transfer(c, to.clone()) {
                        Ok((Placement::Assigned(a), made)) => Said {
                            answer: Answer::Assigned(a.to_string()),
                            made: made_by_router(made),
                        },
                        Ok((Placement::Queued { position }, made)) => Said {
                            answer: Answer::Queued(position, None),
                            made: made_by_router(made),
                        },
                        Err(_) => Said {
                            answer: Answer::Refused,
                            made: Vec::new(),
                        },
                    },
                    None => match router.promote(&c, Some(to.clone())) {
                        Some((position, made)) => Said {
                            answer: Answer::Queued(position, None),
                            made: made_by_router(made),
                        },
                        None => Said {
                            answer: Answer::Refused,
                            made: Vec::new(),
                        },
                    },
                };
                let from = from.as_ref().map_or("", AgentId::as_str);
                let redis = lua.transfer(&c.to_string(), from, "team", target_arg(&to));
                (rust, redis)
            }
            Op::TransferToAgent { pick: i, agent } => {
                let Some(c) = pick(&open, i) else { continue };
                let from = router.agent_of(&c).cloned();
                let rust = match router.transfer_to_agent(c, &agent_id(agent)) {
                    Ok(made) => Said {
                        answer: Answer::Assigned(format!("a{agent}")),
                        made: made_by_router(made),
                    },
                    Err(_) => Said {
                        answer: Answer::Refused,
                        made: Vec::new(),
                    },
                };
                let from = from.as_ref().map_or("", AgentId::as_str);
                let redis = lua.transfer(&c.to_string(), from, "agent", &format!("a{agent}"));
                (rust, redis)
            }
            Op::Requeue { pick: i } => {
                let Some(c) = pick(&open, i) else { continue };
                let from = router.agent_of(&c).cloned();
                let rust = match &from {
                    Some(_) => match router.requeue(c) {
                        Ok((position, made)) => Said {
                            answer: Answer::Queued(position, None),
                            made: made_by_router(made),
                        },
                        Err(_) => Said {
                            answer: Answer::Refused,
                            made: Vec::new(),
                        },
                    },
                    None => match router.promote(&c, None) {
                        Some((position, made)) => Said {
                            answer: Answer::Queued(position, None),
                            made: made_by_router(made),
                        },
                        None => Said {
                            answer: Answer::Refused,
                            made: Vec::new(),
                        },
                    },
                };
                let from = from.as_ref().map_or("", AgentId::as_str);
                let redis = lua.transfer(&c.to_string(), from, "requeue", "");
                (rust, redis)
            }
        };
        prop_assert_eq!(
            &rust,
            &redis,
            "step {} {:?}: Router (left) and Lua (right) answered differently",
            step,
            op
        );
        compare_state(lua, &router, &known, &open)
            .map_err(|e| TestCaseError::fail(format!("after step {step} {op:?}: {e}")))?;
    }
    Ok(())
}

/// Every open conversation's agent and position, and every agent's load, capacity and status,
/// the same on both sides.
fn compare_state(
    lua: &mut Lua,
    router: &Router,
    known: &BTreeMap<usize, Known>,
    open: &[ConversationId],
) -> Result<(), TestCaseError> {
    if !open.is_empty() {
        let ids: Vec<String> = open.iter().map(ToString::to_string).collect();
        let args: Vec<&str> = ids.iter().map(String::as_str).collect();
        let positions: Vec<usize> = lua.run(&scripts::POSITIONS, &args);
        for (c, lua_position) in open.iter().zip(positions) {
            let rust = (
                router.agent_of(c).map(ToString::to_string),
                router.position(c).unwrap_or(0),
            );
            let redis = (lua.hget("assigned", &c.to_string()), lua_position);
            prop_assert_eq!(
                rust,
                redis,
                "conversation {} (agent, position): Router left, Lua right",
                c
            );
        }
    }
    for &agent in known.keys() {
        let a = format!("a{agent}");
        let (load, capacity, accepting) = router.agent_load(&agent_id(agent)).expect("known agent");
        let lua_load: u32 = lua.hget("load", &a).map_or(0, |l| l.parse().unwrap());
        let lua_cap: u32 = lua.hget("cap", &a).map_or(0, |l| l.parse().unwrap());
        let lua_accepting: bool = redis::cmd("SISMEMBER")
            .arg(lua.keys.routing("accepting"))
            .arg(&a)
            .query(&mut lua.con)
            .expect("SISMEMBER");
        prop_assert_eq!(
            (load, capacity, accepting),
            (lua_load, lua_cap, lua_accepting),
            "agent {} (load, capacity, accepting): Router left, Lua right",
            a
        );
    }
    Ok(())
}

/// A `redis-server` of this test's own and a connection to it, or `None` where redis-server
/// is not installed.
fn start_lua(rt: &tokio::runtime::Runtime) -> Option<(RedisServer, Lua)> {
    let server = rt.block_on(RedisServer::start())?;
    let con = redis::Client::open(server.url())
        .unwrap()
        .get_connection()
        .expect("redis connection");
    let lua = Lua {
        con,
        keys: Keys::new(PREFIX),
    };
    Some((server, lua))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Same operations, same placements: the Router and the Lua scripts agree on every step.
#[test]
fn the_router_and_the_lua_scripts_place_every_conversation_alike() {
    let rt = runtime();
    let Some((server, lua)) = start_lua(&rt) else {
        return;
    };
    // `TestRunner::run` takes an `Fn`; one connection serves every case, in turn.
    let lua = RefCell::new(lua);
    // 64 cases keep CI fast; PROPTEST_CASES asks for more (or fewer).
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&prop::collection::vec(op(), 1..40), |ops| {
        run_case(&mut lua.borrow_mut(), &ops)?;
        // The scripts' own indexes stay derived from their data whatever was done.
        rt.block_on(server.assert_routing_indexes_agree());
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Agents joining one after another right after the same cursor halve the gap between it and
/// the next agent each time, until float precision runs out (about 52 times) and a new agent
/// goes to the end of the ring instead. Then chats move the cursor onto those deep scores while
/// more agents join right after it, so the join's lookup starts from scores with more digits
/// than Lua prints a number with. Both sides must still agree, step by step.
#[test]
fn joins_that_exhaust_float_precision_place_alike() {
    let rt = runtime();
    let Some((server, mut lua)) = start_lua(&rt) else {
        return;
    };
    let start = |category: usize, target: usize| Op::Start { category, target };
    let mut ops = vec![
        Op::Join {
            agent: 0,
            capacity: 3,
            teams: 3,
        },
        Op::Join {
            agent: 1,
            capacity: 3,
            teams: 1,
        },
        // The "any agent" cursor is now on a0, where it stays while the next ones join.
        start(0, 0),
    ];
    ops.extend((2..60).map(|agent| Op::Join {
        agent,
        capacity: 2,
        teams: u8::try_from(agent % 4).unwrap(),
    }));
    for round in 0..60usize {
        ops.push(start(round % 3, 0));
        ops.push(start(round % 3, 1 + round % 2));
        if round % 2 == 0 {
            ops.push(Op::Join {
                agent: 60 + round,
                capacity: 2,
                teams: u8::try_from(round % 4).unwrap(),
            });
        }
        if round % 5 == 0 {
            ops.push(Op::Leave { agent: 2 + round });
        }
        if round % 4 == 0 {
            ops.push(Op::Close { pick: round });
        }
    }
    if let Err(e) = run_case(&mut lua, &ops) {
        panic!("{e}");
    }
    rt.block_on(server.assert_routing_indexes_agree());
}
