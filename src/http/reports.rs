//! `/v1/reports`: the desk's figures per agent, team, category or day (JSON), and one row per
//! conversation (JSON or CSV, the spreadsheet support teams ask for). Definitions are in
//! docs/desk.md ("Reports") and src/desk/reports.rs.
//!
//! A range is `from` and `to`, each either Unix milliseconds (`to` exclusive) or a day
//! `YYYY-MM-DD` in `desk.timezone` (`to` inclusive: `from=2026-11-30&to=2026-11-30` is that
//! day). Without them: the last 7 days up to now. Conversations are counted on the day they
//! were created.

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use jiff::civil::Date;
use jiff::tz::TimeZone;
use serde::Deserialize;

use super::{bearer_token, ApiError, AppState};
use crate::desk::reports::{self, ConversationRow, GroupBy, Report};
use crate::domain::UnixMillis;
use crate::transcript::{ConversationRecord, DeskExtras, REPORT_MAX_ROWS};

const DAY_MS: u64 = 86_400_000;
const DEFAULT_DAYS: u64 = 7;
/// How long a report waits for the persister before answering from what is stored.
const FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The time zone report days are counted in.
#[derive(Debug, Clone)]
pub struct ReportZone {
    pub tz: TimeZone,
    /// Its IANA name, echoed in reports.
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
}

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match bearer_token(headers, None) {
        Some(token) if state.ctx.auth.api_access(token) => Ok(()),
        _ => Err(ApiError::Unauthorized),
    }
}

/// Milliseconds, or a day's start in `tz` (`end`: the next day's start, so the day is in).
fn bound(name: &str, value: &str, tz: &TimeZone, end: bool) -> Result<UnixMillis, ApiError> {
    if let Ok(ms) = value.parse::<UnixMillis>() {
        return Ok(ms);
    }
    let bad = || {
        ApiError::BadRequest(format!(
            "`{name}` must be Unix milliseconds or a day YYYY-MM-DD, got {value:?}"
        ))
    };
    let date: Date = value.parse().map_err(|_| bad())?;
    let date = if end {
        date.tomorrow().map_err(|_| bad())?
    } else {
        date
    };
    let start = date.to_zoned(tz.clone()).map_err(|_| bad())?;
    u64::try_from(start.timestamp().as_millisecond()).map_err(|_| bad())
}

/// The range asked for, and the rows of the conversations created in it.
async fn load(
    state: &AppState,
    q: &RangeQuery,
) -> Result<
    (
        (UnixMillis, UnixMillis),
        Vec<(ConversationRecord, DeskExtras)>,
    ),
    ApiError,
> {
    let tz = &state.report_zone.tz;
    let now = state.clock.now_millis();
    let to = match &q.to {
        Some(v) => bound("to", v, tz, true)?,
        None => now.saturating_add(1),
    };
    let from = match &q.from {
        Some(v) => bound("from", v, tz, false)?,
        None => to.saturating_sub(DEFAULT_DAYS * DAY_MS),
    };
    if from >= to {
        return Err(ApiError::BadRequest("`from` must be before `to`".into()));
    }
    // Open conversations' newest figures are in the engine: hand them over, then wait for
    // the store to have them (bounded: a slow store answers with what it has).
    state.ctx.engine.checkpoint();
    let _ = tokio::time::timeout(FLUSH_WAIT, state.persist.flush()).await;
    let rows = state.store.report_rows(from, to).await?;
    if rows.len() > REPORT_MAX_ROWS {
        return Err(ApiError::BadRequest(format!(
            "more than {REPORT_MAX_ROWS} conversations in this range: ask for a shorter one"
        )));
    }
    Ok(((from, to), rows))
}

/// `GET /v1/reports?from&to&group_by=agent|team|category|day`.
pub async fn summary(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<RangeQuery>,
) -> Result<Json<Report>, ApiError> {
    authorize(&state, &headers)?;
    let group_by = GroupBy::parse(q.group_by.as_deref().unwrap_or("category"))
        .map_err(ApiError::BadRequest)?;
    let (range, rows) = load(&state, &q).await?;
    let deflections = state
        .desk
        .kb
        .deflection_times(range.0, range.1)
        .await
        .map_err(|e| ApiError::Unexpected(e.into()))?;
    let zone = &state.report_zone;
    Ok(Json(reports::report(
        &rows,
        &deflections,
        group_by,
        range,
        (&zone.tz, &zone.name),
        state.clock.now_millis(),
    )))
}

fn lines(state: &AppState, rows: &[(ConversationRecord, DeskExtras)]) -> Vec<ConversationRow> {
    reports::rows(rows, &state.report_zone.tz, state.clock.now_millis())
}

/// `GET /v1/reports/conversations?from&to`: one JSON object per conversation.
pub async fn conversations(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<RangeQuery>,
) -> Result<Json<Vec<ConversationRow>>, ApiError> {
    authorize(&state, &headers)?;
    let (_, rows) = load(&state, &q).await?;
    Ok(Json(lines(&state, &rows)))
}

/// `GET /v1/reports/conversations.csv?from&to`: the same as CSV, with a header row.
pub async fn conversations_csv(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<RangeQuery>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let (range, rows) = load(&state, &q).await?;
    let body = reports::csv(&lines(&state, &rows)).map_err(|e| ApiError::Unexpected(e.into()))?;
    let mut response = ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response();
    let name = format!(
        "attachment; filename=\"parley-conversations-{}-{}.csv\"",
        range.0, range.1
    );
    if let Ok(v) = HeaderValue::from_str(&name) {
        response
            .headers_mut()
            .insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
