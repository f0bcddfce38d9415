//! `[[webhooks]]` and `[webhook_delivery]`: where desk events go and how hard Parley tries.
//!
//! [`EventType`] lives here rather than beside the delivery code in `desk::webhooks` so that
//! configuration stays a leaf: an unknown event name is refused while the file is read, by the
//! type itself, and nothing here needs the module that sends the events.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{check_range, invalid, ConfigError};

/// What happened. The strings are part of the public contract: receivers switch on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub enum EventType {
    #[serde(rename = "conversation.created")]
    ConversationCreated,
    #[serde(rename = "conversation.assigned")]
    ConversationAssigned,
    #[serde(rename = "conversation.transferred")]
    ConversationTransferred,
    #[serde(rename = "conversation.closed")]
    ConversationClosed,
    #[serde(rename = "message.created")]
    MessageCreated,
    #[serde(rename = "csat.received")]
    CsatReceived,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        EventType::ConversationCreated,
        EventType::ConversationAssigned,
        EventType::ConversationTransferred,
        EventType::ConversationClosed,
        EventType::MessageCreated,
        EventType::CsatReceived,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ConversationCreated => "conversation.created",
            EventType::ConversationAssigned => "conversation.assigned",
            EventType::ConversationTransferred => "conversation.transferred",
            EventType::ConversationClosed => "conversation.closed",
            EventType::MessageCreated => "message.created",
            EventType::CsatReceived => "csat.received",
        }
    }

    /// The type named `name` (as in `[[webhooks]] events`), if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == name)
    }
}

/// An event name that is not one of [`EventType::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not an event type (known: {known})", known = known_events())]
pub struct UnknownEvent(String);

fn known_events() -> String {
    EventType::ALL.map(EventType::as_str).join(", ")
}

/// What `serde(try_from)` calls: a misspelt event stops start-up with the known names.
impl TryFrom<String> for EventType {
    type Error = UnknownEvent;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        Self::parse(&name).ok_or(UnknownEvent(name))
    }
}

/// `[[webhooks]]`: one endpoint that receives signed events (docs/desk.md, "Webhooks").
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `https://…`; `http://` is accepted (a warning at start-up unless the host is loopback).
    pub url: String,
    /// Shared with the receiver to sign each request (HMAC-SHA256); at least 16 bytes.
    pub secret: String,
    /// Event types this endpoint receives; all of them when absent.
    #[serde(default = "all_events")]
    pub events: Vec<EventType>,
}

/// By hand, so that printing the configuration never prints a webhook secret.
impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &"<redacted>")
            .field("secret", &"<redacted>")
            .field("events", &self.events)
            .finish()
    }
}

fn all_events() -> Vec<EventType> {
    EventType::ALL.to_vec()
}

impl WebhookConfig {
    pub(super) fn validate(&self, i: usize) -> Result<(), ConfigError> {
        let key = |field: &str| format!("webhooks[{i}].{field}");
        match reqwest::Url::parse(&self.url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            // The URL itself is not repeated: it may carry credentials.
            _ => {
                return Err(invalid(
                    &key("url"),
                    "must be an http:// or https:// URL with a host",
                ))
            }
        }
        if self.secret.len() < 16 {
            return Err(invalid(&key("secret"), "must be at least 16 bytes"));
        }
        if self.events.is_empty() {
            return Err(invalid(
                &key("events"),
                "is empty: leave it out to receive every event",
            ));
        }
        Ok(())
    }
}

/// `[webhook_delivery]`: how hard Parley tries, and how much it holds, for every endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookDelivery {
    /// One request, connection included; past it the attempt failed and is retried.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per event, the first included; then the event is given up.
    pub max_attempts: u32,
    /// An event is not retried once this old (since it happened).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Ceiling of the wait before the first retry; it doubles at each retry up to `backoff_cap`.
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    pub backoff_cap: Duration,
    /// Full jitter: each wait is drawn between zero and its ceiling. Off: exactly the ceiling.
    pub jitter: bool,
    /// Events held per endpoint (waiting, in flight or between retries); past it new events for
    /// that endpoint are dropped and counted.
    pub queue_size: usize,
    /// Requests in flight per endpoint at once.
    pub concurrency: usize,
}

impl Default for WebhookDelivery {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_attempts: 10,
            max_age: Duration::from_secs(30 * 60),
            backoff_base: Duration::from_secs(2),
            backoff_cap: Duration::from_secs(5 * 60),
            jitter: true,
            queue_size: 10_000,
            concurrency: 4,
        }
    }
}

impl WebhookDelivery {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (key, d) in [
            ("webhook_delivery.timeout", self.timeout),
            ("webhook_delivery.max_age", self.max_age),
            ("webhook_delivery.backoff_base", self.backoff_base),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be longer than zero"));
            }
        }
        if self.backoff_cap < self.backoff_base {
            return Err(invalid(
                "webhook_delivery.backoff_cap",
                "must be at least webhook_delivery.backoff_base",
            ));
        }
        check_range("webhook_delivery.max_attempts", self.max_attempts, 1, 100)?;
        check_range("webhook_delivery.queue_size", self.queue_size, 1, 1_000_000)?;
        check_range("webhook_delivery.concurrency", self.concurrency, 1, 256)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_types_parse_themselves_by_their_public_names() {
        for e in EventType::ALL {
            let parsed: EventType = serde_json::from_value(e.as_str().into()).unwrap();
            assert_eq!(parsed, e);
        }
        let err = serde_json::from_value::<EventType>("message.deleted".into())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"message.deleted\" is not an event type")
                && err.contains("csat.received"),
            "{err}"
        );
    }
}
