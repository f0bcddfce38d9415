//! The [`TranscriptStore`] in one SQLite file: the single-node default.
//!
//! The reads are the SQL shared with PostgreSQL ([`super::sql`]); what is SQLite's own is here:
//! opening the file, and the batch write, tuned for the chat storm (docs/benchmarks.md).

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite, Transaction};

use super::migrate;
use super::sql::{corrupt, state_str, to_i64, ConversationValues, SqlStore, CONVERSATION_COLUMNS};
use super::store::StoreError;
use super::{ConversationRecord, StoredMessage};
use crate::domain::{AgentId, ClientMessageId, ConversationId, TeamId};

/// SQLite serialises writers anyway; a few connections let reads (REST, history) proceed while
/// the persister writes, which WAL mode allows.
const POOL_SIZE: u32 = 4;

/// A collation that compares like the default one and makes the thread it runs on
/// a background thread (see [`background_thread`]). sqlx gives every SQLite
/// connection its own thread and runs the connection's SQL there; a collation callback is the only
/// code of ours that sqlx runs on that thread, so each new connection uses it once.
const BACKGROUND_COLLATION: &str = "parley_background";

/// The name of every SQLite connection's thread, followed by a number (at most 15 bytes in all:
/// Linux cuts thread names there).
pub const STORE_THREAD_PREFIX: &str = "parley-store-";

/// SQLite's threads run at the lowest priority (Linux `SCHED_IDLE`): they get the CPU whenever
/// the socket work does not want it. On a node whose cores are busy, a batch transaction
/// (tens of milliseconds of CPU) otherwise competes on equal terms with the runtime's threads, and
/// every message that arrives meanwhile waits a scheduler slice: in the chat-storm benchmark on one
/// core this set the p99 delivery latency (docs/benchmarks.md, 2a). The store still writes as
/// fast as before under saturation, because the runtime's threads wait on sockets often enough
/// (2b, same page), and the persister's bounded buffer answers `unavailable` if it ever could not.
mod background_thread {
    /// Makes the calling thread a background thread. Runs once per connection (the one query
    /// that uses the collation); a failure (another OS, a sandbox that refuses) is logged and
    /// the thread keeps its priority.
    pub(super) fn lower_priority() {
        if let Err(err) = set_idle() {
            tracing::debug!(error = ?err, "cannot lower the store thread's priority");
        }
    }

    #[cfg(target_os = "linux")]
    fn set_idle() -> Result<(), thread_priority::Error> {
        use thread_priority::unix::{
            set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
            ThreadSchedulePolicy,
        };
        use thread_priority::ThreadPriority;
        set_thread_priority_and_policy(
            thread_native_id(),
            ThreadPriority::Min,
            ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
        )
    }

    #[cfg(not(target_os = "linux"))]
    fn set_idle() -> Result<(), thread_priority::Error> {
        Ok(())
    }
}

