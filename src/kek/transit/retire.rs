//! Retiring old versions of the transit key: raising the decryption floor
//! (reversible: the config can be lowered again) and trimming the versions
//! below it (irreversible: they are deleted from Vault, and every copy of a
//! key wrapped under them, in dead rows, WAL, dumps and backups, can no
//! longer be opened by anyone). `keys retire` calls these with the
//! operator's own token (`keys/policies/tokenvault-key-retire.hcl`); the
//! server never does. Whether retiring is safe, that no stored key is still
//! under a version below the floor, is the caller's to check before and
//! after raising it (`vault::rotation::retire_blockers`).

use std::future::Future;

use vaultrs::api::transit::requests::UpdateKeyConfigurationRequest;
use vaultrs::error::ClientError;

use super::retry::{classify, unavailable_after_deadline, Failure, Operation};
use super::{TransitKeyInfo, VaultKek};
use crate::kek::KekError;

impl VaultKek {
    /// Sets `min_decryption_version` and `min_encryption_version` (0 for
    /// the encryption minimum means "the latest version").
    pub async fn set_floor(&self, decryption: u32, encryption: u32) -> Result<(), KekError> {
        let client = self.client();
        let mut request = UpdateKeyConfigurationRequest::builder();
        request
            .min_decryption_version(u64::from(decryption))
            .min_encryption_version(u64::from(encryption));
        self.operator_call(
            Operation::Configure,
            "raising the floor needs the tokenvault-key-retire policy",
            vaultrs::transit::key::update(
                client.as_ref(),
                &self.settings.mount,
                &self.settings.key_name,
                Some(&mut request),
            ),
        )
        .await
    }

    /// Deletes every version below `floor` from Vault, for good.
    pub async fn trim_below(&self, floor: u32) -> Result<(), KekError> {
        let client = self.client();
        self.operator_call(
            Operation::Trim,
            "trimming needs the tokenvault-key-retire policy",
            vaultrs::transit::key::trim(
                client.as_ref(),
                &self.settings.mount,
                &self.settings.key_name,
                u64::from(floor),
            ),
        )
        .await
    }

    /// The key's versions and floors, read fresh.
    pub async fn versions(&self) -> Result<TransitKeyInfo, KekError> {
        self.key_info().await
    }

    /// One attempt of an operator's call (not the request path), under the
    /// provider's deadline; a 403 names the policy it needs.
    pub(super) async fn operator_call<T>(
        &self,
        operation: Operation,
        needs: &str,
        call: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, KekError> {
        tokio::time::timeout(self.settings.timeout, call)
            .await
            .map_err(|_| unavailable_after_deadline(operation, &self.settings))?
            .map_err(|e| match classify(operation, &e) {
                Failure::Final(KekError::Setup(_)) => KekError::Setup(format!(
                    "vault refused to {}: {}",
                    operation.name(),
                    super::retry::describe(&e)
                )),
                Failure::Final(error) => error,
                Failure::Denied => KekError::Setup(format!(
                    "vault denied the {} (403): {needs}",
                    operation.name()
                )),
                Failure::Retry(reason) => KekError::Unavailable(reason),
            })
    }
}
