//! Grace periods: a client whose last socket closed keeps what it holds for a while, so that a
//! dropped connection or a page reload costs nothing. A visitor keeps its conversation for
//! `routing.visitor_grace`, then it closes (`visitor_left`), unless it is an offline message,
//! which waits for an agent whether or not its visitor stays. An agent keeps its chats for
//! `routing.agent_grace` (taking no new ones), then they go back to the front of the queue.
//!
//! The backend keeps the deadlines where every node sees them and says, at the end, whether the
//! client came back; the rules above are here, once. Grace periods run on the wall clock, not
//! on the desk's [`crate::clock::Clock`]: they measure how long a socket has really been gone,
//! and a test that moves desk time by hours should not close every chat it left behind.

use std::time::Duration;

use super::DeskEngine;
use crate::domain::now_millis;
use crate::domain::Role;
use crate::engine::backend::{Absence, Backend, Expired};
use crate::engine::{Client, EngineError};
use crate::metrics::GraceLabel;
use crate::outbox::SocketId;
use crate::protocol::CloseReason;

/// How often ended grace periods are looked for: the most a grace period overruns.
pub(super) const GRACE_TICK: Duration = Duration::from_millis(250);
/// Grace periods ended per tick, at most; the rest wait for the next tick.
const GRACES_PER_TICK: usize = 100;

impl<B: Backend> DeskEngine<B> {
    /// A socket closed: if its client is now absent and holds something, its grace starts.
    pub(super) async fn depart(&self, client: &Client, socket: SocketId) {
        if let Some(absence) = self.backend.depart(client, socket).await {
            self.start_grace(absence).await;
        }
    }

    pub(super) async fn start_grace(&self, absence: Absence) {
        let grace = match absence.client {
            Client::Visitor(_) => self.settings.visitor_grace,
            Client::Agent(_) => self.settings.agent_grace,
        };
        let at = now_millis().saturating_add(grace.as_millis() as u64);
        if let Client::Agent(agent) = &absence.client {
            tracing::info!(agent = %agent, "agent connection lost; grace period starts");
        }
        if let Err(err) = self.backend.schedule_grace(&absence, at).await {
            // What it holds stays held: an agent's chats until the agent comes back (or, on
            // Redis, until its node's presence lapses), a visitor's until someone closes it.
            tracing::warn!(client = ?absence.client, error = %err, "grace period not recorded");
        }
    }

    /// Ends the grace periods that ran out: the client did not come back.
    pub async fn end_graces(&self) -> Result<(), EngineError> {
        for absence in self
            .backend
            .due_graces(now_millis(), GRACES_PER_TICK)
            .await?
        {
            let expired = match self.backend.expire(&absence).await {
                Ok(expired) => expired,
                Err(err) => {
                    // Taken but not acted on: looked at again on a later tick.
                    let retry = now_millis().saturating_add(GRACE_TICK.as_millis() as u64);
                    let _ = self.backend.schedule_grace(&absence, retry).await;
                    return Err(err);
                }
            };
            let role = match absence.client {
                Client::Visitor(_) => "visitor",
                Client::Agent(_) => "agent",
            };
            let outcome = if expired.is_some() {
                "expired"
            } else {
                "returned"
            };
            // Counted once the end is acted on, so whoever reads the count sees what it did.
            let counted = || {
                self.metrics
                    .grace_periods_ended
                    .get_or_create(&GraceLabel { role, outcome })
                    .inc();
            };
            match expired {
                None | Some(Expired::Visitor(None)) => counted(),
                Some(Expired::Visitor(Some(id))) => {
                    let record = self.backend.record(id).await?;
                    if record.is_none_or(|r| r.desk.offline) {
                        counted();
                        continue;
                    }
                    tracing::info!(conversation = %id, "visitor did not come back; closing");
                    let closed = self
                        .close_conversation(id, Role::System, None, CloseReason::VisitorLeft)
                        .await;
                    if let Err(err) = closed {
                        tracing::warn!(conversation = %id, error = %err, "not closed after the visitor left");
                    }
                    counted();
                }
                Some(Expired::Agent { requeued }) => {
                    counted();
                    if let Client::Agent(agent) = &absence.client {
                        tracing::info!(agent = %agent, chats = requeued,
                            "agent did not come back; its chats went back to the front of the queue");
                    }
                }
            }
        }
        Ok(())
    }
}
