//! Canned replies: a shared library of texts an agent inserts by typing `/shortcut`, with
//! placeholders filled in from the conversation.
//!
//! Placeholders are `{{name}}` or `{{name|fallback}}` (spaces around either part are ignored):
//!
//! | placeholder | value | fallback when the value is missing or blank |
//! | --- | --- | --- |
//! | `{{visitor.name}}` | the visitor's name | `there` |
//! | `{{agent.name}}` | the agent's name | `the support team` |
//! | `{{visitor.id}}` | the visitor's id | empty |
//! | `{{category}}` | the conversation's category | empty |
//!
//! `{{visitor.name|您}}` replaces the built-in fallback, and `{{visitor.name|}}` makes it empty
//! (the built-in fallbacks are English; replies in other languages should give their own). Any
//! other name is unknown: a reply containing one is refused when saved, naming it, and
//! [`expand`] leaves it as it is. Expansion is one pass over the reply's text: a value that
//! itself looks like a placeholder (a visitor named `{{agent.name}}`) is inserted as it is.
//! Nothing is escaped or interpreted: text is data, and whoever shows it shows it as text.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::store::{CannedReply, ContentStore, PutOutcome};
use super::{check_text, DeskError};
pub use crate::domain::Shortcut;
use crate::domain::UnixMillis;

/// Canned replies at most; a new one beyond it is refused with 409.
pub const MAX_REPLIES: u32 = 1_000;
pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_TEXT_CHARS: usize = 4_000;
/// Each value given for expansion, in characters.
pub const MAX_VALUE_CHARS: usize = 200;

/// The names of the placeholders a reply may use.
pub const PLACEHOLDERS: [&str; 4] = ["visitor.name", "agent.name", "visitor.id", "category"];

/// The values placeholders are filled with; `None` or blank means missing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placeholders {
    pub visitor_name: Option<String>,
    pub agent_name: Option<String>,
    pub visitor_id: Option<String>,
    pub category: Option<String>,
}

impl Placeholders {
    /// The value of a known placeholder and its built-in fallback; `None` for unknown names.
    fn lookup(&self, name: &str) -> Option<(Option<&str>, &'static str)> {
        let (value, fallback) = match name {
            "visitor.name" => (&self.visitor_name, "there"),
            "agent.name" => (&self.agent_name, "the support team"),
            "visitor.id" => (&self.visitor_id, ""),
            "category" => (&self.category, ""),
            _ => return None,
        };
        let value = value.as_deref().map(str::trim).filter(|v| !v.is_empty());
        Some((value, fallback))
    }

    /// # Errors
    /// [`DeskError::Invalid`] naming a value longer than [`MAX_VALUE_CHARS`].
    pub fn check(&self) -> Result<(), DeskError> {
        for (field, value) in [
            ("visitor_name", &self.visitor_name),
            ("agent_name", &self.agent_name),
            ("visitor_id", &self.visitor_id),
            ("category", &self.category),
        ] {
            if let Some(v) = value {
                check_text(field, v, 0, MAX_VALUE_CHARS, false)?;
            }
        }
        Ok(())
    }
}

/// A piece of a reply's text.
#[derive(Debug, PartialEq, Eq)]
enum Piece<'a> {
    Literal(&'a str),
    /// `raw` is the whole `{{...}}`, kept for unknown names.
    Placeholder {
        raw: &'a str,
        name: &'a str,
        fallback: Option<&'a str>,
    },
}

/// Cuts `text` into literals and `{{...}}` placeholders. An opening `{{` without a closing
/// `}}` is literal text, and of two openings before one closing, the inner one counts.
fn pieces(text: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let inside = &rest[open + 2..];
        let Some(close) = inside.find("}}") else {
            break;
        };
        let inner = &inside[..close];
        if let Some(again) = inner.rfind("{{") {
            out.push(Piece::Literal(&rest[..open + 2 + again]));
            rest = &rest[open + 2 + again..];
            continue;
        }
        if open > 0 {
            out.push(Piece::Literal(&rest[..open]));
        }
        let end = open + 2 + close + 2;
        let (name, fallback) = match inner.split_once('|') {
            Some((name, fallback)) => (name.trim(), Some(fallback.trim())),
            None => (inner.trim(), None),
        };
        out.push(Piece::Placeholder {
            raw: &rest[open..end],
            name,
            fallback,
        });
        rest = &rest[end..];
    }
    if !rest.is_empty() {
        out.push(Piece::Literal(rest));
    }
    out
}

