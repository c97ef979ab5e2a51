//! `spillway tenant`: tenants and their limits.

use super::{client, print_json};
use crate::Target;
use anyhow::bail;
use serde_json::{Value, json};
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TenantCommand {
    /// Create a tenant; give it tokens with `spillway token create --tenant`.
    Create {
        name: String,
        /// Run its jobs only on hosts with this label, `key=value`
        /// (repeatable).
        #[arg(long = "label", value_parser = crate::serve::parse_label)]
        labels: Vec<(String, String)>,
        /// Accept artifacts signed by this publisher key (64 hex digits,
        /// from `spillway keygen`; repeatable).
        #[arg(long = "trust")]
        trusted_keys: Vec<String>,
        /// Refuse artifacts not signed by a trusted key.
        #[arg(long)]
        require_signed: bool,
        /// Jobs it may have running at once across the cluster.
        #[arg(long)]
        max_concurrent: Option<u32>,
        /// Memory one of its jobs may use (linear memory and GPU buffers), MiB.
        #[arg(long)]
        max_job_memory_mib: Option<u64>,
        /// Invoke requests a second across the cluster.
        #[arg(long)]
        rate: Option<u32>,
        /// GPU memory its jobs may hold at once, cluster-wide, MiB (each
        /// host enforces its lease of it).
        #[arg(long)]
        max_gpu_memory_mib: Option<u64>,
        /// Artifact names it may hold.
        #[arg(long)]
        max_artifacts: Option<u32>,
        /// What its artifacts may add up to, MiB.
        #[arg(long)]
        max_artifact_mib: Option<u64>,
        #[command(flatten)]
        target: Target,
    },
    /// Change a tenant: only the settings given change; `none` clears a
    /// limit.
    Set {
        name: String,
        /// Replace its placement labels (repeatable; `--label none` for any
        /// host).
        #[arg(long = "label", value_parser = parse_label_or_none)]
        labels: Vec<Option<(String, String)>>,
        /// Replace its trusted publisher keys (repeatable).
        #[arg(long = "trust")]
        trusted_keys: Vec<String>,
        #[arg(long)]
        require_signed: Option<bool>,
        /// A number, or `none`.
        #[arg(long, value_parser = parse_limit)]
        max_concurrent: Option<Limit>,
        /// MiB, or `none`.
        #[arg(long, value_parser = parse_limit)]
        max_job_memory_mib: Option<Limit>,
        /// Requests a second, or `none`.
        #[arg(long, value_parser = parse_limit)]
        rate: Option<Limit>,
        /// MiB, or `none`.
        #[arg(long, value_parser = parse_limit)]
        max_gpu_memory_mib: Option<Limit>,
        /// A number, or `none`.
        #[arg(long, value_parser = parse_limit)]
        max_artifacts: Option<Limit>,
        /// MiB, or `none`.
        #[arg(long, value_parser = parse_limit)]
        max_artifact_mib: Option<Limit>,
        #[command(flatten)]
        target: Target,
    },
    /// List tenants.
    Ls {
        #[command(flatten)]
        target: Target,
    },
}

/// A limit on the command line: a number, or `none` to clear it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit(Option<u64>);

fn parse_limit(s: &str) -> Result<Limit, String> {
    match s {
        "none" => Ok(Limit(None)),
        n => n
            .parse::<u64>()
            .map(|v| Limit(Some(v)))
            .map_err(|_| format!("{n:?}: a whole number, or `none`")),
    }
}

fn parse_label_or_none(s: &str) -> Result<Option<(String, String)>, String> {
    match s {
        "none" => Ok(None),
        label => crate::serve::parse_label(label).map(Some),
    }
}

pub(crate) async fn tenant(cmd: TenantCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TenantCommand::Create {
            name,
            labels,
            trusted_keys,
            require_signed,
            max_concurrent,
            max_job_memory_mib,
            rate,
            max_gpu_memory_mib,
            max_artifacts,
            max_artifact_mib,
            target,
        } => {
            let placement: std::collections::BTreeMap<_, _> = labels.into_iter().collect();
            let spec = json!({"name": name, "placement": placement,
                              "trusted_keys": trusted_keys, "require_signed": require_signed,
                              "max_concurrent": max_concurrent,
                              "max_job_memory_bytes": max_job_memory_mib.map(|m| m << 20),
                              "rate_per_s": rate,
                              "max_gpu_memory_bytes": max_gpu_memory_mib.map(|m| m << 20),
                              "max_artifacts": max_artifacts,
                              "max_artifact_bytes": max_artifact_mib.map(|m| m << 20)});
            print_json(
                &client(&target)?
                    .json_request(reqwest::Method::POST, "/v1/tenants", Some(spec))
                    .await?,
            )
        }
        TenantCommand::Set {
            name,
            labels,
            trusted_keys,
            require_signed,
            max_concurrent,
            max_job_memory_mib,
            rate,
            max_gpu_memory_mib,
            max_artifacts,
            max_artifact_mib,
            target,
        } => {
            let mut change = serde_json::Map::new();
            if !labels.is_empty() {
                let placement: std::collections::BTreeMap<_, _> =
                    labels.into_iter().flatten().collect();
                change.insert("placement".into(), json!(placement));
            }
            if !trusted_keys.is_empty() {
                change.insert("trusted_keys".into(), json!(trusted_keys));
            }
            if let Some(r) = require_signed {
                change.insert("require_signed".into(), json!(r));
            }
            for (field, limit, scale) in [
                ("max_concurrent", max_concurrent, 1),
                ("max_job_memory_bytes", max_job_memory_mib, 1 << 20),
                ("rate_per_s", rate, 1),
                ("max_gpu_memory_bytes", max_gpu_memory_mib, 1 << 20),
                ("max_artifacts", max_artifacts, 1),
                ("max_artifact_bytes", max_artifact_mib, 1 << 20),
            ] {
                if let Some(Limit(l)) = limit {
                    change.insert(field.into(), json!(l.map(|v| v * scale)));
                }
            }
            if change.is_empty() {
                bail!("nothing to change: give at least one setting");
            }
            let path = format!("/v1/tenants/{name}");
            print_json(
                &client(&target)?
                    .json_request(reqwest::Method::PATCH, &path, Some(Value::Object(change)))
                    .await?,
            )
        }
        TenantCommand::Ls { target } => print_json(
            &client(&target)?
                .json_request(reqwest::Method::GET, "/v1/tenants", None)
                .await?,
        ),
    }
}
