//! `tokenvault keys retire --below N [--trim-irreversibly]`: the last steps
//! of a KEK rotation, made safe. Raising the KEK's decryption floor to vN
//! makes every key wrapped under an older version unopenable (reversible);
//! trimming deletes those versions (irreversible), so every copy of such a
//! key, in a dump, a base backup, WAL or dead rows of the PostgreSQL store,
//! or a `backup create` directory, is dead for anyone. That is what bounds
//! how long a forgotten subject's old key row can be opened outside the
//! vault (docs/erasure.md).
//!
//! The command refuses while any stored key (the system key, a subject's
//! DEK) is under a version below N, or a rotation is unfinished; it checks
//! again after raising the floor, and lowers it back if a key below it
//! appeared meanwhile. It talks to Vault with the operator's token
//! (`--token-env`, the tokenvault-key-retire policy), never the server's;
//! with the local KEK it changes the key file, which a running server
//! re-reads before its next use of the KEK.

use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;

use super::keys::{fetch_status, VaultArgs};
use crate::config::{Config, KekConfig};
use crate::kek::local::LocalKek;
use crate::kek::transit::{VaultAuth, VaultKek};
use crate::kek::{local_key_path, vault_settings, KekProvider};
use crate::pb::admin::KeyStatusResponse;

#[derive(Debug, Clone, Args)]
pub struct RetireArgs {
    #[command(flatten)]
    pub vault: VaultArgs,
    /// The oldest KEK version to keep; every older one is retired.
    #[arg(long, value_name = "N")]
    pub below: u32,
    /// Also delete the older versions from Vault. Irreversible: every key
    /// (and every backup) wrapped under them is unreadable for good.
    #[arg(long)]
    pub trim_irreversibly: bool,
    /// The environment variable holding the retiring token (default: the
    /// config's `kek.token_env`).
    #[arg(long, value_name = "VAR")]
    pub token_env: Option<String>,
}

pub async fn retire(args: &RetireArgs) -> anyhow::Result<()> {
    let config = args.vault.load()?;
    let floor = args.below;
    refuse_if_blocked(&fetch_status(&config).await?, floor)?;

    let kek = RetiringKek::open(&config, args.token_env.as_deref()).await?;
    let before = kek.floor().await?;
    if before < floor {
        kek.raise_floor(floor).await?;
        eprintln!("keys: decryption floor raised to v{floor}; checking the store again");
        // A key wrapped under an older version by a call that was in flight
        // during the rotation may have been stored after the first check.
        if let Err(blocked) = refuse_if_blocked(&fetch_status(&config).await?, floor) {
            kek.lower_floor_back(before)
                .await
                .context("a key below the new floor appeared, and lowering the floor back failed: lower it by hand")?;
            return Err(blocked.context("the floor was lowered back"));
        }
    }
    if args.trim_irreversibly {
        kek.trim_below(floor, before).await?;
        println!(
            "KEK versions below v{floor} trimmed: no key wrapped under them, live or in any copy, can be opened again"
        );
    } else {
        println!(
            "KEK versions below v{floor} retired (min_decryption v{floor}; reversible until --trim-irreversibly)"
        );
    }
    Ok(())
}

/// The KEK being retired: Vault transit with the operator's token, or the
/// local key file (which the running server re-reads at its next call).
enum RetiringKek {
    Vault(Arc<VaultKek>),
    Local(LocalKek),
}

impl RetiringKek {
    async fn open(config: &Config, token_env: Option<&str>) -> anyhow::Result<Self> {
        match &config.kek {
            KekConfig::Local { path } => {
                if token_env.is_some() {
                    bail!("--token-env is for the Vault KEK; the local KEK is its key file");
                }
                let path = local_key_path(path.as_deref(), &config.data_dir);
                Ok(RetiringKek::Local(LocalKek::open(&path, false)?))
            }
            KekConfig::Vault { .. } => Ok(RetiringKek::Vault(
                retiring_vault_kek(&config.kek, token_env).await?,
            )),
        }
    }

    /// The oldest version that still opens keys.
    async fn floor(&self) -> anyhow::Result<u32> {
        Ok(match self {
            RetiringKek::Vault(kek) => kek.versions().await?.min_decryption_version,
            RetiringKek::Local(kek) => kek.status().await?.min_decryption_version,
        })
    }

    async fn raise_floor(&self, floor: u32) -> anyhow::Result<()> {
        match self {
            RetiringKek::Vault(kek) => kek.set_floor(floor, floor).await?,
            RetiringKek::Local(kek) => kek.set_floor(floor)?,
        }
        Ok(())
    }

