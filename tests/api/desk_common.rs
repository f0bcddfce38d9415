//! Desk scenarios shared by the single-node tests (tests/api) and the Redis tests (tests/redis):
//! the same assertions whichever engine, and whichever node each client is on.

use parley::config::{CategoryConfig, Config, TeamConfig};
use parley::protocol::{ConversationView, ErrorCode, MessageKind, ServerFrame};
use serde_json::json;

use crate::helpers::{Agent, Client, Visitor};

/// Teams for the tests: a1, a2 front line; a3, a4 technical support; a5, a6 supervisors.
/// Security routes to supervisors, transaction to tech; others go to anyone.
pub fn desk(c: &mut Config) {
    let team = |id: &str, name: &str| TeamConfig {
        id: id.into(),
        name: name.into(),
        hours: None,
    };
    c.teams = vec![
        team("front", "Front line"),
        team("tech", "Technical support"),
        team("supervisors", "Supervisors"),
    ];
    for (i, a) in c.agents.iter_mut().enumerate() {
        a.teams = vec![["front", "tech", "supervisors"][i / 2].to_string()];
    }
    for (category, team) in [("security", "supervisors"), ("transaction", "tech")] {
        c.categories.insert(
            category.into(),
            CategoryConfig {
                team: Some(team.into()),
                first_response_target: None,
                ..CategoryConfig::default()
            },
        );
    }
    c.desk.escalation_team = Some("supervisors".into());
}

/// Sends a frame on an agent's socket.
pub async fn send(agent: &mut Agent, frame: serde_json::Value) {
    agent.client.send(frame).await;
}

/// The next `transferred`, past the notes the transferring agent sees written first.
pub async fn expect_transferred(client: &mut Client) -> ServerFrame {
    loop {
        match client.next_frame().await {
            f @ ServerFrame::Transferred { .. } => return f,
            ServerFrame::Message(m) if m.kind == MessageKind::Note => continue,
            ServerFrame::AgentState { .. } | ServerFrame::Queued { .. } => continue,
            other => panic!("expected transferred, got {other:?}"),
        }
    }
}

/// `a1` has `chat` with `v`; `a3` (technical support) is online with room. `a1` transfers it to
/// the team with a note: both sides are told, `a3` gets it with its whole history and the notes,
/// `a1` can no longer write in it, `a3` can.
pub async fn transfer_to_team_keeps_history(
    a1: &mut Agent,
    v: &mut Visitor,
    chat: &ConversationView,
    a3: &mut Agent,
) {
    a1.say(chat, "let me check").await;
    v.expect_message().await;
    send(
        a1,
        json!({"type": "transfer", "conversation_id": chat.id, "team": "tech", "note": "node issue?"}),
    )
    .await;
    // The old agent is told and drops it.
    match expect_transferred(&mut a1.client).await {
        ServerFrame::Transferred {
            conversation_id,
            team,
            agent,
            escalated,
        } => {
            assert_eq!(conversation_id, chat.id);
            assert_eq!(team.as_deref(), Some("Technical support"));
            assert_eq!(agent.unwrap().id, "a3");
            assert!(!escalated);
        }
        _ => unreachable!(),
    }
    // The visitor is told, then gets its new agent, same conversation.
    expect_transferred(&mut v.client).await;
    let moved = v.expect_assigned().await;
    assert_eq!(moved.id, chat.id);
    assert_eq!(moved.agent.unwrap().id, "a3");
    // The receiving agent gets the whole history, the transfer notes among it.
    let (received, history) = a3.expect_chat().await;
    assert_eq!(received.id, chat.id);
    assert_eq!(received.transfers, 1);
    let texts: Vec<(&str, MessageKind)> =
        history.iter().map(|m| (m.text.as_str(), m.kind)).collect();
    assert_eq!(
        texts,
        [
            ("my withdrawal is stuck", MessageKind::Text),
            ("let me check", MessageKind::Text),
            (
                "Transferred to Technical support by Agent 1",
                MessageKind::Note
            ),
            ("node issue?", MessageKind::Note),
        ]
    );
    // The old agent can no longer write in it; the new one can, and the visitor hears it.
    let cid = "late";
    send(
        a1,
        json!({"type": "message", "conversation_id": chat.id, "cid": cid, "text": "still me"}),
    )
    .await;
    a1.client.expect_error_code(ErrorCode::Forbidden).await;
    a3.say(&received, "I am on it").await;
    assert_eq!(v.expect_message().await.text, "I am on it");
}
