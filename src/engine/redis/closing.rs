//! Closing a conversation on Redis: once (the `CLOSE` script), then what follows on a task of
//! its own, retried until Redis has done its part.

use super::*;

impl Inner {
    /// Closes a conversation once (the `CLOSE` script); returns its record as it was open, or
    /// `None` when it was closed already.
    pub(super) async fn close_once(
        &self,
        id: ConversationId,
        frame: &str,
    ) -> R<Option<ConversationRecord>> {
        let closed: Option<Vec<String>> = scripts::CLOSE
            .key(self.keys.meta(id))
            .key(self.keys.log(id))
            .key(self.keys.cids(id))
            .arg(self.clock.now_millis())
            .arg(self.closed_keep_secs())
            .arg(frame)
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if closed.is_none() {
            return Ok(None);
        }
        Ok(self.meta(id).await?.map(|m| m.record(id, m.open_state())))
    }

    /// What Redis must do once a conversation is closed: forget it as the visitor's open one
    /// (keeping it for a reopen) and free its place in routing. Idempotent.
    pub(super) async fn release_closed(&self, c: &Closing) -> R<Vec<String>> {
        let (id, v) = (c.id, &c.visitor);
        scripts::DELETE_IF
            .key(self.keys.visitor_open(v))
            .arg(id.to_string())
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map_err(unavailable)?;
        // Its first-response clock stops with it (the in-process backend cancels its deadline
        // on close); left there, the entry would wait to be taken by a tick that finds it closed.
        redis::cmd("ZREM")
            .arg(self.keys.sla())
            .arg(id.to_string())
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)?;
        // A `start` within the reopen window reopens this one: when it closed is kept with it
        // and judged on the desk's clock ([`policy::reopens`]); the key's TTL, on Redis's
        // clock, only tidies up and is never shorter than the window.
        let window = self.settings.desk.reopen_window.as_millis() as u64;
        if window > 0 {
            redis::cmd("SET")
                .arg(self.keys.client(&ClientKey::visitor(v), "last_closed"))
                .arg(format!("{id}|{}", c.closed_at))
                .arg("PX")
                .arg(window.saturating_add(1000))
                .query_async::<()>(&mut self.conn())
                .await
                .map_err(unavailable)?;
        }
        if c.survey {
            redis::cmd("HSET")
                .arg(self.keys.meta(id))
                .arg("csat_at")
                .arg(c.closed_at)
                .query_async::<()>(&mut self.conn())
                .await
                .map_err(unavailable)?;
        }
        self.routing_invocation(&scripts::RELEASE)
            .arg(id.to_string())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    /// What follows a close ([`Backend::wind_up`]), on a task of its own: freeing the agent's
    /// slot, telling both sides and storing must all happen even when the closing operation's
    /// deadline passes or its caller goes away, or the conversation would stay closed with its
    /// agent's slot taken and nobody told. The part Redis must do is retried.
    pub(super) async fn after_close(self: Arc<Self>, c: Closing) -> R<()> {
        let id = c.id;
        // Each step is idempotent: retried with backoff (Redis away, or too slow for a burst),
        // 20 times over about a minute, then given up loudly.
        let mut wait = Duration::from_millis(100);
        let mut attempts = 0;
        let made = loop {
            match self.release_closed(&c).await {
                Ok(made) => break made,
                Err(err) if attempts < 20 && !self.shutdown.is_cancelled() => {
                    attempts += 1;
                    tracing::debug!(conversation = %id, error = %err, "winding up a close; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                Err(err) => return Err(err),
            }
        };
        self.backfill_transcript(id).await;
        let mut targets = vec![ClientKey::visitor(&c.visitor)];
        if let Some(a) = &c.agent {
            targets.push(ClientKey::agent(a));
        }
        self.publish(
            &targets,
            Wire::Closed {
                conv: id,
                visitor: c.visitor.to_string(),
                agent: c.agent.as_ref().map(ToString::to_string),
                frame: c.frame.to_string(),
            },
        )
        .await;
        if let Some(a) = &c.agent {
            self.push_agent_state(a).await;
        }
        let handed_out = self.apply_assignments(&made).await;
        // Last, because a flush waits for everything queued before it (seconds of writes under
        // a burst of closes): stored, then asked, since the survey's answer is checked against
        // the store, maybe by another node.
        if let Err(err) = self.persist.flush().await {
            tracing::warn!(conversation = %id, error = %err, "flush after close failed; will retry");
        }
        if c.survey {
            self.send_frame(
                vec![ClientKey::visitor(&c.visitor)],
                ServerFrame::CsatRequest {
                    conversation_id: id,
                },
                None,
            )
            .await;
        }
        handed_out
    }

    /// Hands the whole stream of a closing conversation to this node's persister. Each node
    /// stores what it accepted, write-behind; a node killed before its batch was written leaves
    /// holes in the shared transcript, which this fills from the stream (the durable copy) when
    /// the conversation closes, on whichever node closes it. Stores write messages
    /// idempotently, so what is stored already is not duplicated. Best effort: the stream holds
    /// the last `transcripts.replay_window` messages, and a full buffer is logged.
    pub(super) async fn backfill_transcript(&self, id: ConversationId) {
        let mut after = 0;
        loop {
            let page =
                delivery::range(&mut self.conn(), &self.keys, id, after, None, BACKFILL_PAGE).await;
            let page = match page {
                Ok(page) => page,
                Err(err) => {
                    tracing::warn!(conversation = %id, error = %err, "cannot read the stream to complete the transcript");
                    return;
                }
            };
            let Some(last) = page.last().map(|(m, _)| m.seq.0) else {
                return;
            };
            let full = page.len() >= BACKFILL_PAGE;
            for (m, _) in page {
                if !self.persist.try_reserve() {
                    tracing::warn!(conversation = %id, seq = %m.seq, "transcript buffer full; transcript not completed from the stream");
                    return;
                }
                self.persist.message(Arc::new(StoredMessage {
                    conversation_id: id,
                    seq: m.seq,
                    sender_role: m.sender.role,
                    sender_id: m.sender.id,
                    sender_name: m.sender.name,
                    text: m.text,
                    ts: m.ts,
                    cid: m.cid,
                    kind: m.kind,
                }));
            }
            if !full {
                return;
            }
            after = last;
        }
    }
}
