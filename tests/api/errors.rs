//! Bad input gets its documented error (or close code), and everyone else keeps being served.

use futures::SinkExt;
use parley::protocol::ErrorCode;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::helpers::*;

/// A pair that is chatting, to prove the server still serves others after each bad input.
async fn chatting_pair(app: &TestApp) -> (Visitor, Agent, parley::protocol::ConversationView) {
    let mut agent = app.agent("a1").await;
    let mut visitor = app.visitor().await;
    visitor.start("other", "hello").await;
    visitor.expect_assigned().await;
    let (chat, _) = agent.expect_chat().await;
    (visitor, agent, chat)
}

async fn still_served(visitor: &mut Visitor, agent: &mut Agent) {
    let seq = visitor.say_acked("still here").await;
    assert_eq!(agent.expect_message().await.seq.0, seq);
}

#[tokio::test]
async fn malformed_json_gets_an_error_and_the_socket_stays_open() {
    let app = spawn_app().await;
    let (mut visitor, mut agent, _) = chatting_pair(&app).await;
    visitor.client.send_text("{this is not json").await;
    let e = visitor
        .client
        .expect_error_code(ErrorCode::MalformedFrame)
        .await;
    assert!(!e.message.is_empty());
    visitor
        .client
        .send(json!({"type": "message", "text": "no cid"}))
        .await;
    let e = visitor
        .client
        .expect_error_code(ErrorCode::MalformedFrame)
        .await;
    assert!(e.message.contains("cid"), "{}", e.message);
    still_served(&mut visitor, &mut agent).await;
}

#[tokio::test]
async fn an_unknown_type_gets_unknown_type() {
    let app = spawn_app().await;
    let (mut visitor, mut agent, _) = chatting_pair(&app).await;
    visitor
        .client
        .send(json!({"type": "teleport", "to": "mars"}))
        .await;
    visitor
        .client
        .expect_error_code(ErrorCode::UnknownType)
        .await;
    still_served(&mut visitor, &mut agent).await;
}

#[tokio::test]
async fn an_oversize_frame_closes_that_socket_with_1009_only() {
    let app = spawn_app_with(|c| c.limits.frame_max_bytes = 16 * 1024).await;
    let (mut visitor, mut agent, _) = chatting_pair(&app).await;
    let mut big = app.visitor().await;
    let text = "x".repeat(20 * 1024);
    big.client
        .send(json!({"type": "message", "cid": "big", "text": text}))
        .await;
    let (code, _) = big.client.expect_close().await;
    assert_eq!(code, 1009);
    still_served(&mut visitor, &mut agent).await;
}

#[tokio::test]
async fn text_over_the_length_cap_is_refused_without_closing() {
    let app = spawn_app_with(|c| c.limits.text_max_chars = 100).await;
    let (mut visitor, mut agent, _) = chatting_pair(&app).await;
    visitor.say_with_cid("long", &"y".repeat(101)).await;
    let e = visitor
        .client
        .expect_error_code(ErrorCode::TextTooLong)
        .await;
    assert_eq!(e.cid.as_ref().map(|c| c.as_str()), Some("long"));
    visitor.say_with_cid("blank", "   ").await;
    visitor
        .client
        .expect_error_code(ErrorCode::InvalidText)
        .await;
    still_served(&mut visitor, &mut agent).await;
}

#[tokio::test]
async fn binary_frames_get_unsupported_frame() {
    let app = spawn_app().await;
    let (mut visitor, mut agent, _) = chatting_pair(&app).await;
    use futures::SinkExt;
    visitor
        .client
        .ws
        .send(tokio_tungstenite::tungstenite::Message::binary(vec![
            1u8, 2, 3,
        ]))
        .await
        .unwrap();
    visitor
        .client
        .expect_error_code(ErrorCode::UnsupportedFrame)
        .await;
    still_served(&mut visitor, &mut agent).await;
}

#[tokio::test]
async fn frames_before_hello_close_with_4000() {
    let app = spawn_app().await;
    let mut client = app.connect("/v1/visitor").await;
    client
        .send(json!({"type": "message", "cid": "x", "text": "hi"}))
        .await;
    let (code, frames) = client.expect_close().await;
    assert_eq!(code, 4000);
    assert!(
        matches!(&frames[..], [parley::protocol::ServerFrame::Error(e)] if e.code == ErrorCode::HelloRequired)
    );
}

#[tokio::test]
async fn no_hello_in_time_closes_with_4008() {
    let app =
        spawn_app_with(|c| c.limits.hello_timeout = std::time::Duration::from_millis(200)).await;
    let mut client = app.connect("/v1/visitor").await;
    let (code, _) = client.expect_close().await;
    assert_eq!(code, 4008);
}

