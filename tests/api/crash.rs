//! `kill -9` of a single node under live chats, and the restart on the same data: what was
//! acknowledged is in the transcript exactly once, no sequence number is given to two
//! messages, and clients that resume end up with exactly what the transcript holds.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use parley::protocol::{MessageView, ServerFrame};
use serde_json::{json, Value};

use crate::helpers::{test_config, Agent, Client, Visitor};
use crate::process::ProcessNode;

/// One chat as its two sides saw it before the kill.
struct Seen {
    conversation: String,
    visitor: Visitor,
    agent: Agent,
    /// seq -> text, of every message either side was shown or acknowledged.
    messages: BTreeMap<u64, String>,
    /// cid -> (seq, text) of what was acknowledged.
    acked: HashMap<String, (u64, String)>,
    /// cid -> text of what was sent and never acknowledged.
    unacked: Vec<(String, String, bool)>,
    visitor_last: u64,
    agent_last: u64,
}

async fn ack_of(client: &mut Client, cid: &str) -> (u64, bool) {
    client.expect_ack(cid).await
}

/// Asks for the conversation's history (one page holds it all here) and returns it, failing
/// if anything but a live `message` comes first (an `ack` in particular).
async fn history(client: &mut Client, conversation: Option<&str>) -> Vec<MessageView> {
    let mut frame = json!({"type": "history", "limit": 500});
    if let Some(id) = conversation {
        frame["conversation_id"] = json!(id);
    }
    client.send(frame).await;
    loop {
        match client.next_frame_skipping_state().await {
            ServerFrame::History {
                messages, complete, ..
            } => {
                assert!(complete, "one page holds the whole conversation");
                return messages;
            }
            ServerFrame::Message(_) => continue,
            other => panic!("expected the history page, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_with_sigkill_keeps_every_ack_and_never_gives_a_seq_twice() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut config = test_config(data.clone());
    // A stalled write fails fast and is retried, so messages wait unstored while the lock holds.
    config.transcripts.store_busy_timeout = Duration::from_millis(50);
    let mut node = ProcessNode::start(config, dir).await;

    // Three live chats; what is acknowledged before the stall is durable.
    let mut chats = Vec::new();
    for i in 1..=3 {
        let (mut agent, mut visitor, chat) = node.chat(&format!("a{i}"), "other", "start").await;
        let mut seen = BTreeMap::from([(1, "start".to_string())]);
        let mut acked = HashMap::new();
        for n in 0..4 {
            let (cid, text) = (format!("v{n}"), format!("chat {i} visitor {n}"));
            visitor.say_with_cid(&cid, &text).await;
            let (seq, _) = ack_of(&mut visitor.client, &cid).await;
            assert_eq!(agent.expect_message().await.seq.0, seq);
            seen.insert(seq, text.clone());
            acked.insert(cid, (seq, text));
        }
        let text = format!("chat {i} agent reply");
        let seq = agent.say(&chat, &text).await;
        assert_eq!(visitor.expect_message().await.seq.0, seq);
        seen.insert(seq, text.clone());
        acked.insert(format!("agent-{seq}"), (seq, text));
        chats.push(Seen {
            conversation: chat.id.to_string(),
            visitor,
            agent,
            visitor_last: seq,
            agent_last: seq,
            messages: seen,
            acked,
            unacked: Vec::new(),
        });
    }

    // Another process holds SQLite's write lock: what is sent now is delivered to the other
    // side at once but cannot be stored, so it must not be acknowledged.
    let db = data.join("parley.db");
    let mut blocker = crate::helpers::hold_write_lock(&db).await;
    for (i, chat) in chats.iter_mut().enumerate() {
        for n in 0..3 {
            let (cid, text) = (format!("w{n}"), format!("chat {} stalled {n}", i + 1));
            chat.visitor.say_with_cid(&cid, &text).await;
            let m = chat.agent.expect_message().await;
            assert_eq!(m.text, text);
            chat.agent_last = m.seq.0;
            chat.messages.insert(m.seq.0, text.clone());
            chat.unacked.push((cid, text, false));
        }
        let (cid, text) = (
            "stalled-reply".to_string(),
            format!("chat {} agent stalled", i + 1),
        );
        chat.agent
            .client
            .send(json!({"type": "message", "conversation_id": chat.conversation, "cid": cid, "text": text}))
            .await;
        let m = chat.visitor.expect_message().await;
        assert_eq!(m.text, text);
        chat.visitor_last = m.seq.0;
        chat.messages.insert(m.seq.0, text.clone());
        chat.unacked.push((cid, text, true));
    }
    // The senders are not told it is stored: the next frame each gets is the answer to a
    // `history` sent now (from memory), not an ack.
    for chat in &mut chats {
        assert!(!history(&mut chat.visitor.client, None).await.is_empty());
        assert!(!history(&mut chat.agent.client, Some(&chat.conversation))
            .await
            .is_empty());
    }

    node.kill9();
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    drop(blocker);
    node.restart().await;

    for (i, chat) in chats.iter_mut().enumerate() {
        // Both sides saw messages that died with the process: they are told to fetch history
        // instead of keeping them.
        let mut visitor = node
            .reconnect_visitor(
                &chat.visitor.id,
                &chat.visitor.token,
                Some(chat.visitor_last),
            )
            .await;
        assert_eq!(visitor.welcome.conversations.len(), 1);
        assert_eq!(
            visitor.welcome.conversations[0].recovered,
            Some(false),
            "the visitor saw a message that was never stored"
        );
        let agent_name = format!("a{}", i + 1);
        let mut agent = node
            .agent_resuming(&agent_name, &[(chat.conversation.clone(), chat.agent_last)])
            .await;
        assert_eq!(
            agent.welcome.conversations.len(),
            1,
            "still the agent's chat"
        );
        assert_eq!(agent.welcome.conversations[0].recovered, Some(false));

        // What was not acknowledged is sent again with the same cid, and stored once.
        let lost_up_to = *chat.messages.keys().last().unwrap();
        let mut resent = Vec::new();
        for (cid, text, by_agent) in &chat.unacked {
            let client = if *by_agent {
                agent
                    .client
                    .send(json!({"type": "message", "conversation_id": chat.conversation, "cid": cid, "text": text}))
                    .await;
                &mut agent.client
            } else {
                visitor.say_with_cid(cid, text).await;
                &mut visitor.client
            };
            let (seq, duplicate) = ack_of(client, cid).await;
            assert!(!duplicate, "{cid} was never stored");
            assert!(
                seq > lost_up_to,
                "seq {seq} given again: it was {:?} before the kill",
                chat.messages.get(&seq)
            );
            resent.push((seq, text.clone()));
        }

        // The transcript: every acknowledged message at its seq, every text once, and no seq
        // that a client saw holding another text.
        let t: Value = node
            .get_json(&format!("/v1/conversations/{}", chat.conversation))
            .await;
        let stored: Vec<(u64, String)> = t["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["seq"].as_u64().unwrap(),
                    m["text"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let seqs: Vec<u64> = stored.iter().map(|(s, _)| *s).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        let mut texts: Vec<&str> = stored.iter().map(|(_, t)| t.as_str()).collect();
        texts.sort_unstable();
        let count = texts.len();
        texts.dedup();
        assert_eq!(texts.len(), count, "a message stored twice: {stored:?}");
        let by_seq: BTreeMap<u64, &str> = stored.iter().map(|(s, t)| (*s, t.as_str())).collect();
        for (cid, (seq, text)) in &chat.acked {
            assert_eq!(
                by_seq.get(seq),
                Some(&text.as_str()),
                "acknowledged {cid} lost"
            );
        }
        for (seq, text) in &resent {
            assert_eq!(by_seq.get(seq), Some(&text.as_str()));
        }
        for (seq, text) in &chat.messages {
            if let Some(stored) = by_seq.get(seq) {
                assert_eq!(
                    stored, text,
                    "seq {seq} holds another message than the one shown"
                );
            }
        }

        // Resuming clients end with exactly what the transcript holds.
        let visible: Vec<(u64, String)> = stored.clone();
        let page = history(&mut visitor.client, None).await;
        let got: Vec<(u64, String)> = page.iter().map(|m| (m.seq.0, m.text.clone())).collect();
        assert_eq!(got, visible, "the visitor's history");
        let page = history(&mut agent.client, Some(&chat.conversation)).await;
        let got: Vec<(u64, String)> = page.iter().map(|m| (m.seq.0, m.text.clone())).collect();
        assert_eq!(got, visible, "the agent's history");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_stopped_cleanly_continues_its_sequences_without_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut node = ProcessNode::start(test_config(data), dir).await;
    let (_agent, mut visitor, _chat) = node.chat("a1", "other", "start").await;
    let seq = visitor.say_acked("before").await;
    node.stop().await;
    node.restart().await;
    let mut visitor = node
        .reconnect_visitor(&visitor.id, &visitor.token, Some(seq))
        .await;
    assert_eq!(visitor.welcome.conversations[0].recovered, Some(true));
    assert_eq!(visitor.say_acked("after").await, seq + 1);
}
