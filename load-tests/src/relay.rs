//! The floor: a bare relay on Parley's stack (tokio + tungstenite, the version axum uses), with
//! no routing rules, limits, persistence or resume. Parley's overhead is its ratio to this.
//!
//! It speaks the subset of the protocol the scenarios use: `hello`/`welcome`, `start` (acked,
//! paired round-robin over connected agents, or queued until one connects), `message` (acked,
//! relayed with the next `seq`), `close`/`closed`. Sockets are configured like Parley's (4 KiB
//! read and write buffers, 16 KiB frames), and each is a reader task plus a writer task joined
//! by a bounded queue, as in Parley, so the comparison is of the work in between.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Frames queued per socket, as Parley's default outbound queue; a full queue closes the socket.
const QUEUE: usize = 256;

type Tx = mpsc::Sender<Arc<str>>;

#[derive(Default)]
struct Hub {
    next_conv: u64,
    next_visitor: u64,
    next_socket: u64,
    /// Online agents in round-robin order: (socket id, agent id, queue).
    agents: Vec<(u64, String, Tx)>,
    turn: usize,
    conversations: HashMap<String, Conv>,
    /// Conversations waiting for an agent to connect.
    waiting: VecDeque<String>,
}

struct Conv {
    seq: u64,
    visitor_id: String,
    visitor: Tx,
    visitor_socket: u64,
    agent: Option<(String, Tx)>,
    category: String,
    first_text: String,
    first_cid: Option<String>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum In {
    Hello {},
    Start {
        category: String,
        text: String,
        #[serde(default)]
        cid: Option<String>,
    },
    Message {
        #[serde(default)]
        conversation_id: Option<String>,
        cid: String,
        text: String,
    },
    Close {
        #[serde(default)]
        conversation_id: Option<String>,
    },
    #[serde(other)]
    Other,
}

#[derive(Serialize)]
struct Sender<'a> {
    role: &'a str,
    id: &'a str,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Out<'a> {
    Ack {
        conversation_id: &'a str,
        cid: &'a str,
        seq: u64,
        duplicate: bool,
    },
    Message {
        conversation_id: &'a str,
        seq: u64,
        sender: Sender<'a>,
        text: &'a str,
        ts: u64,
        cid: Option<&'a str>,
    },
    Queued {
        conversation_id: &'a str,
        position: usize,
        estimated_wait_ms: u64,
        reason: &'a str,
    },
    Closed {
        conversation_id: &'a str,
        by: &'a str,
        reason: &'a str,
    },
    Error {
        code: &'a str,
        message: &'a str,
    },
}

fn text(out: &Out) -> Arc<str> {
    serde_json::to_string(out).expect("frames serialise").into()
}

fn now_ms() -> u64 {
    crate::wire::now_us() / 1000
}

/// Runs the relay on `listener` until `shutdown`.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) {
    let hub = Arc::new(Mutex::new(Hub::default()));
    loop {
        let (stream, _peer): (TcpStream, SocketAddr) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => {
                    // Out of file descriptors: back off instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, hub.clone(), shutdown.clone()));
    }
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_write_buffer_size(4 * 1024 + 4 * 16 * 1024)
        .max_message_size(Some(16 * 1024))
        .max_frame_size(Some(16 * 1024))
}

async fn connection(stream: TcpStream, hub: Arc<Mutex<Hub>>, shutdown: CancellationToken) {
    let mut path = String::new();
    // tungstenite's callback signature, whose error type is a whole HTTP response.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        path = req.uri().to_string();
        Ok(resp)
    };
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config())).await
    else {
        return;
    };
    let agent_id = if path.starts_with("/v1/agent") {
        let token = path
            .split_once("token=")
            .map(|(_, t)| t.split('&').next().unwrap_or(""))
            .unwrap_or("");
        Some(token.strip_prefix("token-").unwrap_or(token).to_string())
    } else if path.starts_with("/v1/visitor") {
        None
    } else {
        return;
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Arc<str>>(QUEUE);
    let closed = CancellationToken::new();
    let writer_closed = closed.clone();
    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = writer_closed.cancelled() => break,
                frame = rx.recv() => match frame {
                    Some(frame) => {
                        let mut ok = sink.feed(Message::text(&*frame)).await.is_ok();
                        while ok {
                            match rx.try_recv() {
                                Ok(more) => ok = sink.feed(Message::text(&*more)).await.is_ok(),
                                Err(_) => break,
                            }
                        }
                        if !ok || sink.flush().await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
            }
        }
        writer_closed.cancel();
        let _ = sink.close().await;
    });
    let socket = {
        let mut h = hub.lock().unwrap();
        h.next_socket += 1;
        h.next_socket
    };
    let mut visitor_id = String::new();
    let mut conv: Option<String> = None;
    let mut hello = false;
    loop {
        let msg = tokio::select! {
            _ = closed.cancelled() => break,
            _ = shutdown.cancelled() => break,
            m = stream.next() => m,
        };
        let data = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            _ => break,
        };
        let Ok(frame) = serde_json::from_str::<In>(data.as_str()) else {
            push(
                &tx,
                text(&Out::Error {
                    code: "malformed_frame",
                    message: "not a frame",
                }),
                &closed,
            );
            continue;
        };
        let mut h = hub.lock().unwrap();
        if let Some(id) = &conv {
            // The agent may have closed it: then the visitor may start another.
            if !h.conversations.contains_key(id) {
                conv = None;
            }
        }
        match (frame, &agent_id) {
            (In::Hello {}, Some(id)) if !hello => {
                hello = true;
                let welcome = serde_json::json!({
                    "type": "welcome", "protocol": 1, "role": "agent",
                    "agent": {"id": id, "name": id, "capacity": 1000, "status": "online"},
                    "conversations": [],
                });
                push(&tx, welcome.to_string().into(), &closed);
                h.agents.push((socket, id.clone(), tx.clone()));
                // Whoever waited gets this agent.
                while let Some(c) = h.waiting.pop_front() {
                    assign(&mut h, &c);
                }
            }
            (In::Hello {}, None) if !hello => {
                hello = true;
                h.next_visitor += 1;
                visitor_id = format!("relay-{}", h.next_visitor);
                let welcome = serde_json::json!({
                    "type": "welcome", "protocol": 1, "role": "visitor",
                    "visitor": {"id": visitor_id, "token": "relay", "verified": false},
                    "conversations": [],
                });
                push(&tx, welcome.to_string().into(), &closed);
            }
            (
                In::Start {
                    category,
                    text: first,
                    cid,
                },
                None,
            ) if hello && conv.is_none() => {
                h.next_conv += 1;
                let id = format!("relay-conv-{}", h.next_conv);
                if let Some(cid) = &cid {
                    push(
                        &tx,
                        text(&Out::Ack {
                            conversation_id: &id,
                            cid,
                            seq: 1,
                            duplicate: false,
                        }),
                        &closed,
                    );
                }
                h.conversations.insert(
                    id.clone(),
                    Conv {
                        seq: 1,
                        visitor_id: visitor_id.clone(),
                        visitor: tx.clone(),
                        visitor_socket: socket,
                        agent: None,
                        category,
                        first_text: first,
                        first_cid: cid,
                    },
                );
                if h.agents.is_empty() {
                    h.waiting.push_back(id.clone());
                    let position = h.waiting.len();
                    push(
                        &tx,
                        text(&Out::Queued {
                            conversation_id: &id,
                            position,
                            estimated_wait_ms: 60_000,
                            reason: "no_agent_available",
                        }),
                        &closed,
                    );
                } else {
                    assign(&mut h, &id);
                }
                conv = Some(id);
            }
            (
                In::Message {
                    cid, text: body, ..
                },
                None,
            ) if conv.is_some() => {
                let id = conv.clone().unwrap_or_default();
                relay(
                    &mut h,
                    &id,
                    "visitor",
                    &visitor_id,
                    &cid,
                    &body,
                    &tx,
                    &closed,
                );
            }
            (
                In::Message {
                    conversation_id: Some(id),
                    cid,
                    text: body,
                },
                Some(agent),
            ) => {
                relay(&mut h, &id, "agent", agent, &cid, &body, &tx, &closed);
            }
            (In::Close { .. }, None) if conv.is_some() => {
                let id = conv.take().unwrap_or_default();
                close(&mut h, &id, "visitor", "visitor_closed");
            }
            (
                In::Close {
                    conversation_id: Some(id),
                },
                Some(_),
            ) => {
                close(&mut h, &id, "agent", "agent_closed");
            }
            _ => push(
                &tx,
                text(&Out::Error {
                    code: "unknown_type",
                    message: "not supported by the relay",
                }),
                &closed,
            ),
        }
        drop(h);
    }
    {
        let mut h = hub.lock().unwrap();
        h.agents.retain(|(s, ..)| *s != socket);
        if agent_id.is_none() {
            h.conversations.retain(|_, c| c.visitor_socket != socket);
        }
    }
    closed.cancel();
    let _ = writer.await;
}

