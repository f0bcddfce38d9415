//! The desk's rules as plain functions of plain facts, written once for both engines.
//!
//! The in-process engine ([`crate::engine::local`]) and the Redis engine
//! ([`crate::engine::redis`]) keep their state differently (a `Mutex` over a `Router`, or keys
//! and Lua scripts), but what a state *means* for the desk is the same on one node and on
//! several: what a first-response breach does, why a chat waits, whether a visitor coming back
//! reopens, who hears about a clock, what the visitor is told about the wait, which figures a
//! message moves. Each engine gathers the facts its own way and asks these functions, so the two
//! cannot drift apart. Nothing here reads a clock, a lock or the network; every function has its
//! unit tests below.
//!
//! Where a rule must also run inside a Redis script to stay atomic (response figures in
//! `APPEND`), the Lua text says so and `figures_move_as_a_message_goes_in` documents the Rust
//! side it must equal.

use std::time::Duration;

use crate::config::{BreachAction, CsatMode};
use crate::desk::sla::{FirstResponseClock, SlaState};
use crate::desk::teams::{Closed, Directory};
use crate::domain::{AgentId, Category, Role, TeamId, UnixMillis};
use crate::protocol::{
    Availability, CloseReason, ClosedReason, ConversationState, ConversationView, Participant,
    QueueReason, SlaView,
};
use crate::routing::Target;
use crate::transcript::{ConversationRecord, DeskRecord};

/// Why a conversation moves: what is counted and what the visitor is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveKind {
    Transfer,
    Escalation,
    SlaBreach,
}

/// The note Parley writes into a moved conversation's history: who moved it where.
pub fn transfer_note(kind: MoveKind, to: &str, by: &str) -> String {
    let verb = if kind == MoveKind::Escalation {
        "Escalated"
    } else {
        "Transferred"
    };
    format!("{verb} to {to} by {by}")
}

/// What a first-response breach does to a conversation (`desk.sla_breach_action`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreachMove {
    /// Back to the front of its own queue, away from the agent who missed it.
    Requeue,
    /// To the escalation team.
    Escalate(TeamId),
}

impl BreachMove {
    /// How the move is counted and told.
    pub fn kind(&self) -> MoveKind {
        match self {
            BreachMove::Requeue => MoveKind::SlaBreach,
            BreachMove::Escalate(_) => MoveKind::Escalation,
        }
    }
}

/// The breach action for a conversation routed to `current_team`: nothing when the action is
/// `none`, when escalation has no team configured, or when the conversation is with the
/// escalation team already (escalating it again would only churn it).
pub fn breach_action(
    action: BreachAction,
    escalation_team: Option<&TeamId>,
    current_team: Option<&TeamId>,
) -> Option<BreachMove> {
    match action {
        BreachAction::None => None,
        BreachAction::Requeue => Some(BreachMove::Requeue),
        BreachAction::Escalate => {
            let team = escalation_team?;
            (current_team != Some(team)).then(|| BreachMove::Escalate(team.clone()))
        }
    }
}

/// Why a conversation for a target would wait with nobody to answer, from the directory's
/// verdict ([`Directory::answering`]): `None` when someone answers now. A conversation started
/// with a reason is an offline message.
pub fn offline_reason(answering: Result<(), Closed>) -> Option<QueueReason> {
    match answering {
        Ok(()) => None,
        Err(Closed::OutsideHours { .. }) => Some(QueueReason::OutsideHours),
        Err(Closed::NobodyOnline) => Some(QueueReason::NobodyOnline),
    }
}

/// Whether `category` is answered now, as the widget shows it, from the directory's verdict.
pub fn availability(category: &str, answering: Result<(), Closed>) -> Availability {
    let (reason, opens_at) = match answering {
        Ok(()) => (None, None),
        Err(Closed::OutsideHours { opens_at }) => (Some(ClosedReason::OutsideHours), opens_at),
        Err(Closed::NobodyOnline) => (Some(ClosedReason::NobodyOnline), None),
    };
    Availability {
        category: category.to_string(),
        open: reason.is_none(),
        reason,
        opens_at,
    }
}

