//! The writer: the chain's head and the records not yet in both sinks,
//! held by one group leader at a time, which seals a group in sequence
//! order and writes it to the file and the store; and the sync thread's
//! task that stores what the file took. It never drops a sealed record: a
//! group that failed in a sink is written again before the next one.

use super::*;

/// The writer's state, held by one leader at a time: the chain's head
/// and what is not yet in both sinks.
pub(super) struct Writer {
    /// The chain's MAC key.
    pub(super) key: ChainKey,
    /// Synced durability: the leader writes the checkpoints (both sinks
    /// are synced at every flush). Written: the sync thread does.
    pub(super) checkpoints: Option<Arc<Checkpointer>>,
    pub(super) store: Arc<dyn Store>,
    pub(super) file: FileSink,
    /// Each group synced before it counts (`Durability::Synced`).
    pub(super) synced: bool,
    /// Written durability: a reveal waits for the file only, and the
    /// store's copy follows in batches (of [`STORE_BATCH`], and every sync
    /// interval). A killed process leaves the store behind the file, and
    /// the next start copies the rest from the file.
    pub(super) defer_store: bool,
    pub(super) next_seq: u64,
    pub(super) prev: String,
    /// Sealed records not yet durable in both sinks, in sequence order.
    pub(super) unwritten: VecDeque<(u64, Vec<u8>)>,
    /// Highest sequence number durable in each sink.
    pub(super) in_store: u64,
    /// Highest sequence number the store has or the sync thread is
    /// storing; above `in_store` while it writes.
    pub(super) store_claimed: u64,
    /// Bytes of the records sealed since the store's copy was last claimed.
    pub(super) unclaimed_bytes: usize,
    /// Wakes the sync thread to store a full batch (written durability).
    pub(super) store_requests: Option<sync::StoreRequests>,
    /// A batch was requested and not yet claimed.
    pub(super) store_requested: bool,
    pub(super) in_file: u64,
    /// Callers of sealed records, answered once the flush ends.
    pub(super) waiting: Vec<(u64, oneshot::Sender<Result<u64, AuditError>>)>,
    /// Told of every write, for the sync thread.
    pub(super) health: Arc<SyncHealth>,
}

impl Writer {
    pub(super) async fn commit(&mut self, group: Vec<Append>) {
        if self.unwritten.len() + group.len() > MAX_UNWRITTEN {
            // A sink has been failing for a while: retry the backlog, and
            // refuse rather than hold ever more records in memory.
            if let Err(error) = self.flush(true).await {
                for append in group {
                    let _ = append.reply.send(Err(error.clone()));
                }
                return;
            }
        }
        for append in group {
            match self.seal(append.record) {
                Ok(seq) => self.waiting.push((seq, append.reply)),
                Err(error) => {
                    let _ = append.reply.send(Err(error));
                }
            }
        }
        // If the leader's call is cancelled during the flush, the sealed
        // records and their callers stay here for the next leader.
        let flushed = self.flush(false).await;
        let durable = self.revealable();
        for (seq, reply) in self.waiting.drain(..) {
            let answer = match &flushed {
                Ok(()) if seq <= durable => Ok(seq),
                Ok(()) => Err(AuditError::Unavailable("record not written".into())),
                Err(error) => Err(error.clone()),
            };
            let _ = reply.send(answer);
        }
    }

    /// Seals and writes one record with no one else waiting; its sequence
    /// number once it may be revealed ([`Writer::revealable`]). Cancelled
    /// mid-write, the record stays unwritten for the next leader, as a
    /// group's would.
    pub(super) async fn write_one(
        &mut self,
        record: AuditRecord<ListedHash>,
    ) -> Result<u64, AuditError> {
        let seq = self.seal(record)?;
        self.flush(false).await?;
        if seq <= self.revealable() {
            Ok(seq)
        } else {
            Err(AuditError::Unavailable("record not written".into()))
        }
    }

    /// Whether a cancelled leader left sealed records unanswered.
    pub(super) fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// Numbers, timestamps and chains a record; queues it for both sinks.
    pub(super) fn seal(&mut self, mut record: AuditRecord<ListedHash>) -> Result<u64, AuditError> {
        let seq = self.next_seq;
        record.seq = seq;
        record.time_unix_ms = unix_millis();
        record.prev = self.prev.clone();
        let (line, hash) = record
            .seal(&self.key)
            .map_err(|e| AuditError::Unavailable(format!("record encoding: {e}")))?;
        self.next_seq += 1;
        self.prev = hash;
        self.unclaimed_bytes += line.len();
        self.unwritten.push_back((seq, line));
        Ok(seq)
    }

