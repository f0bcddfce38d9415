//! The persister: the engine queues messages and conversation snapshots without waiting, and
//! one task writes them to the [`TranscriptStore`] in batches.
//!
//! **Acknowledgements wait for the store** ([`PersistHandle::push_when_stored`]): an `ack` queued
//! behind a message is pushed to its socket once everything queued before it is stored. Once
//! an ack waits, the batch is written at the latest `group_commit_wait` later (a group commit:
//! one transaction covers everything that arrived meanwhile, and everything that arrived while
//! the previous one ran), so an ack waits about that long plus one write, not an interval. The
//! wait is what keeps a quiet node from paying a transaction per message: at 2,000 messages a
//! second, writing at once doubled the CPU per message (docs/benchmarks/log.md).
//! Delivery to the other sockets does not wait (see docs/architecture.md#guarantees).
//!
//! Without an ack waiting (Parley's own notes; the Redis engine, whose stream is the durable
//! point and acknowledges on its own), a batch is written when `batch_size` messages wait, when
//! the oldest queued item has waited `flush_interval`, or when someone calls
//! [`PersistHandle::flush`], whichever comes first. One batch is one
//! [`TranscriptStore::write_batch`] call, so a conversation snapshot is never stored after the
//! messages that were queued after it, and messages keep their queue order.
//!
//! When the store fails, nothing is dropped: the batch stays in memory, in order, and is retried
//! with exponential backoff while new items keep joining it. Memory is bounded by `max_pending`
//! messages, reserved with [`PersistHandle::try_reserve`] before the engine accepts a message;
//! at the bound the engine answers `unavailable` instead of accepting. Conversation snapshots are
//! not counted: they come one per state change, and snapshots of one conversation coalesce.
//!
//! Shutdown: cancel the token given to [`spawn`]; the task stops accepting, writes what it holds
//! (retrying with backoff) and ends with a [`PersistOutcome`]. The caller bounds that with a
//! timeout on the `JoinHandle` (the drain deadline).

use std::collections::HashMap;
use std::future::pending;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::store::{StoreError, TranscriptStore};
use super::{ConversationRecord, StoredMessage};
use crate::domain::ConversationId;
use crate::outbox::{Frame, Outbox};

/// First retry delay after a failed write; doubled on each further failure.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Retry at least this often during an outage, so recovery is noticed quickly.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// During an outage, repeat the warning at most this often, so logs show it lasting without
/// one line per attempt.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// What a refused sender is told to wait before the store's pace is known.
const RETRY_UNKNOWN: Duration = Duration::from_secs(1);
/// The bounds of [`PersistHandle::retry_after`]: soon enough to be worth a retry, never so
/// long that a client gives up on a store that is merely behind.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// How the persister batches, and how much it may hold.
#[derive(Debug, Clone)]
pub struct PersistConfig {
    /// Write as soon as this many messages wait.
    pub batch_size: usize,
    /// Write at the latest this long after the oldest waiting item was queued: the persistence
    /// lag in normal operation.
    pub flush_interval: Duration,
    /// Most messages held in memory (queued or failing to write); beyond it
    /// [`PersistHandle::try_reserve`] refuses.
    pub max_pending: usize,
    /// Write at the latest this long after the first ack of a batch started waiting.
    pub group_commit_wait: Duration,
}

/// A snapshot of the persister's state, for metrics and `/readyz`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PersistStats {
    /// Messages reserved or queued and not yet stored.
    pub pending: u64,
    /// How long the oldest waiting message has waited: the persistence lag. 0 when nothing
    /// waits.
    pub oldest_pending_age_ms: u64,
    pub persisted_total: u64,
    /// Failed write attempts since start.
    pub failures_total: u64,
    /// The last write attempt failed.
    pub failing: bool,
}

/// What the task left behind when it ended.
#[derive(Debug)]
pub struct PersistOutcome {
    /// Messages held in memory and never stored.
    pub unflushed: u64,
}

