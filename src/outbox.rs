//! A socket's bounded outbound queue, and the one-shot signal that closes the socket.
//!
//! The engine pushes pre-serialised frames into an [`Outbox`] without ever waiting: a lock is
//! held while it fans a message out, so a slow reader must not be able to stall it. When the
//! queue is full the socket is closed with `4009 too slow` instead; nothing is lost, because the
//! client resumes from its last seen sequence number on reconnect.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::close_code;

/// A serialised server frame, shared by every socket it goes to.
pub type Frame = Arc<str>;

/// Identifies one socket for the lifetime of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SocketId(u64);

impl SocketId {
    pub fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Asks a socket to close with a given code. The first reason wins; later ones are ignored, so a
/// socket that is both flooding and slow reports the first problem seen.
#[derive(Clone, Debug, Default)]
pub struct Closer {
    token: CancellationToken,
    reason: Arc<OnceLock<(u16, &'static str)>>,
}

impl Closer {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn close(&self, code: u16, reason: &'static str) {
        let _ = self.reason.set((code, reason));
        self.token.cancel();
    }

    /// The code and reason of the close that was asked for, if any.
    pub fn reason(&self) -> Option<(u16, &'static str)> {
        self.reason.get().copied()
    }

    pub fn is_closed(&self) -> bool {
        self.token.is_cancelled()
    }

    pub async fn closed(&self) {
        self.token.cancelled().await
    }
}

/// The sending half of one socket's queue.
#[derive(Clone, Debug)]
pub struct Outbox {
    id: SocketId,
    tx: mpsc::Sender<Frame>,
    closer: Closer,
}

impl Outbox {
    /// A queue of `capacity` frames; the receiver belongs to the socket's writer task.
    pub fn new(capacity: usize, closer: Closer) -> (Self, mpsc::Receiver<Frame>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                id: SocketId::next(),
                tx,
                closer,
            },
            rx,
        )
    }

    pub fn id(&self) -> SocketId {
        self.id
    }

    /// Queues a frame without waiting. On a full queue the socket is told to close as too slow
    /// and the frame is dropped for this socket only (it stays in the transcript).
    pub fn push(&self, frame: &Frame) {
        match self.tx.try_send(frame.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self
                .closer
                .close(close_code::TOO_SLOW, "too slow: outbound queue full"),
            // The socket is already gone; its disconnect is on its way to the engine.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_closes_the_socket_as_too_slow() {
        let closer = Closer::new();
        let (outbox, mut rx) = Outbox::new(2, closer.clone());
        let frame: Frame = Arc::from("x");
        outbox.push(&frame);
        outbox.push(&frame);
        assert!(!closer.is_closed());
        outbox.push(&frame);
        assert!(closer.is_closed());
        assert_eq!(closer.reason().map(|r| r.0), Some(close_code::TOO_SLOW));
        assert!(rx.try_recv().is_ok());
    }

    #[test]
    fn the_first_close_reason_wins() {
        let closer = Closer::new();
        closer.close(1008, "flood");
        closer.close(4009, "slow");
        assert_eq!(closer.reason(), Some((1008, "flood")));
    }
}
