//! The client commands, one file each: `artifact`, `fn`, `invoke`,
//! `status`, `ticket`, `token`, `tenant`, `audit`, `member`, `job`,
//! `backup` (and `restore`).

mod artifact;
mod audit;
mod backup;
mod function;
mod invoke;
mod job;
mod member;
mod status;
mod tenant;
mod ticket;
mod token;

pub(crate) use artifact::{ArtifactCommand, artifact};
pub(crate) use audit::{AuditArgs, audit};
pub(crate) use backup::{BackupArgs, RestoreArgs, backup, restore};
pub(crate) use function::{FunctionCommand, function};
pub(crate) use invoke::{InvokeArgs, invoke};
pub(crate) use job::{JobCommand, job};
pub(crate) use member::{MemberCommand, member};
pub(crate) use status::{StatusArgs, status};
pub(crate) use tenant::{TenantCommand, tenant};
pub(crate) use ticket::{TicketCommand, ticket};
pub(crate) use token::{TokenCommand, token};

use crate::Target;
use crate::client::Client;
use std::process::ExitCode;

fn client(t: &Target) -> anyhow::Result<Client> {
    Client::with_tls(&t.endpoint, t.token.clone(), &t.tls)
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(ExitCode::SUCCESS)
}

fn parse_ttl(s: &str) -> Result<u64, String> {
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("not a duration: {s:?}"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit in {s:?} (use s, m, h or d)")),
    };
    Ok(n * scale)
}
