//! The two wires the generator speaks, and opening a socket from a chosen source address.
//!
//! Parley and the bare relay speak Parley's protocol: one JSON object per text frame. The
//! Socket.IO peer is talked to through its own protocol (Engine.IO v4 over WebSocket): `0{..}`
//! open, `40{auth}` connect, `42["type",{frame}]` events, `2`/`3` ping and pong. The frame
//! objects inside are the same as Parley's, so both sides do the same work per message.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

/// What the generator runs against. Parley and the relay share a wire; the kind labels results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    Parley,
    Relay,
    Socketio,
}

impl TargetKind {
    pub fn wire(self) -> Wire {
        match self {
            TargetKind::Parley | TargetKind::Relay => Wire::Parley,
            TargetKind::Socketio => Wire::SocketIo,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Parley => "parley",
            TargetKind::Relay => "relay",
            TargetKind::Socketio => "socketio",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Parley,
    SocketIo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Visitor,
    Agent,
}

/// The fields of server frames the generator looks at; everything else is ignored, as the
/// protocol asks of clients.
#[derive(Debug, Default, Deserialize)]
pub struct Frame {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub conversation_id: Option<String>,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default)]
    pub cid: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub duplicate: Option<bool>,
    /// On retryable errors (`unavailable`, `rate_limited`): resend after this long.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
    #[serde(default)]
    pub sender: Option<Sender>,
    #[serde(default)]
    pub conversation: Option<Conversation>,
    #[serde(default)]
    pub conversations: Option<Vec<Conversation>>,
    #[serde(default)]
    pub visitor: Option<VisitorSession>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Sender {
    pub role: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct Conversation {
    pub id: String,
    #[serde(default)]
    pub last_seq: Option<u64>,
    #[serde(default)]
    pub recovered: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct VisitorSession {
    pub id: String,
    #[serde(default)]
    pub token: Option<String>,
}

/// One text frame from the server, decoded. Short-lived, so the large `Frame` is not boxed.
#[allow(clippy::large_enum_variant)]
pub enum Decoded {
    Frame(Frame),
    /// Engine.IO ping: answer `3`.
    Ping,
    /// Transport-level chatter (Engine.IO open/connect packets, pongs).
    Ignore,
    /// Could not be parsed: counted as an error.
    Bad(String),
}

impl Wire {
    /// Wraps a frame object (`{"type":"...",...}`) for the wire.
    pub fn encode(self, kind: &str, object: String) -> String {
        match self {
            Wire::Parley => object,
            Wire::SocketIo => format!("42[\"{kind}\",{object}]"),
        }
    }

    pub fn decode(self, text: &str) -> Decoded {
        match self {
            Wire::Parley => match serde_json::from_str::<Frame>(text) {
                Ok(f) => Decoded::Frame(f),
                Err(e) => Decoded::Bad(e.to_string()),
            },
            Wire::SocketIo => {
                if text == "2" {
                    Decoded::Ping
                } else if let Some(event) = text.strip_prefix("42") {
                    match serde_json::from_str::<(String, Frame)>(event) {
                        Ok((_, f)) => Decoded::Frame(f),
                        Err(e) => Decoded::Bad(e.to_string()),
                    }
                } else if text.starts_with("44") {
                    Decoded::Bad(format!("socket.io connect error: {text}"))
                } else {
                    Decoded::Ignore
                }
            }
        }
    }
}

/// Where one node is, parsed once.
#[derive(Debug, Clone)]
pub struct Node {
    /// `ws://host:port`
    pub base: String,
    pub addr: SocketAddr,
}

impl Node {
    /// # Errors
    /// The URL is not `ws://host:port` or the host does not resolve.
    pub async fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| anyhow::anyhow!("{url}: only ws:// URLs are supported"))?;
        let hostport = rest.trim_end_matches('/');
        anyhow::ensure!(
            !hostport.contains('/'),
            "{url}: give the node as ws://host:port, without a path"
        );
        let addr = tokio::net::lookup_host(hostport)
            .await?
            .find(|a| a.is_ipv4())
            .ok_or_else(|| anyhow::anyhow!("{url}: no IPv4 address"))?;
        Ok(Self {
            base: format!("ws://{hostport}"),
            addr,
        })
    }
}

/// Why a connection failed, as a stable code for the error table.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct ConnectError {
    pub code: String,
    pub detail: String,
}

impl ConnectError {
    fn new(code: impl Into<String>, detail: impl ToString) -> Self {
        Self {
            code: code.into(),
            detail: detail.to_string(),
        }
    }

