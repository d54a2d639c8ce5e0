//! Logging in to Vault and staying logged in: the first token (from the
//! environment, or an AppRole login with the secret id read from its file
//! each time), the client built on it, and the task that renews it at two
//! thirds of its TTL. Never logs a token or a secret id.

use std::sync::Arc;
use std::time::Duration;

use vaultrs::client::{Client as _, VaultClient, VaultClientSettingsBuilder};
use vaultrs::error::ClientError;
use zeroize::{Zeroize, Zeroizing};

use super::retry::describe;
use super::{VaultAuth, VaultKek, VaultSettings, IDLE_RENEW_CHECK};
use crate::kek::KekError;

impl VaultKek {
    pub(super) fn is_approle(&self) -> bool {
        matches!(self.settings.auth, VaultAuth::AppRole { .. })
    }

    /// Logs in with AppRole and swaps the client; returns the new token's
    /// TTL.
    pub(super) async fn login_again(&self) -> Result<Duration, KekError> {
        let (token, ttl) = approle_login(&self.settings).await?;
        *self.client.write() = Arc::new(build_client(&self.settings, &token)?);
        tracing::info!(ttl_seconds = ttl.as_secs(), "vault: logged in with AppRole");
        Ok(ttl)
    }

    /// Renews the current token; returns its new TTL, or an error when the
    /// token cannot be renewed (then AppRole logs in again).
    pub(super) async fn renew_token(&self) -> Result<Duration, KekError> {
        let client = self.client();
        let lookup = tokio::time::timeout(self.settings.timeout, client.lookup())
            .await
            .map_err(|_| KekError::Unavailable("token lookup timed out".into()))?
            .map_err(|e| KekError::Unavailable(describe(&e)))?;
        if lookup.ttl == 0 {
            // A root or periodic-less token without expiry: nothing to do.
            return Ok(Duration::ZERO);
        }
        if !lookup.renewable {
            return Err(KekError::Unavailable(
                "the vault token is not renewable".into(),
            ));
        }
        let auth = tokio::time::timeout(self.settings.timeout, client.renew(None))
            .await
            .map_err(|_| KekError::Unavailable("token renewal timed out".into()))?
            .map_err(|e| KekError::Unavailable(describe(&e)))?;
        Ok(Duration::from_secs(auth.lease_duration))
    }
}

/// The token to start with: from the environment, or an AppRole login.
pub(super) async fn initial_token(settings: &VaultSettings) -> Result<Zeroizing<String>, KekError> {
    match &settings.auth {
        VaultAuth::TokenEnv(variable) => {
            let token = std::env::var(variable).map_err(|_| {
                KekError::Setup(format!(
                    "kek.token_env names {variable}, which is not set in the environment"
                ))
            })?;
            if token.trim().is_empty() {
                return Err(KekError::Setup(format!("{variable} is empty")));
            }
            Ok(Zeroizing::new(token.trim().to_string()))
        }
        VaultAuth::AppRole { .. } => Ok(approle_login(settings).await?.0),
    }
}

pub(super) async fn approle_login(
    settings: &VaultSettings,
) -> Result<(Zeroizing<String>, Duration), KekError> {
    let VaultAuth::AppRole {
        mount,
        role_id,
        secret_id_file,
    } = &settings.auth
    else {
        return Err(KekError::Setup(
            "AppRole login without AppRole settings".into(),
        ));
    };
    let secret_id = Zeroizing::new(
        std::fs::read_to_string(secret_id_file)
            .map_err(|e| {
                KekError::Setup(format!(
                    "cannot read kek.approle.secret_id_file {}: {e}",
                    secret_id_file.display()
                ))
            })?
            .trim()
            .to_string(),
    );
    let anonymous = build_client(settings, &Zeroizing::new(String::new()))?;
    let auth = tokio::time::timeout(
        settings.timeout,
        vaultrs::auth::approle::login(&anonymous, mount, role_id, &secret_id),
    )
    .await
    .map_err(|_| KekError::Unavailable("vault AppRole login timed out".into()))?
    .map_err(|e| match &e {
        ClientError::APIError { code: 400, .. } | ClientError::APIError { code: 403, .. } => {
            KekError::Setup(
                "vault refused the AppRole login: check role_id and the secret id".into(),
            )
        }
        other => KekError::Unavailable(format!("vault AppRole login: {}", describe(other))),
    })?;
    let mut client_token = auth.client_token;
    let token = Zeroizing::new(client_token.clone());
    client_token.zeroize();
    Ok((token, Duration::from_secs(auth.lease_duration)))
}

pub(super) fn build_client(
    settings: &VaultSettings,
    token: &Zeroizing<String>,
) -> Result<VaultClient, KekError> {
    // Every setting is given explicitly: vaultrs would otherwise read
    // VAULT_CACERT, VAULT_SKIP_VERIFY and others from the environment.
    let ca_certs = settings
        .ca_cert
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    let client_settings = VaultClientSettingsBuilder::default()
        .address(&settings.address)
        .token(token.as_str())
        .timeout(Some(settings.timeout))
        .ca_certs(ca_certs)
        .identity(None)
        .verify(true)
        .namespace(None)
        .build()
        .map_err(|e| KekError::Setup(format!("vault client settings: {e}")))?;
    VaultClient::new(client_settings).map_err(|e| KekError::Setup(format!("vault client: {e}")))
}

/// Keeps the token alive: renews at two thirds of its TTL; an AppRole logs
/// in again when renewal fails. Ends when the provider is dropped.
pub(super) async fn renew_forever(kek: std::sync::Weak<VaultKek>) {
    let mut wait = first_renew_wait(&kek).await;
    loop {
        tokio::time::sleep(wait).await;
        let Some(kek) = kek.upgrade() else { return };
        let renewed = match kek.renew_token().await {
            Ok(ttl) => Ok(ttl),
            Err(error) if kek.is_approle() => {
                tracing::info!(error = %error, "vault: token renewal failed; logging in again");
                kek.login_again().await
            }
            Err(error) => Err(error),
        };
        wait = match renewed {
            Ok(ttl) if ttl.is_zero() => IDLE_RENEW_CHECK,
            Ok(ttl) => (ttl * 2 / 3).max(Duration::from_secs(1)),
            Err(error) => {
                tracing::warn!(error = %error, "vault: cannot renew or log in; retrying in 5 s");
                Duration::from_secs(5)
            }
        };
    }
}

pub(super) async fn first_renew_wait(kek: &std::sync::Weak<VaultKek>) -> Duration {
    let Some(kek) = kek.upgrade() else {
        return IDLE_RENEW_CHECK;
    };
    let client = kek.client();
    match tokio::time::timeout(kek.settings.timeout, client.lookup()).await {
        Ok(Ok(lookup)) if lookup.ttl > 0 => {
            (Duration::from_secs(lookup.ttl) * 2 / 3).max(Duration::from_secs(1))
        }
        _ => IDLE_RENEW_CHECK,
    }
}
