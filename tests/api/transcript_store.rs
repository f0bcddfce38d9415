//! What every [`TranscriptStore`] must do, run against SQLite in tests/api (transcripts.rs) and
//! against PostgreSQL in tests/redis (which includes this file), so the two implementations
//! cannot drift apart: one body per behaviour, whatever the backend.
//!
//! Only what both promise is checked here. How several nodes' snapshots of one conversation
//! merge (a closed one stays closed, `last_seq` never goes back) is PostgreSQL's alone and is
//! tested with it; SQLite has one writer, and its latest snapshot simply wins.

use std::sync::Arc;

use parley::domain::{AgentId, ClientMessageId, ConversationId, Role, Seq, TeamId, VisitorId};
use parley::protocol::{ConversationState, MessageKind};
use parley::transcript::{
    ConversationFilter, ConversationRecord, CsatAnswer, DeskExtras, DeskRecord, FollowUp,
    StoredMessage, TranscriptStore, MAX_PAGE,
};

/// 2024-05-01T00:00:00Z: conversations of the report check are created from here on, far from
/// those of the other checks, so each check reads only its own rows.
const MAY_1: u64 = 1_714_521_600_000;

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
        desk: DeskRecord::default(),
    }
}

/// Odd positions are the visitor's, even ones the agent's; every fourth is a private note.
fn message(id: ConversationId, seq: u64) -> StoredMessage {
    StoredMessage {
        conversation_id: id,
        seq: Seq(seq),
        sender_role: if seq % 2 == 1 {
            Role::Visitor
        } else {
            Role::Agent
        },
        sender_id: if seq % 2 == 1 { "v1" } else { "alice" }.into(),
        sender_name: (seq % 2 == 0).then(|| "Alice".to_string()),
        text: format!("message {seq}: 你好"),
        ts: 1_000 + seq,
        cid: (seq % 3 != 0).then(|| ClientMessageId::parse(&format!("c{seq}")).unwrap()),
        kind: if seq % 4 == 0 {
            MessageKind::Note
        } else {
            MessageKind::Text
        },
    }
}

/// Messages as the persister hands them to the store.
fn shared(messages: &[StoredMessage]) -> Vec<Arc<StoredMessage>> {
    messages.iter().cloned().map(Arc::new).collect()
}

fn seqs(messages: &[StoredMessage]) -> Vec<u64> {
    messages.iter().map(|m| m.seq.0).collect()
}

fn ids(records: &[ConversationRecord]) -> Vec<ConversationId> {
    records.iter().map(|r| r.id).collect()
}

/// Runs every check on a store with empty transcript tables (the listing check counts rows).
pub async fn check_transcript_store(store: Arc<dyn TranscriptStore>) {
    listings_filter_page_and_put_the_newest_first(&*store).await;
    a_batch_reads_back_as_written_and_pages(&*store).await;
    snapshots_replace_and_retries_store_once(&*store).await;
    tags_follow_ups_and_survey_answers_are_kept_beside_a_conversation(&*store).await;
    reports_join_each_conversation_with_its_extras(&*store).await;
    store.ping().await.unwrap();
}

