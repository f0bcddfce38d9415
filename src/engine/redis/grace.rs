//! Clients on nodes: where each client has sockets, and what happens when it has none left
//! anywhere (a grace period, kept in Redis so that it survives the node that started it).

use super::*;

impl Inner {
    /// Forgets an agent and puts its chats at the front of the queue.
    pub(super) async fn remove_agent(&self, agent: &AgentId) -> R<()> {
        let out: Vec<String> = self
            .routing_invocation(&scripts::REMOVE_AGENT)
            .arg(agent.as_str())
            .invoke_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let n: usize = out.first().and_then(|n| n.parse().ok()).unwrap_or(0);
        let orphans = out.get(1..1 + 2 * n).unwrap_or_default();
        let made = out.get(1 + 2 * n..).unwrap_or_default();
        if n > 0 {
            tracing::info!(agent = %agent, chats = n, "agent gone; returning chats to the front of the queue");
        }
        for pair in orphans.chunks(2) {
            let [conv, position] = pair else { continue };
            let Ok(id) = ConversationId::parse(conv) else {
                continue;
            };
            let _: Result<(), _> = redis::cmd("HSET")
                .arg(self.keys.meta(id))
                .arg("agent")
                .arg("")
                .arg("state")
                .arg("queued")
                .query_async(&mut self.conn())
                .await;
            let position: u32 = position.parse().unwrap_or(1);
            if let Some(meta) = self.meta(id).await? {
                self.persist
                    .conversation(meta.record(id, ConversationState::Queued));
                if let Ok(v) = VisitorId::parse(&meta.visitor) {
                    self.send_queued(&v, id, position, QueueReason::AgentDisconnected)
                        .await;
                }
            }
        }
        self.apply_assignments(made).await
    }

    /// Marks a client present on this node.
    pub(super) async fn arrive(&self, client: &ClientKey) -> R<u64> {
        redis::cmd("SADD")
            .arg(self.keys.node_clients(&self.node))
            .arg(&client.0)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)?;
        // The client's slot: one round trip.
        let (generation,): (u64,) = redis::pipe()
            .cmd("SADD")
            .arg(self.keys.client(client, "nodes"))
            .arg(&self.node)
            .ignore()
            .cmd("INCR")
            .arg(self.keys.client(client, "gen"))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        Ok(generation)
    }

    /// The client's last socket on this node went: returns how many nodes still have one, and
    /// the join generation to give a grace timer.
    pub(super) async fn depart(
        &self,
        client: &ClientKey,
    ) -> Result<(usize, u64), redis::RedisError> {
        // The client's own set first: if only this half is applied (a reply lost in an
        // outage), the node's list still names the client and the heartbeat finishes the job.
        let (left, generation): (usize, Option<u64>) = redis::pipe()
            .cmd("SREM")
            .arg(self.keys.client(client, "nodes"))
            .arg(&self.node)
            .ignore()
            .cmd("SCARD")
            .arg(self.keys.client(client, "nodes"))
            .cmd("GET")
            .arg(self.keys.client(client, "gen"))
            .query_async(&mut self.conn())
            .await?;
        redis::cmd("SREM")
            .arg(self.keys.node_clients(&self.node))
            .arg(&client.0)
            .query_async::<()>(&mut self.conn())
            .await?;
        Ok((left, generation.unwrap_or(0)))
    }

    /// A client gone from every node: after its grace period (if it did not come back), a
    /// visitor's conversation closes and an agent's chats go back to the queue. The deadline is
    /// kept in Redis, not in a timer, so it survives this node stopping: whichever node looks
    /// first after the deadline acts on it ([`presence`]).
    pub(super) async fn start_grace(
        &self,
        client: &ClientKey,
        generation: u64,
        grace: Duration,
    ) -> R<()> {
        let deadline = now_millis() + grace.as_millis() as u64;
        redis::cmd("ZADD")
            .arg(self.keys.graces())
            .arg(deadline)
            .arg(format!("{}|{generation}", client.0))
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    /// Acts on grace periods that ran out; each is claimed by exactly one node (`ZREM`).
    pub(super) async fn expire_graces(&self) -> R<()> {
        let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.graces())
            .arg("-inf")
            .arg(now_millis())
            .arg("LIMIT")
            .arg(0)
            .arg(100)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        for entry in due {
            let claimed: u32 = redis::cmd("ZREM")
                .arg(self.keys.graces())
                .arg(&entry)
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            if claimed == 0 {
                continue;
            }
            let Some((client, generation)) = entry.rsplit_once('|') else {
                continue;
            };
            let generation = generation.parse().unwrap_or(0);
            self.grace_expired(&ClientKey(client.to_string()), generation)
                .await?;
        }
        Ok(())
    }

    pub(super) async fn grace_expired(&self, client: &ClientKey, generation: u64) -> R<()> {
        let (present, current): (usize, Option<u64>) = redis::pipe()
            .cmd("SCARD")
            .arg(self.keys.client(client, "nodes"))
            .cmd("GET")
            .arg(self.keys.client(client, "gen"))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if present > 0 || current.unwrap_or(0) != generation {
            return Ok(());
        }
        if let Some(v) = client.as_visitor() {
            let open: Option<String> = redis::cmd("GET")
                .arg(self.keys.visitor_open(&v))
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            if let Some(id) = open.and_then(|o| ConversationId::parse(&o).ok()) {
                // An offline message waits for an agent whether or not its visitor stays: the
                // answer is there when they come back.
                if self.meta(id).await?.is_some_and(|m| m.offline) {
                    return Ok(());
                }
                // The desk closes it.
                let _ = self.requests.send(DeskRequest::VisitorLeft(id));
            }
        } else if let Some(a) = client.as_agent() {
            self.remove_agent(&a).await?;
        }
        Ok(())
    }

    /// A client of this node left every node: what happens next depends on its role.
    pub(super) async fn absent_everywhere(&self, client: ClientKey, generation: u64) -> R<()> {
        if let Some(v) = client.as_visitor() {
            let open: Option<String> = redis::cmd("GET")
                .arg(self.keys.visitor_open(&v))
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            if open.is_some() {
                self.start_grace(&client, generation, self.settings.visitor_grace)
                    .await?;
            }
        } else if let Some(a) = client.as_agent() {
            let chats: usize = redis::cmd("SCARD")
                .arg(self.keys.agent_chats(&a))
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            if chats == 0 {
                self.remove_agent(&a).await?;
            } else {
                self.routing_invocation(&scripts::STOP_ACCEPTING)
                    .arg(a.as_str())
                    .invoke_async::<()>(&mut self.conn())
                    .await
                    .map_err(unavailable)?;
                tracing::info!(agent = %a, "agent connection lost; grace period starts");
                self.start_grace(&client, generation, self.settings.agent_grace)
                    .await?;
            }
        }
        Ok(())
    }
}
