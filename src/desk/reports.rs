//! Reports: one row per conversation, and their aggregates per agent, team, category or day.
//!
//! Pure functions over what the store holds (conversations created in a range, with their desk
//! figures, tags, follow-ups and survey answers) plus the deflections of the same range, so the
//! figures are the same whichever node computes them. Every definition is in docs/desk.md
//! ("Reports"); in short:
//! - a conversation belongs to the day it was created (in `desk.timezone`), to its category, to
//!   the team it ended in and to the agent who held it last;
//! - first-response time: creation to the first agent reply; average response time: every
//!   wait of the visitor for an agent reply, averaged over replies;
//! - resolution time: creation to the close, for conversations closed as resolved;
//! - first-contact resolution: closed as resolved, never transferred, never reopened; its rate
//!   is over closed conversations;
//! - SLA attainment: first replies within target over conversations whose target is decided
//!   (answered, or past due without an answer);
//! - deflections: "this article solved my question" in the widget, per category and day only
//!   (no agent was involved).

use std::collections::BTreeMap;

use jiff::tz::TimeZone;
use jiff::Timestamp;
use serde::Serialize;

use crate::desk::sla::{FirstResponseClock, SlaState};
use crate::domain::UnixMillis;
use crate::protocol::ConversationState;
use crate::transcript::{ConversationRecord, DeskExtras};

/// What a report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Agent,
    Team,
    Category,
    Day,
}

impl GroupBy {
    /// # Errors
    /// The accepted values, when `s` is none of them.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "agent" => Ok(GroupBy::Agent),
            "team" => Ok(GroupBy::Team),
            "category" => Ok(GroupBy::Category),
            "day" => Ok(GroupBy::Day),
            other => Err(format!(
                "group_by {other:?} must be agent, team, category or day"
            )),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            GroupBy::Agent => "agent",
            GroupBy::Team => "team",
            GroupBy::Category => "category",
            GroupBy::Day => "day",
        }
    }
}

/// One conversation as a report line (and a CSV row).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConversationRow {
    pub conversation_id: String,
    /// RFC 3339 in the report's time zone.
    pub created_at: String,
    pub day: String,
    pub category: String,
    pub team: String,
    pub agent: String,
    pub state: String,
    pub resolved: Option<bool>,
    pub closed_at: String,
    pub first_response_ms: Option<u64>,
    pub first_response_target_ms: Option<u64>,
    /// `met`, `missed`, `breached`, or `pending` (not decided yet, or closed unanswered before
    /// its target: not counted).
    pub sla: String,
    pub avg_response_ms: Option<u64>,
    pub responses: u32,
    pub resolution_ms: Option<u64>,
    pub transfers: u32,
    pub escalated: bool,
    pub reopened: u32,
    pub first_contact_resolution: bool,
    pub csat_score: Option<u8>,
    pub csat_comment: String,
    /// Separated by `;`.
    pub tags: String,
    pub rate_limited: u32,
    pub offline: bool,
    pub follow_up_at: String,
}

/// The figures of one group (or of everything).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Figures {
    pub conversations: u64,
    pub closed: u64,
    pub resolved: u64,
    /// Conversations with a first reply, and their average first-response time.
    pub first_responses: u64,
    pub avg_first_response_ms: Option<u64>,
    /// Agent replies that ended a wait, and the average wait.
    pub responses: u64,
    pub avg_response_ms: Option<u64>,
    pub avg_resolution_ms: Option<u64>,
    pub first_contact_resolutions: u64,
    /// First-contact resolutions over closed conversations.
    pub first_contact_resolution_rate: Option<f64>,
    pub csat_answers: u64,
    pub csat_average: Option<f64>,
    pub sla_met: u64,
    pub sla_missed: u64,
    pub sla_breached: u64,
    /// Met over met + missed + breached.
    pub sla_attainment: Option<f64>,
    pub transfers: u64,
    pub escalations: u64,
    pub reopened: u64,
    /// Present for category and day groups and the total; deflections involve no agent.
    pub deflections: Option<u64>,
    pub rate_limited: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    pub key: String,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub from: UnixMillis,
    pub to: UnixMillis,
    pub timezone: String,
    pub group_by: &'static str,
    pub groups: Vec<Group>,
    pub total: Figures,
}

