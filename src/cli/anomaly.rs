//! `tokenvault anomaly replay FILE` (the detectors over an event file,
//! offline) and `tokenvault alerts list|ack ID|clear ACTOR` (a running
//! server's anomaly alerts and step-downs, through its admin socket).
//! Output is names, counts and reasons only.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::keys::{connect_admin, VaultArgs};
use crate::anomaly::replay;
use crate::config::{AnomalyConfig, Config};
use crate::pb::admin::{AckAlertRequest, ClearActorRequest, ListAlertsRequest};

#[derive(Debug, Subcommand)]
pub enum AnomalyCommand {
    /// Run the detectors over a JSON-lines event file (docs/anomaly.md)
    /// and print, for labelled incidents, detection per scenario type and
    /// the false alerts per 100 actor-days.
    Replay(ReplayArgs),
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The event file: one JSON object a line, `ts` in Unix seconds.
    pub file: PathBuf,
    /// A server config whose `[anomaly]` section to use (default: the
    /// section's defaults).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Print every alert too (`incident|false ts principal actor detector
    /// score reason`).
    #[arg(long)]
    pub alerts: bool,
    /// An incident counts as flagged in time when its first alert comes
    /// within this many seconds of its first event.
    #[arg(long, default_value_t = 300)]
    pub within_seconds: i64,
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// The anomaly alerts since the server started, and the step-downs in
    /// force.
    List(VaultArgs),
    /// Mark an alert seen.
    Ack {
        id: u64,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Lift every step-down of ACTOR (`-`: calls without an actor).
    Clear {
        actor: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
}

pub async fn anomaly(command: AnomalyCommand) -> anyhow::Result<()> {
    let AnomalyCommand::Replay(args) = command;
    let config = match &args.config {
        Some(path) => Config::load(path)?.anomaly,
        None => AnomalyConfig::default(),
    };
    config.check(None)?;
    eprintln!("anomaly: reading {}", args.file.display());
    let events = replay::read(&args.file)?;
    eprintln!("anomaly: replaying {} events", events.len());
    let report = replay::run(config, &events, args.within_seconds);
    if args.alerts {
        for line in report.alert_lines() {
            println!("{line}");
        }
    }
    print!("{}", report.table());
    Ok(())
}

pub async fn alerts(command: AlertsCommand) -> anyhow::Result<()> {
    let vault = match &command {
        AlertsCommand::List(vault) => vault,
        AlertsCommand::Ack { vault, .. } | AlertsCommand::Clear { vault, .. } => vault,
    };
    let config = vault.load()?;
    let Some(mut client) = connect_admin(&config.data_dir).await? else {
        bail!(
            "no server answers on the admin socket of {}: alerts live in the running server",
            config.data_dir.display()
        );
    };
    let status = |s: tonic::Status| anyhow::anyhow!("{:?}: {}", s.code(), s.message());
    match command {
        AlertsCommand::List(_) => {
            let list = client
                .list_alerts(ListAlertsRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if !list.enabled {
                println!("anomaly detection is off ([anomaly] enabled = false)");
                return Ok(());
            }
            for a in &list.alerts {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{:.1}\t{}\t{}\t{}",
                    a.id,
                    a.at_unix,
                    a.principal,
                    a.actor,
                    a.detector,
                    a.score,
                    a.response,
                    if a.acked { "acked" } else { "new" },
                    a.reason
                );
            }
            for s in &list.step_downs {
                println!(
                    "step-down\t{}\t{}\t{}\talert {}\t{}\t{}",
                    s.principal, s.actor, s.response, s.alert_id, s.detector, s.reason
                );
            }
            eprintln!(
                "alerts: {} alerts, {} step-downs in force",
                list.alerts.len(),
                list.step_downs.len()
            );
        }
        AlertsCommand::Ack { id, .. } => {
            client
                .ack_alert(AckAlertRequest { id })
                .await
                .map_err(status)
                .with_context(|| format!("alert {id}"))?;
            println!("alert {id} acked");
        }
        AlertsCommand::Clear { actor, .. } => {
            let cleared = client
                .clear_actor(ClearActorRequest {
                    actor: actor.clone(),
                })
                .await
                .map_err(status)?
                .into_inner()
                .cleared;
            println!("{cleared} step-downs of {actor} cleared");
        }
    }
    Ok(())
}
