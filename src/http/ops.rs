//! `/v1/ops/snapshots` and `/v1/ops/stream`: the ops dashboard's data, for admins.
//!
//! The stream is server-sent events: first one `history` event with the kept snapshots, then a
//! `snapshot` event a second. The dashboard reads it with `fetch` so the token travels in the
//! `Authorization` header rather than in a URL that logs would keep.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures::stream::{self, Stream, StreamExt};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use super::{bearer_token, ApiError, AppState};
use crate::ops::Snapshot;

/// 401 for a missing or unknown token, 403 for a valid agent token: the dashboard tells "wrong
/// token" from "not an admin" by the status.
fn authorize_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match bearer_token(headers, None) {
        Some(token) if state.ctx.auth.is_admin(token) => Ok(()),
        Some(token) if state.ctx.auth.api_access(token) => {
            Err(ApiError::Forbidden("the ops view needs an admin token"))
        }
        _ => Err(ApiError::Unauthorized),
    }
}

pub async fn snapshots(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<Snapshot>>, ApiError> {
    authorize_admin(&state, &headers)?;
    Ok(Json(state.ops.kept()))
}

pub async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    authorize_admin(&state, &headers)?;
    // Subscribe before reading the history, so no second falls between the two.
    let live = BroadcastStream::new(state.ops.subscribe());
    let history = event("history", &state.ops.kept());
    let drain = state.ctx.drain.clone();
    let live = live
        .filter_map(|s| async move {
            match s {
                Ok(snapshot) => Some(event("snapshot", &snapshot)),
                // A reader too slow for one event a second just misses some.
                Err(BroadcastStreamRecvError::Lagged(_)) => None,
            }
        })
        .take_until(async move { drain.cancelled().await });
    let events = stream::iter(std::iter::once(history)).chain(live).map(Ok);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

fn event<T: serde::Serialize>(name: &str, data: &T) -> Event {
    Event::default()
        .event(name)
        .json_data(data)
        .unwrap_or_else(|_| Event::default().event("error"))
}
