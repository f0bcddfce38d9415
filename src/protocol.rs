//! The wire protocol, version 1: JSON text frames over WebSocket, one tagged enum per direction.
//!
//! `docs/protocol.md` documents every frame with an example; the tests in this file keep those
//! examples honest by parsing them. Unknown frame types and malformed JSON are answered with an
//! [`ErrorCode`], never a panic or silence ([`parse_client_frame`] tells the two apart).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use crate::desk::sla::SlaState;
/// Roles appear in frames (`sender.role`, `typing.role`...), so the protocol re-exports them.
pub use crate::domain::Role;
use crate::domain::{AgentId, ClientMessageId, ConversationId, Seq, UnixMillis, VisitorId};

/// Bumped on any incompatible change; also the `/v1/` in the socket paths.
pub const PROTOCOL_VERSION: u32 = 1;

// ---------------------------------------------------------------------------------------------
// Visitor -> server
// ---------------------------------------------------------------------------------------------

/// Frames a visitor's widget sends on `/v1/visitor`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum VisitorFrame {
    /// First frame on every socket. Without `visitor_id`, Parley issues a new anonymous id and a
    /// `token` for it (in `welcome`); with one, it needs either that `token` or a host-site
    /// `signature` (HMAC-SHA256 of the id with the shared identity secret).
    Hello {
        #[serde(default)]
        visitor_id: Option<VisitorId>,
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        signature: Option<String>,
        #[serde(default)]
        name: Option<String>,
        /// The last sequence number this client saw in its open conversation: everything after
        /// it is replayed exactly once. Absent means "replay what you can from the start".
        #[serde(default)]
        last_seq: Option<Seq>,
    },
    /// Opens a conversation with a first message.
    Start {
        /// Absent: the configured `routing.default_category`.
        #[serde(default)]
        category: Option<String>,
        text: String,
        #[serde(default)]
        cid: Option<ClientMessageId>,
        /// The page the visitor is on, shown to the agent.
        #[serde(default)]
        page: Option<String>,
        /// Free-form key/values from the host site (plan, app version...), shown to the agent.
        #[serde(default)]
        metadata: Option<serde_json::Map<String, serde_json::Value>>,
        /// How to reach the visitor later (an e-mail address, say): what an offline message
        /// needs. Shown to agents only.
        #[serde(default)]
        contact: Option<String>,
    },
    Message {
        cid: ClientMessageId,
        text: String,
    },
    Typing {
        active: bool,
    },
    /// Everything up to and including `seq` has been read.
    Read {
        seq: Seq,
    },
    /// Asks for stored messages of the open conversation, after a `recovered: false`.
    History {
        #[serde(default)]
        before_seq: Option<Seq>,
        #[serde(default)]
        limit: Option<u32>,
    },
    Close {},
    /// Answers a satisfaction survey (`csat_request`): a score from 1 to 5 and an optional
    /// comment, once per conversation.
    Csat {
        conversation_id: ConversationId,
        score: u8,
        #[serde(default)]
        comment: Option<String>,
    },
}

// ---------------------------------------------------------------------------------------------
// Agent -> server
// ---------------------------------------------------------------------------------------------