/// A full queue closes the socket, as in Parley (the client is too slow).
fn push(tx: &Tx, frame: Arc<str>, closed: &CancellationToken) {
    if tx.try_send(frame).is_err() {
        closed.cancel();
    }
}

fn assign(h: &mut Hub, id: &str) {
    if h.agents.is_empty() {
        h.waiting.push_back(id.to_string());
        return;
    }
    h.turn = (h.turn + 1) % h.agents.len();
    let (_, agent_id, agent_tx) = h.agents[h.turn].clone();
    let Some(c) = h.conversations.get_mut(id) else {
        return;
    };
    c.agent = Some((agent_id.clone(), agent_tx.clone()));
    let assigned = serde_json::json!({
        "type": "assigned",
        "conversation": {
            "id": id, "category": c.category, "state": "assigned",
            "visitor": {"id": c.visitor_id}, "agent": {"id": agent_id},
            "created_at": now_ms(), "last_seq": 1, "recovered": true,
        },
    })
    .to_string();
    let assigned: Arc<str> = assigned.into();
    let _ = c.visitor.try_send(assigned.clone());
    let _ = agent_tx.try_send(assigned);
    let first = text(&Out::Message {
        conversation_id: id,
        seq: 1,
        sender: Sender {
            role: "visitor",
            id: &c.visitor_id,
        },
        text: &c.first_text,
        ts: now_ms(),
        cid: c.first_cid.as_deref(),
    });
    let _ = agent_tx.try_send(first);
}