/// State the handles and the task both see, lock-free so that `stats` and `try_reserve` never
/// wait on the task.
struct Shared {
    /// Messages reserved and not yet stored: the bound on memory waiting for the store.
    pending: AtomicUsize,
    /// The bound on `pending`.
    max_pending: usize,
    /// When the oldest buffered message was queued, as milliseconds since `epoch` plus one, so
    /// that 0 can mean "none"; feeds the persistence-lag gauge.
    oldest_queued: AtomicU64,
    /// The origin of `oldest_queued`: an `Instant` cannot live in an atomic.
    epoch: Instant,
    /// Messages stored since start.
    persisted_total: AtomicU64,
    /// Failed write attempts since start.
    failures_total: AtomicU64,
    /// Whether the last write attempt failed, for `/readyz`.
    failing: AtomicBool,
    /// Messages the store takes per second of writing, smoothed over recent writes (0: not
    /// known yet): how fast a backlog drains.
    drain_per_sec: AtomicU64,
    /// During an outage, when the next attempt is, as milliseconds since `epoch` (0: none).
    retry_at_ms: AtomicU64,
}

impl Shared {
    /// Saturating, so a `message` sent without a reservation cannot wrap the count.
    fn release(&self, n: usize) {
        let _ = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                Some(p.saturating_sub(n))
            });
    }

    fn set_oldest(&self, at: Option<Instant>) {
        let encoded = at.map_or(0, |t| {
            t.saturating_duration_since(self.epoch).as_millis() as u64 + 1
        });
        self.oldest_queued.store(encoded, Ordering::Release);
    }

    fn oldest_age_ms(&self) -> u64 {
        match self.oldest_queued.load(Ordering::Acquire) {
            0 => 0,
            encoded => (self.epoch.elapsed().as_millis() as u64).saturating_sub(encoded - 1),
        }
    }
}

/// What a handle asks of the task.
enum Op {
    Message {
        message: Arc<StoredMessage>,
        /// Taken by the sender, so the lag includes time spent in the channel.
        queued_at: Instant,
    },
    /// Boxed: a snapshot is several times larger than the other operations.
    Conversation(Box<ConversationRecord>),
    /// Answered once everything queued before it is stored, or the attempt failed.
    Flush(oneshot::Sender<Result<(), StoreError>>),
    /// A frame (an `ack`) to push to its socket once everything queued before it is stored.
    Ack(Outbox, Frame),
}

/// The engine's side of the persister: cheap to clone, never blocks.
#[derive(Clone)]
pub struct PersistHandle {
    /// Unbounded on purpose: `message` must never block or drop, and the reservations made
    /// with `try_reserve` bound the messages in it.
    tx: mpsc::UnboundedSender<Op>,
    shared: Arc<Shared>,
}

