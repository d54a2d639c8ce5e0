//! The transit HTTP endpoints that vaultrs lacks (batch encrypt, decrypt
//! and rewrap, and the key read), for `vaultrs::api::exec_with_result`.
//! Plaintext keys in responses are wiped when dropped.

use async_trait::async_trait;
use rustify::endpoint::Endpoint;
use rustify::enums::{RequestMethod, RequestType, ResponseType};
use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

/// One transit HTTP call, for `vaultrs::api::exec_with_result` (which adds
/// the token, the API version and Vault's error parsing). vaultrs has no
/// batch endpoints, so these are written here.
pub(super) struct TransitCall<R> {
    pub(super) path: String,
    pub(super) method: RequestMethod,
    pub(super) body: Option<Zeroizing<Vec<u8>>>,
    pub(super) response: std::marker::PhantomData<fn() -> R>,
}

impl<R> TransitCall<R> {
    pub(super) fn get(path: &str) -> Self {
        TransitCall {
            path: path.to_string(),
            method: RequestMethod::GET,
            body: None,
            response: std::marker::PhantomData,
        }
    }

    pub(super) fn post(path: &str, body: &Zeroizing<Vec<u8>>) -> Self {
        TransitCall {
            path: path.to_string(),
            method: RequestMethod::POST,
            body: Some(body.clone()),
            response: std::marker::PhantomData,
        }
    }
}

#[async_trait]
impl<R: serde::de::DeserializeOwned + Send + Sync> Endpoint for TransitCall<R> {
    type Response = R;
    const REQUEST_BODY_TYPE: RequestType = RequestType::JSON;
    const RESPONSE_BODY_TYPE: ResponseType = ResponseType::JSON;

    fn path(&self) -> String {
        self.path.clone()
    }

    fn method(&self) -> RequestMethod {
        self.method.clone()
    }

    fn body(&self) -> Result<Option<Vec<u8>>, rustify::errors::ClientError> {
        Ok(self.body.as_ref().map(|body| body.to_vec()))
    }
}

#[derive(Deserialize)]
pub(super) struct KeyInfoResponse {
    pub(super) latest_version: u32,
    #[serde(default)]
    pub(super) min_decryption_version: u32,
    #[serde(default)]
    pub(super) min_available_version: u32,
}

#[derive(Deserialize)]
pub(super) struct BatchResponse {
    pub(super) batch_results: Vec<BatchItem>,
}

#[derive(Deserialize)]
pub(super) struct BatchItem {
    #[serde(default)]
    pub(super) ciphertext: String,
    /// Base64 of an unwrapped key: zeroized on drop.
    #[serde(default)]
    pub(super) plaintext: String,
    #[serde(default)]
    pub(super) error: String,
}

impl Drop for BatchItem {
    fn drop(&mut self) {
        self.plaintext.zeroize();
    }
}
