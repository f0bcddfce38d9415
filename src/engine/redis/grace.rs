//! Clients on nodes: where each client has sockets, and what happens when it has none left
//! anywhere (a grace period, kept in Redis so that it survives the node that started it).

use super::*;

impl Inner {
    /// Forgets an agent and puts its chats at the front of the queue; returns how many it had.
    pub(super) async fn remove_agent(&self, agent: &AgentId) -> R<usize> {
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
        self.apply_assignments(made).await?;
        Ok(n)
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

    /// Keeps a grace period until `at`, in Redis rather than in a timer, so that it survives
    /// this node stopping: whichever node looks first after the deadline takes it.
    pub(super) async fn schedule_grace(&self, absence: &Absence, at: UnixMillis) -> R<()> {
        redis::cmd("ZADD")
            .arg(self.keys.graces())
            .arg(at)
            .arg(format!(
                "{}|{}",
                ClientKey::of(&absence.client).0,
                absence.generation
            ))
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(unavailable)
    }

    /// Takes grace periods that ran out; each is claimed by exactly one node (`ZREM`).
    pub(super) async fn due_graces(&self, now: UnixMillis, limit: usize) -> R<Vec<Absence>> {
        let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.graces())
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        let mut taken = Vec::with_capacity(due.len());
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
            let Some(client) = ClientKey(client.to_string()).client() else {
                continue;
            };
            taken.push(Absence {
                client,
                generation: generation.parse().unwrap_or(0),
            });
        }
        Ok(taken)
    }

    /// Ends a grace period unless the client came back (a socket on any node, or a join since).
    pub(super) async fn expire(&self, absence: &Absence) -> R<Option<Expired>> {
        let client = ClientKey::of(&absence.client);
        let (present, current): (usize, Option<u64>) = redis::pipe()
            .cmd("SCARD")
            .arg(self.keys.client(&client, "nodes"))
            .cmd("GET")
            .arg(self.keys.client(&client, "gen"))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        if present > 0 || current.unwrap_or(0) != absence.generation {
            return Ok(None);
        }
        Ok(Some(match &absence.client {
            Client::Visitor(v) => Expired::Visitor(self.open_of(v).await?),
            Client::Agent(a) => Expired::Agent {
                requeued: self.remove_agent(a).await?,
            },
        }))
    }

    /// A client of this node left every node: a client holding something is returned for a
    /// grace period (an agent stops taking chats meanwhile); one holding nothing is forgotten.
    pub(super) async fn absent_everywhere(
        &self,
        client: ClientKey,
        generation: u64,
    ) -> R<Option<Absence>> {
        let Some(who) = client.client() else {
            return Ok(None);
        };
        let holds = match &who {
            Client::Visitor(v) => self.open_of(v).await?.is_some(),
            Client::Agent(a) => {
                let chats: usize = redis::cmd("SCARD")
                    .arg(self.keys.agent_chats(a))
                    .query_async(&mut self.conn())
                    .await
                    .map_err(unavailable)?;
                if chats == 0 {
                    self.remove_agent(a).await?;
                } else {
                    self.routing_invocation(&scripts::STOP_ACCEPTING)
                        .arg(a.as_str())
                        .invoke_async::<()>(&mut self.conn())
                        .await
                        .map_err(unavailable)?;
                }
                chats > 0
            }
        };
        Ok(holds.then_some(Absence {
            client: who,
            generation,
        }))
    }

    /// [`Inner::absent_everywhere`] for an absence this node finds on its own (not on a leave):
    /// the desk hears of it as a request.
    pub(super) async fn found_absent(&self, client: ClientKey, generation: u64) -> R<()> {
        if let Some(absence) = self.absent_everywhere(client, generation).await? {
            let _ = self.requests.send(DeskRequest::Absent(absence));
        }
        Ok(())
    }
}