/// Frames an agent's console sends on `/v1/agent`. The token is checked before the upgrade
/// (`Authorization: Bearer` or `?token=`); `hello` may repeat it and must then match.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentFrame {
    Hello {
        #[serde(default)]
        token: Option<String>,
        /// Where this client left each conversation it was showing; missed messages follow.
        #[serde(default)]
        resume: Vec<ResumePosition>,
        /// Status to take on connecting; `online` when absent.
        #[serde(default)]
        status: Option<AgentStatus>,
    },
    Status {
        status: AgentStatus,
    },
    Message {
        conversation_id: ConversationId,
        cid: ClientMessageId,
        text: String,
    },
    Typing {
        conversation_id: ConversationId,
        active: bool,
    },
    Read {
        conversation_id: ConversationId,
        seq: Seq,
    },
    History {
        conversation_id: ConversationId,
        #[serde(default)]
        before_seq: Option<Seq>,
        #[serde(default)]
        limit: Option<u32>,
    },
    Close {
        conversation_id: ConversationId,
        resolved: bool,
    },
    /// A private note: kept in the transcript, shown to agents only, never to the visitor.
    Note {
        conversation_id: ConversationId,
        cid: ClientMessageId,
        text: String,
    },
    /// Hands the conversation to a team (`team`) or a named agent (`agent`), exactly one of
    /// them, with an optional note for the receiving side.
    Transfer {
        conversation_id: ConversationId,
        #[serde(default)]
        team: Option<String>,
        #[serde(default)]
        agent: Option<AgentId>,
        #[serde(default)]
        note: Option<String>,
    },
    /// Transfers to the escalation team (`desk.escalation_team`): one action for "get me a
    /// supervisor".
    Escalate {
        conversation_id: ConversationId,
        #[serde(default)]
        note: Option<String>,
    },
    /// Sends the visitor the satisfaction survey now (when `desk.csat` is `manual`, or again).
    CsatRequest {
        conversation_id: ConversationId,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct ResumePosition {
    pub conversation_id: ConversationId,
    pub last_seq: Seq,
}

/// An agent's availability. Only `online` agents below capacity receive new conversations;
/// `away` and `offline` keep the chats they have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    Online,
    Away,
    Offline,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Online => "online",
            AgentStatus::Away => "away",
            AgentStatus::Offline => "offline",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Server -> client
// ---------------------------------------------------------------------------------------------

/// Frames Parley sends to visitors and agents.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Answer to `hello`. Missed `message` frames of each recovered conversation follow it.
    Welcome(Welcome),
    /// The conversation waits for an agent; sent again whenever position or estimate changes.
    Queued {
        conversation_id: ConversationId,
        /// 1 is the head of the queue.
        position: u32,
        estimated_wait_ms: u64,
        reason: QueueReason,
    },
    /// The conversation has an agent. Sent to the visitor and to the agent; the agent then gets
    /// the conversation's messages so far as `message` frames.
    Assigned {
        conversation: ConversationView,
    },
    Message(MessageView),
    /// The message with this `cid` is stored as `seq`. `duplicate` is true when the `cid` had
    /// already been accepted (nothing new was stored).
    Ack {
        conversation_id: ConversationId,
        cid: ClientMessageId,
        seq: Seq,
        duplicate: bool,
    },
    Typing {
        conversation_id: ConversationId,
        role: Role,
        active: bool,
    },
    Read {
        conversation_id: ConversationId,
        role: Role,
        seq: Seq,
    },
    Closed {
        conversation_id: ConversationId,
        by: Role,
        /// The agent's verdict; absent when the visitor or Parley closed it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resolved: Option<bool>,
        reason: CloseReason,
    },
    /// Stored messages, oldest first, answering `history`. `complete` is false when older
    /// messages exist before the first one here.
    History {
        conversation_id: ConversationId,
        messages: Vec<MessageView>,
        complete: bool,
    },
    /// Agents only: own load and the queue, pushed when either changes.
    AgentState {
        status: AgentStatus,
        open: u32,
        capacity: u32,
        queue_length: u32,
    },
    /// The conversation moved to another team or agent. The visitor is told where (no note);
    /// the agent it left gets this frame too and drops it from its list. The receiving agent
    /// gets `assigned` with the history, the transfer note among it.
    Transferred {
        conversation_id: ConversationId,
        /// The receiving team's name, for a team transfer.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        team: Option<String>,
        /// The receiving agent, once there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent: Option<Participant>,
        /// True for an escalation.
        escalated: bool,
    },
    /// Agents only: a conversation's first-response clock moved to `warning` or `breached`.
    /// Sent to its agent, or while it waits, to the agents who could take it.
    Sla {
        conversation_id: ConversationId,
        state: SlaState,
        due_at: UnixMillis,
    },
    /// Visitors only: please rate this conversation (answer with `csat`).
    CsatRequest {
        conversation_id: ConversationId,
    },
    Error(ErrorFrame),
}

/// Whether a category is answered now, as the widget shows it before a chat starts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Availability {
    pub category: String,
    /// Someone can take it now; false: a `start` becomes an offline message.
    pub open: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ClosedReason>,
    /// The next opening, when outside business hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opens_at: Option<UnixMillis>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClosedReason {
    OutsideHours,
    NobodyOnline,
}