/// What a visitor whose conversation was moved into a queue is told: `moved` is false when it
/// only went back to its own queue (a breach's requeue).
pub fn requeue_reason(kind: MoveKind, moved: bool) -> QueueReason {
    if kind == MoveKind::SlaBreach && !moved {
        QueueReason::SlaBreached
    } else {
        QueueReason::Transferred
    }
}

/// The `kind` label of `parley_transfers_total` for a move.
pub fn transfer_label(kind: MoveKind, to_agent: bool) -> &'static str {
    match kind {
        MoveKind::SlaBreach => "sla_breach",
        MoveKind::Escalation => "escalation",
        MoveKind::Transfer if to_agent => "agent",
        MoveKind::Transfer => "team",
    }
}

/// Whether a visitor's `start` reopens the conversation closed at `closed_at` rather than
/// opening a new one: within `desk.reopen_window` (zero: never).
pub fn reopens(closed_at: UnixMillis, now: UnixMillis, window: Duration) -> bool {
    let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    window > 0 && now.saturating_sub(closed_at) <= window
}

/// The `outcome` label of the first agent reply: after the deadline it `missed`.
pub fn first_response_outcome(due_at: Option<UnixMillis>, now: UnixMillis) -> &'static str {
    match due_at {
        Some(due_at) if now > due_at => "missed",
        _ => "met",
    }
}

/// Moves the report figures as a text message from `role` goes in at `now`: a visitor's starts
/// a wait (if none is running); an agent's ends it, counting one response, and the first
/// agent's stops the first-response clock. Returns the first reply's outcome when this message
/// was it. The Redis engine does the same inside its `APPEND` script (atomically with the
/// append); keep the two equal.
pub fn count_response(desk: &mut DeskRecord, role: Role, now: UnixMillis) -> Option<&'static str> {
    match role {
        Role::Visitor => {
            if desk.awaiting_since.is_none() {
                desk.awaiting_since = Some(now);
            }
            None
        }
        Role::Agent => {
            let first = desk.first_response_at.is_none().then(|| {
                desk.first_response_at = Some(now);
                first_response_outcome(desk.first_response_due_at, now)
            });
            if let Some(since) = desk.awaiting_since.take() {
                desk.response_ms_total += now.saturating_sub(since);
                desk.responses += 1;
            }
            first
        }
        Role::System => None,
    }
}

/// Where a conversation brought back (restored, reopened) is routed: the team it was routed
/// to if that team is still configured, else its category's.
pub fn target_of(directory: &Directory, team: Option<&TeamId>, category: &Category) -> Target {
    match team {
        Some(team) if directory.team(team).is_some() => Target::Team(team.clone()),
        _ => directory.target_for(category),
    }
}

/// Whether `agent` hears about the first-response clock of a conversation that waits for
/// `team` (`None`: any agent): the agents who could take it. An assigned conversation's clock
/// goes to its agent only.
pub fn hears_sla(directory: &Directory, agent: &AgentId, team: Option<&TeamId>) -> bool {
    team.is_none_or(|t| directory.teams_of(agent).contains(t))
}

/// The clock agents see on a conversation, `None` when it has none.
pub fn sla_view(
    created_at: UnixMillis,
    due_at: Option<UnixMillis>,
    first_response_at: Option<UnixMillis>,
    now: UnixMillis,
    warning_percent: u32,
) -> Option<SlaView> {
    let clock = FirstResponseClock {
        created_at,
        due_at: due_at?,
        first_response_at,
    };
    Some(SlaView {
        state: clock.state(now, warning_percent),
        due_at: clock.due_at,
    })
}

