//! The agent's side of a socket (`/v1/agent`): several conversations, status, capacity.
//!
//! The token was checked before the upgrade, so an unauthenticated client never holds a socket;
//! `hello` may repeat the token and must then name the same agent.

use crate::auth::AgentProfile;
use crate::domain::TeamId;
use crate::engine::{AgentJoin, Client, Origin, TransferTo};
use crate::limits::Limit;
use crate::outbox::Outbox;
use crate::protocol::{
    close_code, AgentFrame, AgentSession as WireSession, ErrorCode, ErrorFrame, ServerFrame,
    Welcome, PROTOCOL_VERSION,
};

use super::{check_text, origin_of, Context, Hello, Refusal, Rejection, Session};

const HISTORY_DEFAULT: u32 = 100;

pub struct AgentSession {
    origin: Origin,
    profile: AgentProfile,
}

#[async_trait::async_trait]
impl Session for AgentSession {
    type Inbound = AgentFrame;
    type Upgrade = AgentProfile;
    const ROLE: &'static str = "agent";

    async fn hello(
        ctx: &Context,
        profile: AgentProfile,
        frame: AgentFrame,
        outbox: Outbox,
    ) -> Result<Hello<Self>, Rejection> {
        let AgentFrame::Hello {
            token,
            resume,
            status,
        } = frame
        else {
            return Err(Rejection {
                code: close_code::BAD_HELLO,
                reason: "hello required",
                error: ErrorFrame::new(ErrorCode::HelloRequired, "the first frame must be hello"),
            });
        };
        if let Some(token) = token {
            if ctx.auth.agent(&token).map(|p| &p.id) != Some(&profile.id) {
                return Err(Rejection {
                    code: close_code::UNAUTHORIZED,
                    reason: "unauthorized",
                    error: ErrorFrame::new(
                        ErrorCode::Unauthorized,
                        "the hello token does not match the connection's",
                    ),
                });
            }
        }
        let joined = ctx
            .engine
            .join_agent(
                AgentJoin {
                    agent: profile.id.clone(),
                    name: profile.name.clone(),
                    capacity: profile.capacity,
                    status,
                    resume,
                },
                outbox.clone(),
            )
            .await
            .map_err(|e| Rejection {
                code: close_code::INTERNAL_ERROR,
                reason: "unavailable",
                error: e.to_frame(),
            })?;
        let welcome = ServerFrame::Welcome(Welcome {
            protocol: PROTOCOL_VERSION,
            role: crate::domain::Role::Agent,
            visitor: None,
            agent: Some(WireSession {
                id: profile.id.clone(),
                name: profile.name.clone(),
                capacity: profile.capacity,
                status: joined
                    .status
                    .unwrap_or(crate::protocol::AgentStatus::Online),
            }),
            conversations: joined.conversations,
            availability: Vec::new(),
        });
        let mut initial = vec![welcome.to_text()];
        initial.extend(joined.replay);
        Ok(Hello {
            session: Self {
                origin: origin_of(Client::Agent(profile.id.clone()), &outbox),
                profile,
            },
            initial,
        })
    }

    fn origin(&self) -> &Origin {
        &self.origin
    }

    async fn handle(
        &mut self,
        ctx: &Context,
        frame: AgentFrame,
        outbox: &Outbox,
    ) -> Result<(), Refusal> {
        let engine = &ctx.engine;
        let origin = &self.origin;
        match frame {
            AgentFrame::Hello { .. } => Err(Refusal::new(
                ErrorCode::HelloRequired,
                "hello was already received",
            )),
            AgentFrame::Status { status } => {
                Ok(engine.set_status(&self.profile.id, status).await?)
            }
            AgentFrame::Message {
                conversation_id,
                cid,
                text,
            } => {
                check_text(&text, ctx.settings.text_max_chars)
                    .map_err(|r| r.with_cid(Some(cid.clone())))?;
                ctx.limits
                    .agent_message(&self.profile.id)
                    .await
                    .map_err(|l| {
                        engine.rate_limited(&origin.client, Some(conversation_id));
                        Refusal::limited(Limit::AgentMessages, l, &ctx.metrics)
                            .with_cid(Some(cid.clone()))
                    })?;
                engine
                    .post(origin, Some(conversation_id), cid.clone(), text)
                    .await
                    .map_err(|e| Refusal::from(e).with_cid(Some(cid)))
            }
            AgentFrame::Note {
                conversation_id,
                cid,
                text,
            } => {
                check_text(&text, ctx.settings.text_max_chars)
                    .map_err(|r| r.with_cid(Some(cid.clone())))?;
                ctx.limits
                    .agent_message(&self.profile.id)
                    .await
                    .map_err(|l| {
                        Refusal::limited(Limit::AgentMessages, l, &ctx.metrics)
                            .with_cid(Some(cid.clone()))
                    })?;
                engine
                    .note(origin, conversation_id, cid.clone(), text)
                    .await
                    .map_err(|e| Refusal::from(e).with_cid(Some(cid)))
            }
            AgentFrame::Transfer {
                conversation_id,
                team,
                agent,
                note,
            } => {
                let to = match (team, agent) {
                    (Some(team), None) => TransferTo::Team(
                        TeamId::parse(&team)
                            .map_err(|_| Refusal::new(ErrorCode::NotFound, "no such team"))?,
                    ),
                    (None, Some(agent)) => TransferTo::Agent(agent),
                    _ => {
                        return Err(Refusal::new(
                            ErrorCode::MalformedFrame,
                            "transfer needs exactly one of team and agent",
                        ))
                    }
                };
                let note = checked_note(ctx, note)?;
                Ok(engine.transfer(origin, conversation_id, to, note).await?)
            }
            AgentFrame::Escalate {
                conversation_id,
                note,
            } => {
                let note = checked_note(ctx, note)?;
                Ok(engine
                    .transfer(origin, conversation_id, TransferTo::Escalation, note)
                    .await?)
            }
            AgentFrame::CsatRequest { conversation_id } => {
                Ok(engine.request_csat(origin, conversation_id).await?)
            }
            AgentFrame::Typing {
                conversation_id,
                active,
            } => Ok(engine.typing(origin, Some(conversation_id), active).await?),
            AgentFrame::Read {
                conversation_id,
                seq,
            } => Ok(engine.read(origin, Some(conversation_id), seq).await?),
            AgentFrame::History {
                conversation_id,
                before_seq,
                limit,
            } => {
                let history = engine
                    .history(
                        origin,
                        Some(conversation_id),
                        before_seq,
                        limit.unwrap_or(HISTORY_DEFAULT),
                    )
                    .await?;
                outbox.push(
                    &ServerFrame::History {
                        conversation_id: history.conversation_id,
                        messages: history.messages,
                        complete: history.complete,
                    }
                    .to_text(),
                );
                Ok(())
            }
            AgentFrame::Close {
                conversation_id,
                resolved,
            } => Ok(engine
                .close(origin, Some(conversation_id), resolved)
                .await?),
        }
    }
}

/// A transfer's note follows the rules of any text; an empty one is no note.
fn checked_note(ctx: &Context, note: Option<String>) -> Result<Option<String>, Refusal> {
    match note {
        Some(n) if n.trim().is_empty() => Ok(None),
        Some(n) => {
            check_text(&n, ctx.settings.text_max_chars)?;
            Ok(Some(n))
        }
        None => Ok(None),
    }
}
