//! The visitor's side of a socket (`/v1/visitor`): identity, one open conversation at a time.

use crate::domain::VisitorId;
use crate::engine::{Client, Origin, StartRequest, VisitorJoin};
use crate::limits::Limit;
use crate::outbox::Outbox;
use crate::protocol::{
    close_code, ErrorCode, ErrorFrame, ServerFrame, VisitorFrame, VisitorSession as WireSession,
    Welcome, PROTOCOL_VERSION,
};

use super::{check_text, clean_label, origin_of, Context, Hello, Refusal, Rejection, Session};

const NAME_MAX_CHARS: usize = 80;
/// An e-mail address or a phone number, for an offline message's answer.
const CONTACT_MAX_CHARS: usize = 200;
const PAGE_MAX_CHARS: usize = 2048;
/// Host-site metadata is shown to agents and stored with the conversation: keep it small.
const METADATA_MAX_BYTES: usize = 4096;
const HISTORY_DEFAULT: u32 = 100;

pub struct VisitorSession {
    origin: Origin,
    visitor: VisitorId,
}

fn unauthorized(message: &str) -> Rejection {
    Rejection {
        code: close_code::UNAUTHORIZED,
        reason: "unauthorized",
        error: ErrorFrame::new(ErrorCode::Unauthorized, message),
    }
}

#[async_trait::async_trait]
impl Session for VisitorSession {
    type Inbound = VisitorFrame;
    type Upgrade = ();
    const ROLE: &'static str = "visitor";

    async fn hello(
        ctx: &Context,
        _upgrade: (),
        frame: VisitorFrame,
        outbox: Outbox,
    ) -> Result<Hello<Self>, Rejection> {
        let VisitorFrame::Hello {
            visitor_id,
            token,
            signature,
            name,
            last_seq,
        } = frame
        else {
            return Err(Rejection {
                code: close_code::BAD_HELLO,
                reason: "hello required",
                error: ErrorFrame::new(ErrorCode::HelloRequired, "the first frame must be hello"),
            });
        };
        let (visitor, verified) = match visitor_id {
            Some(id) => {
                let verified = ctx
                    .auth
                    .check_visitor(&id, token.as_deref(), signature.as_deref())
                    .ok_or_else(|| unauthorized("visitor id not proven: bad token or signature"))?;
                (id, verified)
            }
            None if ctx.auth.anonymous_allowed() => (new_anonymous_id(), false),
            None => return Err(unauthorized("this site requires a signed visitor id")),
        };
        let joined = ctx
            .engine
            .join_visitor(
                VisitorJoin {
                    visitor: visitor.clone(),
                    name: name.map(|n| clean_label(&n, NAME_MAX_CHARS)),
                    last_seq,
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
            role: crate::domain::Role::Visitor,
            visitor: Some(WireSession {
                id: visitor.clone(),
                token: ctx.auth.visitor_token(&visitor),
                verified,
            }),
            agent: None,
            conversations: joined.conversations,
            availability: ctx.engine.availability().await,
        });
        let mut initial = vec![welcome.to_text()];
        initial.extend(joined.replay);
        Ok(Hello {
            session: Self {
                origin: origin_of(Client::Visitor(visitor.clone()), &outbox),
                visitor,
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
        frame: VisitorFrame,
        outbox: &Outbox,
    ) -> Result<(), Refusal> {
        let engine = &ctx.engine;
        match frame {
            VisitorFrame::Hello { .. } => Err(Refusal::new(
                ErrorCode::HelloRequired,
                "hello was already received",
            )),
            VisitorFrame::Start {
                category,
                text,
                cid,
                page,
                metadata,
                contact,
            } => {
                let category = category.unwrap_or_else(|| ctx.settings.default_category.clone());
                let category = engine.categories().parse(&category).ok_or_else(|| {
                    let known: Vec<&str> = engine
                        .categories()
                        .all()
                        .iter()
                        .map(|c| c.as_str())
                        .collect();
                    Refusal::new(
                        ErrorCode::InvalidCategory,
                        format!("unknown category; use one of: {}", known.join(", ")),
                    )
                    .with_cid(cid.clone())
                })?;
                check_text(&text, ctx.settings.text_max_chars)
                    .map_err(|r| r.with_cid(cid.clone()))?;
                if let Some(m) = &metadata {
                    let size = serde_json::to_string(m).map_or(usize::MAX, |s| s.len());
                    if size > METADATA_MAX_BYTES {
                        return Err(Refusal::new(
                            ErrorCode::MalformedFrame,
                            format!("metadata is {size} bytes; the limit is {METADATA_MAX_BYTES}"),
                        )
                        .with_cid(cid.clone()));
                    }
                }
                ctx.limits
                    .visitor_conversation(&self.visitor)
                    .await
                    .map_err(|l| {
                        engine.rate_limited(&self.origin.client, None);
                        Refusal::limited(Limit::VisitorConversations, l, &ctx.metrics)
                            .with_cid(cid.clone())
                    })?;
                engine
                    .start(
                        &self.origin,
                        StartRequest {
                            category,
                            text,
                            cid: cid.clone(),
                            page: page.map(|p| clean_label(&p, PAGE_MAX_CHARS)),
                            metadata,
                            contact: contact
                                .map(|c| clean_label(&c, CONTACT_MAX_CHARS))
                                .filter(|c| !c.is_empty()),
                        },
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| Refusal::from(e).with_cid(cid))
            }
            VisitorFrame::Message { cid, text } => {
                check_text(&text, ctx.settings.text_max_chars)
                    .map_err(|r| r.with_cid(Some(cid.clone())))?;
                ctx.limits
                    .visitor_message(&self.visitor)
                    .await
                    .map_err(|l| {
                        engine.rate_limited(&self.origin.client, None);
                        Refusal::limited(Limit::VisitorMessages, l, &ctx.metrics)
                            .with_cid(Some(cid.clone()))
                    })?;
                engine
                    .post(&self.origin, None, cid.clone(), text)
                    .await
                    .map_err(|e| Refusal::from(e).with_cid(Some(cid)))
            }
            VisitorFrame::Typing { active } => {
                Ok(engine.typing(&self.origin, None, active).await?)
            }
            VisitorFrame::Read { seq } => Ok(engine.read(&self.origin, None, seq).await?),
            VisitorFrame::History { before_seq, limit } => {
                let history = engine
                    .history(
                        &self.origin,
                        None,
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
            VisitorFrame::Close {} => Ok(engine.close(&self.origin, None, false).await?),
            VisitorFrame::Csat {
                conversation_id,
                score,
                comment,
            } => {
                ctx.surveys
                    .answer(&self.visitor, conversation_id, score, comment)
                    .await?;
                Ok(())
            }
        }
    }
}

/// Anonymous ids are random and unguessable; the token in `welcome` proves them later.
fn new_anonymous_id() -> VisitorId {
    VisitorId::parse(&format!("anon-{}", uuid::Uuid::new_v4().simple())).expect("valid id")
}