async fn listings_filter_page_and_put_the_newest_first(store: &dyn TranscriptStore) {
    let alice = AgentId::parse("alice").unwrap();
    let billing = TeamId::parse("billing").unwrap();
    let queued = conversation("v1", 100);
    let assigned = ConversationRecord {
        state: ConversationState::Assigned,
        agent_id: Some(alice.clone()),
        assigned_at: Some(210),
        category: "billing".into(),
        team: Some(billing.clone()),
        ..conversation("v2", 200)
    };
    let closed = ConversationRecord {
        state: ConversationState::Closed,
        agent_id: Some(alice.clone()),
        assigned_at: Some(310),
        closed_at: Some(400),
        resolved: Some(false),
        close_reason: Some("agent".into()),
        ..conversation("v1", 300)
    };
    // Two created in the same millisecond: the id orders them, so pages neither overlap nor skip.
    let (mut twin_a, mut twin_b) = (conversation("v3", 500), conversation("v3", 500));
    if twin_a.id < twin_b.id {
        std::mem::swap(&mut twin_a, &mut twin_b);
    }
    let all = [&queued, &assigned, &closed, &twin_a, &twin_b].map(Clone::clone);
    store.write_batch(&all, &[]).await.unwrap();
    store
        .set_tags(assigned.id, &["vip".into(), "refund".into()])
        .await
        .unwrap();
    store.set_tags(queued.id, &["refund".into()]).await.unwrap();

    let list = |filter: ConversationFilter| async move {
        ids(&store.list_conversations(&filter).await.unwrap())
    };
    let newest_first = [twin_a.id, twin_b.id, closed.id, assigned.id, queued.id];
    assert_eq!(list(ConversationFilter::default()).await, newest_first);
    assert_eq!(
        store
            .list_conversations(&ConversationFilter::default())
            .await
            .unwrap()[2],
        closed,
        "a listed record is the whole record"
    );
    assert_eq!(
        list(ConversationFilter {
            state: Some(ConversationState::Assigned),
            ..Default::default()
        })
        .await,
        [assigned.id]
    );
    assert_eq!(
        list(ConversationFilter {
            agent_id: Some(alice),
            ..Default::default()
        })
        .await,
        [closed.id, assigned.id]
    );
    assert_eq!(
        list(ConversationFilter {
            category: Some("billing".into()),
            ..Default::default()
        })
        .await,
        [assigned.id]
    );
    assert_eq!(
        list(ConversationFilter {
            visitor_id: Some(VisitorId::parse("v1").unwrap()),
            ..Default::default()
        })
        .await,
        [closed.id, queued.id]
    );
    assert_eq!(
        list(ConversationFilter {
            created_after: Some(100),
            created_before: Some(300),
            ..Default::default()
        })
        .await,
        [assigned.id]
    );
    assert_eq!(
        list(ConversationFilter {
            closed_after: Some(399),
            ..Default::default()
        })
        .await,
        [closed.id]
    );
    assert_eq!(
        list(ConversationFilter {
            closed_after: Some(400),
            ..Default::default()
        })
        .await,
        Vec::<ConversationId>::new()
    );
    assert_eq!(
        list(ConversationFilter {
            team: Some(billing),
            ..Default::default()
        })
        .await,
        [assigned.id]
    );
    assert_eq!(
        list(ConversationFilter {
            tag: Some("refund".into()),
            ..Default::default()
        })
        .await,
        [assigned.id, queued.id]
    );
    assert_eq!(
        list(ConversationFilter {
            tag: Some("vip".into()),
            state: Some(ConversationState::Queued),
            ..Default::default()
        })
        .await,
        Vec::<ConversationId>::new(),
        "every filter given must match"
    );
    // Pages: limit and offset, and pages of one cover the listing exactly once.
    assert_eq!(
        list(ConversationFilter {
            limit: 2,
            offset: 1,
            ..Default::default()
        })
        .await,
        newest_first[1..3]
    );
    let mut paged = Vec::new();
    for offset in 0..6 {
        paged.extend(
            list(ConversationFilter {
                limit: 1,
                offset,
                ..Default::default()
            })
            .await,
        );
    }
    assert_eq!(paged, newest_first);

    // Still open, oldest first, for the restore at start-up.
    assert_eq!(
        ids(&store.open_conversations().await.unwrap()),
        [queued.id, assigned.id, twin_b.id, twin_a.id]
    );
    // Closed from here on, so the later checks' open conversations are theirs alone.
    let done: Vec<_> = all
        .into_iter()
        .map(|c| ConversationRecord {
            state: ConversationState::Closed,
            closed_at: Some(600),
            ..c
        })
        .collect();
    store.write_batch(&done, &[]).await.unwrap();
    assert!(store.open_conversations().await.unwrap().is_empty());
}