impl PersistHandle {
    /// Reserves room for one message; false when `max_pending` messages already wait or the
    /// persister has stopped (the caller answers `unavailable`). Never blocks. Every `true`
    /// must be followed by exactly one [`PersistHandle::message`], or the room is lost.
    pub fn try_reserve(&self) -> bool {
        if self.tx.is_closed() {
            return false;
        }
        let max = self.shared.max_pending;
        self.shared
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                (p < max).then_some(p + 1)
            })
            .is_ok()
    }

    /// Gives back room reserved with [`PersistHandle::try_reserve`] that no message will use
    /// (the entry turned out to be a duplicate, or was refused).
    pub fn unreserve(&self) {
        self.shared.release(1);
    }

    /// Queues a message whose room was reserved. Never blocks, never drops while the
    /// persister runs. Shared, not copied: the local engine passes the message its replay
    /// window holds, so while it waits for the store it costs a pointer, not a second copy.
    pub fn message(&self, message: Arc<StoredMessage>) {
        let op = Op::Message {
            message,
            queued_at: Instant::now(),
        };
        if let Err(mpsc::error::SendError(op)) = self.tx.send(op) {
            self.shared.release(1);
            if let Op::Message { message, .. } = op {
                tracing::warn!(
                    conversation_id = %message.conversation_id,
                    seq = %message.seq,
                    "transcript persister has stopped; message not stored"
                );
            }
        }
    }

    /// Queues a conversation snapshot; several snapshots of one id before a write coalesce to
    /// the latest. Not counted against `max_pending` (see the module documentation).
    pub fn conversation(&self, record: ConversationRecord) {
        if let Err(mpsc::error::SendError(Op::Conversation(record))) =
            self.tx.send(Op::Conversation(Box::new(record)))
        {
            tracing::warn!(
                conversation_id = %record.id,
                "transcript persister has stopped; conversation snapshot not stored"
            );
        }
    }

    /// Pushes `frame` (an `ack`) to `socket` once everything queued before it is stored: at once
    /// when nothing waits, else after the next successful write, which starts at the latest
    /// `group_commit_wait` later. During an outage the frame waits with the batch. A persister
    /// that has stopped never sends it: the client resends with its `cid`.
    pub fn push_when_stored(&self, socket: Outbox, frame: Frame) {
        let _ = self.tx.send(Op::Ack(socket, frame));
    }

    /// Asks for an immediate write of everything queued so far and waits until it is stored.
    /// Used when a conversation closes, before REST reads, and at shutdown.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the write failed (everything stays queued and is
    /// retried in the background) or the persister has stopped.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Op::Flush(tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// A snapshot of the counters; lock-free.
    pub fn stats(&self) -> PersistStats {
        let s = &self.shared;
        let pending = s.pending.load(Ordering::Acquire) as u64;
        PersistStats {
            pending,
            oldest_pending_age_ms: if pending == 0 { 0 } else { s.oldest_age_ms() },
            persisted_total: s.persisted_total.load(Ordering::Acquire),
            failures_total: s.failures_total.load(Ordering::Acquire),
            failing: s.failing.load(Ordering::Acquire),
        }
    }
}

impl PersistHandle {
    /// How long a sender refused for a full buffer should wait: the time the store needs to
    /// write what waits now, at the pace it has been writing (plus the time to the next
    /// attempt during an outage), within [`RETRY_MIN`]..[`RETRY_MAX`]. A fixed figure would
    /// bring every refused client back at once, long before a slow store has room, or keep
    /// them waiting after a fast one has.
    pub fn retry_after(&self) -> Duration {
        let s = &self.shared;
        let outage = match s.retry_at_ms.load(Ordering::Acquire) {
            0 => Duration::ZERO,
            at => Duration::from_millis(at.saturating_sub(s.epoch.elapsed().as_millis() as u64)),
        };
        backlog_wait(
            s.pending.load(Ordering::Acquire) as u64,
            s.drain_per_sec.load(Ordering::Acquire),
            outage,
        )
    }
}

/// See [`PersistHandle::retry_after`].
fn backlog_wait(pending: u64, drain_per_sec: u64, outage: Duration) -> Duration {
    if drain_per_sec == 0 {
        return (outage + RETRY_UNKNOWN).clamp(RETRY_MIN, RETRY_MAX);
    }
    let drain = Duration::from_millis(pending.saturating_mul(1000) / drain_per_sec);
    (outage + drain).clamp(RETRY_MIN, RETRY_MAX)
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the transcript persister has stopped".into())
}

/// Starts the persister task.
///
/// Shutdown sequence: cancel `shutdown`, then await the `JoinHandle` within the drain deadline.
/// The task stops accepting new items, writes everything it holds, retrying with backoff until
/// it succeeds, and returns what remained. If the deadline passes first, read
/// `handle.stats().pending` for what is being lost, then abort the task.
pub fn spawn(
    store: Arc<dyn TranscriptStore>,
    config: PersistConfig,
    shutdown: CancellationToken,
) -> (PersistHandle, tokio::task::JoinHandle<PersistOutcome>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        pending: AtomicUsize::new(0),
        max_pending: config.max_pending,
        oldest_queued: AtomicU64::new(0),
        epoch: Instant::now(),
        persisted_total: AtomicU64::new(0),
        failures_total: AtomicU64::new(0),
        failing: AtomicBool::new(false),
        drain_per_sec: AtomicU64::new(0),
        retry_at_ms: AtomicU64::new(0),
    });
    let persister = Persister {
        store,
        config,
        shared: Arc::clone(&shared),
        rx,
        batch: Batch::default(),
        waiters: Vec::new(),
        outage: None,
    };
    let task = tokio::spawn(persister.run(shutdown));
    (PersistHandle { tx, shared }, task)
}