/// A conversation's first-response clock, as agents see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub struct SlaView {
    pub state: SlaState,
    pub due_at: UnixMillis,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Welcome {
    pub protocol: u32,
    pub role: Role,
    /// Visitors: the id to reuse, and the token that proves it on the next `hello`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visitor: Option<VisitorSession>,
    /// Agents: who signed in and their limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentSession>,
    /// Open conversations of this client (at most one for a visitor).
    pub conversations: Vec<ConversationView>,
    /// Visitors only: whether each category is answered now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub availability: Vec<Availability>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct VisitorSession {
    pub id: VisitorId,
    pub token: String,
    /// True when the host site vouched for this id with a signature.
    pub verified: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct AgentSession {
    pub id: AgentId,
    pub name: String,
    pub capacity: u32,
    pub status: AgentStatus,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ConversationView {
    pub id: ConversationId,
    pub category: String,
    pub state: ConversationState,
    pub visitor: Participant,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Participant>,
    pub created_at: UnixMillis,
    /// Highest sequence number in the conversation.
    pub last_seq: Seq,
    /// Only in `welcome`: true when every message after the client's `last_seq` follows this
    /// frame; false when the gap is too old to replay and the client must fetch `history`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    /// The team it is routed to, if its category or a transfer gave it one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Agents only: the first-response clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sla: Option<SlaView>,
    /// Agents only: how to reach the visitor, from `start.contact`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// Agents only: started while nobody answered (an offline message).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub offline: bool,
    /// Times it was transferred; agents only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub transfers: u32,
    /// Times the visitor came back after a close and reopened it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reopened: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationState {
    Queued,
    Assigned,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Participant {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct MessageView {
    pub conversation_id: ConversationId,
    pub seq: Seq,
    pub sender: Sender,
    pub text: String,
    /// Server time of acceptance.
    pub ts: UnixMillis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<ClientMessageId>,
    /// `text` (omitted) or `note`: a private note, which only agents ever receive.
    #[serde(default, skip_serializing_if = "MessageKind::is_text")]
    pub kind: MessageKind,
}

/// What a transcript entry is. Visitors see only `text`; their sequence numbers may skip the
/// ones notes took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    #[default]
    Text,
    Note,
}

impl MessageKind {
    pub fn is_text(&self) -> bool {
        *self == MessageKind::Text
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Note => "note",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Sender {
    pub role: Role,
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueReason {
    /// Every agent is busy, away or offline.
    NoAgentAvailable,
    /// The agent's connection was lost for longer than the grace period; back at the front.
    AgentDisconnected,
    /// Transferred to a team whose agents are all busy; at the front of its queue.
    Transferred,
    /// Outside the team's business hours: an offline message an agent answers when back.
    OutsideHours,
    /// Nobody who could take it is online: an offline message.
    NobodyOnline,
    /// Its agent did not answer within the first-response target; back at the front.
    SlaBreached,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    AgentClosed,
    VisitorClosed,
    /// The visitor's connection was lost for longer than the grace period.
    VisitorLeft,
    /// The desk's shared state lost the conversation (Redis restarted empty, or from an older
    /// snapshot): it cannot go on, so it ends as clearly as a close. Its stored transcript is
    /// kept; the visitor can start again.
    StateLost,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    /// Human text for logs and developers; never internal error details.
    pub message: String,
    /// Present when retrying later can succeed (rate limits, a store that is catching up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// The `cid` of the message this error is about, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cid: Option<ClientMessageId>,
}

/// Stable error codes. Clients switch on these; the text may change, the codes may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or a known type with missing or ill-typed fields.
    MalformedFrame,
    /// Valid JSON with a `type` this endpoint does not know.
    UnknownType,
    /// A binary frame: the protocol is JSON text only.
    UnsupportedFrame,
    /// A frame other than `hello` before `hello`, or a second `hello`.
    HelloRequired,
    /// Bad token or signature.
    Unauthorized,
    /// The conversation belongs to someone else.
    Forbidden,
    NotFound,
    InvalidCategory,
    /// Empty text, or text with nothing but whitespace.
    InvalidText,
    TextTooLong,
    RateLimited,
    /// A visitor sent `message` with no open conversation.
    NoConversation,
    /// A visitor sent `start` while a conversation is already open.
    ConversationOpen,
    ConversationClosed,
    /// Retryable: the gateway cannot take this now (transcript buffer full, store down).
    Unavailable,
    /// A transfer to an agent who is not online with a free slot, or to the agent itself.
    TargetUnavailable,
    /// The feature needs a setting that is not configured (e.g. `escalate` without
    /// `desk.escalation_team`).
    NotConfigured,
    /// No survey to answer: never sent, already answered, or its window has passed.
    SurveyUnavailable,
    /// A `csat` score outside 1 to 5.
    InvalidScore,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::UnsupportedFrame => "unsupported_frame",
            ErrorCode::HelloRequired => "hello_required",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InvalidCategory => "invalid_category",
            ErrorCode::InvalidText => "invalid_text",
            ErrorCode::TextTooLong => "text_too_long",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NoConversation => "no_conversation",
            ErrorCode::ConversationOpen => "conversation_open",
            ErrorCode::ConversationClosed => "conversation_closed",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::TargetUnavailable => "target_unavailable",
            ErrorCode::NotConfigured => "not_configured",
            ErrorCode::SurveyUnavailable => "survey_unavailable",
            ErrorCode::InvalidScore => "invalid_score",
            ErrorCode::Internal => "internal",
        }
    }
}

impl ErrorFrame {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: None,
            cid: None,
        }
    }

    pub fn retry_after(mut self, ms: u64) -> Self {
        self.retry_after_ms = Some(ms);
        self
    }

    pub fn with_cid(mut self, cid: Option<ClientMessageId>) -> Self {
        self.cid = cid;
        self
    }
}

/// WebSocket close codes Parley uses, documented in `docs/protocol.md`.
pub mod close_code {
    /// The client said goodbye.
    pub const NORMAL: u16 = 1000;
    /// The WebSocket framing was broken (e.g. an unmasked client frame).
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame that is not UTF-8.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Kept flooding after `rate_limited` errors.
    pub const POLICY_VIOLATION: u16 = 1008;
    /// A frame or message above the size cap.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// Something broke on our side.
    pub const INTERNAL_ERROR: u16 = 1011;
    /// The server is draining for a restart or shutdown: reconnect (with backoff) and resume.
    pub const SERVICE_RESTART: u16 = 1012;
    /// The first frame was not a valid `hello`.
    pub const BAD_HELLO: u16 = 4000;
    /// Bad token or signature in `hello`.
    pub const UNAUTHORIZED: u16 = 4001;
    /// No `hello` in time, or no traffic (not even a pong) within the idle timeout.
    pub const TIMEOUT: u16 = 4008;
    /// The client did not read fast enough and its outbound queue filled up. Nothing is lost:
    /// reconnect and resume from the last seen `seq`.
    pub const TOO_SLOW: u16 = 4009;
}

/// Why a text frame could not be turned into a client frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
}