/// The text with every known placeholder replaced by its value, or by its fallback when the
/// value is missing; unknown placeholders stay as they are. One pass: values are not expanded.
pub fn expand(text: &str, values: &Placeholders) -> String {
    let mut out = String::with_capacity(text.len());
    for piece in pieces(text) {
        match piece {
            Piece::Literal(s) => out.push_str(s),
            Piece::Placeholder {
                raw,
                name,
                fallback,
            } => match values.lookup(name) {
                Some((Some(value), _)) => out.push_str(value),
                Some((None, builtin)) => out.push_str(fallback.unwrap_or(builtin)),
                None => out.push_str(raw),
            },
        }
    }
    out
}

/// The names of the placeholders in `text` that are not in [`PLACEHOLDERS`], in order of first
/// appearance.
pub fn unknown_placeholders(text: &str) -> Vec<String> {
    let mut unknown: Vec<String> = Vec::new();
    for piece in pieces(text) {
        if let Piece::Placeholder { name, .. } = piece {
            if !PLACEHOLDERS.contains(&name) && !unknown.iter().any(|u| u == name) {
                unknown.push(name.to_string());
            }
        }
    }
    unknown
}

/// A reply as an admin writes it, before it is checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CannedDraft {
    pub title: String,
    pub text: String,
}

/// The canned-reply library: a cheap handle over the store, which is read on every call, so
/// that every node sees every change at once.
#[derive(Clone)]
pub struct CannedReplies {
    store: Arc<dyn ContentStore>,
}

impl CannedReplies {
    pub fn new(store: Arc<dyn ContentStore>) -> Self {
        Self { store }
    }

    /// Every reply, by shortcut.
    ///
    /// # Errors
    /// [`DeskError::Store`] when the store cannot be read.
    pub async fn list(&self) -> Result<Vec<CannedReply>, DeskError> {
        Ok(self.store.canned_replies().await?)
    }

    /// # Errors
    /// [`DeskError::Store`] when the store cannot be read.
    pub async fn get(&self, shortcut: &Shortcut) -> Result<Option<CannedReply>, DeskError> {
        Ok(self.store.canned_reply(shortcut).await?)
    }