#[allow(clippy::too_many_arguments)]
fn relay(
    h: &mut Hub,
    id: &str,
    role: &str,
    sender: &str,
    cid: &str,
    body: &str,
    tx: &Tx,
    closed: &CancellationToken,
) {
    let Some(c) = h.conversations.get_mut(id) else {
        push(
            tx,
            text(&Out::Error {
                code: "not_found",
                message: "no such conversation",
            }),
            closed,
        );
        return;
    };
    c.seq += 1;
    let seq = c.seq;
    push(
        tx,
        text(&Out::Ack {
            conversation_id: id,
            cid,
            seq,
            duplicate: false,
        }),
        closed,
    );
    let frame = text(&Out::Message {
        conversation_id: id,
        seq,
        sender: Sender { role, id: sender },
        text: body,
        ts: now_ms(),
        cid: Some(cid),
    });
    let other = if role == "visitor" {
        c.agent.as_ref().map(|(_, t)| t)
    } else {
        Some(&c.visitor)
    };
    if let Some(other) = other {
        let _ = other.try_send(frame);
    }
}

fn close(h: &mut Hub, id: &str, by: &str, reason: &str) {
    let Some(c) = h.conversations.remove(id) else {
        return;
    };
    let frame = text(&Out::Closed {
        conversation_id: id,
        by,
        reason,
    });
    let _ = c.visitor.try_send(frame.clone());
    if let Some((_, agent)) = c.agent {
        let _ = agent.try_send(frame);
    }
}