/// What waits to be written: everything received and not yet stored.
#[derive(Default)]
struct Batch {
    /// At most one snapshot per conversation: a newer one replaces the older in place.
    conversations: Vec<ConversationRecord>,
    /// Where each conversation's snapshot sits in `conversations`.
    index: HashMap<ConversationId, usize>,
    /// In queue order, which is sequence order within each conversation.
    messages: Vec<Arc<StoredMessage>>,
    /// Acks to push once this batch is stored.
    acks: Vec<(Outbox, Frame)>,
    /// When the first of `acks` arrived: the group commit's wait counts from here.
    acked_since: Option<Instant>,
    /// When the first item of this batch arrived: the interval counts from here.
    since: Option<Instant>,
}

impl Batch {
    fn is_empty(&self) -> bool {
        self.conversations.is_empty() && self.messages.is_empty()
    }

    fn add_conversation(&mut self, record: ConversationRecord) {
        self.since.get_or_insert_with(Instant::now);
        match self.index.get(&record.id) {
            Some(&i) => self.conversations[i] = record,
            None => {
                self.index.insert(record.id, self.conversations.len());
                self.conversations.push(record);
            }
        }
    }

    fn add_message(&mut self, message: Arc<StoredMessage>) {
        self.since.get_or_insert_with(Instant::now);
        self.messages.push(message);
    }
}

/// A streak of failed writes, from the first failure until a write succeeds.
struct Outage {
    started: Instant,
    attempts: u64,
    delay: Duration,
    retry_at: Instant,
    last_warned: Instant,
}

/// The task's state. Owned by the task alone, so it needs no locks.
struct Persister {
    store: Arc<dyn TranscriptStore>,
    config: PersistConfig,
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Op>,
    batch: Batch,
    /// `flush` callers to answer after the next write attempt.
    waiters: Vec<oneshot::Sender<Result<(), StoreError>>>,
    /// Set while writes fail: retries follow its backoff instead of the size and interval
    /// triggers.
    outage: Option<Outage>,
}

impl Persister {
    async fn run(mut self, shutdown: CancellationToken) -> PersistOutcome {
        loop {
            let due = self.next_write_at();
            tokio::select! {
                // Shutdown first, so a busy channel cannot delay it; the timer before the
                // channel, so a steady trickle below `batch_size` cannot postpone the write.
                biased;
                _ = shutdown.cancelled() => break,
                _ = sleep_until_some(due) => {
                    let _ = self.write().await;
                    continue;
                }
                op = self.rx.recv() => match op {
                    Some(op) => {
                        self.accept(op);
                        self.take_queued();
                    }
                    // Every handle is gone: nothing more can arrive.
                    None => break,
                },
            }
            if self.write_is_due_now() {
                let _ = self.write().await;
            }
        }
        self.drain().await
    }

    fn accept(&mut self, op: Op) {
        match op {
            Op::Message { message, queued_at } => {
                if self.batch.messages.is_empty() {
                    self.shared.set_oldest(Some(queued_at));
                }
                self.batch.add_message(message);
            }
            Op::Conversation(record) => self.batch.add_conversation(*record),
            Op::Flush(waiter) => self.waiters.push(waiter),
            // Nothing waits before it: what it acknowledges is stored already (a duplicate of
            // a message written long ago).
            Op::Ack(socket, ack) if self.batch.is_empty() => socket.push(&ack),
            Op::Ack(socket, ack) => {
                self.batch.acked_since.get_or_insert_with(Instant::now);
                self.batch.acks.push((socket, ack));
            }
        }
    }

