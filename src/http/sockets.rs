//! WebSocket upgrades: everything that can be refused is refused here, before a socket exists.
//!
//! - draining: 503, so a load balancer retries elsewhere;
//! - `Origin` neither in the allowed list nor Parley's own: 403 (visitor and agent alike, so a
//!   page on another site cannot open an agent socket with a token it got hold of);
//! - agent token missing or wrong: 401;
//! - too many new connections from one address: 429 with `Retry-After`.
//!
//! Buffer sizes are set deliberately: tungstenite's defaults are a 128 KiB read buffer per socket
//! and 64 MiB messages, which would make an idle visitor cost far more than its state.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Extension, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use serde::Deserialize;

use super::{bearer_token, ApiError, AppState};
use crate::connection::{self, agent::AgentSession, visitor::VisitorSession};
use crate::limits::Limit;
use crate::metrics::ReasonLabel;

/// Initial read buffer per socket, allocated up front, so it is most of an idle socket's memory:
/// 1 KiB holds a typical chat frame. In tungstenite 0.29 it is also the most read per `read`
/// call; once a frame's header is in, the buffer grows to hold that frame (a frame over
/// `frame_max_bytes` is refused from its header first), so a 16 KiB frame arrives in 16 reads.
const READ_BUFFER_BYTES: usize = 1024;
/// Bytes gathered before a write reaches the socket; flushes send it earlier.
const WRITE_BUFFER_BYTES: usize = 4 * 1024;

/// One of the `limits.max_connections` slots, taken by the accept loop for a TCP connection.
/// It rides in the request so an upgraded socket keeps it for its whole life: hyper's part of
/// the connection ends at the upgrade, the socket's does not.
#[derive(Clone)]
pub struct ConnectionSlot(pub Arc<tokio::sync::OwnedSemaphorePermit>);

#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

fn refuse(state: &AppState, reason: &'static str) {
    state
        .ctx
        .metrics
        .connections_refused
        .get_or_create(&ReasonLabel { reason })
        .inc();
}

/// The `Origin` check both roles pass before anything else (`auth.allowed_origins`).
fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    if state
        .ctx
        .auth
        .origin_allowed(text(header::ORIGIN), text(header::HOST))
    {
        return Ok(());
    }
    refuse(state, "origin");
    Err(ApiError::Forbidden("origin not allowed"))
}

fn admit(state: &AppState, peer: SocketAddr) -> Result<(), ApiError> {
    if state.ctx.drain.is_cancelled() {
        refuse(state, "draining");
        return Err(ApiError::Unavailable(
            "server restarting; reconnect shortly",
        ));
    }
    state
        .ctx
        .limits
        .ip_connection(peer.ip())
        .map_err(|limited| {
            refuse(state, "rate_limited");
            state
                .ctx
                .metrics
                .rate_limited(Limit::IpConnections.as_str());
            ApiError::TooManyRequests {
                // Rounded up: a client that waits exactly this long is let in.
                retry_after_secs: limited.retry_after.as_millis().div_ceil(1000).max(1) as u64,
            }
        })
}

fn configure(ws: WebSocketUpgrade, state: &AppState) -> WebSocketUpgrade {
    ws.max_message_size(state.frame_max_bytes)
        .max_frame_size(state.frame_max_bytes)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        // Past this the socket errors out instead of buffering without bound; the outbox bounds
        // the frames before it, this bounds the bytes.
        .max_write_buffer_size(WRITE_BUFFER_BYTES + 4 * state.frame_max_bytes)
}

pub async fn visitor(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    slot: Option<Extension<ConnectionSlot>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    check_origin(&state, &headers)?;
    admit(&state, peer)?;
    let ctx = state.ctx.clone();
    let tracker = ctx.tracker.clone();
    Ok(configure(ws, &state).on_upgrade(move |socket| {
        tracker.track_future(async move {
            connection::run::<VisitorSession>(socket, ctx, ()).await;
            drop(slot);
        })
    }))
}

pub async fn agent(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    slot: Option<Extension<ConnectionSlot>>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    check_origin(&state, &headers)?;
    // The address limit comes before the token, so guessing tokens costs connection attempts.
    admit(&state, peer)?;
    let profile = bearer_token(&headers, query.token.as_deref())
        .and_then(|token| state.ctx.auth.agent(token))
        .cloned();
    let Some(profile) = profile else {
        refuse(&state, "unauthorized");
        return Err(ApiError::Unauthorized);
    };
    let ctx = state.ctx.clone();
    let tracker = ctx.tracker.clone();
    Ok(configure(ws, &state).on_upgrade(move |socket| {
        tracker.track_future(async move {
            connection::run::<AgentSession>(socket, ctx, profile).await;
            drop(slot);
        })
    }))
}