/// What agents see of a conversation: everything, the first-response clock included, from its
/// record (`agent_name` names its agent; `recovered` is for a joining socket).
pub fn agent_view(
    record: &ConversationRecord,
    agent_name: Option<&str>,
    recovered: Option<bool>,
    now: UnixMillis,
    warning_percent: u32,
) -> ConversationView {
    ConversationView {
        id: record.id,
        category: record.category.clone(),
        state: if record.agent_id.is_some() {
            ConversationState::Assigned
        } else {
            ConversationState::Queued
        },
        visitor: Participant {
            id: record.visitor_id.to_string(),
            name: record.visitor_name.clone(),
        },
        agent: record.agent_id.as_ref().map(|a| Participant {
            id: a.to_string(),
            name: agent_name.map(str::to_string),
        }),
        created_at: record.created_at,
        last_seq: record.last_seq,
        recovered,
        page: record.page.clone(),
        metadata: record.metadata.clone(),
        team: record.team.as_ref().map(ToString::to_string),
        sla: sla_view(
            record.created_at,
            record.desk.first_response_due_at,
            record.desk.first_response_at,
            now,
            warning_percent,
        ),
        contact: record.desk.contact.clone(),
        offline: record.desk.offline,
        transfers: record.desk.transfers,
        reopened: record.reopened,
    }
}

/// What the visitor sees of its conversation: the agents' view without the clock, the contact
/// or the internal figures.
pub fn visitor_view(view: ConversationView) -> ConversationView {
    ConversationView {
        sla: None,
        contact: None,
        offline: false,
        transfers: 0,
        ..view
    }
}

/// When a waiting clock in `state` must be looked at next: its warning time while pending,
/// just after the deadline while warning (the deadline itself is in time), never after.
pub fn next_sla_check(
    clock: &FirstResponseClock,
    state: SlaState,
    warning_percent: u32,
) -> Option<UnixMillis> {
    match state {
        SlaState::Pending => Some(clock.warn_at(warning_percent)),
        SlaState::Warning => Some(clock.due_at + 1),
        _ => None,
    }
}

/// Whether the satisfaction survey goes out as a conversation closes: to a visitor who talked
/// to an agent and is still there to answer, once, when `desk.csat` is `auto`.
pub fn survey_on_close(
    had_agent: bool,
    reason: CloseReason,
    mode: CsatMode,
    already_asked: bool,
) -> bool {
    had_agent
        && !matches!(reason, CloseReason::VisitorLeft | CloseReason::StateLost)
        && mode == CsatMode::Auto
        && !already_asked
}

/// The `close_reason` the store and reports keep.
pub fn close_reason_str(reason: CloseReason) -> &'static str {
    match reason {
        CloseReason::AgentClosed => "agent_closed",
        CloseReason::VisitorClosed => "visitor_closed",
        CloseReason::VisitorLeft => "visitor_left",
        CloseReason::StateLost => "state_lost",
    }
}

/// Estimated wait per queue position before any assignment has been observed.
pub const DEFAULT_WAIT_PER_POSITION_MS: f64 = 60_000.0;
/// Queue estimates are pushed only when they move by at least this much, to avoid chatter.
pub const ESTIMATE_STEP_MS: u64 = 5_000;

/// The wait a visitor at `position` is told, from the learnt wait per position (`None`: nothing
/// learnt yet, [`DEFAULT_WAIT_PER_POSITION_MS`]).
pub fn estimated_wait_ms(per_position_ms: Option<f64>, position: u32) -> u64 {
    let per_position = per_position_ms.unwrap_or(DEFAULT_WAIT_PER_POSITION_MS);
    (per_position * f64::from(position)) as u64
}

/// The (position, estimate step) last told, to tell a visitor only what changed.
pub fn estimate_bucket(position: u32, estimate_ms: u64) -> (u32, u64) {
    (position, estimate_ms / ESTIMATE_STEP_MS)
}

