//! Request bodies in, proto3 canonical JSON out: reading a body under the
//! gRPC message limit, decoding it into the request message (pbjson's
//! serde impls: unknown fields refused, both field spellings accepted),
//! and the `google.rpc.Status` body of an error.
//!
//! Every refusal is INVALID_ARGUMENT naming the field (its JSON path,
//! e.g. `items[0].ttlSeconds`) and never the value that was sent: a value
//! a caller put in the wrong place may be the very data the vault keeps
//! out of logs and messages.

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::Status;

/// The body, refused (INVALID_ARGUMENT) when it is over `max_bytes` or
/// cannot be read.
pub async fn read_body(body: Body, max_bytes: usize) -> Result<Bytes, Status> {
    match http_body_util::Limited::new(body, max_bytes)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(Status::invalid_argument(format!(
                "request body is over limits.max_message_bytes ({max_bytes} bytes)"
            )))
        }
        Err(_) => Err(Status::invalid_argument("request body could not be read")),
    }
}

/// The request message of a JSON body; a refusal is INVALID_ARGUMENT
/// (`api::http::decode` says how it names the problem).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Status> {
    super::decode::decode(body).map_err(|refused| Status::invalid_argument(refused.0))
}

/// A message as its canonical JSON.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, Status> {
    serde_json::to_vec(message).map_err(|error| {
        tracing::error!(%error, "response does not encode as JSON");
        Status::internal("internal error; see the server log")
    })
}

/// The `google.rpc.Status` JSON of a status: `{"code", "message",
/// "details"}` (no details are sent).
pub fn status_body(status: &Status) -> Vec<u8> {
    let body = serde_json::json!({
        "code": status.code() as i32,
        "message": status.message(),
        "details": [],
    });
    body.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use tonic::Code;

    fn refusal(body: &[u8]) -> String {
        let status = decode::<pb::TokenizeRequest>(body).expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        status.message().to_string()
    }

    #[test]
    fn canonical_json_decodes_in_both_spellings() {
        let body = br#"{"subjectId":"cust-42","items":[{"value":"v","format":"card","mode":"TOKEN_MODE_RANDOM","ttlSeconds":"60"}]}"#;
        let request: pb::TokenizeRequest = decode(body).expect("decodes");
        assert_eq!(request.subject_id, "cust-42");
        assert_eq!(request.items[0].mode, pb::TokenMode::Random as i32);
        assert_eq!(request.items[0].ttl_seconds, 60);
        let snake: pb::TokenizeRequest =
            decode(br#"{"subject_id":"cust-42","items":[]}"#).expect("decodes");
        assert_eq!(snake.subject_id, "cust-42");
    }

    #[test]
    fn refusals_name_the_field_and_never_the_value() {
        let unknown = refusal(br#"{"subjectId":"s","colour":"red"}"#);
        assert!(unknown.contains("unknown field `colour`"), "{unknown}");
        let wrong = refusal(br#"{"subjectId":"s","items":[{"value":4111111111111111}]}"#);
        assert!(
            wrong.starts_with("items[0].value: invalid type: integer"),
            "{wrong}"
        );
        assert!(!wrong.contains("4111"), "{wrong}");
        let wrong = refusal(br#"{"subjectId":["4111 1111 1111 1111"]}"#);
        assert!(
            wrong.starts_with("subjectId: invalid type: sequence"),
            "{wrong}"
        );
        let ttl = refusal(br#"{"items":[{"ttlSeconds":"4111 1111"}]}"#);
        assert!(ttl.starts_with("items[0].ttlSeconds: "), "{ttl}");
        assert!(!ttl.contains("4111"), "{ttl}");
        let mode = refusal(br#"{"items":[{"mode":"alice@example.com"}]}"#);
        assert!(
            mode.starts_with("items[0].mode: unknown enum value"),
            "{mode}"
        );
        assert!(!mode.contains("alice"), "{mode}");
    }

    #[test]
    fn malformed_json_and_non_utf8_are_refused() {
        assert!(refusal(br#"{"subjectId": "#).starts_with("request body is not valid JSON"));
        assert!(refusal(b"").starts_with("request body is not valid JSON"));
        assert!(refusal(br#"{} {}"#).starts_with("request body is not valid JSON"));
        assert_eq!(
            refusal(b"{\"subjectId\":\"\xff\"}"),
            "request body is not UTF-8 (at byte 14)"
        );
    }

    #[test]
    fn an_error_is_google_rpc_status_json() {
        let body = status_body(&Status::invalid_argument("items[3]: bad"));
        let value: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            value,
            serde_json::json!({"code": 3, "message": "items[3]: bad", "details": []})
        );
    }

    proptest::proptest! {
        #[test]
        fn any_body_decodes_or_is_refused(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            if let Err(status) = decode::<pb::TokenizeRequest>(&body) {
                proptest::prop_assert_eq!(status.code(), Code::InvalidArgument);
            }
        }

        #[test]
        fn a_value_in_the_wrong_place_is_never_echoed(
            secret in "[A-Za-z0-9]{12,24}",
            number in 10_000_000u64..,
            shape in 0usize..6,
        ) {
            let body = match shape {
                0 => format!(r#"{{"subjectId":["{secret}"]}}"#),
                1 => format!(r#"{{"items":[{{"ttlSeconds":"{secret}"}}]}}"#),
                2 => format!(r#"{{"items":[{{"mode":"{secret}"}}]}}"#),
                3 => format!(r#"{{"items":[{{"value":{number}}}]}}"#),
                4 => format!(r#"{{"items":"{secret}"}}"#),
                _ => format!(r#"{{"subjectId":{{"a":"{secret}"}}}}"#),
            };
            let status = decode::<pb::TokenizeRequest>(body.as_bytes()).expect_err("refused");
            proptest::prop_assert!(!status.message().contains(&secret), "{}", status.message());
            proptest::prop_assert!(!status.message().contains(&number.to_string()), "{}", status.message());
        }
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_invalid_argument() {
        let status = read_body(Body::from(vec![b' '; 65]), 64)
            .await
            .expect_err("over");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("limits.max_message_bytes"));
        assert_eq!(read_body(Body::from("{}"), 64).await.expect("under"), "{}");
    }
}