async fn a_batch_reads_back_as_written_and_pages(store: &dyn TranscriptStore) {
    let mut c = conversation("v1", 1_000);
    c.last_seq = Seq(9);
    let other = conversation("v2", 1_001);
    let msgs: Vec<_> = (1..=9).map(|s| message(c.id, s)).collect();
    let others: Vec<_> = (1..=3).map(|s| message(other.id, s)).collect();
    // Interleaved, as the persister hands over messages of many conversations at once.
    let mut batch = shared(&msgs);
    batch.insert(2, Arc::new(others[0].clone()));
    batch.extend(shared(&others[1..]));
    store
        .write_batch(&[c.clone(), other.clone()], &batch)
        .await
        .unwrap();

    assert_eq!(store.conversation(c.id).await.unwrap(), Some(c.clone()));
    assert_eq!(
        store.conversation(ConversationId::new()).await.unwrap(),
        None
    );
    assert_eq!(
        store.messages(c.id, Seq::ZERO, None, 100).await.unwrap(),
        msgs,
        "every field of every message, in order, and only this conversation's"
    );
    assert_eq!(
        store
            .messages(other.id, Seq::ZERO, None, 100)
            .await
            .unwrap(),
        others
    );
    let page = |after: u64, before: Option<u64>, limit: u32| async move {
        seqs(
            &store
                .messages(c.id, Seq(after), before.map(Seq), limit)
                .await
                .unwrap(),
        )
    };
    assert_eq!(page(1, Some(5), 100).await, [2, 3, 4]);
    assert_eq!(page(1, None, 2).await, [2, 3]);
    assert_eq!(page(8, None, 100).await, [9]);
    assert_eq!(page(9, None, 100).await, Vec::<u64>::new());
    assert_eq!(page(0, Some(1), 100).await, Vec::<u64>::new());
    assert_eq!(page(0, None, 0).await, Vec::<u64>::new());
    // History paging backwards, as the socket's history request does: each page ends where
    // the one after it began.
    assert_eq!(page(0, Some(8), 3).await, [1, 2, 3]);
    // A history page: the newest before a seq, whether or not the numbers are contiguous.
    let newest = |before: u64, limit: u32| async move {
        seqs(&store.newest_before(c.id, Seq(before), limit).await.unwrap())
    };
    assert_eq!(newest(8, 3).await, [5, 6, 7]);
    assert_eq!(newest(3, 10).await, [1, 2]);
    assert_eq!(newest(1, 10).await, Vec::<u64>::new());
    assert_eq!(newest(1_000_000, 2).await, [8, 9]);
    assert_eq!(seqs(&store.tail(c.id, 3).await.unwrap()), [7, 8, 9]);
    assert_eq!(store.tail(c.id, 50).await.unwrap(), msgs);
    assert!(store
        .tail(ConversationId::new(), 5)
        .await
        .unwrap()
        .is_empty());

    // A page is capped, whatever the caller asks for; the tail (the replay window) is not.
    let long = conversation("v3", 1_002);
    let many: Vec<_> = (1..=u64::from(MAX_PAGE) + 5)
        .map(|s| message(long.id, s))
        .collect();
    store
        .write_batch(std::slice::from_ref(&long), &shared(&many))
        .await
        .unwrap();
    let capped = store
        .messages(long.id, Seq::ZERO, None, u32::MAX)
        .await
        .unwrap();
    assert_eq!(capped.len(), MAX_PAGE as usize);
    assert_eq!(capped.last().unwrap().seq, Seq(u64::from(MAX_PAGE)));
    assert_eq!(
        store.tail(long.id, MAX_PAGE + 5).await.unwrap().len(),
        many.len()
    );

    let closed: Vec<_> = [c, other, long]
        .into_iter()
        .map(|c| ConversationRecord {
            state: ConversationState::Closed,
            ..c
        })
        .collect();
    store.write_batch(&closed, &[]).await.unwrap();
}

