//! The routes of the HTTP/JSON API, one per `google.api.http` rule of the
//! proto (checked by a test against the proto's text), and the
//! translation of each call: headers and body in, the `TokenVault` trait
//! method of the shared service, JSON or `google.rpc.Status` out.
//!
//! `ExportSubject` streams JSON lines (`application/x-ndjson`), one
//! `{"result": ExportSubjectResponse}` per token and, if the export fails
//! after it started, a last `{"error": google.rpc.Status}` line: the
//! convention of grpc-gateway for server streams.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{ConnectInfo, Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_stream::StreamExt;
use tonic::metadata::MetadataMap;
use tonic::transport::server::TcpConnectInfo;
use tonic::{Code, Request, Status};

use super::json;
use super::listener::HttpPeer;
use super::HttpApi;
use crate::api::gate::CalledRpc;
use crate::api::service::TokenVaultService;
use crate::api::status::http_status;
use crate::metrics::{http_call_finished, CallRecord};
use crate::pb;
use crate::pb::token_vault_server::TokenVault;
use crate::rpc::Rpc;

type Api = State<Arc<HttpApi>>;
type Peer = ConnectInfo<HttpPeer>;

/// Every route; anything else is NOT_FOUND (404), a known path with
/// another method UNIMPLEMENTED (405), both as `google.rpc.Status`.
pub fn router(api: Arc<HttpApi>) -> Router {
    Router::new()
        .route("/v1/tokenize", post(tokenize))
        .route("/v1/detokenize", post(detokenize))
        .route("/v1/redact", post(redact))
        .route("/v1/restore", post(restore))
        // `{subject_id}:forget`: the segment is the id and the verb, split
        // in the handler (the router matches whole segments; one name for
        // the segment in both routes, as it requires).
        .route("/v1/subjects/{subject_id}", post(forget))
        .route("/v1/subjects/{subject_id}/export", get(export))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/openapi.json", get(openapi))
        .fallback(|| async { error(&Status::not_found("no such endpoint")) })
        .method_not_allowed_fallback(|| async {
            let mut response = error(&Status::unimplemented("method not allowed here"));
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            response
        })
        .with_state(api)
}

async fn tokenize(
    State(api): Api,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let call = Call::new(Rpc::Tokenize, peer, headers);
    call.unary(&api, body, no_path, |service, request| async move {
        service.tokenize(request).await
    })
    .await
}

async fn detokenize(
    State(api): Api,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let call = Call::new(Rpc::Detokenize, peer, headers);
    call.unary(&api, body, no_path, |service, request| async move {
        service.detokenize(request).await
    })
    .await
}

async fn redact(
    State(api): Api,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let call = Call::new(Rpc::RedactText, peer, headers);
    call.unary(&api, body, no_path, |service, request| async move {
        service.redact_text(request).await
    })
    .await
}

async fn restore(
    State(api): Api,
    ConnectInfo(peer): Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let call = Call::new(Rpc::RestoreText, peer, headers);
    call.unary(&api, body, no_path, |service, request| async move {
        service.restore_text(request).await
    })
    .await
}

/// `POST /v1/subjects/{subject_id}:forget`, body `{"reason": …}`.
async fn forget(
    State(api): Api,
    ConnectInfo(peer): Peer,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let subject_id = match path {
        Ok(Path(target)) => match target.strip_suffix(":forget") {
            Some(subject_id) => subject_id.to_string(),
            None => return error(&Status::not_found("no such endpoint")),
        },
        Err(_) => return error(&bad_path()),
    };
    let call = Call::new(Rpc::ForgetSubject, peer, headers);
    let from_path = move |request: &mut pb::ForgetSubjectRequest| {
        path_field(&mut request.subject_id, subject_id)
    };
    call.unary(&api, body, from_path, |service, request| async move {
        service.forget_subject(request).await
    })
    .await
}

