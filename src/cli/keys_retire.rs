//! `tokenvault keys retire --below N [--trim-irreversibly]`: the last steps
//! of a KEK rotation, made safe. Raising Vault's decryption floor to vN
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
//! (`--token-env`, the tokenvault-key-retire policy), never the server's.

use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;

use super::keys::{fetch_status, VaultArgs};
use crate::kek::transit::{VaultAuth, VaultKek};
use crate::kek::vault_settings;
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

    let kek = retiring_kek(&config.kek, args.token_env.as_deref()).await?;
    let before = kek.versions().await?;
    if before.min_decryption_version < floor {
        kek.set_floor(floor, floor).await?;
        eprintln!("keys: decryption floor raised to v{floor}; checking the store again");
        // A key wrapped under an older version by a call that was in flight
        // during the rotation may have been stored after the first check.
        if let Err(blocked) = refuse_if_blocked(&fetch_status(&config).await?, floor) {
            kek.set_floor(before.min_decryption_version, 0)
                .await
                .context("a key below the new floor appeared, and lowering the floor back failed: lower min_decryption_version by hand")?;
            return Err(blocked.context("the floor was lowered back"));
        }
    }
    if args.trim_irreversibly {
        // OpenBao trims only with both minimums set at or above the trim.
        let keep = before.min_decryption_version.max(floor);
        kek.set_floor(keep, keep).await?;
        kek.trim_below(floor).await?;
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
    if status.provider != "vault" {
        blockers.push(format!(
            "the {} KEK has no versions to retire",
            status.provider
        ));
        return blockers;
    }
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
async fn retiring_kek(
    config: &crate::config::KekConfig,
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
    fn an_unfinished_rotation_a_floor_out_of_range_and_the_local_kek_block() {
        let mut rotating = status(3, &[]);
        rotating.rotation_in_progress = 4;
        assert_eq!(
            retire_blockers(&rotating, 3),
            ["a rotation to v4 is unfinished"]
        );
        let out_of_range = "the floor must be between v2 and the latest version, v3";
        assert_eq!(retire_blockers(&status(3, &[]), 1), [out_of_range]);
        assert_eq!(retire_blockers(&status(3, &[]), 4)[0], out_of_range);
        let mut local = status(1, &[]);
        local.provider = "local".into();
        assert_eq!(
            retire_blockers(&local, 2),
            ["the local KEK has no versions to retire"]
        );
    }
}