async fn snapshots_replace_and_retries_store_once(store: &dyn TranscriptStore) {
    let c = conversation("v1", 2_000);
    let msgs: Vec<_> = (1..=3).map(|s| message(c.id, s)).collect();
    store
        .write_batch(std::slice::from_ref(&c), &shared(&msgs))
        .await
        .unwrap();
    // Retried whole, as the persister does after an unknown outcome: nothing twice, and a
    // message already stored keeps its first text.
    let changed = StoredMessage {
        text: "a retry does not rewrite".into(),
        ..msgs[0].clone()
    };
    let mut retry = shared(&msgs);
    retry[0] = Arc::new(changed);
    retry.push(Arc::new(message(c.id, 4)));
    store
        .write_batch(std::slice::from_ref(&c), &retry)
        .await
        .unwrap();
    let mut expected = msgs.clone();
    expected.push(message(c.id, 4));
    assert_eq!(
        store.messages(c.id, Seq::ZERO, None, 100).await.unwrap(),
        expected
    );

    // Every field of a later snapshot replaces the earlier one's.
    let assigned = ConversationRecord {
        state: ConversationState::Assigned,
        agent_id: Some(AgentId::parse("alice").unwrap()),
        assigned_at: Some(2_010),
        last_seq: Seq(4),
        team: Some(TeamId::parse("support").unwrap()),
        desk: DeskRecord {
            transfers: 1,
            first_response_due_at: Some(2_100),
            awaiting_since: Some(2_005),
            ..DeskRecord::default()
        },
        ..c.clone()
    };
    store
        .write_batch(std::slice::from_ref(&assigned), &[])
        .await
        .unwrap();
    assert_eq!(
        store.conversation(c.id).await.unwrap().as_ref(),
        Some(&assigned)
    );
    let closed = ConversationRecord {
        state: ConversationState::Closed,
        closed_at: Some(2_200),
        resolved: Some(true),
        close_reason: Some("agent".into()),
        last_seq: Seq(9),
        visitor_name: None,
        page: None,
        metadata: None,
        desk: DeskRecord {
            contact: Some("vera@example.com".into()),
            offline: true,
            transfers: 2,
            escalated: true,
            first_response_due_at: Some(2_100),
            first_response_at: Some(2_050),
            response_ms_total: 4_500,
            responses: 3,
            rate_limited: 1,
            csat_requested_at: Some(2_199),
            ..DeskRecord::default()
        },
        ..assigned.clone()
    };
    store
        .write_batch(std::slice::from_ref(&closed), &[])
        .await
        .unwrap();
    assert_eq!(
        store.conversation(c.id).await.unwrap(),
        Some(closed.clone())
    );
    // Reopened by the visitor: a snapshot with a higher count.
    let reopened = ConversationRecord {
        state: ConversationState::Queued,
        agent_id: None,
        closed_at: None,
        resolved: None,
        close_reason: None,
        last_seq: Seq(10),
        reopened: 1,
        ..closed.clone()
    };
    store
        .write_batch(std::slice::from_ref(&reopened), &[])
        .await
        .unwrap();
    assert_eq!(
        store.conversation(c.id).await.unwrap(),
        Some(reopened.clone())
    );
    assert_eq!(
        ids(&store.open_conversations().await.unwrap()),
        [reopened.id]
    );
    let closed_again = ConversationRecord {
        state: ConversationState::Closed,
        closed_at: Some(2_300),
        ..reopened
    };
    store
        .write_batch(std::slice::from_ref(&closed_again), &[])
        .await
        .unwrap();

    // A snapshot alone, and messages alone, are both fine; so is an empty batch.
    let quiet = conversation("v2", 2_001);
    store
        .write_batch(std::slice::from_ref(&quiet), &[])
        .await
        .unwrap();
    assert!(store.tail(quiet.id, 10).await.unwrap().is_empty());
    let orphan = ConversationId::new();
    store
        .write_batch(&[], &shared(&[message(orphan, 1)]))
        .await
        .unwrap();
    assert_eq!(store.tail(orphan, 10).await.unwrap(), [message(orphan, 1)]);
    assert_eq!(store.conversation(orphan).await.unwrap(), None);
    store.write_batch(&[], &[]).await.unwrap();
    let done = ConversationRecord {
        state: ConversationState::Closed,
        ..quiet
    };
    store.write_batch(&[done], &[]).await.unwrap();
}