/// `GET /v1/subjects/{subject_id}/export?purpose=…`, streamed.
async fn export(
    State(api): Api,
    ConnectInfo(peer): Peer,
    path: Result<Path<String>, PathRejection>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let call = Call::new(Rpc::ExportSubject, peer, headers);
    let started = call.started;
    let record = call.record.clone();
    let result = async {
        let request = call.admitted(&api)?;
        let subject_id = path.map_err(|_| bad_path())?.0;
        let purpose = export_purpose(uri.query())?;
        let (metadata, extensions, ()) = request.into_parts();
        let message = pb::ExportSubjectRequest {
            subject_id,
            purpose,
        };
        let request = Request::from_parts(metadata, extensions, message);
        api.service.export_subject(request).await
    }
    .await;
    http_call_finished(
        Rpc::ExportSubject.name(),
        result.as_ref().map_or_else(Status::code, |_| Code::Ok),
        started,
        &record,
    );
    let stream = match result {
        Ok(response) => response.into_inner(),
        Err(status) => return error(&status),
    };
    let lines = stream.map(|item| {
        let line = match item {
            Ok(message) => match json::encode(&message) {
                Ok(encoded) => wrapped("result", &encoded),
                Err(status) => wrapped("error", &json::status_body(&status)),
            },
            Err(status) => wrapped("error", &json::status_body(&status)),
        };
        Ok::<_, Infallible>(Bytes::from(line))
    });
    let mut response = Response::new(Body::from_stream(lines));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// No credentials: the document describes the API, it holds nothing.
async fn openapi() -> Response {
    let mut response = Response::new(Body::from(super::OPENAPI_JSON));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn healthz() -> Response {
    text(StatusCode::OK, "ok\n".to_string())
}

async fn readyz(State(api): Api) -> Response {
    match api.ready.check().await {
        Ok(()) => text(StatusCode::OK, "ok\n".to_string()),
        Err(down) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {down}\n"),
        ),
    }
}

/// One call on its way to the service: its RPC, caller and request log
/// record.
struct Call {
    rpc: Rpc,
    peer: HttpPeer,
    headers: HeaderMap,
    started: Instant,
    record: CallRecord,
}

impl Call {
    fn new(rpc: Rpc, peer: HttpPeer, headers: HeaderMap) -> Self {
        Call {
            rpc,
            peer,
            headers,
            started: Instant::now(),
            record: CallRecord::default(),
        }
    }

    /// The call as the gRPC interceptor hands it to the service: its
    /// headers as metadata, its peer, RPC and log record as extensions,
    /// and its principal once the gate admitted it.
    fn admitted(&self, api: &HttpApi) -> Result<Request<()>, Status> {
        let mut request = Request::from_parts(
            MetadataMap::from_headers(self.headers.clone()),
            http::Extensions::new(),
            (),
        );
        let extensions = request.extensions_mut();
        extensions.insert(TcpConnectInfo {
            local_addr: None,
            remote_addr: Some(self.peer.addr),
        });
        // Under mTLS, the client's certificates, where the gate looks for
        // them on gRPC too.
        if let Some(tls) = &self.peer.tls {
            extensions.insert(tls.clone());
        }
        extensions.insert(CalledRpc(self.rpc.name()));
        extensions.insert(self.record.clone());
        api.gate.admit(&mut request)?;
        Ok(request)
    }

    /// A unary call: the gate first (as on gRPC, credentials are checked
    /// before the body is read), then the body as the request message,
    /// the path's fields into it, and the service's answer as JSON.
    async fn unary<Req, Resp, Fill, Handler, Answer>(
        self,
        api: &Arc<HttpApi>,
        body: Body,
        fill: Fill,
        handler: Handler,
    ) -> Response
    where
        Req: DeserializeOwned,
        Resp: Serialize,
        Fill: FnOnce(&mut Req) -> Result<(), Status>,
        Handler: FnOnce(Arc<TokenVaultService>, Request<Req>) -> Answer,
        Answer: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let result = async {
            let request = self.admitted(api)?;
            let bytes = json::read_body(body, api.max_body_bytes).await?;
            let mut message: Req = json::decode(&bytes)?;
            fill(&mut message)?;
            let (metadata, extensions, ()) = request.into_parts();
            let request = Request::from_parts(metadata, extensions, message);
            let response = handler(Arc::clone(&api.service), request).await?;
            json::encode(response.get_ref())
        }
        .await;
        http_call_finished(
            self.rpc.name(),
            result.as_ref().map_or_else(Status::code, |_| Code::Ok),
            self.started,
            &self.record,
        );
        match result {
            Ok(encoded) => json_response(StatusCode::OK, encoded),
            Err(status) => error(&status),
        }
    }
}