    async fn lower_floor_back(&self, floor: u32) -> anyhow::Result<()> {
        match self {
            // 0: new wraps use the latest version again.
            RetiringKek::Vault(kek) => kek.set_floor(floor, 0).await?,
            RetiringKek::Local(kek) => kek.set_floor(floor)?,
        }
        Ok(())
    }

    /// Deletes the versions below `floor`; `before` is the floor the key
    /// had when the command started.
    async fn trim_below(&self, floor: u32, before: u32) -> anyhow::Result<()> {
        match self {
            RetiringKek::Vault(kek) => {
                // OpenBao trims only with both minimums set at or above the trim.
                let keep = before.max(floor);
                kek.set_floor(keep, keep).await?;
                kek.trim_below(floor).await?;
            }
            RetiringKek::Local(kek) => {
                kek.set_floor(before.max(floor))?;
                kek.trim_below(floor)?;
            }
        }
        Ok(())
    }
}

/// Fails with one line naming every reason retiring below `floor` would
/// make a stored key unreadable.
fn refuse_if_blocked(status: &KeyStatusResponse, floor: u32) -> anyhow::Result<()> {
    let blockers = retire_blockers(status, floor);
    if blockers.is_empty() {
        Ok(())
    } else {
        bail!(
            "not retiring below v{floor}: {} (run keys rotate, then keys status)",
            blockers.join("; ")
        )
    }
}

/// Why retiring below `floor` is not safe now; empty when it is.
fn retire_blockers(status: &KeyStatusResponse, floor: u32) -> Vec<String> {
    let mut blockers = Vec::new();
    if floor < 2 || floor > status.latest_version {
        blockers.push(format!(
            "the floor must be between v2 and the latest version, v{}",
            status.latest_version
        ));
    }
    if status.rotation_in_progress != 0 {
        blockers.push(format!(
            "a rotation to v{} is unfinished",
            status.rotation_in_progress
        ));
    }
    if status.system_key_version != 0 && status.system_key_version < floor {
        blockers.push(format!(
            "the system key is under v{}",
            status.system_key_version
        ));
    }
    let below: Vec<String> = status
        .subject_keys
        .iter()
        .filter(|count| count.kek_version < floor && count.subject_keys > 0)
        .map(|count| format!("v{}={}", count.kek_version, count.subject_keys))
        .collect();
    if !below.is_empty() {
        blockers.push(format!(
            "subject keys under older versions ({})",
            below.join(" ")
        ));
    }
    blockers
}

/// The Vault provider with the operator's token, not the server's login.
async fn retiring_vault_kek(
    config: &KekConfig,
    token_env: Option<&str>,
) -> anyhow::Result<Arc<VaultKek>> {
    let mut settings = vault_settings(config)?;
    if let Some(variable) = token_env {
        settings.auth = VaultAuth::TokenEnv(variable.to_string());
    }
    Ok(VaultKek::open(settings).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::admin::VersionCount;

    fn status(system: u32, subjects: &[(u32, u64)]) -> KeyStatusResponse {
        KeyStatusResponse {
            provider: "vault".into(),
            latest_version: 3,
            min_decryption_version: 1,
            system_key_version: system,
            subject_keys: subjects
                .iter()
                .map(|&(kek_version, subject_keys)| VersionCount {
                    kek_version,
                    subject_keys,
                })
                .collect(),
            rotation_in_progress: 0,
        }
    }

    #[test]
    fn a_store_all_on_the_floor_or_above_may_retire_what_is_below() {
        assert!(retire_blockers(&status(3, &[(2, 5), (3, 7)]), 2).is_empty());
    }

    #[test]
    fn a_key_below_the_floor_blocks_and_is_named_by_version() {
        let blockers = retire_blockers(&status(3, &[(1, 4), (3, 7)]), 3);
        assert_eq!(blockers, ["subject keys under older versions (v1=4)"]);
        let blockers = retire_blockers(&status(2, &[(3, 7)]), 3);
        assert_eq!(blockers, ["the system key is under v2"]);
    }

    #[test]
    fn an_unfinished_rotation_a_floor_out_of_range_and_keys_below_it_block_on_either_kek() {
        let mut rotating = status(3, &[]);
        rotating.rotation_in_progress = 4;
        assert_eq!(
            retire_blockers(&rotating, 3),
            ["a rotation to v4 is unfinished"]
        );
        let out_of_range = "the floor must be between v2 and the latest version, v3";
        assert_eq!(retire_blockers(&status(3, &[]), 1), [out_of_range]);
        assert_eq!(retire_blockers(&status(3, &[]), 4)[0], out_of_range);
        let mut local = status(1, &[(1, 2)]);
        local.provider = "local".into();
        assert_eq!(
            retire_blockers(&local, 2),
            [
                "the system key is under v1",
                "subject keys under older versions (v1=2)"
            ]
        );
    }
}
