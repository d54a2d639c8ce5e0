//! The HTTP/JSON side of `tokenvault bench --http-addr URL`: Tokenize of
//! known values and Detokenize over the HTTP API (`POST /v1/tokenize`,
//! `POST /v1/detokenize`, canonical JSON, HTTP/1.1 with keep-alive, the
//! way OpenBao's transit baseline is called), so that one run prints the
//! two protocols and the peer side by side with the same values.

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;

use crate::pb;

/// A keep-alive HTTP/1.1 client with many idle connections per host, for
/// the peer and for tokenvault's HTTP API alike.
pub(super) fn keep_alive_client() -> HttpClient<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    HttpClient::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// tokenvault's HTTP/JSON API with the bench principal's key.
pub(super) struct HttpJson {
    http: HttpClient<HttpConnector, Full<Bytes>>,
    base: String,
    authorization: String,
}

impl HttpJson {
    pub(super) fn new(base: &str, api_key: &str) -> Self {
        HttpJson {
            http: keep_alive_client(),
            base: base.trim_end_matches('/').to_string(),
            authorization: format!("Bearer {api_key}"),
        }
    }

    /// POSTs a message as canonical JSON; the answer's body when 200.
    async fn post<T: serde::Serialize>(&self, path: &str, message: &T) -> anyhow::Result<Bytes> {
        let body = serde_json::to_vec(message)?;
        let request = hyper::Request::post(format!("{}{path}", self.base))
            .header("authorization", &self.authorization)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let response = self.http.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::ensure!(status.is_success(), "HTTP {status}");
        Ok(body)
    }

    /// Checks the API answers before measuring.
    pub(super) async fn check(&self, request: &pb::TokenizeRequest) -> anyhow::Result<()> {
        self.post("/v1/tokenize", request)
            .await
            .context("tokenvault's HTTP API (--http-addr) does not tokenize")
            .map(|_| ())
    }

    pub(super) async fn tokenize(&self, request: &pb::TokenizeRequest) -> bool {
        self.post("/v1/tokenize", request).await.is_ok()
    }

    /// True when every token was found.
    pub(super) async fn detokenize(&self, request: &pb::DetokenizeRequest) -> bool {
        let Ok(body) = self.post("/v1/detokenize", request).await else {
            return false;
        };
        serde_json::from_slice::<pb::DetokenizeResponse>(&body).is_ok_and(|response| {
            response
                .results
                .iter()
                .all(|r| r.status == pb::TokenStatus::Found as i32)
        })
    }
}