/// For the routes whose every field comes from the body.
fn no_path<Req>(_: &mut Req) -> Result<(), Status> {
    Ok(())
}

/// A request field bound to the path: the path's value, and a body that
/// names another is refused.
fn path_field(field: &mut String, from_path: String) -> Result<(), Status> {
    if !field.is_empty() && *field != from_path {
        return Err(Status::invalid_argument(
            "subjectId: the body names another subject than the path",
        ));
    }
    *field = from_path;
    Ok(())
}

fn bad_path() -> Status {
    Status::invalid_argument("subject_id: the path segment is not percent-encoded UTF-8")
}

/// The export's query: `purpose`, once; nothing else.
fn export_purpose(query: Option<&str>) -> Result<String, Status> {
    let mut purpose = None;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "purpose" if purpose.is_none() => purpose = Some(value.into_owned()),
            "purpose" => {
                return Err(Status::invalid_argument("purpose: given more than once"));
            }
            _ => {
                return Err(Status::invalid_argument(format!(
                    "unknown query parameter `{}`: the export takes only purpose",
                    key.chars().take(64).collect::<String>()
                )));
            }
        }
    }
    Ok(purpose.unwrap_or_default())
}

/// `{"<key>": <json>}` and a newline: one line of the export stream.
fn wrapped(key: &str, json: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(json.len() + key.len() + 6);
    line.extend_from_slice(b"{\"");
    line.extend_from_slice(key.as_bytes());
    line.extend_from_slice(b"\":");
    line.extend_from_slice(json);
    line.extend_from_slice(b"}\n");
    line
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A refusal as `google.rpc.Status` JSON with its code's HTTP status.
fn error(status: &Status) -> Response {
    json_response(http_status(status.code()), json::status_body(status))
}

fn text(status: StatusCode, body: String) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(verb, path)` of every `google.api.http` rule in the proto, in
    /// the order of its RPCs.
    fn rules_in_proto() -> Vec<(String, String)> {
        let proto = include_str!("../../../proto/tokenvault/v1/tokenvault.proto");
        let mut rules = Vec::new();
        for line in proto.lines().map(str::trim) {
            for verb in ["get", "post", "put", "patch", "delete"] {
                if let Some(rest) = line.strip_prefix(&format!("{verb}: \"")) {
                    let path = rest.trim_end_matches('"').to_string();
                    rules.push((verb.to_string(), path));
                }
            }
        }
        rules
    }

    #[test]
    fn every_rpc_has_the_rule_the_router_serves() {
        let expected = [
            ("post", "/v1/tokenize"),
            ("post", "/v1/detokenize"),
            ("post", "/v1/redact"),
            ("post", "/v1/restore"),
            ("post", "/v1/subjects/{subject_id}:forget"),
            ("get", "/v1/subjects/{subject_id}/export"),
        ];
        let rules = rules_in_proto();
        assert_eq!(rules.len(), Rpc::ALL.len(), "one rule per RPC: {rules:?}");
        for ((verb, path), (want_verb, want_path)) in rules.iter().zip(expected) {
            assert_eq!((verb.as_str(), path.as_str()), (want_verb, want_path));
        }
    }

    #[test]
    fn the_export_takes_purpose_only() {
        assert_eq!(export_purpose(None).expect("none"), "");
        assert_eq!(
            export_purpose(Some("purpose=art.%2015%20request")).expect("one"),
            "art. 15 request"
        );
        let unknown = export_purpose(Some("purpose=a&subject=b")).expect_err("unknown");
        assert!(unknown.message().contains("`subject`"), "{unknown:?}");
        assert!(export_purpose(Some("purpose=a&purpose=b")).is_err());
    }

    #[test]
    fn a_path_subject_wins_only_over_an_empty_body_one() {
        let mut field = String::new();
        path_field(&mut field, "cust-42".into()).expect("empty body field");
        assert_eq!(field, "cust-42");
        path_field(&mut field, "cust-42".into()).expect("the same");
        let status = path_field(&mut field, "cust-43".into()).expect_err("another");
        assert_eq!(status.code(), Code::InvalidArgument);
    }

    #[test]
    fn an_export_line_wraps_its_json() {
        assert_eq!(
            wrapped("result", br#"{"token":"t"}"#),
            b"{\"result\":{\"token\":\"t\"}}\n"
        );
    }
}