    fn io(err: std::io::Error) -> Self {
        let code = match err.raw_os_error() {
            Some(24) => "too_many_open_files",
            Some(99) => "address_not_available",
            Some(98) => "address_in_use",
            Some(111) => "connection_refused",
            Some(104) => "connection_reset",
            _ => "io",
        };
        Self::new(code, err)
    }

    fn ws(err: tungstenite::Error) -> Self {
        match err {
            tungstenite::Error::Http(response) => Self::new(
                format!("http_{}", response.status().as_u16()),
                "upgrade refused",
            ),
            tungstenite::Error::Io(io) => Self::io(io),
            other => Self::new("websocket", other),
        }
    }
}

/// Client sockets keep small buffers: the generator may hold 19,000 of them in one process, and
/// tungstenite's default 128 KiB read buffer would cost 2.4 GiB.
pub fn client_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

/// The source address for the `n`th socket (from 0) of generator process `shard` (from 0):
/// each process has its own block of `count` addresses, 127.0.0.(1 + shard·count) onwards, and
/// spreads its sockets evenly over them. An address's ephemeral ports are shared by every
/// socket bound to it, whatever the destination, so processes started together must not share
/// addresses: the plan check counts ports per address for one process. `shard * count +
/// count` must be at most 254 ([`source_block_fits`]).
pub fn source_address(n: usize, count: u8, shard: usize) -> IpAddr {
    let count = count as usize;
    let last = 1 + shard * count + n % count;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last.min(254) as u8))
}

/// Whether `shards` processes with `count` source addresses each fit in 127.0.0.1 ..
/// 127.0.0.254.
pub fn source_block_fits(count: u8, shards: usize) -> bool {
    shards * count as usize <= 254
}

/// Opens a socket to `node` from `source`, upgrades, and for Socket.IO does the Engine.IO and
/// Socket.IO handshakes. `hello` is the caller's business.
///
/// # Errors
/// A [`ConnectError`] with a stable code (`http_429`, `address_not_available`, `timeout`...).
pub async fn connect(
    node: &Node,
    wire: Wire,
    role: Role,
    token: Option<&str>,
    source: IpAddr,
    timeout: Duration,
) -> Result<Ws, ConnectError> {
    tokio::time::timeout(timeout, connect_inner(node, wire, role, token, source))
        .await
        .map_err(|_| ConnectError::new("timeout", format!("no connection within {timeout:?}")))?
}

/// Binds a socket to its source address with a port this process picks. Left to the kernel
/// (`bind(addr, 0)`), the choice is a search of the whole range under a lock that prefers odd
/// ports: measured here, six generator processes stalled at about 14,000 sockets each (connects
/// fell from 250/s to near 0, p90 connect time 7 s, 1 % of sockets given up) although every
/// address had ports to spare. Each process owns its source addresses
/// ([`source_address`]), so it can hand their ports out in turn, skipping any in use.
fn bind_source(socket: &TcpSocket, source: IpAddr) -> std::io::Result<()> {
    static NEXT: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<IpAddr, u32>>> =
        std::sync::LazyLock::new(Default::default);
    static RANGE: std::sync::LazyLock<(u16, u16)> =
        std::sync::LazyLock::new(crate::procfs::ephemeral_range);
    let (lo, hi) = *RANGE;
    let span = u32::from(hi - lo) + 1;
    for _ in 0..span.min(1024) {
        let k = {
            let mut next = NEXT.lock().unwrap();
            let k = next.entry(source).or_insert(0);
            *k = k.wrapping_add(1);
            *k
        };
        let port = lo + (k % span) as u16;
        match socket.bind(SocketAddr::new(source, port)) {
            Ok(()) => return Ok(()),
            // Still open (a long-lived socket from the last lap), or someone else's.
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        }
    }
    socket.bind(SocketAddr::new(source, 0))
}

async fn connect_inner(
    node: &Node,
    wire: Wire,
    role: Role,
    token: Option<&str>,
    source: IpAddr,
) -> Result<Ws, ConnectError> {
    let socket = TcpSocket::new_v4().map_err(ConnectError::io)?;
    // A port of ours in TIME_WAIT (after a reconnect storm) may be bound again.
    socket.set_reuseaddr(true).map_err(ConnectError::io)?;
    bind_source(&socket, source).map_err(ConnectError::io)?;
    let stream = socket.connect(node.addr).await.map_err(ConnectError::io)?;
    stream.set_nodelay(true).map_err(ConnectError::io)?;
    let url = match (wire, role) {
        (Wire::Parley, Role::Visitor) => format!("{}/v1/visitor", node.base),
        (Wire::Parley, Role::Agent) => {
            format!("{}/v1/agent?token={}", node.base, token.unwrap_or(""))
        }
        (Wire::SocketIo, _) => format!("{}/socket.io/?EIO=4&transport=websocket", node.base),
    };
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(client_config()))
            .await
            .map_err(ConnectError::ws)?;
    if wire == Wire::SocketIo {
        socketio_handshake(&mut ws, role, token).await?;
    }
    Ok(ws)
}

