//! Keeps `docs/protocol.md` honest: every example parses as the frame it claims to be, every frame
//! type has an example, and every error code and close code is documented.
//!
//! Examples are the fenced blocks marked ```` ```json visitor ````, ```` ```json agent ```` or
//! ```` ```json server ````. They are parsed the way the server parses them
//! ([`parse_client_frame`]) or the way a client would ([`ServerFrame`]), and every field an example
//! shows must survive a round trip through the Rust type, so a misspelt optional field (which
//! serde would silently ignore) fails too. No server is needed.

use std::collections::BTreeSet;

use parley::protocol::{
    close_code, parse_client_frame, AgentFrame, ErrorCode, ServerFrame, VisitorFrame,
};
use serde::Serialize;
use serde_json::Value;

const DOC: &str = "docs/protocol.md";

/// Every visitor frame type. [`visitor_type`] stops compiling when a variant is added, which points
/// here: add the new type to this list and an example to the document.
const VISITOR_TYPES: &[&str] = &[
    "hello", "start", "message", "typing", "read", "history", "close", "csat",
];

const AGENT_TYPES: &[&str] = &[
    "hello",
    "status",
    "message",
    "typing",
    "read",
    "history",
    "close",
    "note",
    "transfer",
    "escalate",
    "csat_request",
];

const SERVER_TYPES: &[&str] = &[
    "welcome",
    "queued",
    "assigned",
    "message",
    "ack",
    "typing",
    "read",
    "closed",
    "history",
    "agent_state",
    "transferred",
    "sla",
    "csat_request",
    "error",
];

/// Every error code; [`error_code_guard`] stops compiling when one is added.
const ERROR_CODES: &[ErrorCode] = &[
    ErrorCode::MalformedFrame,
    ErrorCode::UnknownType,
    ErrorCode::UnsupportedFrame,
    ErrorCode::HelloRequired,
    ErrorCode::Unauthorized,
    ErrorCode::Forbidden,
    ErrorCode::NotFound,
    ErrorCode::InvalidCategory,
    ErrorCode::InvalidText,
    ErrorCode::TextTooLong,
    ErrorCode::RateLimited,
    ErrorCode::NoConversation,
    ErrorCode::ConversationOpen,
    ErrorCode::ConversationClosed,
    ErrorCode::Unavailable,
    ErrorCode::TargetUnavailable,
    ErrorCode::NotConfigured,
    ErrorCode::SurveyUnavailable,
    ErrorCode::InvalidScore,
    ErrorCode::Internal,
];

/// Every close code. A module of constants cannot be enumerated, so
/// [`every_close_code_in_the_source_is_listed`] reads `src/protocol.rs` to catch a new one.
const CLOSE_CODES: &[(&str, u16)] = &[
    ("NORMAL", close_code::NORMAL),
    ("PROTOCOL_ERROR", close_code::PROTOCOL_ERROR),
    ("INVALID_PAYLOAD", close_code::INVALID_PAYLOAD),
    ("POLICY_VIOLATION", close_code::POLICY_VIOLATION),
    ("MESSAGE_TOO_BIG", close_code::MESSAGE_TOO_BIG),
    ("INTERNAL_ERROR", close_code::INTERNAL_ERROR),
    ("SERVICE_RESTART", close_code::SERVICE_RESTART),
    ("BAD_HELLO", close_code::BAD_HELLO),
    ("UNAUTHORIZED", close_code::UNAUTHORIZED),
    ("TIMEOUT", close_code::TIMEOUT),
    ("TOO_SLOW", close_code::TOO_SLOW),
];

fn visitor_type(frame: &VisitorFrame) -> &'static str {
    match frame {
        VisitorFrame::Hello { .. } => "hello",
        VisitorFrame::Start { .. } => "start",
        VisitorFrame::Message { .. } => "message",
        VisitorFrame::Typing { .. } => "typing",
        VisitorFrame::Read { .. } => "read",
        VisitorFrame::History { .. } => "history",
        VisitorFrame::Close {} => "close",
        VisitorFrame::Csat { .. } => "csat",
    }
}

fn agent_type(frame: &AgentFrame) -> &'static str {
    match frame {
        AgentFrame::Hello { .. } => "hello",
        AgentFrame::Status { .. } => "status",
        AgentFrame::Message { .. } => "message",
        AgentFrame::Typing { .. } => "typing",
        AgentFrame::Read { .. } => "read",
        AgentFrame::History { .. } => "history",
        AgentFrame::Close { .. } => "close",
        AgentFrame::Note { .. } => "note",
        AgentFrame::Transfer { .. } => "transfer",
        AgentFrame::Escalate { .. } => "escalate",
        AgentFrame::CsatRequest { .. } => "csat_request",
    }
}