/// A day in `tz` as `YYYY-MM-DD`, and the timestamp as RFC 3339 in `tz`.
fn local(tz: &TimeZone, ms: UnixMillis) -> (String, String) {
    match i64::try_from(ms)
        .ok()
        .and_then(|ms| Timestamp::from_millisecond(ms).ok())
    {
        Some(ts) => {
            let z = ts.to_zoned(tz.clone());
            (
                z.date().to_string(),
                z.strftime("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string(),
            )
        }
        None => (String::new(), String::new()),
    }
}

fn state_str(s: ConversationState) -> &'static str {
    match s {
        ConversationState::Queued => "queued",
        ConversationState::Assigned => "assigned",
        ConversationState::Closed => "closed",
    }
}

/// The first-response outcome of a conversation at `now`.
fn sla_of(r: &ConversationRecord, now: UnixMillis) -> SlaState {
    let Some(due_at) = r.desk.first_response_due_at else {
        return SlaState::Pending;
    };
    let clock = FirstResponseClock {
        created_at: r.created_at,
        due_at,
        first_response_at: r.desk.first_response_at,
    };
    // The clock stops at the close: closed unanswered before its target, it is not counted
    // (the visitor left; nobody missed anything); closed unanswered after it, it breached.
    let at = match (r.state, r.closed_at) {
        (ConversationState::Closed, Some(closed)) => closed,
        _ => now,
    };
    match clock.state(at, 50) {
        SlaState::Warning => SlaState::Pending,
        s => s,
    }
}