/// Parses a client frame, telling malformed JSON apart from an unknown `type`.
///
/// # Errors
/// [`ErrorCode::UnknownType`] when the JSON object has a `type` this endpoint does not know,
/// [`ErrorCode::MalformedFrame`] otherwise.
pub fn parse_client_frame<T: DeserializeOwned>(text: &str) -> Result<T, FrameError> {
    match serde_json::from_str::<T>(text) {
        Ok(frame) => Ok(frame),
        Err(err) => {
            // The slow path runs only for bad frames: look again to name the problem precisely.
            #[derive(Deserialize)]
            struct Tagged {
                #[serde(rename = "type")]
                kind: String,
            }
            if let Ok(Tagged { kind }) = serde_json::from_str::<Tagged>(text) {
                if err.to_string().starts_with("unknown variant") {
                    return Err(FrameError {
                        code: ErrorCode::UnknownType,
                        message: format!("unknown frame type {:?}", truncate(&kind, 40)),
                    });
                }
            }
            Err(FrameError {
                code: ErrorCode::MalformedFrame,
                message: format!("malformed frame: {err}"),
            })
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

impl ServerFrame {
    /// Serialises once; the result is shared by every socket the frame goes to.
    pub fn to_text(&self) -> std::sync::Arc<str> {
        // Serialising these plain data types cannot fail (no maps with non-string keys).
        serde_json::to_string(self)
            .expect("server frames always serialise")
            .into()
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error(ErrorFrame::new(code, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visitor_frames_parse() {
        let f: VisitorFrame =
            parse_client_frame(r#"{"type":"message","cid":"c1","text":"hi"}"#).unwrap();
        assert_eq!(
            f,
            VisitorFrame::Message {
                cid: ClientMessageId::parse("c1").unwrap(),
                text: "hi".into()
            }
        );
        let f: VisitorFrame = parse_client_frame(r#"{"type":"close"}"#).unwrap();
        assert_eq!(f, VisitorFrame::Close {});
    }

    #[test]
    fn unknown_type_is_told_apart_from_malformed() {
        let e = parse_client_frame::<VisitorFrame>(r#"{"type":"dance"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownType);
        let e = parse_client_frame::<VisitorFrame>(r#"{"type":"message"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedFrame);
        let e = parse_client_frame::<VisitorFrame>("{not json").unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedFrame);
        let e = parse_client_frame::<VisitorFrame>(r#"{"text":"no type"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedFrame);
    }

    #[test]
    fn bad_ids_are_malformed_frames() {
        let e = parse_client_frame::<VisitorFrame>(r#"{"type":"message","cid":"","text":"x"}"#)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedFrame);
        assert!(e.message.contains("cid"), "{}", e.message);
    }

    #[test]
    fn error_frames_serialise_with_their_code() {
        let text = ServerFrame::Error(
            ErrorFrame::new(ErrorCode::RateLimited, "slow down").retry_after(250),
        )
        .to_text();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], "rate_limited");
        assert_eq!(v["retry_after_ms"], 250);
    }
}