    /// Takes what the channel holds now, up to a full batch: the group that the next write
    /// commits together.
    fn take_queued(&mut self) {
        while self.batch.messages.len() < self.config.batch_size {
            match self.rx.try_recv() {
                Ok(op) => self.accept(op),
                Err(_) => break,
            }
        }
    }

    /// When the timer should fire: the retry time during an outage, else the interval after
    /// the batch started or the group commit's wait after its first ack, whichever is sooner;
    /// never while there is nothing to write.
    fn next_write_at(&self) -> Option<Instant> {
        match &self.outage {
            Some(outage) => Some(outage.retry_at),
            None => {
                let interval = self.batch.since.map(|t| t + self.config.flush_interval);
                let acked = self
                    .batch
                    .acked_since
                    .map(|t| t + self.config.group_commit_wait);
                interval.into_iter().chain(acked).min()
            }
        }
    }

    /// A flush is answered at once, even during an outage (one attempt, then `Err`); a full
    /// batch, or one whose acks have waited long enough, only outside an outage, where the
    /// backoff paces the attempts instead.
    fn write_is_due_now(&self) -> bool {
        let acks_due = self
            .batch
            .acked_since
            .is_some_and(|t| t.elapsed() >= self.config.group_commit_wait);
        !self.waiters.is_empty()
            || (self.outage.is_none()
                && (acks_due || self.batch.messages.len() >= self.config.batch_size))
    }

