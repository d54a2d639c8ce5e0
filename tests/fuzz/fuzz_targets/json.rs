//! Fuzzes the HTTP/JSON API's request decoding (`api::http::decode`, as
//! the server runs it) with every request message on arbitrary bytes. It
//! must never panic; a refusal must say something; and a body it accepts
//! must encode back to canonical JSON that decodes to the same message,
//! so that what the service sees is exactly what the caller sent.

#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;

#[path = "../../../src/api/http/decode.rs"]
mod decode;

#[allow(clippy::all, dead_code)]
mod pb {
    include!(concat!(env!("OUT_DIR"), "/tokenvault.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/tokenvault.v1.serde.rs"));
}

fn decodes_and_round_trips<T>(body: &[u8])
where
    T: DeserializeOwned + Serialize + PartialEq + Debug,
{
    match decode::decode::<T>(body) {
        Ok(message) => {
            let encoded = serde_json::to_vec(&message).expect("an accepted request encodes");
            let again: T = decode::decode(&encoded).expect("its own encoding decodes");
            assert_eq!(again, message, "the round trip changed the message");
        }
        Err(refused) => assert!(!refused.0.is_empty(), "a refusal says why"),
    }
}

fuzz_target!(|body: &[u8]| {
    decodes_and_round_trips::<pb::TokenizeRequest>(body);
    decodes_and_round_trips::<pb::DetokenizeRequest>(body);
    decodes_and_round_trips::<pb::RedactTextRequest>(body);
    decodes_and_round_trips::<pb::RestoreTextRequest>(body);
    decodes_and_round_trips::<pb::ForgetSubjectRequest>(body);
    decodes_and_round_trips::<pb::ExportSubjectRequest>(body);
});
