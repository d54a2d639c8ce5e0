//! Grouped lookups: concurrent `token_records` (Detokenize, RestoreText)
//! and `index_entries` (Tokenize of known values) calls that queue while
//! lookups are in flight are served by one multi-row `= ANY($1)` query per
//! table, pipelined on one connection, instead of a query each. A lookup
//! is a read of committed rows, so sharing a statement changes nothing a
//! caller sees: each gets the rows of its own keys, in its own order.
//!
//! Bounded as the group writer is (`[storage.postgres]` `group_max_calls`,
//! `group_max_items`, `group_in_flight`); a lone lookup waits for nothing.
//! A caller gone while queued is dropped before its group forms. Only
//! small lookups (at most [`MAX_GROUPED_KEYS`] keys: single Detokenize,
//! one message's values) are grouped.

use std::collections::HashMap;
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::group::GroupBounds;
use super::tokens::read_index;
use super::{engine, pool_error};
use crate::store::{IndexEntry, StoreError};

/// Lookups of more keys than this go straight to the pool: a batch is
/// one query already, and queueing it behind other groups only adds its
/// wait (measured: batches of 100 known values were slower grouped).
pub(super) const MAX_GROUPED_KEYS: usize = 8;

type Answer<T> = oneshot::Sender<Result<Vec<Option<T>>, StoreError>>;

/// One queued lookup.
enum Lookup {
    /// Encoded token records of these tokens.
    Tokens {
        tokens: Vec<String>,
        reply: Answer<Vec<u8>>,
    },
    /// Index entries of these keys.
    Index {
        keys: Vec<Vec<u8>>,
        reply: Answer<IndexEntry>,
    },
}

impl Lookup {
    fn len(&self) -> usize {
        match self {
            Lookup::Tokens { tokens, .. } => tokens.len(),
            Lookup::Index { keys, .. } => keys.len(),
        }
    }

    fn gone(&self) -> bool {
        match self {
            Lookup::Tokens { reply, .. } => reply.is_closed(),
            Lookup::Index { reply, .. } => reply.is_closed(),
        }
    }

    fn fail(self, error: StoreError) {
        match self {
            Lookup::Tokens { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Lookup::Index { reply, .. } => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// The queue of one replica's lookup task.
pub(super) struct ReadGroups {
    queue: mpsc::UnboundedSender<Lookup>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReadGroups {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn stopped() -> StoreError {
    StoreError::Engine("the postgres lookup task has stopped".into())
}

impl ReadGroups {
    pub(super) fn start(pool: Pool, bounds: GroupBounds) -> ReadGroups {
        let (queue, lookups) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(pool, bounds, lookups));
        ReadGroups { queue, task }
    }

    /// The encoded records of `tokens`, in order.
    pub(super) async fn token_records(
        &self,
        tokens: &[String],
    ) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Lookup::Tokens {
                tokens: tokens.to_vec(),
                reply,
            })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// The index entries of `keys`, in order.
    pub(super) async fn index_entries(
        &self,
        keys: Vec<Vec<u8>>,
    ) -> Result<Vec<Option<IndexEntry>>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Lookup::Index { keys, reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(pool: Pool, bounds: GroupBounds, mut lookups: mpsc::UnboundedReceiver<Lookup>) {
    let slots = Arc::new(Semaphore::new(bounds.in_flight.max(1)));
    let mut next: Option<Lookup> = None;
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let first = match next.take() {
            Some(lookup) => lookup,
            None => match lookups.recv().await {
                Some(lookup) => lookup,
                None => return,
            },
        };
        let mut items = first.len();
        let mut group = vec![first];
        while group.len() < bounds.max_calls && items < bounds.max_items {
            match lookups.try_recv() {
                Ok(lookup) if items + lookup.len() > bounds.max_items => {
                    next = Some(lookup);
                    break;
                }
                Ok(lookup) => {
                    items += lookup.len();
                    group.push(lookup);
                }
                Err(_) => break,
            }
        }
        group.retain(|lookup| !lookup.gone());
        if group.is_empty() {
            continue;
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            serve(&pool, group).await;
            drop(slot);
        });
    }
}

/// One query per table for the whole group, then each caller's rows.
async fn serve(pool: &Pool, group: Vec<Lookup>) {
    let client = match pool.get().await {
        Ok(client) => client,
        Err(error) => {
            let error = pool_error(error);
            for lookup in group {
                lookup.fail(error.clone());
            }
            return;
        }
    };
    let mut tokens: Vec<&str> = Vec::new();
    let mut keys: Vec<&[u8]> = Vec::new();
    for lookup in &group {
        match lookup {
            Lookup::Tokens { tokens: t, .. } => tokens.extend(t.iter().map(String::as_str)),
            Lookup::Index { keys: k, .. } => keys.extend(k.iter().map(Vec::as_slice)),
        }
    }
    tokens.sort_unstable();
    tokens.dedup();
    keys.sort_unstable();
    keys.dedup();
    let records = async {
        if tokens.is_empty() {
            return Ok(HashMap::new());
        }
        let stmt = client
            .prepare_cached("SELECT token, record FROM tv_tokens WHERE token = ANY($1)")
            .await?;
        Ok::<_, tokio_postgres::Error>(
            client
                .query(&stmt, &[&tokens])
                .await?
                .iter()
                .map(|row| (row.get::<_, String>(0), row.get::<_, Vec<u8>>(1)))
                .collect::<HashMap<String, Vec<u8>>>(),
        )
    };
    let entries = async {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        read_index(&client, &keys).await
    };
    // Pipelined on the one connection.
    let (records, entries) = tokio::join!(records, entries);
    let (records, entries) = (records.map_err(engine), entries.map_err(engine));
    for lookup in group {
        match lookup {
            Lookup::Tokens { tokens, reply } => {
                let _ = reply.send(
                    records
                        .as_ref()
                        .map_err(Clone::clone)
                        .map(|found| tokens.iter().map(|t| found.get(t).cloned()).collect()),
                );
            }
            Lookup::Index { keys, reply } => {
                let _ = reply.send(
                    entries
                        .as_ref()
                        .map_err(Clone::clone)
                        .map(|found| keys.iter().map(|k| found.get(k).cloned()).collect()),
                );
            }
        }
    }
}