    /// One attempt to store the whole batch, then answers every waiting `flush`.
    async fn write(&mut self) -> Result<(), StoreError> {
        let waiters = std::mem::take(&mut self.waiters);
        let mut took = Duration::ZERO;
        let result = if self.batch.is_empty() {
            Ok(())
        } else {
            let started = Instant::now();
            let result = self
                .store
                .write_batch(&self.batch.conversations, &self.batch.messages)
                .await;
            took = started.elapsed();
            if took >= super::SLOW_WRITE {
                // The store is slow or starved of CPU (it runs at background priority); the
                // pending gauge shows whether it is falling behind.
                tracing::warn!(
                    messages = self.batch.messages.len(),
                    conversations = self.batch.conversations.len(),
                    took_ms = took.as_millis() as u64,
                    ok = result.is_ok(),
                    "slow transcript write"
                );
            }
            result
        };
        match &result {
            Ok(()) => self.written(took),
            Err(e) => self.failed(e),
        }
        for waiter in waiters {
            let answer = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Unavailable(e.to_string())),
            };
            // A caller that stopped waiting does not need the answer.
            let _ = waiter.send(answer);
        }
        result
    }

    fn written(&mut self, took: Duration) {
        let count = self.batch.messages.len();
        if count > 0 {
            // A write's pace, smoothed (3/4 old, 1/4 new) so one quick or slow write does not
            // swing what refused clients are told.
            let pace = (count as f64 / took.as_secs_f64().max(1e-6)) as u64;
            let old = self.shared.drain_per_sec.load(Ordering::Acquire);
            let smoothed = if old == 0 { pace } else { (3 * old + pace) / 4 };
            self.shared
                .drain_per_sec
                .store(smoothed.max(1), Ordering::Release);
        }
        self.shared.retry_at_ms.store(0, Ordering::Release);
        for (socket, ack) in std::mem::take(&mut self.batch).acks {
            socket.push(&ack);
        }
        self.shared.set_oldest(None);
        self.shared.release(count);
        self.shared
            .persisted_total
            .fetch_add(count as u64, Ordering::AcqRel);
        self.shared.failing.store(false, Ordering::Release);
        if let Some(outage) = self.outage.take() {
            tracing::info!(
                written = count,
                failed_attempts = outage.attempts,
                outage_ms = outage.started.elapsed().as_millis() as u64,
                "transcript writes recovered"
            );
        }
    }

    /// Keeps the batch as it is and schedules the retry; warns on the first failure of a
    /// streak and then every `WARN_EVERY`.
    fn failed(&mut self, error: &StoreError) {
        self.shared.failures_total.fetch_add(1, Ordering::AcqRel);
        self.shared.failing.store(true, Ordering::Release);
        let pending = self.shared.pending.load(Ordering::Acquire);
        let now = Instant::now();
        let retry_at = match &mut self.outage {
            None => {
                tracing::warn!(%error, pending, "transcript write failed; retrying");
                self.outage = Some(Outage {
                    started: now,
                    attempts: 1,
                    delay: INITIAL_BACKOFF,
                    retry_at: now + INITIAL_BACKOFF,
                    last_warned: now,
                });
                now + INITIAL_BACKOFF
            }
            Some(outage) => {
                outage.attempts += 1;
                outage.delay = (outage.delay * 2).min(MAX_BACKOFF);
                outage.retry_at = now + outage.delay;
                if now.duration_since(outage.last_warned) >= WARN_EVERY {
                    outage.last_warned = now;
                    tracing::warn!(
                        %error,
                        pending,
                        failed_attempts = outage.attempts,
                        "transcript writes still failing"
                    );
                }
                outage.retry_at
            }
        };
        let at_ms = retry_at
            .saturating_duration_since(self.shared.epoch)
            .as_millis() as u64;
        self.shared
            .retry_at_ms
            .store(at_ms.max(1), Ordering::Release);
    }

    /// The shutdown path: takes what was sent before the cancellation, then writes until it
    /// is stored. The caller's drain deadline bounds the retries.
    async fn drain(mut self) -> PersistOutcome {
        // Sends from now on fail (and `message` logs the loss); those already sent are kept.
        self.rx.close();
        while let Some(op) = self.rx.recv().await {
            self.accept(op);
        }
        loop {
            match self.write().await {
                Ok(()) => break,
                // Rows that do not fit the schema will not fit on a retry either.
                Err(StoreError::Corrupt(_)) => break,
                Err(StoreError::Unavailable(_)) => {
                    if let Some(outage) = &self.outage {
                        sleep_until(outage.retry_at).await;
                    }
                }
            }
        }
        let unflushed = self.batch.messages.len() as u64;
        if unflushed > 0 {
            tracing::error!(unflushed, "transcript messages lost at shutdown");
        }
        PersistOutcome { unflushed }
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
    use sqlx::Connection;
    use tempfile::TempDir;

    use super::*;
    use crate::domain::{Role, Seq, VisitorId};
    use crate::protocol::ConversationState;
    use crate::transcript::SqliteStore;

    const HOUR: Duration = Duration::from_secs(3600);

    struct Fixture {
        _dir: TempDir,
        url: String,
        store: Arc<SqliteStore>,
    }

    async fn fixture(busy_timeout: Duration) -> Fixture {
        let dir = TempDir::new().unwrap();
        let url = format!("sqlite:{}", dir.path().join("parley.db").display());
        let store = Arc::new(SqliteStore::open(&url, busy_timeout).await.unwrap());
        Fixture {
            _dir: dir,
            url,
            store,
        }
    }

    fn config(batch_size: usize, flush_interval: Duration, max_pending: usize) -> PersistConfig {
        PersistConfig {
            batch_size,
            flush_interval,
            max_pending,
            group_commit_wait: Duration::from_millis(2),
        }
    }

    fn conversation() -> ConversationRecord {
        ConversationRecord {
            id: ConversationId::new(),
            visitor_id: VisitorId::parse("v1").unwrap(),
            visitor_name: None,
            category: "account".into(),
            state: ConversationState::Queued,
            agent_id: None,
            created_at: 100,
            assigned_at: None,
            closed_at: None,
            resolved: None,
            close_reason: None,
            last_seq: Seq(0),
            page: None,
            metadata: None,
            team: None,
            reopened: 0,
            desk: Default::default(),
        }
    }

    fn message(id: ConversationId, seq: u64) -> StoredMessage {
        StoredMessage {
            conversation_id: id,
            seq: Seq(seq),
            sender_role: Role::Visitor,
            sender_id: "v1".into(),
            sender_name: None,
            text: format!("message {seq}"),
            ts: 1_000 + seq,
            cid: None,
            kind: Default::default(),
        }
    }

    /// Queues messages `seqs` of `id` the way the engine does: reserve, then send.
    fn say(handle: &PersistHandle, id: ConversationId, seqs: std::ops::RangeInclusive<u64>) {
        for seq in seqs {
            assert!(handle.try_reserve(), "room for message {seq}");
            handle.message(Arc::new(message(id, seq)));
        }
    }

    async fn stored_seqs(store: &SqliteStore, id: ConversationId) -> Vec<u64> {
        store
            .messages(id, Seq::ZERO, None, 1000)
            .await
            .unwrap()
            .iter()
            .map(|m| m.seq.0)
            .collect()
    }

    /// Polls an observable condition until it holds, failing the test after a real deadline.
    async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn a_refused_sender_waits_for_the_backlog_to_drain_at_the_stores_pace() {
        let s = Duration::from_millis;
        // 5,000 waiting at 10,000 a second: half a second.
        assert_eq!(backlog_wait(5_000, 10_000, Duration::ZERO), s(500));
        // Twice the backlog, twice the wait; a store twice as fast, half.
        assert_eq!(backlog_wait(10_000, 10_000, Duration::ZERO), s(1_000));
        assert_eq!(backlog_wait(10_000, 20_000, Duration::ZERO), s(500));
        // During an outage, the time to the next attempt comes first.
        assert_eq!(backlog_wait(5_000, 10_000, s(800)), s(1_300));
        // Unknown pace: a second; never below the floor nor above the ceiling.
        assert_eq!(backlog_wait(5_000, 0, Duration::ZERO), RETRY_UNKNOWN);
        assert_eq!(backlog_wait(1, 1_000_000, Duration::ZERO), RETRY_MIN);
        assert_eq!(backlog_wait(1_000_000, 10, Duration::ZERO), RETRY_MAX);
    }

    #[tokio::test]
    async fn the_stores_pace_is_learnt_from_its_writes() {
        let f = fixture(Duration::from_secs(5)).await;
        let (handle, _task) = spawn(
            f.store.clone(),
            config(100, HOUR, 1_000),
            CancellationToken::new(),
        );
        assert_eq!(handle.retry_after(), RETRY_UNKNOWN, "nothing written yet");
        let c = conversation();
        handle.conversation(c.clone());
        say(&handle, c.id, 1..=100);
        handle.flush().await.unwrap();
        // Learnt; with nothing waiting, a refused sender would be told the floor.
        assert!(handle.shared.drain_per_sec.load(Ordering::Acquire) > 0);
        assert_eq!(handle.retry_after(), RETRY_MIN);
    }

    #[tokio::test]
    async fn a_full_batch_is_written_without_waiting_for_the_interval() {
        let f = fixture(Duration::from_secs(5)).await;
        let (handle, _task) = spawn(
            f.store.clone(),
            config(3, HOUR, 100),
            CancellationToken::new(),
        );
        let c = conversation();
        handle.conversation(c.clone());
        say(&handle, c.id, 1..=3);

        eventually("the batch to be stored", || handle.stats().pending == 0).await;
        assert_eq!(stored_seqs(&f.store, c.id).await, [1, 2, 3]);
        assert_eq!(f.store.conversation(c.id).await.unwrap(), Some(c));
        assert_eq!(handle.stats().persisted_total, 3);
    }

    #[tokio::test]
    async fn a_partial_batch_is_written_after_the_interval() {
        let f = fixture(Duration::from_secs(5)).await;
        // Real time, not a paused clock: tokio's `test-util` feature is not enabled, and sqlx
        // waits on its worker thread under tokio timeouts that a paused clock would expire.
        // The batch never fills and nobody flushes, so only the interval can store it.
        let interval = Duration::from_millis(100);
        let (handle, _task) = spawn(
            f.store.clone(),
            config(100, interval, 100),
            CancellationToken::new(),
        );
        let c = conversation();
        handle.conversation(c.clone());
        say(&handle, c.id, 1..=2);

        let queued = std::time::Instant::now();
        eventually("the interval write", || handle.stats().pending == 0).await;
        assert!(queued.elapsed() >= interval, "written before the interval");
        assert_eq!(stored_seqs(&f.store, c.id).await, [1, 2]);
    }

    #[tokio::test]
    async fn flush_returns_once_everything_queued_is_stored() {
        let f = fixture(Duration::from_secs(5)).await;
        let (handle, _task) = spawn(
            f.store.clone(),
            config(100, HOUR, 100),
            CancellationToken::new(),
        );
        let c = conversation();
        handle.conversation(c.clone());
        say(&handle, c.id, 1..=2);
        let closed = ConversationRecord {
            state: ConversationState::Closed,
            last_seq: Seq(2),
            ..c.clone()
        };
        handle.conversation(closed.clone());

        handle.flush().await.unwrap();
        assert_eq!(stored_seqs(&f.store, c.id).await, [1, 2]);
        assert_eq!(f.store.conversation(c.id).await.unwrap(), Some(closed));
        assert_eq!(handle.stats().pending, 0);
        assert_eq!(handle.stats().oldest_pending_age_ms, 0);
    }

    #[tokio::test]
    async fn a_locked_database_fails_flush_then_recovers_without_duplicates() {
        let f = fixture(Duration::from_millis(50)).await;
        let mut locker =
            SqliteConnection::connect_with(&SqliteConnectOptions::from_str(&f.url).unwrap())
                .await
                .unwrap();
        sqlx::query("BEGIN EXCLUSIVE")
            .execute(&mut locker)
            .await
            .unwrap();

        let (handle, _task) = spawn(
            f.store.clone(),
            config(100, HOUR, 5),
            CancellationToken::new(),
        );
        let c = conversation();
        handle.conversation(c.clone());
        say(&handle, c.id, 1..=3);
        assert!(matches!(
            handle.flush().await,
            Err(StoreError::Unavailable(_))
        ));
        let stats = handle.stats();
        assert!(stats.failing);
        assert_eq!(stats.pending, 3);
        assert!(stats.failures_total >= 1);
        assert!(stats.oldest_pending_age_ms > 0);

        // Messages are still accepted during the outage, up to max_pending.
        say(&handle, c.id, 4..=5);
        assert!(!handle.try_reserve(), "max_pending reached");
        assert_eq!(handle.stats().pending, 5);

        sqlx::query("ROLLBACK").execute(&mut locker).await.unwrap();
        eventually("the retry to succeed", || handle.stats().pending == 0).await;
        let stats = handle.stats();
        assert!(!stats.failing);
        assert_eq!(stats.persisted_total, 5);
        assert_eq!(stored_seqs(&f.store, c.id).await, [1, 2, 3, 4, 5]);
        assert_eq!(f.store.conversation(c.id).await.unwrap(), Some(c));
        assert!(handle.try_reserve(), "room again once stored");
        handle.flush().await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_writes_everything_queued() {
        let f = fixture(Duration::from_secs(5)).await;
        let shutdown = CancellationToken::new();
        let (handle, task) = spawn(f.store.clone(), config(100, HOUR, 100), shutdown.clone());
        let c = conversation();
        handle.conversation(c.clone());
        say(&handle, c.id, 1..=4);

        shutdown.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("drained before the deadline")
            .unwrap();
        assert_eq!(outcome.unflushed, 0);
        assert_eq!(stored_seqs(&f.store, c.id).await, [1, 2, 3, 4]);
        assert!(!handle.try_reserve(), "a stopped persister takes nothing");
        assert!(handle.flush().await.is_err());
    }
}