fn server_type(frame: &ServerFrame) -> &'static str {
    match frame {
        ServerFrame::Welcome(_) => "welcome",
        ServerFrame::Queued { .. } => "queued",
        ServerFrame::Assigned { .. } => "assigned",
        ServerFrame::Message(_) => "message",
        ServerFrame::Ack { .. } => "ack",
        ServerFrame::Typing { .. } => "typing",
        ServerFrame::Read { .. } => "read",
        ServerFrame::Closed { .. } => "closed",
        ServerFrame::History { .. } => "history",
        ServerFrame::AgentState { .. } => "agent_state",
        ServerFrame::Transferred { .. } => "transferred",
        ServerFrame::Sla { .. } => "sla",
        ServerFrame::CsatRequest { .. } => "csat_request",
        ServerFrame::Error(_) => "error",
    }
}

fn error_code_guard(code: ErrorCode) {
    match code {
        ErrorCode::MalformedFrame
        | ErrorCode::UnknownType
        | ErrorCode::UnsupportedFrame
        | ErrorCode::HelloRequired
        | ErrorCode::Unauthorized
        | ErrorCode::Forbidden
        | ErrorCode::NotFound
        | ErrorCode::InvalidCategory
        | ErrorCode::InvalidText
        | ErrorCode::TextTooLong
        | ErrorCode::RateLimited
        | ErrorCode::NoConversation
        | ErrorCode::ConversationOpen
        | ErrorCode::ConversationClosed
        | ErrorCode::Unavailable
        | ErrorCode::TargetUnavailable
        | ErrorCode::NotConfigured
        | ErrorCode::SurveyUnavailable
        | ErrorCode::InvalidScore
        | ErrorCode::Internal => {}
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    Visitor,
    Agent,
    Server,
}

impl Direction {
    fn marker(self) -> &'static str {
        match self {
            Direction::Visitor => "visitor",
            Direction::Agent => "agent",
            Direction::Server => "server",
        }
    }

    fn types(self) -> &'static [&'static str] {
        match self {
            Direction::Visitor => VISITOR_TYPES,
            Direction::Agent => AGENT_TYPES,
            Direction::Server => SERVER_TYPES,
        }
    }
}

/// One fenced example of the document.
struct Example {
    direction: Direction,
    /// 1-based line of the opening fence, for error messages.
    line: usize,
    text: String,
}

fn read_doc() -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DOC);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The marked JSON blocks of `doc`. A `json` block without a direction marker is an error: it
/// would otherwise be an example nobody checks.
fn examples(doc: &str) -> Vec<Example> {
    let mut found = Vec::new();
    let mut lines = doc.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let info = info.trim();
        let mut body = Vec::new();
        let mut closed = false;
        for (_, inner) in lines.by_ref() {
            if inner.trim() == "```" {
                closed = true;
                break;
            }
            body.push(inner);
        }
        assert!(closed, "{DOC}:{}: fenced block is never closed", i + 1);
        let mut words = info.split_whitespace();
        if words.next() != Some("json") {
            continue;
        }
        let direction = match (words.next(), words.next()) {
            (Some("visitor"), None) => Direction::Visitor,
            (Some("agent"), None) => Direction::Agent,
            (Some("server"), None) => Direction::Server,
            _ => panic!(
                "{DOC}:{}: a json block must be marked `json visitor`, `json agent` or \
                 `json server`, found `{info}`",
                i + 1
            ),
        };
        found.push(Example {
            direction,
            line: i + 1,
            text: body.join("\n"),
        });
    }
    found
}

/// Parses an example as its direction's frame type and returns the frame's type name and the
/// frame serialised back to JSON.
fn parse(example: &Example) -> Result<(&'static str, Value), String> {
    fn back<T: Serialize>(frame: &T) -> Result<Value, String> {
        serde_json::to_value(frame).map_err(|e| format!("cannot serialise it back: {e}"))
    }
    match example.direction {
        Direction::Visitor => {
            let frame = parse_client_frame::<VisitorFrame>(&example.text)
                .map_err(|e| format!("{:?}: {}", e.code, e.message))?;
            Ok((visitor_type(&frame), back(&frame)?))
        }
        Direction::Agent => {
            let frame = parse_client_frame::<AgentFrame>(&example.text)
                .map_err(|e| format!("{:?}: {}", e.code, e.message))?;
            Ok((agent_type(&frame), back(&frame)?))
        }
        Direction::Server => {
            let frame =
                serde_json::from_str::<ServerFrame>(&example.text).map_err(|e| e.to_string())?;
            Ok((server_type(&frame), back(&frame)?))
        }
    }
}