/// A [`TranscriptStore`] in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    /// Shared by the persister's writes and the API's reads. A batch is written as a few
    /// multi-row statements in one transaction (see [`insert_messages`]), because each
    /// statement is a round trip to sqlx's SQLite worker thread.
    pool: SqlitePool,
    /// Integer keys of conversations that have messages (migration 0004), as committed.
    keys: Arc<KeyCache>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite:path/to/file.db`) and brings
    /// its schema up to date. `busy_timeout` is how long a statement waits for another writer's
    /// lock before failing, which the persister then retries.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the URL is malformed, the directory or file cannot be
    /// created, or a migration fails.
    pub async fn open(url: &str, busy_timeout: Duration) -> Result<Self, StoreError> {
        Self::open_synced(url, busy_timeout, false).await
    }

    /// As [`SqliteStore::open`]; with `fsync`, every commit waits until the write-ahead log is
    /// on disk (`transcripts.fsync`).
    ///
    /// # Errors
    /// As for [`SqliteStore::open`].
    pub async fn open_synced(
        url: &str,
        busy_timeout: Duration,
        fsync: bool,
    ) -> Result<Self, StoreError> {
        let options = super::with_quiet_slow_statements(SqliteConnectOptions::from_str(url)?)
            .create_if_missing(true)
            // WAL lets readers run during the persister's writes. NORMAL is durable across a
            // process crash in WAL mode (a commit is in the operating system's hands when it
            // returns) and only risks the last commits on an OS crash or power loss; FULL
            // syncs the log at every commit, which closes that too.
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if fsync {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(busy_timeout)
            // Named so that top, perf and the test that checks their priority can tell them.
            .thread_name(|id| format!("{STORE_THREAD_PREFIX}{id}"))
            .collation(BACKGROUND_COLLATION, |a: &str, b: &str| {
                background_thread::lower_priority();
                a.cmp(b)
            });
        create_parent_dir(options.get_filename())?;
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // Runs the collation, so its callback runs on the connection's own thread.
                    sqlx::query(&format!("SELECT 'a' < 'b' COLLATE {BACKGROUND_COLLATION}"))
                        .execute(conn)
                        .await
                        .map(drop)
                })
            })
            .connect_with(options)
            .await?;
        let migrator = sqlx::migrate!("./migrations/sqlite");
        let pending = migrate::pending(&migrator, &mut *pool.acquire().await?).await;
        migrate::apply(pending, migrator.run(&pool)).await?;
        Ok(Self {
            pool,
            keys: Arc::default(),
        })
    }
}

/// SQLite creates the file but not its directory, and a fresh deployment's data directory
/// usually does not exist yet.
fn create_parent_dir(file: &Path) -> Result<(), StoreError> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("creating directory {}: {e}", dir.display()))
        }),
        _ => Ok(()),
    }
}

/// The `messages` table's own columns: [`MESSAGE_COLUMNS`] with the conversation's integer key
/// (migration 0004). Reads go through the `conversation_messages` view, which has the id.
const MESSAGE_KEYED_COLUMNS: &str =
    "conversation_key, seq, sender_role, sender_id, sender_name, text, ts, cid, kind";

#[async_trait::async_trait]
impl SqlStore for SqliteStore {
    type Db = Sqlite;

    /// The `messages` table keys rows by an integer (migration 0004); this view joins the id.
    const MESSAGES: &'static str = "conversation_messages";

    /// None needed: the transaction's first statement, an update, takes SQLite's one write
    /// lock, so writers already take turns.
    const CANNED_WRITE_LOCK: Option<&'static str> = None;

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }

    async fn insert_batch(
        &self,
        conversations: &[ConversationRecord],
        messages: &[Arc<StoredMessage>],
    ) -> Result<(), StoreError> {
        // Dropping the transaction on an early return rolls it back: all or nothing.
        let mut tx = self.pool.begin().await?;
        upsert_conversations(&mut tx, conversations).await?;
        let looked_up = insert_messages(&mut tx, messages, &self.keys).await?;
        tx.commit().await?;
        // Only now: a key assigned in a transaction that rolled back is given to another
        // conversation by the next insert.
        self.keys.remember(looked_up);
        Ok(())
    }
}

/// The most `?` parameters one SQLite statement may bind (`SQLITE_MAX_VARIABLE_NUMBER`, 32,766
/// since SQLite 3.32; the bundled SQLite is newer). A batch is cut into multi-row statements
/// that stay under it; beyond it SQLite would refuse the statement.
const MAX_BIND_PARAMS: usize = 32_766;

/// Columns bound per `conversations` row, and so the rows one upsert statement carries.
const CONVERSATION_PARAMS: usize = 17;
const CONVERSATIONS_PER_STATEMENT: usize = MAX_BIND_PARAMS / CONVERSATION_PARAMS;

/// Columns bound per `messages` row, and so the rows one insert statement carries.
const MESSAGE_PARAMS: usize = 9;
const MESSAGES_PER_STATEMENT: usize = MAX_BIND_PARAMS / MESSAGE_PARAMS;

/// Upserts `conversations` with one multi-row statement per [`CONVERSATIONS_PER_STATEMENT`]
/// rows: every statement is a round trip to sqlx's SQLite worker thread, which per row was the
/// chat storm's ceiling. Rows apply in order, so within a statement a later snapshot of an id
/// would still win (the persister coalesces them to one per id anyway).
async fn upsert_conversations(
    tx: &mut Transaction<'_, Sqlite>,
    conversations: &[ConversationRecord],
) -> Result<(), StoreError> {
    for chunk in statement_chunks(conversations, CONVERSATIONS_PER_STATEMENT) {
        // Everything fallible first: the builder's closure cannot fail.
        let rows = chunk
            .iter()
            .map(ConversationValues::new)
            .collect::<Result<Vec<_>, _>>()?;
        let mut q = QueryBuilder::<Sqlite>::new(format!(
            "INSERT INTO conversations ({CONVERSATION_COLUMNS}) "
        ));
        q.push_values(&rows, |mut b, (c, v)| {
            b.push_bind(c.id.to_string())
                .push_bind(c.visitor_id.as_str())
                .push_bind(c.visitor_name.as_deref())
                .push_bind(c.category.as_str())
                .push_bind(state_str(c.state))
                .push_bind(c.agent_id.as_ref().map(AgentId::as_str))
                .push_bind(v.created_at)
                .push_bind(v.assigned_at)
                .push_bind(v.closed_at)
                .push_bind(c.resolved)
                .push_bind(c.close_reason.as_deref())
                .push_bind(v.last_seq)
                .push_bind(c.page.as_deref())
                .push_bind(v.metadata.as_deref())
                .push_bind(c.team.as_ref().map(TeamId::as_str))
                .push_bind(i64::from(c.reopened))
                .push_bind(v.desk.as_str());
        });
        q.push(
            " ON CONFLICT (id) DO UPDATE SET \
                 visitor_id = excluded.visitor_id, visitor_name = excluded.visitor_name, \
                 category = excluded.category, state = excluded.state, \
                 agent_id = excluded.agent_id, created_at = excluded.created_at, \
                 assigned_at = excluded.assigned_at, closed_at = excluded.closed_at, \
                 resolved = excluded.resolved, close_reason = excluded.close_reason, \
                 last_seq = excluded.last_seq, page = excluded.page, metadata = excluded.metadata, \
                 team = excluded.team, reopened = excluded.reopened, desk = excluded.desk",
        );
        q.build().persistent(true).execute(&mut **tx).await?;
    }
    Ok(())
}

/// Inserts `messages` with one multi-row statement per [`MESSAGES_PER_STATEMENT`] rows.
/// `ON CONFLICT DO NOTHING` is per row, as before: a message already stored (a retried batch)
/// is skipped and the rest of the statement still goes in. Rows are keyed by their
/// conversation's integer key (migration 0004): from `cache`, or else found or assigned by
/// [`conversation_keys`], whose keys are returned for the caller to remember once committed.
async fn insert_messages(
    tx: &mut Transaction<'_, Sqlite>,
    messages: &[Arc<StoredMessage>],
    cache: &KeyCache,
) -> Result<HashMap<ConversationId, i64>, StoreError> {
    let (mut keys, unknown) = cache.lookup(messages);
    let looked_up = conversation_keys(tx, &unknown).await?;
    keys.extend(&looked_up);
    for chunk in statement_chunks(messages, MESSAGES_PER_STATEMENT) {
        let rows = chunk
            .iter()
            .map(|m| {
                let key = keys.get(&m.conversation_id).copied().ok_or_else(|| {
                    // Every id of the batch is in the cache or was just looked up.
                    StoreError::Corrupt(format!("no key for conversation {}", m.conversation_id))
                })?;
                Ok((m, key, to_i64("seq", m.seq.0)?, to_i64("ts", m.ts)?))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut q =
            QueryBuilder::<Sqlite>::new(format!("INSERT INTO messages ({MESSAGE_KEYED_COLUMNS}) "));
        q.push_values(&rows, |mut b, &(m, key, seq, ts)| {
            b.push_bind(key)
                .push_bind(seq)
                .push_bind(m.sender_role.as_str())
                .push_bind(m.sender_id.as_str())
                .push_bind(m.sender_name.as_deref())
                .push_bind(m.text.as_str())
                .push_bind(ts)
                .push_bind(m.cid.as_ref().map(ClientMessageId::as_str))
                .push_bind(m.kind.as_str());
        });
        q.push(" ON CONFLICT (conversation_key, seq) DO NOTHING");
        q.build().persistent(true).execute(&mut **tx).await?;
    }
    Ok(looked_up)
}

/// The integer keys of conversations `ids`, assigning keys to those that have none yet: two
/// statements per [`MAX_BIND_PARAMS`] conversations, one insert that skips known ids and one
/// select of them all.
async fn conversation_keys(
    tx: &mut Transaction<'_, Sqlite>,
    ids: &[ConversationId],
) -> Result<HashMap<ConversationId, i64>, StoreError> {
    let mut keys = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_BIND_PARAMS) {
        let texts: Vec<String> = chunk.iter().map(ToString::to_string).collect();
        let mut insert = QueryBuilder::<Sqlite>::new("INSERT INTO conversation_keys (id) ");
        insert.push_values(&texts, |mut b, id| {
            b.push_bind(id.as_str());
        });
        insert.push(" ON CONFLICT (id) DO NOTHING");
        insert.build().execute(&mut **tx).await?;

        let mut select =
            QueryBuilder::<Sqlite>::new("SELECT id, key FROM conversation_keys WHERE id IN (");
        let mut list = select.separated(", ");
        for id in &texts {
            list.push_bind(id.as_str());
        }
        select.push(")");
        let found: Vec<(String, i64)> = select.build_query_as().fetch_all(&mut **tx).await?;
        for (id, key) in found {
            let id = ConversationId::parse(&id).map_err(|e| corrupt("conversation_keys.id", e))?;
            keys.insert(id, key);
        }
    }
    Ok(keys)
}

/// The most conversation keys [`KeyCache`] holds (about 3 MB); beyond it, it starts over.
const KEY_CACHE_MAX: usize = 100_000;

/// Conversations' integer keys, kept across batches: a key never changes once committed, and
/// without the cache every batch would spend two lookups by id per conversation to find keys it
/// found the batch before (at one or two messages per conversation per batch, that is most of
/// what the integer key saves). Filled only after a commit ([`KeyCache::remember`]). Starting
/// over when full costs each open conversation those two lookups once.
#[derive(Default)]
struct KeyCache(Mutex<HashMap<ConversationId, i64>>);

impl KeyCache {
    /// The known keys of `messages`' conversations, and the conversations (each once) whose keys
    /// are not known.
    fn lookup(
        &self,
        messages: &[Arc<StoredMessage>],
    ) -> (HashMap<ConversationId, i64>, Vec<ConversationId>) {
        let cache = self.0.lock().expect("key cache lock");
        let mut known = HashMap::new();
        let mut unknown = Vec::new();
        for m in messages {
            let id = m.conversation_id;
            match cache.get(&id) {
                Some(&key) => {
                    known.insert(id, key);
                }
                None => unknown.push(id),
            }
        }
        unknown.sort_unstable();
        unknown.dedup();
        (known, unknown)
    }

    /// Keeps `keys`, which a committed transaction read or assigned.
    fn remember(&self, keys: HashMap<ConversationId, i64>) {
        if keys.is_empty() {
            return;
        }
        let mut cache = self.0.lock().expect("key cache lock");
        if cache.len() + keys.len() > KEY_CACHE_MAX {
            cache.clear();
        }
        cache.extend(keys);
    }
}

/// The largest statement below a full one: rests are cut into statements of 256, 128, ... 1
/// rows (the binary digits of the count).
const LARGEST_PART: usize = 256;

/// Cuts `rows` into the multi-row statements that write them: full statements of
/// `per_statement` rows, then the rest as powers of two up to [`LARGEST_PART`] (300 rows are
/// 256 + 32 + 8 + 4). Each row count is different SQL, and SQLite parses a statement's text
/// before it runs it: with any count allowed, a group commit (whose size is whatever arrived
/// meanwhile) parsed every statement afresh, and parsing was about 5 % of the node's
/// instructions. With these few sizes every text is prepared once per connection and kept in
/// sqlx's statement cache; the extra statements cost a round trip each, far less.
fn statement_chunks<T>(rows: &[T], per_statement: usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut rest = rows;
    while !rest.is_empty() {
        let size = if rest.len() >= per_statement {
            per_statement
        } else {
            let largest = 1 << rest.len().ilog2();
            largest.min(LARGEST_PART)
        };
        let (chunk, tail) = rest.split_at(size);
        out.push(chunk);
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_come_in_a_few_sizes_that_cover_every_row_once() {
        let sizes = |n: usize, per: usize| -> Vec<usize> {
            let rows: Vec<usize> = (0..n).collect();
            let chunks = statement_chunks(&rows, per);
            let flat: Vec<usize> = chunks.concat();
            assert_eq!(flat, rows, "every row once, in order");
            chunks.iter().map(|c| c.len()).collect()
        };
        assert_eq!(sizes(0, 3640), Vec::<usize>::new());
        assert_eq!(sizes(1, 3640), [1]);
        assert_eq!(sizes(300, 3640), [256, 32, 8, 4]);
        assert_eq!(sizes(600, 3640), [256, 256, 64, 16, 8]);
        assert_eq!(sizes(3640 + 3, 3640), [3640, 2, 1]);
        // Whatever the batch, only full statements, powers of two up to 256 and nothing else.
        for n in 0..2000 {
            for size in sizes(n, 1000) {
                assert!(size == 1000 || (size.is_power_of_two() && size <= LARGEST_PART));
            }
        }
    }
    use crate::domain::{Role, Seq, VisitorId};
    use crate::protocol::{ConversationState, MessageKind};
    use crate::transcript::sql::MESSAGE_COLUMNS;
    use crate::transcript::{ConversationFilter, TranscriptStore, MAX_PAGE};
    use tempfile::TempDir;

    async fn open_temp() -> (TempDir, SqliteStore) {
        let dir = TempDir::new().unwrap();
        // A nested directory proves `open` creates the parent.
        let url = format!("sqlite:{}", dir.path().join("data/parley.db").display());
        let store = SqliteStore::open(&url, Duration::from_secs(5))
            .await
            .unwrap();
        (dir, store)
    }

    fn conversation(visitor: &str, created_at: u64) -> ConversationRecord {
        ConversationRecord {
            id: ConversationId::new(),
            visitor_id: VisitorId::parse(visitor).unwrap(),
            visitor_name: Some("Vera".into()),
            category: "account".into(),
            state: ConversationState::Queued,
            agent_id: None,
            created_at,
            assigned_at: None,
            closed_at: None,
            resolved: None,
            close_reason: None,
            last_seq: Seq(0),
            page: Some("/pricing".into()),
            metadata: Some(serde_json::Map::from_iter([(
                "plan".to_string(),
                serde_json::json!("pro"),
            )])),
            team: None,
            reopened: 0,
            desk: Default::default(),
        }
    }

    fn message(id: ConversationId, seq: u64) -> StoredMessage {
        StoredMessage {
            conversation_id: id,
            seq: Seq(seq),
            sender_role: if seq % 2 == 1 {
                Role::Visitor
            } else {
                Role::Agent
            },
            sender_id: "v1".into(),
            sender_name: None,
            text: format!("message {seq}"),
            ts: 1_000 + seq,
            cid: Some(ClientMessageId::parse(&format!("c{seq}")).unwrap()),
            kind: Default::default(),
        }
    }

    /// Messages as the persister hands them to the store.
    fn shared(messages: &[StoredMessage]) -> Vec<Arc<StoredMessage>> {
        messages.iter().cloned().map(Arc::new).collect()
    }

    fn seqs(messages: &[StoredMessage]) -> Vec<u64> {
        messages.iter().map(|m| m.seq.0).collect()
    }

    // What every store does (reads, paging, snapshots, retries, listings) is checked on
    // SQLite and PostgreSQL alike by the contract in tests/api/transcript_store.rs; these
    // are the SQLite write path's own.

    #[tokio::test]
    async fn a_batch_larger_than_one_statement_is_stored_whole_and_once() {
        let (_dir, store) = open_temp().await;
        // More rows than one statement may bind, for both tables, so both are cut into chunks.
        let conversations: Vec<_> = (0..CONVERSATIONS_PER_STATEMENT as u64 + 7)
            .map(|i| ConversationRecord {
                last_seq: Seq(i),
                ..conversation("v1", 1_000 + i)
            })
            .collect();
        let first = conversations[0].id;
        let last = conversations[conversations.len() - 1].id;
        let per_conversation = MESSAGES_PER_STATEMENT as u64 + 3;
        let msgs: Vec<_> = [first, last]
            .iter()
            .flat_map(|&id| (1..=per_conversation).map(move |s| message(id, s)))
            .collect();
        assert!(msgs.len() > 2 * MESSAGES_PER_STATEMENT);

        store
            .write_batch(&conversations, &shared(&msgs))
            .await
            .unwrap();
        // Retried whole, as the persister does after an unknown outcome: nothing twice.
        store
            .write_batch(&conversations, &shared(&msgs))
            .await
            .unwrap();

        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(usize::try_from(stored).unwrap(), msgs.len());
        for id in [first, last] {
            let back = store.tail(id, u32::MAX).await.unwrap();
            let expected: Vec<_> = msgs
                .iter()
                .filter(|m| m.conversation_id == id)
                .cloned()
                .collect();
            assert_eq!(back, expected);
        }
        let listed = store
            .list_conversations(&ConversationFilter {
                limit: MAX_PAGE,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(listed.len(), MAX_PAGE as usize);
        for c in [
            &conversations[0],
            &conversations[CONVERSATIONS_PER_STATEMENT],
            conversations.last().unwrap(),
        ] {
            assert_eq!(store.conversation(c.id).await.unwrap().as_ref(), Some(c));
        }
        assert_eq!(
            store.open_conversations().await.unwrap().len(),
            conversations.len()
        );
    }

    #[tokio::test]
    async fn messages_of_more_conversations_than_one_statement_binds_each_get_their_own_key() {
        let (_dir, store) = open_temp().await;
        // One message each in more conversations than one key statement may bind, without
        // their snapshots: a message's key does not depend on its conversation's row.
        let msgs: Vec<_> = (0..MAX_BIND_PARAMS + 5)
            .map(|_| message(ConversationId::new(), 1))
            .collect();
        store.write_batch(&[], &shared(&msgs)).await.unwrap();
        store.write_batch(&[], &shared(&msgs)).await.unwrap();

        let (stored, keys): (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT conversation_key) FROM messages")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(usize::try_from(stored).unwrap(), msgs.len());
        assert_eq!(usize::try_from(keys).unwrap(), msgs.len());
        for m in [&msgs[0], &msgs[MAX_BIND_PARAMS], msgs.last().unwrap()] {
            let back = store.tail(m.conversation_id, 10).await.unwrap();
            assert_eq!(back, std::slice::from_ref(m));
        }
    }

    #[tokio::test]
    async fn a_key_assigned_in_a_failed_batch_is_not_remembered() {
        let (_dir, store) = open_temp().await;
        let (a, b) = (ConversationId::new(), ConversationId::new());
        // Fails after a's key is assigned (a seq beyond SQLite's integers), so it rolls back,
        // and the next conversation to get a key gets the same number.
        let beyond = StoredMessage {
            seq: Seq(u64::MAX),
            ..message(a, 2)
        };
        let failed = [message(a, 1), beyond];
        assert!(matches!(
            store.write_batch(&[], &shared(&failed)).await,
            Err(StoreError::Corrupt(_))
        ));
        store
            .write_batch(&[], &shared(&[message(b, 1)]))
            .await
            .unwrap();
        store
            .write_batch(&[], &shared(&[message(a, 1)]))
            .await
            .unwrap();

        assert_eq!(store.tail(a, 10).await.unwrap(), [message(a, 1)]);
        assert_eq!(store.tail(b, 10).await.unwrap(), [message(b, 1)]);
    }

    #[tokio::test]
    async fn messages_stored_before_the_integer_key_migration_read_back_after_it() {
        // A database as release 0003 left it: the first three migrations, messages keyed by id.
        let dir = TempDir::new().unwrap();
        let migrations = dir.path().join("migrations");
        std::fs::create_dir(&migrations).unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        for name in ["0001_init.sql", "0002_desk_content.sql", "0003_desk.sql"] {
            std::fs::copy(source.join(name), migrations.join(name)).unwrap();
        }
        let url = format!("sqlite:{}", dir.path().join("parley.db").display());
        let old = SqlitePool::connect_with(
            SqliteConnectOptions::from_str(&url)
                .unwrap()
                .create_if_missing(true),
        )
        .await
        .unwrap();
        sqlx::migrate::Migrator::new(migrations.as_path())
            .await
            .unwrap()
            .run(&old)
            .await
            .unwrap();
        let (a, b) = (ConversationId::new(), ConversationId::new());
        let msgs: Vec<_> = [(a, 1), (b, 1), (a, 2), (a, 3), (b, 2)]
            .into_iter()
            .map(|(id, seq)| StoredMessage {
                kind: if seq == 2 {
                    MessageKind::Note
                } else {
                    MessageKind::Text
                },
                ..message(id, seq)
            })
            .collect();
        for m in &msgs {
            sqlx::query(&format!(
                "INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .bind(m.conversation_id.to_string())
            .bind(to_i64("seq", m.seq.0).unwrap())
            .bind(m.sender_role.as_str())
            .bind(m.sender_id.as_str())
            .bind(m.sender_name.as_deref())
            .bind(m.text.as_str())
            .bind(to_i64("ts", m.ts).unwrap())
            .bind(m.cid.as_ref().map(ClientMessageId::as_str))
            .bind(m.kind.as_str())
            .execute(&old)
            .await
            .unwrap();
        }
        old.close().await;

        let store = SqliteStore::open(&url, Duration::from_secs(5))
            .await
            .unwrap();
        for id in [a, b] {
            let expected: Vec<_> = msgs
                .iter()
                .filter(|m| m.conversation_id == id)
                .cloned()
                .collect();
            assert_eq!(store.tail(id, 10).await.unwrap(), expected);
        }
        // New messages join the migrated conversations' keys; a retried old one is skipped.
        let more = [message(a, 4), msgs[0].clone()];
        store.write_batch(&[], &shared(&more)).await.unwrap();
        assert_eq!(seqs(&store.tail(a, 10).await.unwrap()), [1, 2, 3, 4]);
        let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM conversation_keys")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(keys, 2);
    }
}
