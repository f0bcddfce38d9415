//! Domain newtypes, built once at the edge (parse, don't validate).
//!
//! Every identifier that crosses the wire is checked here when a frame is deserialised, so the
//! rest of the gateway never sees an empty, oversized or control-character-laden id.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Why an identifier was refused. The text is shown to the client (it is about their input).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("{kind} must be 1 to {max} characters, got {len}")]
    Length {
        kind: &'static str,
        max: usize,
        len: usize,
    },
    #[error("{kind} may only contain letters, digits and - _ . : @")]
    Charset { kind: &'static str },
    #[error("{kind} is not a valid id")]
    Format { kind: &'static str },
}

/// Shared rule for the textual ids: short, printable, no spaces, so that they are safe in logs,
/// metrics labels, Redis keys and file names alike.
fn check_token(kind: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    let len = s.chars().count();
    if len == 0 || len > max {
        return Err(IdError::Length { kind, max, len });
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '@'))
    {
        return Err(IdError::Charset { kind });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            /// Checks `s` and wraps it.
            ///
            /// # Errors
            /// When `s` is empty, too long, or has characters outside the id alphabet.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check_token($kind, s, $max)?;
                Ok(Self(Arc::from(s)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), &*self.0)
            }
        }
    };
}

string_id!(
    /// A visitor, as named by the host site (verified) or issued by Parley (anonymous).
    VisitorId,
    "visitor_id",
    64
);
string_id!(
    /// An agent, as configured by the operator.
    AgentId,
    "agent_id",
    64
);
string_id!(
    /// A team of agents (front line, technical support, supervisors...), as configured.
    TeamId,
    "team",
    32
);
string_id!(
    /// A client-chosen message id that makes sending idempotent: a resent `cid` is acknowledged
    /// with the original sequence number and never stored twice.
    ClientMessageId,
    "cid",
    64
);

/// A conversation. UUIDv7 so that ids sort by creation time in the store and in logs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct ConversationId(Uuid);

/// Its text form, written straight into the frame: every message frame and ack carries one, and
/// going through a `String` (`into = "String"`) cost an allocation and the formatter each time.
impl Serialize for ConversationId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0.hyphenated().encode_lower(&mut Uuid::encode_buffer()))
    }
}

impl ConversationId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// # Errors
    /// When `s` is not a UUID.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        Uuid::parse_str(s).map(Self).map_err(|_| IdError::Format {
            kind: "conversation_id",
        })
    }
}

impl Default for ConversationId {
    fn default() -> Self {
        Self::new()
    }
}

impl TryFrom<String> for ConversationId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<ConversationId> for String {
    fn from(id: ConversationId) -> String {
        id.0.to_string()
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConversationId({})", self.0)
    }
}

/// A position in one conversation's message sequence. Starts at 1; 0 means "nothing seen yet".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl Seq {
    pub const ZERO: Seq = Seq(0);

    pub fn next(self) -> Seq {
        Seq(self.0 + 1)
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A request category (account, transaction, ...). The set is configured, so a `Category` is only
/// made by [`crate::routing::Categories::parse`], which knows the configured names.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Category(Arc<str>);

impl Category {
    /// Only for the category table, which has already checked the name.
    pub(crate) fn new_unchecked(name: &str) -> Self {
        Self(Arc::from(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Category({:?})", &*self.0)
    }
}

/// Who is on the other end of a socket, or who wrote a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Visitor,
    Agent,
    /// Parley itself (closing a conversation whose visitor left, for example).
    System,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Visitor => "visitor",
            Role::Agent => "agent",
            Role::System => "system",
        }
    }
}

/// Milliseconds since the Unix epoch: what the protocol and the store use for time.
pub type UnixMillis = u64;

/// The wall clock, in [`UnixMillis`].
pub fn now_millis() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A canned reply's shortcut: 1 to 40 characters of `a-z`, `0-9`, `-` and `_` (typed as
/// `/refund-delay` in the console, without the slash here).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Shortcut(Arc<str>);

impl Shortcut {
    pub const MAX_CHARS: usize = 40;

    /// # Errors
    /// When `s` is empty, longer than 40 characters, or has characters outside `a-z0-9-_`.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let kind = "shortcut";
        if s.is_empty() || s.len() > Self::MAX_CHARS {
            return Err(IdError::Length {
                kind,
                max: Self::MAX_CHARS,
                len: s.chars().count(),
            });
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(IdError::Format { kind });
        }
        Ok(Self(Arc::from(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Shortcut {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<Shortcut> for String {
    fn from(s: Shortcut) -> String {
        s.0.to_string()
    }
}

impl fmt::Display for Shortcut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Shortcut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Shortcut({:?})", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_the_documented_alphabet() {
        assert!(VisitorId::parse("v-1_a.b:c@d").is_ok());
        assert!(AgentId::parse("alice").is_ok());
    }

    #[test]
    fn ids_refuse_empty_long_and_odd_characters() {
        assert!(matches!(VisitorId::parse(""), Err(IdError::Length { .. })));
        assert!(matches!(
            VisitorId::parse(&"x".repeat(65)),
            Err(IdError::Length { .. })
        ));
        assert!(matches!(
            VisitorId::parse("a b"),
            Err(IdError::Charset { .. })
        ));
        assert!(matches!(
            VisitorId::parse("<script>"),
            Err(IdError::Charset { .. })
        ));
    }

    #[test]
    fn conversation_ids_round_trip_as_strings() {
        let id = ConversationId::new();
        let json = serde_json::to_string(&id).unwrap();
        // The hyphenated lower-case form, as everywhere else (logs, REST paths, the store).
        assert_eq!(json, format!("\"{id}\""));
        let back: ConversationId = serde_json::from_str(&json).unwrap();
        assert_eq!(id, back);
        assert!(serde_json::from_str::<ConversationId>("\"nope\"").is_err());
    }
}