/// Checks one example completely; the error says what is wrong with it.
fn check(example: &Example) -> Result<&'static str, String> {
    let value: Value =
        serde_json::from_str(&example.text).map_err(|e| format!("not a single JSON value: {e}"))?;
    let object = value
        .as_object()
        .ok_or("not a JSON object (one frame is one object)")?;
    let claimed = object
        .get("type")
        .and_then(Value::as_str)
        .ok_or("no string `type` field")?;
    let (kind, round_trip) = parse(example)?;
    if kind != claimed {
        return Err(format!("`type` is {claimed:?} but it parsed as {kind:?}"));
    }
    if !example.direction.types().contains(&kind) {
        return Err(format!(
            "{kind:?} is missing from the list of {} frame types in this test",
            example.direction.marker()
        ));
    }
    // Unknown fields are ignored by design, so a misspelt optional field would parse; make sure
    // every field shown comes back unchanged.
    for (field, shown) in object {
        match round_trip.get(field) {
            Some(kept) if kept == shown => {}
            Some(kept) => {
                return Err(format!(
                    "field `{field}` does not survive a round trip: shown {shown}, parsed as {kept}"
                ))
            }
            None => {
                return Err(format!(
                    "field `{field}` is not part of the `{kind}` frame (it would be ignored)"
                ))
            }
        }
    }
    Ok(kind)
}

#[test]
fn every_example_parses_as_its_frame_type() {
    let doc = read_doc();
    let examples = examples(&doc);
    assert!(!examples.is_empty(), "{DOC} has no marked examples");
    let failures: Vec<String> = examples
        .iter()
        .filter_map(|example| {
            check(example).err().map(|error| {
                format!(
                    "{DOC}:{} (json {}): {error}\n{}\n",
                    example.line,
                    example.direction.marker(),
                    example.text
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} example(s) do not parse:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_frame_type_has_an_example() {
    let doc = read_doc();
    let examples = examples(&doc);
    let mut missing = Vec::new();
    for direction in [Direction::Visitor, Direction::Agent, Direction::Server] {
        let shown: BTreeSet<&str> = examples
            .iter()
            .filter(|e| e.direction == direction)
            .filter_map(|e| check(e).ok())
            .collect();
        for kind in direction.types() {
            if !shown.contains(kind) {
                missing.push(format!("json {} `{kind}`", direction.marker()));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{DOC} has no (valid) example of: {}",
        missing.join(", ")
    );
}

#[test]
fn every_error_code_is_documented() {
    let doc = read_doc();
    let missing: Vec<&str> = ERROR_CODES
        .iter()
        .map(|&code| {
            error_code_guard(code);
            code.as_str()
        })
        .filter(|name| !doc.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "error codes missing from {DOC}: {missing:?}"
    );
    // The list is complete and agrees with serde's names.
    let distinct: BTreeSet<&str> = ERROR_CODES.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        distinct.len(),
        ERROR_CODES.len(),
        "duplicate in ERROR_CODES"
    );
    for code in ERROR_CODES {
        assert_eq!(
            serde_json::to_value(code).unwrap(),
            Value::from(code.as_str()),
            "as_str and serde disagree for {code:?}"
        );
    }
}

/// Whether `number` occurs in `text` as a whole number (not inside a longer one).
fn mentions_number(text: &str, number: u16) -> bool {
    let needle = number.to_string();
    let bytes = text.as_bytes();
    text.match_indices(&needle).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + needle.len()).copied();
        !before.is_some_and(|b| b.is_ascii_digit()) && !after.is_some_and(|b| b.is_ascii_digit())
    })
}

#[test]
fn every_close_code_is_documented() {
    let doc = read_doc();
    let missing: Vec<String> = CLOSE_CODES
        .iter()
        .filter(|(_, code)| !mentions_number(&doc, *code))
        .map(|(name, code)| format!("{name} ({code})"))
        .collect();
    assert!(
        missing.is_empty(),
        "close codes missing from {DOC}: {missing:?}"
    );
}

#[test]
fn every_close_code_in_the_source_is_listed() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/protocol.rs");
    let source = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let start = source
        .find("pub mod close_code")
        .expect("src/protocol.rs has a `close_code` module");
    let module = &source[start..];
    let module = &module[..module.find("\n}").expect("the close_code module ends")];
    let declared: Vec<&str> = module
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub const "))
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert!(!declared.is_empty(), "no constants found in close_code");
    let listed: BTreeSet<&str> = CLOSE_CODES.iter().map(|(name, _)| *name).collect();
    for name in &declared {
        assert!(
            listed.contains(name),
            "close_code::{name} is not in CLOSE_CODES: add it there and document it in {DOC}"
        );
    }
    assert_eq!(
        declared.len(),
        CLOSE_CODES.len(),
        "CLOSE_CODES lists a constant that src/protocol.rs no longer declares"
    );
}

#[test]
fn the_example_extractor_finds_marked_blocks_only() {
    let doc = "intro\n```json visitor\n{\"type\": \"close\"}\n```\n```text\n```json server\n```\n\
               ```json server\n{\"type\": \"agent_state\",\n \"status\": \"away\"}\n```\n";
    let found = examples(doc);
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].direction, Direction::Visitor);
    assert_eq!(found[0].line, 2);
    assert_eq!(found[1].direction, Direction::Server);
    assert_eq!(
        found[1].text,
        "{\"type\": \"agent_state\",\n \"status\": \"away\"}"
    );
    assert!(mentions_number("close 4008.", 4008));
    assert!(!mentions_number("close 40080", 4008));
}
