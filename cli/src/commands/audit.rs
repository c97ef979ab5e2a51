//! `spillway audit`: the control plane's audit trail.

use super::{client, print_json};
use crate::Target;
use std::process::ExitCode;

#[derive(Debug, clap::Args)]
pub(crate) struct AuditArgs {
    /// Only the changes that concern this tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// The newest this many.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let mut path = format!("/v1/audit?limit={}", args.limit);
    if let Some(t) = &args.tenant {
        path.push_str(&format!("&tenant={t}"));
    }
    let records = client(&args.target)?
        .json_request(reqwest::Method::GET, &path, None)
        .await?;
    if args.json {
        return print_json(&records);
    }
    println!(
        "{:<30} {:<18} {:<5} {:<12} what",
        "when (UTC)", "by", "via", "tenant"
    );
    for r in records.as_array().into_iter().flatten() {
        let when = r["unix_ms"]
            .as_u64()
            .map_or_else(String::new, format_unix_ms);
        println!(
            "{:<30} {:<18} {:<5} {:<12} {}",
            when,
            r["by"].as_str().unwrap_or(""),
            r["via"].as_str().unwrap_or(""),
            r["tenant"].as_str().unwrap_or(""),
            r["what"].as_str().unwrap_or("")
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// RFC 3339 (UTC) of a Unix time in milliseconds.
fn format_unix_ms(ms: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}