    /// Creates or replaces the reply; returns it and whether it is new.
    ///
    /// # Errors
    /// [`DeskError::Invalid`] for an empty or oversized title or text, or unknown placeholders
    /// (named); [`DeskError::Full`] for a new reply beyond [`MAX_REPLIES`];
    /// [`DeskError::Store`] when the store fails.
    pub async fn put(
        &self,
        shortcut: Shortcut,
        draft: CannedDraft,
        now: UnixMillis,
    ) -> Result<(CannedReply, bool), DeskError> {
        let title = draft.title.trim();
        check_text("title", title, 1, MAX_TITLE_CHARS, false)?;
        check_text("text", &draft.text, 1, MAX_TEXT_CHARS, true)?;
        let unknown = unknown_placeholders(&draft.text);
        if !unknown.is_empty() {
            return Err(DeskError::Invalid(format!(
                "unknown placeholder{} {} (known: {})",
                if unknown.len() == 1 { "" } else { "s" },
                unknown
                    .iter()
                    .map(|u| format!("{{{{{u}}}}}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                PLACEHOLDERS.join(", ")
            )));
        }
        let reply = CannedReply {
            shortcut,
            title: title.to_string(),
            text: draft.text,
            updated_at: now,
        };
        match self.store.put_canned_reply(&reply, MAX_REPLIES).await? {
            PutOutcome::Created => Ok((reply, true)),
            PutOutcome::Replaced => Ok((reply, false)),
            PutOutcome::Full => Err(DeskError::Full(format!(
                "there are already {MAX_REPLIES} canned replies, the most allowed; delete one first"
            ))),
        }
    }

    /// Returns whether there was such a reply.
    ///
    /// # Errors
    /// [`DeskError::Store`] when the store fails.
    pub async fn delete(&self, shortcut: &Shortcut) -> Result<bool, DeskError> {
        Ok(self.store.delete_canned_reply(shortcut).await?)
    }

    /// The reply's text with its placeholders filled in; `None` for an unknown shortcut.
    ///
    /// # Errors
    /// [`DeskError::Invalid`] for an oversized value, [`DeskError::Store`] when the store fails.
    pub async fn expand(
        &self,
        shortcut: &Shortcut,
        values: &Placeholders,
    ) -> Result<Option<String>, DeskError> {
        values.check()?;
        Ok(self
            .get(shortcut)
            .await?
            .map(|reply| expand(&reply.text, values)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(visitor: &str, agent: &str) -> Placeholders {
        Placeholders {
            visitor_name: Some(visitor.into()),
            agent_name: Some(agent.into()),
            ..Placeholders::default()
        }
    }

    #[test]
    fn values_fill_their_placeholders() {
        assert_eq!(
            expand(
                "Hi {{visitor.name}}, I'm {{ agent.name }} ({{category}}, {{visitor.id}}).",
                &Placeholders {
                    visitor_id: Some("v-42".into()),
                    category: Some("transaction".into()),
                    ..named("Vera", "Alice")
                }
            ),
            "Hi Vera, I'm Alice (transaction, v-42)."
        );
    }

    #[test]
    fn missing_or_blank_values_take_the_fallback() {
        let none = Placeholders::default();
        assert_eq!(expand("Hi {{visitor.name}}!", &none), "Hi there!");
        assert_eq!(
            expand("Hi {{visitor.name}}!", &named("  ", "Alice")),
            "Hi there!"
        );
        assert_eq!(expand("{{visitor.name|朋友}}，您好", &none), "朋友，您好");
        assert_eq!(expand("{{visitor.name | friend }}!", &none), "friend!");
        assert_eq!(expand("{{visitor.name|}}您好", &none), "您好");
        assert_eq!(expand("[{{category}}]", &none), "[]");
        assert_eq!(
            expand("{{visitor.name|friend}}", &named("Vera", "Alice")),
            "Vera"
        );
    }

    #[test]
    fn unknown_placeholders_stay_and_are_reported_once() {
        let text = "Hi {{visitor.nmae}} {{order.id}} {{visitor.nmae|x}} {{}}";
        assert_eq!(expand(text, &named("Vera", "Alice")), text);
        assert_eq!(unknown_placeholders(text), ["visitor.nmae", "order.id", ""]);
        assert!(unknown_placeholders("Hi {{visitor.name|there}} {{agent.name}}").is_empty());
    }

    #[test]
    fn values_are_inserted_verbatim_and_not_expanded_again() {
        let out = expand(
            "Hi {{visitor.name}}",
            &named("{{agent.name}} <b>&amp;", "Alice"),
        );
        assert_eq!(out, "Hi {{agent.name}} <b>&amp;");
    }

    #[test]
    fn unbalanced_braces_are_text() {
        let none = Placeholders::default();
        assert_eq!(expand("a {{ b", &none), "a {{ b");
        assert_eq!(expand("a }} b", &none), "a }} b");
        assert_eq!(expand("{{ {{visitor.name}}", &none), "{{ there");
        assert_eq!(expand("{{{visitor.name}}}", &none), "{{{visitor.name}}}");
        assert!(unknown_placeholders("a {{ b").is_empty());
    }

    #[test]
    fn shortcuts_are_short_lowercase_words() {
        assert!(Shortcut::parse("refund-delay").is_ok());
        assert!(Shortcut::parse("kyc_2").is_ok());
        assert!(Shortcut::parse(&"a".repeat(40)).is_ok());
        for bad in ["", "Refund", "/refund", "a b", "退款", &"a".repeat(41)] {
            assert!(Shortcut::parse(bad).is_err(), "{bad:?}");
        }
    }
}
