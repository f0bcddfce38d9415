//! Rate limits over the wire: refused frames are answered, not stored, not relayed; floods close.

use parley::protocol::ErrorCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_message_over_the_limit_is_refused_and_not_relayed() {
    let app = spawn_app_with(|c| {
        // A burst of 3 refilling at one a second: the loop below sends much faster than that.
        c.rate_limits.visitor_messages_per_second = 1;
        c.rate_limits.visitor_message_burst = 3;
    })
    .await;
    let mut agent = app.agent("a1").await;
    let mut visitor = app.visitor().await;
    visitor.start("other", "hi").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;

    let mut accepted = Vec::new();
    let mut refused = None;
    for i in 0..10 {
        let cid = visitor.say(&format!("m{i}")).await;
        match visitor
            .client
            .expect("ack or error", |f| match f {
                parley::protocol::ServerFrame::Ack { cid: c, seq, .. } if c.as_str() == cid => {
                    Some(Ok(seq.0))
                }
                parley::protocol::ServerFrame::Error(e) => Some(Err(e.clone())),
                _ => None,
            })
            .await
        {
            Ok(seq) => accepted.push(seq),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let refused = refused.expect("the limit refused a message");
    assert_eq!(refused.code, ErrorCode::RateLimited);
    assert!(refused.retry_after_ms.unwrap() > 0);
    assert!(refused.cid.is_some(), "the error names the refused message");
    assert!((3..10).contains(&accepted.len()), "accepted {accepted:?}");

    // The connection is still open and the agent only ever saw accepted messages.
    for seq in &accepted {
        assert_eq!(agent.expect_message().await.seq.0, *seq);
    }
    agent.say(&chat, "still connected?").await;
    assert_eq!(visitor.expect_message().await.text, "still connected?");
    let transcript = app
        .get_json(&format!("/v1/conversations/{}", chat.id))
        .await;
    assert_eq!(
        transcript["messages"].as_array().unwrap().len(),
        1 + accepted.len() + 1
    );
    assert!(
        app.metric("parley_rate_limited_total", "limit=\"visitor_messages\"")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_client_that_keeps_flooding_is_closed_with_1008() {
    let app = spawn_app_with(|c| {
        c.rate_limits.visitor_messages_per_second = 1;
        c.rate_limits.visitor_message_burst = 1;
        c.rate_limits.flood_strikes = 5;
    })
    .await;
    let mut visitor = app.visitor().await;
    visitor.start("other", "hi").await;
    // Send without waiting; the server may close the socket before the last ones are written.
    use futures::SinkExt;
    for i in 0..50 {
        let frame = json!({"type": "message", "cid": format!("f{i}"), "text": "spam"}).to_string();
        if visitor
            .client
            .ws
            .send(tokio_tungstenite::tungstenite::Message::text(frame))
            .await
            .is_err()
        {
            break;
        }
    }
    let (code, frames) = visitor.client.expect_close().await;
    assert_eq!(code, 1008);
    assert!(frames.iter().any(
        |f| matches!(f, parley::protocol::ServerFrame::Error(e) if e.code == ErrorCode::RateLimited)
    ));
    // Everyone else is still served.
    let mut other = app.visitor().await;
    other.start("other", "I am fine").await;
}

#[tokio::test]
async fn too_many_connections_from_one_address_get_429() {
    let app = spawn_app_with(|c| c.rate_limits.ip_connections_per_minute = 2).await;
    let _one = app.visitor().await;
    let _two = app.visitor().await;
    assert_eq!(app.upgrade_status(app.ws_url("/v1/visitor")).await, 429);
}

#[tokio::test]
async fn open_sockets_count_against_max_connections_for_their_whole_life() {
    let app = spawn_app_with(|c| c.limits.max_connections = 3).await;
    let first = app.visitor().await;
    let _second = app.visitor().await;
    let _third = app.agent("a1").await;
    // Upgraded sockets keep their slot: a fourth connection is turned away at once.
    assert_eq!(app.upgrade_status(app.ws_url("/v1/visitor")).await, 503);
    drop(first);
    app.eventually("a slot frees when a socket closes", || async {
        tokio_tungstenite::connect_async(app.ws_url("/v1/visitor"))
            .await
            .is_ok()
    })
    .await;
    // The scrape needs a slot too; the probe above has closed its socket by now or soon.
    drop((_second, _third));
    // Polls until a slot is free for the scrape (an event with a deadline, not a fixed sleep).
    let deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
    let text = loop {
        if let Ok(r) = reqwest::get(app.http_url("/metrics")).await {
            if r.status() == 200 {
                break r.text().await.unwrap();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no slot for /metrics"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let refused: f64 = text
        .lines()
        .filter(|l| l.starts_with("parley_connections_refused_total"))
        .filter(|l| l.contains("max_connections"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(refused >= 1.0, "{text}");
}
