//! Durability: every acknowledged Tokenize survives kill -9.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{detokenize, item, Server};
use tokenvault::pb;
use tokio::sync::Mutex;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_tokens_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path());
    let client = server.client().await;
    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();

    let writers: Vec<_> = (0..8)
        .map(|w| {
            let mut client = client.clone();
            let acknowledged = Arc::clone(&acknowledged);
            tokio::spawn(async move {
                for n in 0.. {
                    let values: Vec<String> =
                        (0..10).map(|i| format!("w{w}-n{n}-i{i} Ivanov")).collect();
                    let request = pb::TokenizeRequest {
                        subject_id: format!("subject-{w}-{}", n % 7),
                        items: values.iter().map(|v| item(v, "text")).collect(),
                    };
                    match client.tokenize(request).await {
                        Ok(response) => {
                            let tokens = response.into_inner().tokens;
                            acknowledged
                                .lock()
                                .await
                                .extend(tokens.into_iter().zip(values));
                        }
                        Err(_) => return, // the server died under us
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    for writer in writers {
        writer.await.expect("writer task");
    }
    let acknowledged = acknowledged.lock().await.clone();
    assert!(
        acknowledged.len() > 100,
        "only {} acknowledged before the crash",
        acknowledged.len()
    );

    server.restart();
    let mut client = server.client().await;
    for chunk in acknowledged.chunks(1000) {
        let tokens: Vec<String> = chunk.iter().map(|(t, _)| t.clone()).collect();
        let results = detokenize(&mut client, &tokens).await;
        for ((token, value), result) in chunk.iter().zip(results) {
            assert_eq!(
                result.status,
                pb::TokenStatus::Found as i32,
                "acknowledged {token} lost"
            );
            assert_eq!(&result.value, value);
        }
    }
}