/// The wait per position learnt from one assignment: a conversation that entered the queue at
/// `position` and waited `waited_ms`, smoothed into the previous figure (recent assignments
/// weigh most).
pub fn learn_wait(previous: Option<f64>, waited_ms: u64, position: u32) -> f64 {
    let sample = waited_ms as f64 / f64::from(position.max(1));
    match previous {
        None => sample,
        Some(avg) => 0.8 * avg + 0.2 * sample,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, TeamConfig};

    fn team(id: &str) -> TeamId {
        TeamId::parse(id).unwrap()
    }

    #[test]
    fn a_breach_does_what_the_configuration_says_once() {
        let sup = team("supervisors");
        let tech = team("tech");
        assert_eq!(breach_action(BreachAction::None, Some(&sup), None), None);
        assert_eq!(
            breach_action(BreachAction::Requeue, Some(&sup), Some(&sup)),
            Some(BreachMove::Requeue)
        );
        assert_eq!(
            breach_action(BreachAction::Escalate, Some(&sup), Some(&tech)),
            Some(BreachMove::Escalate(sup.clone()))
        );
        assert_eq!(
            breach_action(BreachAction::Escalate, Some(&sup), None),
            Some(BreachMove::Escalate(sup.clone()))
        );
        // With the escalation team already, or no escalation team: nothing.
        assert_eq!(
            breach_action(BreachAction::Escalate, Some(&sup), Some(&sup)),
            None
        );
        assert_eq!(
            breach_action(BreachAction::Escalate, None, Some(&tech)),
            None
        );
        assert_eq!(BreachMove::Requeue.kind(), MoveKind::SlaBreach);
        assert_eq!(BreachMove::Escalate(sup).kind(), MoveKind::Escalation);
    }

    #[test]
    fn nobody_answering_is_an_offline_reason() {
        assert_eq!(offline_reason(Ok(())), None);
        assert_eq!(
            offline_reason(Err(Closed::OutsideHours { opens_at: Some(5) })),
            Some(QueueReason::OutsideHours)
        );
        assert_eq!(
            offline_reason(Err(Closed::NobodyOnline)),
            Some(QueueReason::NobodyOnline)
        );
    }

    #[test]
    fn availability_says_why_and_when() {
        let open = availability("billing", Ok(()));
        assert!(open.open && open.reason.is_none() && open.opens_at.is_none());
        let later = availability("billing", Err(Closed::OutsideHours { opens_at: Some(9) }));
        assert!(!later.open);
        assert_eq!(later.reason, Some(ClosedReason::OutsideHours));
        assert_eq!(later.opens_at, Some(9));
        let empty = availability("billing", Err(Closed::NobodyOnline));
        assert_eq!(empty.reason, Some(ClosedReason::NobodyOnline));
        assert_eq!(empty.category, "billing");
    }

    #[test]
    fn a_requeue_after_a_breach_says_so_and_a_move_says_transferred() {
        assert_eq!(
            requeue_reason(MoveKind::SlaBreach, false),
            QueueReason::SlaBreached
        );
        assert_eq!(
            requeue_reason(MoveKind::SlaBreach, true),
            QueueReason::Transferred
        );
        assert_eq!(
            requeue_reason(MoveKind::Escalation, true),
            QueueReason::Transferred
        );
        assert_eq!(
            requeue_reason(MoveKind::Transfer, true),
            QueueReason::Transferred
        );
    }

    #[test]
    fn moves_are_labelled_and_noted() {
        assert_eq!(transfer_label(MoveKind::SlaBreach, false), "sla_breach");
        assert_eq!(transfer_label(MoveKind::Escalation, false), "escalation");
        assert_eq!(transfer_label(MoveKind::Transfer, true), "agent");
        assert_eq!(transfer_label(MoveKind::Transfer, false), "team");
        assert_eq!(
            transfer_note(MoveKind::Escalation, "Supervisors", "Agent 1"),
            "Escalated to Supervisors by Agent 1"
        );
        assert_eq!(
            transfer_note(MoveKind::Transfer, "Agent 3", "Agent 1"),
            "Transferred to Agent 3 by Agent 1"
        );
    }

    #[test]
    fn reopening_is_within_the_window_whatever_its_length() {
        let hour = Duration::from_secs(3600);
        assert!(reopens(1_000, 1_000, hour));
        assert!(reopens(1_000, 1_000 + 3_600_000, hour), "the edge is in");
        assert!(!reopens(1_000, 1_001 + 3_600_000, hour));
        assert!(!reopens(1_000, 1_000, Duration::ZERO), "zero turns it off");
        let week = Duration::from_secs(7 * 24 * 3600);
        assert!(reopens(0, 3 * 24 * 3_600_000, week), "longer than a day");
    }

    #[test]
    fn figures_move_as_a_message_goes_in() {
        let mut desk = DeskRecord {
            first_response_due_at: Some(100),
            ..DeskRecord::default()
        };
        assert_eq!(count_response(&mut desk, Role::Visitor, 10), None);
        assert_eq!(count_response(&mut desk, Role::Visitor, 20), None);
        assert_eq!(
            desk.awaiting_since,
            Some(10),
            "the first unanswered one counts"
        );
        assert_eq!(count_response(&mut desk, Role::Agent, 50), Some("met"));
        assert_eq!(desk.first_response_at, Some(50));
        assert_eq!((desk.responses, desk.response_ms_total), (1, 40));
        assert_eq!(desk.awaiting_since, None);
        // A second reply with nothing awaited moves nothing.
        assert_eq!(count_response(&mut desk, Role::Agent, 60), None);
        assert_eq!((desk.responses, desk.response_ms_total), (1, 40));
        assert_eq!(count_response(&mut desk, Role::System, 70), None);
        let mut late = DeskRecord {
            first_response_due_at: Some(100),
            ..DeskRecord::default()
        };
        assert_eq!(count_response(&mut late, Role::Agent, 101), Some("missed"));
        assert_eq!(first_response_outcome(None, 5), "met");
        assert_eq!(first_response_outcome(Some(5), 5), "met");
    }

    #[test]
    fn a_waiting_clock_is_heard_by_those_who_could_take_it() {
        let mut config = Config::default();
        config.teams = vec![TeamConfig {
            id: "tech".into(),
            name: "Tech".into(),
            hours: None,
        }];
        config.agents = vec![crate::config::AgentConfig {
            id: "a3".into(),
            name: "Agent 3".into(),
            token_sha256: String::new(),
            capacity: None,
            teams: vec!["tech".into()],
        }];
        let directory = Directory::from_config(&config);
        let a3 = AgentId::parse("a3").unwrap();
        let a1 = AgentId::parse("a1").unwrap();
        let tech = team("tech");
        assert!(hears_sla(&directory, &a3, Some(&tech)));
        assert!(!hears_sla(&directory, &a1, Some(&tech)));
        assert!(hears_sla(&directory, &a1, None));
    }

    #[test]
    fn the_clock_view_and_its_next_check() {
        assert_eq!(sla_view(0, None, None, 10, 80), None);
        let view = sla_view(0, Some(100), None, 90, 80).unwrap();
        assert_eq!((view.state, view.due_at), (SlaState::Warning, 100));
        let met = sla_view(0, Some(100), Some(50), 200, 80).unwrap();
        assert_eq!(met.state, SlaState::Met);
        let clock = FirstResponseClock::new(0, 100);
        assert_eq!(next_sla_check(&clock, SlaState::Pending, 80), Some(80));
        assert_eq!(next_sla_check(&clock, SlaState::Warning, 80), Some(101));
        assert_eq!(next_sla_check(&clock, SlaState::Breached, 80), None);
    }

    #[test]
    fn agents_see_everything_and_visitors_no_internal_figures() {
        let record = ConversationRecord {
            id: crate::domain::ConversationId::new(),
            visitor_id: crate::domain::VisitorId::parse("v1").unwrap(),
            visitor_name: Some("Dana".into()),
            category: "billing".into(),
            state: ConversationState::Assigned,
            agent_id: Some(AgentId::parse("a1").unwrap()),
            created_at: 0,
            assigned_at: Some(5),
            closed_at: None,
            resolved: None,
            close_reason: None,
            last_seq: crate::domain::Seq(3),
            page: None,
            metadata: None,
            team: Some(team("tech")),
            reopened: 1,
            desk: DeskRecord {
                contact: Some("dana@example.com".into()),
                offline: true,
                transfers: 2,
                first_response_due_at: Some(100),
                ..DeskRecord::default()
            },
        };
        let agents = agent_view(&record, Some("Agent 1"), Some(true), 90, 80);
        assert_eq!(agents.state, ConversationState::Assigned);
        assert_eq!(
            agents.agent.as_ref().unwrap().name.as_deref(),
            Some("Agent 1")
        );
        assert_eq!(agents.visitor.name.as_deref(), Some("Dana"));
        assert_eq!(agents.team.as_deref(), Some("tech"));
        assert_eq!(agents.sla.as_ref().unwrap().state, SlaState::Warning);
        assert_eq!(agents.contact.as_deref(), Some("dana@example.com"));
        assert!(agents.offline);
        assert_eq!((agents.transfers, agents.reopened), (2, 1));
        assert_eq!(agents.recovered, Some(true));
        let visitors = visitor_view(agents.clone());
        assert!(visitors.sla.is_none() && visitors.contact.is_none());
        assert!(!visitors.offline);
        assert_eq!(visitors.transfers, 0);
        assert_eq!(visitors.id, agents.id);
        assert_eq!(visitors.reopened, 1, "the visitor knows it came back");
        let queued = agent_view(
            &ConversationRecord {
                agent_id: None,
                ..record
            },
            None,
            None,
            0,
            80,
        );
        assert_eq!(queued.state, ConversationState::Queued);
        assert!(queued.agent.is_none());
    }

    #[test]
    fn the_survey_goes_once_to_a_visitor_who_is_there() {
        let auto = CsatMode::Auto;
        assert!(survey_on_close(true, CloseReason::AgentClosed, auto, false));
        assert!(survey_on_close(
            true,
            CloseReason::VisitorClosed,
            auto,
            false
        ));
        assert!(!survey_on_close(
            true,
            CloseReason::VisitorLeft,
            auto,
            false
        ));
        assert!(!survey_on_close(
            false,
            CloseReason::AgentClosed,
            auto,
            false
        ));
        assert!(!survey_on_close(true, CloseReason::AgentClosed, auto, true));
        assert!(!survey_on_close(
            true,
            CloseReason::AgentClosed,
            CsatMode::Off,
            false
        ));
        assert_eq!(close_reason_str(CloseReason::VisitorLeft), "visitor_left");
        assert_eq!(close_reason_str(CloseReason::AgentClosed), "agent_closed");
        assert_eq!(
            close_reason_str(CloseReason::VisitorClosed),
            "visitor_closed"
        );
    }

    #[test]
    fn the_estimate_is_learnt_from_assignments() {
        assert_eq!(
            estimated_wait_ms(None, 2),
            120_000,
            "a minute a place at first"
        );
        let learnt = learn_wait(None, 20_000, 2);
        assert_eq!(learnt, 10_000.0);
        assert_eq!(estimated_wait_ms(Some(learnt), 3), 30_000);
        let smoothed = learn_wait(Some(learnt), 0, 1);
        assert_eq!(smoothed, 8_000.0, "recent assignments weigh a fifth");
        assert_eq!(learn_wait(None, 500, 0), 500.0, "position 0 counts as 1");
        assert_eq!(estimate_bucket(3, 12_000), (3, 2));
        assert_eq!(estimate_bucket(3, 14_999), estimate_bucket(3, 10_000));
    }
}
