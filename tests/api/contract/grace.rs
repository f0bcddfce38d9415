//! Grace periods on both topologies: a client whose last socket closed keeps what it holds
//! for a while. A visitor that does not come back has its conversation closed (an offline
//! message excepted); an agent that does not come back has its chats put at the front of the
//! queue; one that does keeps them. Every end is counted in `parley_grace_periods_ended_total`
//! by the node that ended it, which is how a test knows an end was acted on.

use std::time::Duration;

use parley::protocol::{CloseReason, QueueReason, Role, ServerFrame};

use crate::topology::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_that_does_not_come_back_is_closed_after_its_grace() {
    let Some(d) = start(|c| c.routing.visitor_grace = Duration::from_millis(500)).await else {
        return;
    };
    let (mut agent, v, _chat) = d.chat("a1", "other", "bye soon").await;
    drop(v);
    let closed = agent.client.expect_closed().await;
    assert!(
        matches!(
            closed,
            ServerFrame::Closed {
                by: Role::System,
                reason: CloseReason::VisitorLeft,
                ..
            }
        ),
        "{closed:?}"
    );
    d.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_coming_back_within_grace_keeps_its_chats() {
    let Some(d) = start(|_| {}).await else { return };
    let (agent, mut visitor, chat) = d.chat("a1", "other", "hello").await;
    drop(agent);
    visitor.say_acked("are you there?").await;

    // Back (through the other node, when there is one), resuming after seq 1: the chat is
    // still its own, and what it missed is replayed.
    let mut agent = d
        .visitors
        .agent_resuming("a1", &[(chat.id.to_string(), 1)])
        .await;
    let welcome = &agent.welcome;
    assert_eq!(welcome.conversations.len(), 1);
    assert_eq!(welcome.conversations[0].id, chat.id);
    assert_eq!(welcome.conversations[0].recovered, Some(true));
    let m = agent.expect_message().await;
    assert_eq!((m.seq.0, m.text.as_str()), (2, "are you there?"));
    agent.say(&chat, "yes").await;
    assert_eq!(visitor.expect_message().await.text, "yes");
    d.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_does_not_come_back_has_its_chats_put_at_the_front_of_the_queue() {
    let Some(d) = start(|c| {
        c.routing.agent_grace = Duration::from_millis(300);
        c.routing.default_capacity = 1;
    })
    .await
    else {
        return;
    };
    let (a1, mut lost, _) = d.chat("a1", "other", "my agent will vanish").await;

    // Someone with a higher priority is already waiting...
    let mut waiting = d.visitor().await;
    waiting.start("security", "urgent").await;
    assert_eq!(waiting.client.expect_queued().await.0, 1);

    drop(a1);
    // ...but the chat taken back from the lost agent goes in front of it.
    let (position, _, reason) = lost.client.expect_queued().await;
    assert_eq!((position, reason), (1, QueueReason::AgentDisconnected));
    assert_eq!(waiting.client.expect_queued().await.0, 2);
    let label = "role=\"agent\",outcome=\"expired\"";
    crate::helpers::eventually("the end to be counted", Duration::from_secs(10), || async {
        d.metric("parley_grace_periods_ended_total", label).await == 1.0
    })
    .await;

    // A visitor who reconnects meanwhile (on the other node, when there is one) is still told
    // why it waits.
    let (id, token) = (lost.id.clone(), lost.token.clone());
    drop(lost);
    let mut lost = d.agents.reconnect_visitor(&id, &token, Some(1)).await;
    let (position, _, reason) = lost.client.expect_queued().await;
    assert_eq!((position, reason), (1, QueueReason::AgentDisconnected));

    let mut a2 = d.agent("a2").await;
    let (chat, history) = a2.expect_chat().await;
    assert_eq!(history[0].text, "my agent will vanish");
    assert_eq!(lost.expect_assigned().await.id, chat.id);
    d.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_message_stays_open_when_its_visitor_does_not_come_back() {
    let Some(d) = start(|c| c.routing.visitor_grace = Duration::from_millis(200)).await else {
        return;
    };
    // Nobody online: an offline message.
    let mut v = d.visitor().await;
    v.start("other", "please write back").await;
    let (_, _, reason) = v.client.expect_queued().await;
    assert_eq!(reason, QueueReason::NobodyOnline);
    drop(v);
    // Its grace period ends (counted once acted on), and closes nothing: the first agent
    // online gets it.
    let label = "role=\"visitor\",outcome=\"expired\"";
    crate::helpers::eventually(
        "the visitor's grace period to end",
        Duration::from_secs(10),
        || async { d.metric("parley_grace_periods_ended_total", label).await == 1.0 },
    )
    .await;
    let mut agent = d.agent("a1").await;
    let (chat, history) = agent.expect_chat().await;
    assert!(chat.offline);
    assert_eq!(history[0].text, "please write back");
    d.check().await;
}