/// Engine.IO `0{..}` open, then Socket.IO `40{auth}` and its `40{sid}` answer.
async fn socketio_handshake(
    ws: &mut Ws,
    role: Role,
    token: Option<&str>,
) -> Result<(), ConnectError> {
    let open = next_text(ws).await?;
    if !open.starts_with('0') {
        return Err(ConnectError::new(
            "socketio_handshake",
            format!("expected open packet, got {open}"),
        ));
    }
    let auth = match role {
        Role::Visitor => serde_json::json!({"role": "visitor"}),
        Role::Agent => serde_json::json!({"role": "agent", "token": token}),
    };
    ws.send(Message::text(format!("40{auth}")))
        .await
        .map_err(ConnectError::ws)?;
    loop {
        let packet = next_text(ws).await?;
        if packet.starts_with("40") {
            return Ok(());
        }
        if packet == "2" {
            ws.send(Message::text("3"))
                .await
                .map_err(ConnectError::ws)?;
            continue;
        }
        return Err(ConnectError::new(
            "socketio_handshake",
            format!("expected connect packet, got {packet}"),
        ));
    }
}

async fn next_text(ws: &mut Ws) -> Result<String, ConnectError> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(_))) | None => {
                return Err(ConnectError::new("closed", "closed during the handshake"))
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(ConnectError::ws(e)),
        }
    }
}

/// Microseconds since the Unix epoch: the timestamp carried in message texts (one machine, one
/// clock).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Message text: `lt:<send time µs>:` then padding to `bytes`, and ` last` on a chat's final
/// message (the agent closes after answering it when `close_by = "agent"`).
pub fn stamped_text(bytes: usize, last: bool) -> String {
    let mut text = format!("lt:{}:", now_us());
    let tail = if last { " last" } else { "" };
    let pad = bytes.saturating_sub(text.len() + tail.len());
    text.extend(std::iter::repeat_n('x', pad));
    text.push_str(tail);
    text
}

/// The send time carried in a text, if it has one.
pub fn stamp_of(text: &str) -> Option<u64> {
    let rest = text.strip_prefix("lt:")?;
    let end = rest.find(':')?;
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_pad() {
        let t = stamped_text(64, true);
        assert_eq!(t.len(), 64);
        assert!(t.ends_with(" last"));
        let stamp = stamp_of(&t).unwrap();
        assert!(now_us() >= stamp);
        assert_eq!(stamp_of("hello"), None);
    }

    #[test]
    fn socketio_events_decode_to_frames() {
        let Decoded::Frame(f) = Wire::SocketIo
            .decode(r#"42["ack",{"type":"ack","conversation_id":"c1","cid":"x","seq":3,"duplicate":false}]"#)
        else {
            panic!("not a frame")
        };
        assert_eq!(f.kind, "ack");
        assert_eq!(f.seq, Some(3));
        assert!(matches!(Wire::SocketIo.decode("2"), Decoded::Ping));
        assert_eq!(
            Wire::SocketIo.encode("hello", "{\"type\":\"hello\"}".into()),
            "42[\"hello\",{\"type\":\"hello\"}]"
        );
    }

    #[test]
    fn source_addresses_cycle() {
        assert_eq!(source_address(0, 4, 0).to_string(), "127.0.0.1");
        assert_eq!(source_address(5, 4, 0).to_string(), "127.0.0.2");
    }

    #[test]
    fn shards_use_their_own_source_addresses_evenly() {
        // 6 processes of 4 addresses: process k uses 127.0.0.(4k+1) .. 127.0.0.(4k+4), each for
        // a quarter of its sockets, whatever its share of the global client numbers.
        let mut used = std::collections::BTreeMap::<String, usize>::new();
        for shard in 0..6 {
            for n in 0..400 {
                *used
                    .entry(source_address(n, 4, shard).to_string())
                    .or_default() += 1;
            }
        }
        assert_eq!(used.len(), 24);
        assert!(used.values().all(|&c| c == 100), "{used:?}");
        assert_eq!(source_address(3, 4, 5).to_string(), "127.0.0.24");
        assert!(source_block_fits(4, 6));
        assert!(!source_block_fits(50, 6));
    }
}
