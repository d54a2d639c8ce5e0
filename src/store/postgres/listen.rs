//! Key invalidations between replicas: a forget's `NOTIFY` in its own
//! transaction, and the LISTEN connection each replica keeps up, telling
//! the DEK cache to cache nothing while it is down.

use super::*;

/// The NOTIFY channel of key invalidations.
pub(super) const CHANNEL: &str = "tokenvault_keys";

/// Pause before the listener reconnects.
pub(super) const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// Keeps a LISTEN connection up and forwards what arrives to the sink.
/// While it is down the sink is told to cache nothing ([`Invalidation::Suspend`]);
/// once it is back, to drop everything cached and cache again
/// ([`Invalidation::Resume`]): notifications sent meanwhile are lost.
pub(super) async fn run_listener(
    config: tokio_postgres::Config,
    tls: Option<Tls>,
    sink: Arc<parking_lot::Mutex<Option<InvalidationSink>>>,
    listening: Arc<AtomicBool>,
    ready: tokio::sync::oneshot::Sender<Result<(), StoreError>>,
) {
    let mut ready = Some(ready);
    let send = |invalidation: Invalidation| {
        if let Some(sink) = sink.lock().as_ref() {
            sink(invalidation);
        }
    };
    loop {
        let outcome = match &tls {
            Some(tls) => listen_once(&config, tls.clone(), &listening, &send, &mut ready).await,
            None => {
                listen_once(
                    &config,
                    tokio_postgres::NoTls,
                    &listening,
                    &send,
                    &mut ready,
                )
                .await
            }
        };
        let was_listening = listening.swap(false, Ordering::SeqCst);
        send(Invalidation::Suspend);
        if let Err(error) = outcome {
            if let Some(ready) = ready.take() {
                let _ = ready.send(Err(error));
                return;
            }
            if was_listening {
                tracing::warn!(%error, "postgres LISTEN connection lost: DEK cache off until it is back");
            }
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

pub(super) async fn listen_once<T>(
    config: &tokio_postgres::Config,
    tls: T,
    listening: &AtomicBool,
    send: &impl Fn(Invalidation),
    ready: &mut Option<tokio::sync::oneshot::Sender<Result<(), StoreError>>>,
) -> Result<(), StoreError>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = config.connect(tls).await.map_err(engine)?;
    let (tx, mut messages) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        use futures_util::StreamExt;
        while let Some(message) = stream.next().await {
            match message {
                Ok(message) => {
                    if tx.send(Ok(message)).is_err() {
                        return;
                    }
                }
                Err(error) => {
                    let _ = tx.send(Err(error));
                    return;
                }
            }
        }
    });
    let listen = client.batch_execute(&format!("LISTEN {CHANNEL}")).await;
    if let Err(error) = listen {
        driver.abort();
        return Err(engine(error));
    }
    listening.store(true, Ordering::SeqCst);
    // Anything cached before this point may have missed a notification.
    send(Invalidation::Resume);
    if let Some(ready) = ready.take() {
        let _ = ready.send(Ok(()));
    }
    let outcome = loop {
        match messages.recv().await {
            Some(Ok(AsyncMessage::Notification(note))) => {
                if let Some(invalidation) = parse_notification(note.payload()) {
                    send(invalidation);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => break Err(engine(error)),
            None => {
                break Err(StoreError::Engine(
                    "postgres LISTEN connection closed".into(),
                ))
            }
        }
    };
    drop(client);
    driver.abort();
    outcome
}

pub(super) fn parse_notification(payload: &str) -> Option<Invalidation> {
    let hex_subject = payload.strip_prefix("forget:")?;
    let bytes = hex::decode(hex_subject).ok()?;
    Some(Invalidation::Subject(SubjectHash(bytes.try_into().ok()?)))
}
