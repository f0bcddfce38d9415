//! The support-desk features beside the gateway: what a support team runs on top of the chats
//! (issue 5). The gateway's core (sockets, routing, transcripts) does not depend on them; the
//! engine calls into them at the moments they care about.
//!
//! - [`webhooks`]: signed HTTP callbacks for desk events, so a team can connect its CRM or
//!   ticketing system.

pub mod webhooks;