#[tokio::test]
async fn protocol_mistakes_get_their_codes() {
    let app = spawn_app().await;
    let mut visitor = app.visitor().await;
    visitor.say_with_cid("early", "no conversation yet").await;
    visitor
        .client
        .expect_error_code(ErrorCode::NoConversation)
        .await;
    visitor
        .client
        .send(json!({"type": "start", "category": "billing", "text": "x"}))
        .await;
    let e = visitor
        .client
        .expect_error_code(ErrorCode::InvalidCategory)
        .await;
    assert!(
        e.message.contains("security"),
        "lists the categories: {}",
        e.message
    );
    visitor.start("other", "ok").await;
    visitor
        .client
        .send(json!({"type": "start", "category": "other", "text": "again"}))
        .await;
    visitor
        .client
        .expect_error_code(ErrorCode::ConversationOpen)
        .await;
    visitor.client.send(json!({"type": "hello"})).await;
    visitor
        .client
        .expect_error_code(ErrorCode::HelloRequired)
        .await;

    let mut agent = app.agent("a1").await;
    let (chat, _) = agent.expect_chat().await;
    let mut other_agent = app.agent("a2").await;
    other_agent
        .client
        .send(json!({"type": "message", "conversation_id": chat.id, "cid": "c", "text": "hijack"}))
        .await;
    other_agent
        .client
        .expect_error_code(ErrorCode::Forbidden)
        .await;
}

/// A hand-rolled WebSocket client that never answers pings: the idle timeout must find it.
mod raw {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub async fn upgrade(addr: std::net::SocketAddr, path: &str) -> TcpStream {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        s.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        s
    }

    /// A masked text frame, as clients must send.
    pub fn text_frame(payload: &str) -> Vec<u8> {
        text_frame_bytes(payload.as_bytes())
    }

    /// A masked text frame of any bytes, UTF-8 or not.
    pub fn text_frame_bytes(payload: &[u8]) -> Vec<u8> {
        assert!(payload.len() < 126);
        let mask = [7u8, 1, 9, 3];
        let mut f = vec![0x81, 0x80 | payload.len() as u8];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        f
    }