async fn tags_follow_ups_and_survey_answers_are_kept_beside_a_conversation(
    store: &dyn TranscriptStore,
) {
    let (c, d) = (conversation("v1", 3_000), conversation("v2", 3_001));
    store
        .write_batch(&[c.clone(), d.clone()], &[])
        .await
        .unwrap();
    assert_eq!(store.extras(c.id).await.unwrap(), DeskExtras::default());
    assert_eq!(
        store.extras(ConversationId::new()).await.unwrap(),
        DeskExtras::default()
    );

    // Tags: replaced whole, each once, read back in order.
    store
        .set_tags(c.id, &["zeta".into(), "alpha".into(), "zeta".into()])
        .await
        .unwrap();
    assert_eq!(store.extras(c.id).await.unwrap().tags, ["alpha", "zeta"]);
    store
        .set_tags(c.id, &["complaint".into(), "转账".into()])
        .await
        .unwrap();
    assert_eq!(
        store.extras(c.id).await.unwrap().tags,
        ["complaint", "转账"]
    );
    assert_eq!(store.extras(d.id).await.unwrap().tags, Vec::<String>::new());

    // The first survey answer stands.
    let answer = CsatAnswer {
        score: 4,
        comment: Some("快, thanks".into()),
        created_at: 3_100,
    };
    assert!(store.record_csat(c.id, &answer).await.unwrap());
    let second = CsatAnswer {
        score: 1,
        comment: None,
        created_at: 3_200,
    };
    assert!(!store.record_csat(c.id, &second).await.unwrap());
    assert!(store.record_csat(d.id, &second).await.unwrap());

    // Follow-ups: set, replaced, listed soonest first, cleared.
    let follow_up = |due_at: u64, note: Option<&str>| FollowUp {
        due_at,
        note: note.map(Into::into),
        set_by: "alice".into(),
        set_at: 3_050,
    };
    store
        .set_follow_up(c.id, Some(&follow_up(9_000, None)))
        .await
        .unwrap();
    let c_due = follow_up(5_000, Some("check the refund"));
    store.set_follow_up(c.id, Some(&c_due)).await.unwrap();
    let d_due = follow_up(4_000, None);
    store.set_follow_up(d.id, Some(&d_due)).await.unwrap();
    assert_eq!(
        store.extras(c.id).await.unwrap(),
        DeskExtras {
            tags: vec!["complaint".into(), "转账".into()],
            follow_up: Some(c_due.clone()),
            csat: Some(answer),
        }
    );
    let due = |before: u64, limit: u32| async move {
        store
            .due_follow_ups(before, limit)
            .await
            .unwrap()
            .into_iter()
            .map(|(record, f)| (record.id, f))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        due(10_000, 10).await,
        [(d.id, d_due.clone()), (c.id, c_due.clone())]
    );
    assert_eq!(
        due(5_000, 10).await,
        [(d.id, d_due.clone())],
        "strictly before"
    );
    assert_eq!(due(10_000, 1).await, [(d.id, d_due.clone())]);
    assert_eq!(
        store.due_follow_ups(10_000, 10).await.unwrap()[0].0,
        d,
        "with the whole conversation"
    );
    store.set_follow_up(d.id, None).await.unwrap();
    store.set_follow_up(d.id, None).await.unwrap();
    assert_eq!(store.extras(d.id).await.unwrap().follow_up, None);
    assert_eq!(due(10_000, 10).await, [(c.id, c_due)]);
    store.set_follow_up(c.id, None).await.unwrap();
    assert!(due(u64::MAX, 10).await.is_empty());

    let done: Vec<_> = [c, d]
        .into_iter()
        .map(|c| ConversationRecord {
            state: ConversationState::Closed,
            ..c
        })
        .collect();
    store.write_batch(&done, &[]).await.unwrap();
}

async fn reports_join_each_conversation_with_its_extras(store: &dyn TranscriptStore) {
    let before = conversation("v1", MAY_1 - 1);
    let first = conversation("v1", MAY_1);
    let second = ConversationRecord {
        state: ConversationState::Closed,
        ..conversation("v2", MAY_1 + 10)
    };
    let at_end = conversation("v3", MAY_1 + 20);
    store
        .write_batch(
            &[
                at_end.clone(),
                before.clone(),
                second.clone(),
                first.clone(),
            ],
            &[],
        )
        .await
        .unwrap();
    store
        .set_tags(second.id, &["vip".into(), "bug".into()])
        .await
        .unwrap();
    store.set_tags(before.id, &["vip".into()]).await.unwrap();
    let answer = CsatAnswer {
        score: 5,
        comment: None,
        created_at: MAY_1 + 30,
    };
    store.record_csat(second.id, &answer).await.unwrap();
    let follow_up = FollowUp {
        due_at: MAY_1 + 1_000,
        note: None,
        set_by: "admin".into(),
        set_at: MAY_1 + 5,
    };
    store
        .set_follow_up(first.id, Some(&follow_up))
        .await
        .unwrap();

    // From inclusive, to exclusive, oldest first, each with its own extras.
    let rows = store.report_rows(MAY_1, MAY_1 + 20).await.unwrap();
    assert_eq!(
        rows,
        [
            (
                first.clone(),
                DeskExtras {
                    follow_up: Some(follow_up),
                    ..DeskExtras::default()
                }
            ),
            (
                second.clone(),
                DeskExtras {
                    tags: vec!["bug".into(), "vip".into()],
                    csat: Some(answer),
                    ..DeskExtras::default()
                }
            ),
        ]
    );
    assert!(store
        .report_rows(MAY_1 + 21, u64::MAX)
        .await
        .unwrap()
        .is_empty());
    store.set_follow_up(first.id, None).await.unwrap();
}