/// A report line per conversation.
pub fn rows(
    conversations: &[(ConversationRecord, DeskExtras)],
    tz: &TimeZone,
    now: UnixMillis,
) -> Vec<ConversationRow> {
    conversations
        .iter()
        .map(|(r, x)| {
            let (day, created_at) = local(tz, r.created_at);
            let sla = sla_of(r, now);
            let resolution_ms = match (r.resolved, r.closed_at) {
                (Some(true), Some(closed)) => Some(closed.saturating_sub(r.created_at)),
                _ => None,
            };
            ConversationRow {
                conversation_id: r.id.to_string(),
                created_at,
                day,
                category: r.category.clone(),
                team: r.team.as_ref().map(|t| t.to_string()).unwrap_or_default(),
                agent: r
                    .agent_id
                    .as_ref()
                    .map(|a| a.to_string())
                    .unwrap_or_default(),
                state: state_str(r.state).to_string(),
                resolved: r.resolved,
                closed_at: r.closed_at.map(|c| local(tz, c).1).unwrap_or_default(),
                first_response_ms: r
                    .desk
                    .first_response_at
                    .map(|at| at.saturating_sub(r.created_at)),
                first_response_target_ms: r
                    .desk
                    .first_response_due_at
                    .map(|due| due.saturating_sub(r.created_at)),
                sla: match sla {
                    SlaState::Met => "met",
                    SlaState::Missed => "missed",
                    SlaState::Breached => "breached",
                    _ => "pending",
                }
                .to_string(),
                avg_response_ms: (r.desk.responses > 0)
                    .then(|| r.desk.response_ms_total / u64::from(r.desk.responses)),
                responses: r.desk.responses,
                resolution_ms,
                transfers: r.desk.transfers,
                escalated: r.desk.escalated,
                reopened: r.reopened,
                first_contact_resolution: r.state == ConversationState::Closed
                    && r.resolved == Some(true)
                    && r.desk.transfers == 0
                    && r.reopened == 0,
                csat_score: x.csat.as_ref().map(|c| c.score),
                csat_comment: x
                    .csat
                    .as_ref()
                    .and_then(|c| c.comment.clone())
                    .unwrap_or_default(),
                tags: x.tags.join(";"),
                rate_limited: r.desk.rate_limited,
                offline: r.desk.offline,
                follow_up_at: x
                    .follow_up
                    .as_ref()
                    .map(|f| local(tz, f.due_at).1)
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// Sums that become [`Figures`].
#[derive(Default)]
struct Acc {
    f: Figures,
    first_response_ms: u64,
    response_ms: u64,
    resolution_ms: u64,
    csat_sum: u64,
}

impl Acc {
    fn add(&mut self, row: &ConversationRow, record: &ConversationRecord) {
        let f = &mut self.f;
        f.conversations += 1;
        f.closed += u64::from(row.state == "closed");
        f.resolved += u64::from(row.resolved == Some(true));
        if let Some(ms) = row.first_response_ms {
            f.first_responses += 1;
            self.first_response_ms += ms;
        }
        f.responses += u64::from(row.responses);
        self.response_ms += record.desk.response_ms_total;
        if let Some(ms) = row.resolution_ms {
            self.resolution_ms += ms;
        }
        f.first_contact_resolutions += u64::from(row.first_contact_resolution);
        if let Some(score) = row.csat_score {
            f.csat_answers += 1;
            self.csat_sum += u64::from(score);
        }
        match row.sla.as_str() {
            "met" => f.sla_met += 1,
            "missed" => f.sla_missed += 1,
            "breached" => f.sla_breached += 1,
            _ => {}
        }
        f.transfers += u64::from(row.transfers);
        f.escalations += u64::from(row.escalated);
        f.reopened += u64::from(row.reopened);
        f.rate_limited += u64::from(row.rate_limited);
    }

    fn finish(mut self, deflections: Option<u64>) -> Figures {
        let f = &mut self.f;
        let avg = |sum: u64, n: u64| (n > 0).then(|| sum / n);
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        f.avg_first_response_ms = avg(self.first_response_ms, f.first_responses);
        f.avg_response_ms = avg(self.response_ms, f.responses);
        f.avg_resolution_ms = avg(self.resolution_ms, f.resolved);
        f.first_contact_resolution_rate = ratio(f.first_contact_resolutions, f.closed);
        f.csat_average = ratio(self.csat_sum, f.csat_answers);
        f.sla_attainment = ratio(f.sla_met, f.sla_met + f.sla_missed + f.sla_breached);
        f.deflections = deflections;
        self.f
    }
}

/// Aggregates per `group_by`, groups sorted by key, plus the total. `deflections` are the
/// (time, category) of each deflection in the range.
pub fn report(
    conversations: &[(ConversationRecord, DeskExtras)],
    deflections: &[(UnixMillis, Option<String>)],
    group_by: GroupBy,
    range: (UnixMillis, UnixMillis),
    tz: (&TimeZone, &str),
    now: UnixMillis,
) -> Report {
    let lines = rows(conversations, tz.0, now);
    let key = |row: &ConversationRow| -> String {
        let k = match group_by {
            GroupBy::Agent => &row.agent,
            GroupBy::Team => &row.team,
            GroupBy::Category => &row.category,
            GroupBy::Day => &row.day,
        };
        if k.is_empty() {
            "none".to_string()
        } else {
            k.clone()
        }
    };
    let mut groups: BTreeMap<String, Acc> = BTreeMap::new();
    let mut total = Acc::default();
    for (line, (record, _)) in lines.iter().zip(conversations) {
        groups.entry(key(line)).or_default().add(line, record);
        total.add(line, record);
    }
    // Deflections count only where they belong: by category, by day, and in the total.
    let mut deflected: BTreeMap<String, u64> = BTreeMap::new();
    for (ts, category) in deflections {
        let k = match group_by {
            GroupBy::Category => category.clone().unwrap_or_else(|| "none".into()),
            GroupBy::Day => local(tz.0, *ts).0,
            GroupBy::Agent | GroupBy::Team => continue,
        };
        *deflected.entry(k.clone()).or_default() += 1;
        groups.entry(k).or_default();
    }
    let per_group = matches!(group_by, GroupBy::Category | GroupBy::Day);
    Report {
        from: range.0,
        to: range.1,
        timezone: tz.1.to_string(),
        group_by: group_by.as_str(),
        groups: groups
            .into_iter()
            .map(|(k, acc)| {
                let d = per_group.then(|| deflected.get(&k).copied().unwrap_or(0));
                Group {
                    key: k,
                    figures: acc.finish(d),
                }
            })
            .collect(),
        total: total.finish(Some(deflections.len() as u64)),
    }
}

/// The conversation lines as CSV with a header row.
///
/// # Errors
/// Only if writing to memory fails, which it does not; kept for the writer's signature.
pub fn csv(lines: &[ConversationRow]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for line in lines {
        w.serialize(line)?;
    }
    if lines.is_empty() {
        // serde writes the header with the first row; an empty report still names its columns.
        w.write_record(CSV_COLUMNS)?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// The CSV header, in [`ConversationRow`]'s field order.
pub const CSV_COLUMNS: &[&str] = &[
    "conversation_id",
    "created_at",
    "day",
    "category",
    "team",
    "agent",
    "state",
    "resolved",
    "closed_at",
    "first_response_ms",
    "first_response_target_ms",
    "sla",
    "avg_response_ms",
    "responses",
    "resolution_ms",
    "transfers",
    "escalated",
    "reopened",
    "first_contact_resolution",
    "csat_score",
    "csat_comment",
    "tags",
    "rate_limited",
    "offline",
    "follow_up_at",
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AgentId, ConversationId, Seq, VisitorId};
    use crate::transcript::{CsatAnswer, DeskRecord};

    fn record(created_at: u64) -> ConversationRecord {
        ConversationRecord {
            id: ConversationId::new(),
            visitor_id: VisitorId::parse("v").unwrap(),
            visitor_name: None,
            category: "account".into(),
            state: ConversationState::Closed,
            agent_id: Some(AgentId::parse("a1").unwrap()),
            created_at,
            assigned_at: Some(created_at),
            closed_at: Some(created_at + 600_000),
            resolved: Some(true),
            close_reason: None,
            last_seq: Seq(3),
            page: None,
            metadata: None,
            team: None,
            reopened: 0,
            desk: DeskRecord {
                first_response_due_at: Some(created_at + 60_000),
                first_response_at: Some(created_at + 30_000),
                response_ms_total: 50_000,
                responses: 2,
                ..DeskRecord::default()
            },
        }
    }

    #[test]
    fn the_csv_header_names_every_field_in_order() {
        let utc = TimeZone::UTC;
        let lines = rows(&[(record(0), DeskExtras::default())], &utc, 0);
        let text = String::from_utf8(csv(&lines).unwrap()).unwrap();
        assert_eq!(text.lines().next().unwrap(), CSV_COLUMNS.join(","));
        let empty = String::from_utf8(csv(&[]).unwrap()).unwrap();
        assert_eq!(empty.trim_end(), CSV_COLUMNS.join(","));
    }

    #[test]
    fn figures_follow_the_definitions() {
        let utc = TimeZone::UTC;
        let day = 1_796_032_800_000; // 2026-11-30 10:00 UTC
        let good = (
            record(day),
            DeskExtras {
                csat: Some(CsatAnswer {
                    score: 5,
                    comment: None,
                    created_at: day,
                }),
                ..DeskExtras::default()
            },
        );
        let mut late = record(day + 1000);
        late.desk.first_response_at = Some(day + 1000 + 90_000);
        late.desk.transfers = 1;
        late.resolved = Some(false);
        let mut unanswered = record(day + 2000);
        unanswered.desk.first_response_at = None;
        unanswered.desk.responses = 0;
        unanswered.desk.response_ms_total = 0;
        unanswered.resolved = None;
        unanswered.closed_at = Some(day + 2000 + 90_000); // closed unanswered after its target
        let mut abandoned = unanswered.clone();
        abandoned.id = ConversationId::new();
        abandoned.closed_at = Some(day + 2000 + 30_000); // the visitor left before the target
        let all = [
            good,
            (late, DeskExtras::default()),
            (unanswered, DeskExtras::default()),
            (abandoned, DeskExtras::default()),
        ];
        let r = report(
            &all,
            &[(day, Some("account".into()))],
            GroupBy::Category,
            (day, day + 86_400_000),
            (&utc, "UTC"),
            day + 86_400_000,
        );
        let f = &r.total;
        assert_eq!(f.conversations, 4);
        assert_eq!(f.closed, 4);
        assert_eq!(f.resolved, 1);
        assert_eq!(f.first_responses, 2);
        assert_eq!(f.avg_first_response_ms, Some((30_000 + 90_000) / 2));
        assert_eq!(f.responses, 4);
        assert_eq!(f.avg_response_ms, Some(100_000 / 4));
        assert_eq!(f.avg_resolution_ms, Some(600_000));
        assert_eq!(f.first_contact_resolutions, 1);
        assert_eq!(f.first_contact_resolution_rate, Some(1.0 / 4.0));
        assert_eq!((f.sla_met, f.sla_missed, f.sla_breached), (1, 1, 1));
        assert_eq!(f.sla_attainment, Some(1.0 / 3.0));
        assert_eq!(f.csat_average, Some(5.0));
        assert_eq!(f.transfers, 1);
        assert_eq!(r.groups.len(), 1);
        assert_eq!(r.groups[0].key, "account");
        assert_eq!(r.groups[0].figures.deflections, Some(1));
    }
}