    /// Writes what each sink lacks: the file always, the store too unless
    /// its copy is deferred and nothing calls for it now (`store_now`, a
    /// moved file, the sync thread far behind). A full batch wakes the
    /// sync thread to store it. Each sink's mark moves as soon as its
    /// write ends, so a leader cancelled while it awaits the store leaves
    /// nothing for the next one to write twice.
    pub(super) async fn flush(&mut self, store_now: bool) -> Result<(), AuditError> {
        let path_moved = self.file.path_moved();
        let moved = matches!(path_moved, Ok(true));
        let last = self.unwritten.back().map_or(0, |(seq, _)| *seq);
        let unclaimed = last.saturating_sub(self.store_claimed);
        let batches =
            (unclaimed / STORE_BATCH).max((self.unclaimed_bytes / STORE_BATCH_BYTES) as u64);
        // Everything above `in_store` (records the sync thread is storing
        // too: a second put of the same bytes changes nothing), so that
        // `in_store` can move to `last`.
        let store_due = store_now
            || !self.defer_store
            || moved
            || batches >= BATCHES_BEHIND
            || (batches > 0 && self.store_requests.is_none());
        if batches > 0 && !store_due {
            self.request_store();
        }
        let for_store: Vec<(u64, Vec<u8>)> = if store_due {
            self.unwritten
                .iter()
                .filter(|(seq, _)| *seq > self.in_store)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let for_file_len = self
            .unwritten
            .iter()
            .filter(|(seq, _)| *seq > self.in_file)
            .map(|(_, line)| line.len() + 1)
            .sum();
        // Only a write gives the sync thread work: its own flush writes
        // nothing when nothing waits, and must not keep it syncing.
        let writes_any = for_file_len > 0 || !for_store.is_empty();
        let mut for_file = Vec::with_capacity(for_file_len);
        for (_, line) in self.unwritten.iter().filter(|(seq, _)| *seq > self.in_file) {
            for_file.extend_from_slice(line);
            for_file.push(b'\n');
        }
        let store = Arc::clone(&self.store);
        let store_write = async move {
            if for_store.is_empty() {
                Ok(())
            } else {
                store.append_audit(for_store).await
            }
        };
        let mut store_write = std::pin::pin!(store_write);
        let first_poll = if moved {
            // The store takes every record the old file holds before the
            // new file takes any: after a crash in between, the store would
            // otherwise lack records that only the moved file has.
            std::task::Poll::Ready(store_write.as_mut().await)
        } else {
            // Synced, the store's write is queued to its writer thread by
            // its first poll, then the file is written and synced here
            // while the store syncs: the two syncs overlap.
            std::future::poll_fn(|cx| std::task::Poll::Ready(store_write.as_mut().poll(cx))).await
        };
        let unstored_move = moved && matches!(first_poll, std::task::Poll::Ready(Err(_)));
        let mut filed_result = Ok(());
        if !for_file.is_empty() && !unstored_move {
            let filed = self.write_file(&for_file, path_moved);
            if filed.is_ok() {
                self.in_file = last.max(self.in_file);
            }
            if let Err(error) = &filed {
                tracing::error!(%error, "audit records not written to the file; reveals are refused until it takes them");
            }
            filed_result = filed;
        }
        let stored = match first_poll {
            std::task::Poll::Ready(stored) => stored,
            std::task::Poll::Pending => store_write.await,
        };
        if stored.is_ok() && store_due {
            self.in_store = last.max(self.in_store);
            self.store_claimed = last.max(self.store_claimed);
            self.unclaimed_bytes = 0;
        }
        if !self.synced && writes_any {
            self.health.wrote();
        }
        self.forget_durable();
        if let Err(error) = &stored {
            tracing::error!(%error, "audit records not stored; reveals are refused until the store takes them");
        }
        stored.map_err(AuditError::from)?;
        filed_result?;
        self.checkpoint_if_due();
        Ok(())
    }

    /// Synced durability: after a flush that wrote everything sealed to
    /// both sinks, synced, a checkpoint of the head if one is due.
    pub(super) fn checkpoint_if_due(&self) {
        let Some(checkpoints) = &self.checkpoints else {
            return;
        };
        let head = self.next_seq - 1;
        if !self.unwritten.is_empty() || !checkpoints.due(head) {
            return;
        }
        let write = || checkpoints.write(head, &self.prev, false);
        if may_block_in_place() {
            tokio::task::block_in_place(write);
        } else {
            write();
        }
    }

    /// Drops the records both sinks have.
    pub(super) fn forget_durable(&mut self) {
        let durable = self.in_store.min(self.in_file);
        while self
            .unwritten
            .front()
            .is_some_and(|(seq, _)| *seq <= durable)
        {
            self.unwritten.pop_front();
        }
    }

    /// Wakes the sync thread to store a full batch, once per batch.
    pub(super) fn request_store(&mut self) {
        if let Some(requests) = &self.store_requests {
            if !self.store_requested {
                requests.request();
                self.store_requested = true;
            }
        }
    }

    /// The records the store lacks, for the sync thread to store without
    /// holding the writer. Everything above `in_store`: the thread stores
    /// one claim at a time, so none is in flight when it claims.
    pub(super) fn claim_for_store(&mut self) -> Vec<(u64, Vec<u8>)> {
        self.store_requested = false;
        let claimed: Vec<(u64, Vec<u8>)> = self
            .unwritten
            .iter()
            .filter(|(seq, _)| *seq > self.in_store)
            .cloned()
            .collect();
        if let Some((last, _)) = claimed.last() {
            self.store_claimed = *last;
            self.unclaimed_bytes = 0;
        }
        claimed
    }

    /// The end of a claimed write: stored up to `last`, or to be claimed
    /// again.
    pub(super) fn claim_stored(&mut self, last: u64, stored: bool) {
        if stored {
            self.in_store = last.max(self.in_store);
            self.forget_durable();
        } else {
            self.store_claimed = self.in_store;
        }
    }

    /// The highest sequence number a reveal may proceed on: in both sinks,
    /// or, with the store's copy deferred, in the file.
    pub(super) fn revealable(&self) -> u64 {
        if self.defer_store {
            self.in_file
        } else {
            self.in_store.min(self.in_file)
        }
    }

    /// Appends lines to the file. Synced, its `fsync` blocks, so the
    /// runtime is told to move its other tasks off this thread.
    pub(super) fn write_file(
        &mut self,
        lines: &[u8],
        path_moved: std::io::Result<bool>,
    ) -> Result<(), AuditError> {
        let file = &mut self.file;
        let append = || {
            path_moved
                .and_then(|moved| file.append_checked(lines, moved))
                .map_err(|e| AuditError::Unavailable(format!("audit file: {e}")))
        };
        if self.synced && may_block_in_place() {
            tokio::task::block_in_place(append)
        } else {
            append()
        }
    }
}

/// What the sync thread runs for each full batch and before each sync:
/// the store takes every record the writer has sealed (blocking: the
/// thread is not the runtime's). The writer is held only to claim the
/// records and to mark them stored, not during the store's write, which
/// no reveal waits for. Each time it lets go it passes the turn on, as a
/// leader does: callers that found the writer held by this thread would
/// otherwise sleep until their 50 ms re-check.
pub(super) fn store_catch_up_task(
    writer: &Arc<tokio::sync::Mutex<Writer>>,
    queue: &Arc<Queue>,
    store: Arc<dyn Store>,
) -> sync::StoreCatchUp {
    let writer = Arc::clone(writer);
    let queue = Arc::clone(queue);
    let runtime = tokio::runtime::Handle::current();
    Box::new(move || {
        runtime.block_on(async {
            let (filed, claimed, head) = {
                let mut writer = writer.lock().await;
                // Retries a file write that failed, with no leader to.
                let filed = writer.flush(false).await;
                // Everything sealed is in the file now, and claimed for
                // the store unless it is there already.
                let head = (writer.next_seq - 1, writer.prev.clone());
                (filed, writer.claim_for_store(), head)
            };
            queue.pass_turn();
            let stored = match claimed.last().map(|(seq, _)| *seq) {
                None => Ok(()),
                Some(last) => {
                    let stored = store.append_audit(claimed).await;
                    writer.lock().await.claim_stored(last, stored.is_ok());
                    queue.pass_turn();
                    stored
                }
            };
            if let Err(error) = &stored {
                tracing::error!(%error, "audit records not stored; reveals are refused until the store takes them");
            }
            filed.map_err(|error| error.to_string())?;
            stored.map_err(|error| error.to_string())?;
            Ok(head)
        })
    })
}

/// `block_in_place` is for the multi-threaded runtime only (it panics in
/// a current-thread one, as in unit tests).
pub(super) fn may_block_in_place() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}