    /// Reads until the server ends the connection; returns the close code it sent.
    pub async fn close_code(mut s: TcpStream) -> Option<u16> {
        let mut data = Vec::new();
        tokio::time::timeout(crate::helpers::FRAME_TIMEOUT, s.read_to_end(&mut data))
            .await
            .expect("the server closed in time")
            .ok();
        let mut i = 0;
        while i + 2 <= data.len() {
            let opcode = data[i] & 0x0f;
            let (len, header) = match data[i + 1] & 0x7f {
                126 => (u16::from_be_bytes([data[i + 2], data[i + 3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(data[i + 2..i + 10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            let body = &data[i + header..i + header + len];
            if opcode == 0x8 {
                return Some(u16::from_be_bytes([body[0], body[1]]));
            }
            i += header + len;
        }
        None
    }
}

#[tokio::test]
async fn a_client_that_goes_silent_is_closed_with_4008() {
    let app = spawn_app_with(|c| {
        c.limits.ping_interval = std::time::Duration::from_millis(100);
        c.limits.idle_timeout = std::time::Duration::from_millis(400);
    })
    .await;
    let mut s = raw::upgrade(app.addr, "/v1/visitor").await;
    s.write_all(&raw::text_frame(r#"{"type":"hello"}"#))
        .await
        .unwrap();
    assert_eq!(raw::close_code(s).await, Some(4008));
}

/// The idle timer counts from the last frame read, of any kind: a client that sends only
/// WebSocket pings, more often than the timeout, is still connected after three timeouts.
#[tokio::test]
async fn a_client_that_keeps_sending_is_not_idle() {
    let idle = std::time::Duration::from_millis(300);
    let app = spawn_app_with(|c| c.limits.idle_timeout = idle).await;
    let mut visitor = app.visitor().await;
    let until = tokio::time::Instant::now() + 3 * idle;
    while tokio::time::Instant::now() < until {
        visitor
            .client
            .ws
            .send(tokio_tungstenite::tungstenite::Message::Ping(
                Default::default(),
            ))
            .await
            .expect("ping");
        // Paces the client's traffic: a third of the timeout between frames.
        tokio::time::sleep(idle / 3).await;
    }
    // Still served: the conversation starts and is acknowledged.
    visitor.start("account", "still here").await;
}

#[tokio::test]
async fn slow_request_headers_are_cut_off() {
    let app =
        spawn_app_with(|c| c.limits.header_read_timeout = std::time::Duration::from_millis(300))
            .await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    // Headers started, never finished (slowloris).
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(FRAME_TIMEOUT, s.read_to_end(&mut rest))
        .await
        .expect("the server hung up on the slow client")
        .ok();
    // Meanwhile everyone else is served.
    assert_eq!(app.get("/healthz", None).await.status(), 200);
}

/// The status line a raw HTTP/1.1 request of exactly `head_bytes` (request line, headers and the
/// blank line) gets, the filler header making up the size.
async fn status_of_a_head_of(app: &TestApp, head_bytes: usize) -> String {
    use tokio::io::AsyncReadExt;
    let start = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nX-Filler: ";
    let end = "\r\n\r\n";
    let filler = "a".repeat(head_bytes - start.len() - end.len());
    let head = format!("{start}{filler}{end}");
    assert_eq!(head.len(), head_bytes);
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    // The server may answer and hang up before it read everything: a failed write is expected.
    let _ = s.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(FRAME_TIMEOUT, s.read_to_end(&mut answer))
        .await
        .expect("an answer in time");
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().unwrap_or_default().to_string()
}

/// The documented request-head bound (docs/operations.md): a head of `MAX_REQUEST_HEAD_BYTES`
/// is served, 1 MiB gets 431, and so do more than 100 header fields.
#[tokio::test]
async fn request_heads_over_the_documented_limit_get_431() {
    use parley::server::MAX_REQUEST_HEAD_BYTES;
    let app = spawn_app().await;
    assert_eq!(
        status_of_a_head_of(&app, MAX_REQUEST_HEAD_BYTES).await,
        "HTTP/1.1 200 OK"
    );
    assert_eq!(
        status_of_a_head_of(&app, 1024 * 1024).await,
        "HTTP/1.1 431 Request Header Fields Too Large"
    );

    let with_fields = |count: usize| {
        let mut request = reqwest::Client::new().get(app.http_url("/healthz"));
        // reqwest adds `accept` and `host`.
        for i in 0..count - 2 {
            request = request.header(format!("x-h{i}"), "1");
        }
        request.send()
    };
    assert_eq!(with_fields(100).await.unwrap().status(), 200);
    assert_eq!(with_fields(101).await.unwrap().status(), 431);
}

#[tokio::test]
async fn unreadable_frames_close_with_the_websocket_codes() {
    let app = spawn_app().await;
    let hello = raw::text_frame(r#"{"type":"hello"}"#);

    // A text frame that is not UTF-8: 1007.
    let mut s = raw::upgrade(app.addr, "/v1/visitor").await;
    s.write_all(&hello).await.unwrap();
    s.write_all(&raw::text_frame_bytes(&[0xff, 0xfe, 0x41]))
        .await
        .unwrap();
    assert_eq!(raw::close_code(s).await, Some(1007));

    // An unmasked client frame breaks the framing rules: 1002.
    let mut s = raw::upgrade(app.addr, "/v1/visitor").await;
    s.write_all(&hello).await.unwrap();
    s.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    assert_eq!(raw::close_code(s).await, Some(1002));

    // Others are served all along.
    let mut visitor = app.visitor().await;
    visitor.start("other", "still here").await;
}

/// The same violations before `hello` get the same codes, on both endpoints (they closed with
/// 1000 "bye"): 1007, 1002, and 1009 for a frame over `limits.frame_max_bytes`.
#[tokio::test]
async fn unreadable_frames_before_hello_close_with_the_websocket_codes() {
    let app = spawn_app().await;
    let agent = format!("/v1/agent?token={}", crate::helpers::agent_token("a1"));
    for path in ["/v1/visitor", agent.as_str()] {
        let mut s = raw::upgrade(app.addr, path).await;
        s.write_all(&raw::text_frame_bytes(&[0xff, 0xfe, 0x41]))
            .await
            .unwrap();
        assert_eq!(raw::close_code(s).await, Some(1007), "{path}");

        let mut s = raw::upgrade(app.addr, path).await;
        s.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
        assert_eq!(raw::close_code(s).await, Some(1002), "{path}");

        // RSV1 set without an extension that defines it.
        let mut s = raw::upgrade(app.addr, path).await;
        let mut frame = raw::text_frame("{}");
        frame[0] |= 0x40;
        s.write_all(&frame).await.unwrap();
        assert_eq!(raw::close_code(s).await, Some(1002), "{path}");

        // 20 KiB of text in one masked frame (16-bit length): over the 16 KiB cap.
        let mut s = raw::upgrade(app.addr, path).await;
        let payload = vec![b'a'; 20 * 1024];
        let mask = [7u8, 1, 9, 3];
        let mut frame = vec![0x81, 0x80 | 126];
        frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let _ = s.write_all(&frame).await;
        assert_eq!(raw::close_code(s).await, Some(1009), "{path}");
    }
}
