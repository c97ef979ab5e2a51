//! The client commands: `artifact`, `fn`, `invoke`, `status`, `ticket`,
//! `member`.

use crate::Target;
use crate::client::{Client, InvokeOptions};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum ArtifactCommand {
    /// Upload a component (binary `.wasm` or text `.wat`) under a name.
    Push {
        name: String,
        file: PathBuf,
        /// Sign it with this publisher key (from `spillway keygen`).
        #[arg(long)]
        sign: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// List artifacts.
    Ls {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum FunctionCommand {
    /// Register a function that runs an artifact.
    Create {
        name: String,
        /// Artifact name or digest.
        #[arg(long)]
        artifact: String,
        /// none | preferred | required
        #[arg(long, default_value = "preferred")]
        accelerator: String,
        #[arg(long)]
        deadline_ms: Option<u64>,
        #[arg(long)]
        memory_limit_bytes: Option<u64>,
        #[arg(long)]
        idempotent: bool,
        /// A kernel pack (name or digest) the guest may launch from as
        /// `<name>/<kernel>`; repeat for several. Needs `--accelerator
        /// required`.
        #[arg(long = "kernel-pack")]
        kernel_packs: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List functions.
    Ls {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct InvokeArgs {
    name: String,
    /// Read the input from this file ("-": standard input, the default).
    #[arg(long, default_value = "-")]
    input: String,
    /// Print the receipt (and output) as JSON instead of the raw output.
    #[arg(long)]
    json: bool,
    /// Shorten the function's deadline (ms).
    #[arg(long)]
    deadline_ms: Option<u64>,
    /// A repeat with the same key gets the first outcome instead of
    /// running again.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Run on the host asked (queue there when full), never on a peer.
    #[arg(long)]
    local: bool,
    #[command(flatten)]
    target: Target,
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TicketCommand {
    /// Make a one-time join ticket (a secret: hand it only to the new host).
    Create {
        /// How long it stays valid: seconds, or with a unit (90s, 30m, 2h, 1d).
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: u64,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TokenCommand {
    /// Make a token that may do only what its scopes allow (the secret is
    /// printed once, on standard output).
    Create {
        /// `invoke`, `publish`, `read` or `admin` (repeatable).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// How long it stays valid (90s, 30m, 2h, 1d); default: until revoked.
        #[arg(long, value_parser = parse_ttl)]
        ttl: Option<u64>,
        /// Free text to tell tokens apart.
        #[arg(long)]
        label: Option<String>,
        /// The tenant it acts for (default: the admin tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// Requests a second it may make on each host (default: no limit).
        #[arg(long)]
        rate: Option<u32>,
        #[command(flatten)]
        target: Target,
    },
    /// List tokens (never their secrets).
    Ls {
        #[command(flatten)]
        target: Target,
    },
    /// Revoke a token: every host refuses it once it applies the change.
    Revoke {
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

pub(crate) async fn token(cmd: TokenCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokenCommand::Create {
            scopes,
            ttl,
            label,
            tenant,
            rate,
            target,
        } => {
            let spec = json!({"scopes": scopes, "ttl_s": ttl, "label": label, "tenant": tenant,
                              "rate_per_s": rate});
            let answer = client(&target)
                .json_request(reqwest::Method::POST, "/v1/tokens", Some(spec))
                .await?;
            println!("{}", answer["token"].as_str().unwrap_or_default());
            eprintln!(
                "token {} with scopes {}; store it now, it is not shown again",
                answer["id"].as_str().unwrap_or("?"),
                answer["scopes"]
            );
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Ls { target } => print_json(
            &client(&target)
                .json_request(reqwest::Method::GET, "/v1/tokens", None)
                .await?,
        ),
        TokenCommand::Revoke { id, target } => print_json(
            &client(&target)
                .json_request(reqwest::Method::DELETE, &format!("/v1/tokens/{id}"), None)
                .await?,
        ),
    }
}

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
        /// GPU buffer memory its running jobs may hold at once on one host, MiB.
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
                &client(&target)
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
                &client(&target)
                    .json_request(reqwest::Method::PATCH, &path, Some(Value::Object(change)))
                    .await?,
            )
        }
        TenantCommand::Ls { target } => print_json(
            &client(&target)
                .json_request(reqwest::Method::GET, "/v1/tenants", None)
                .await?,
        ),
    }
}

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
    let records = client(&args.target)
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

#[derive(Debug, clap::Subcommand)]
pub(crate) enum MemberCommand {
    /// Stop giving a host new work and never promote it to voter; a
    /// voter hands its vote to a caught-up learner.
    Drain {
        /// The host: `n2` (as `spillway status` shows it) or `2`.
        id: spillway_proto::NodeId,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a host from the cluster: its key is no longer accepted, and
    /// a learner replaces it if it was a voter.
    Remove {
        /// The host: `n2` or `2`.
        id: spillway_proto::NodeId,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    target: Target,
}

fn client(t: &Target) -> Client {
    Client::new(&t.endpoint, t.token.clone())
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<ExitCode> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn artifact(cmd: ArtifactCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ArtifactCommand::Push {
            name,
            file,
            sign,
            target,
        } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let signature = match sign {
                Some(key) => Some(crate::publisher::sign_artifact(&key, &bytes, &name)?),
                None => None,
            };
            print_json(
                &client(&target)
                    .put_artifact(&name, bytes, signature.as_deref())
                    .await?,
            )
        }
        ArtifactCommand::Ls { target } => print_json(&client(&target).artifacts().await?),
    }
}

pub(crate) async fn function(cmd: FunctionCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        FunctionCommand::Create {
            name,
            artifact,
            accelerator,
            deadline_ms,
            memory_limit_bytes,
            idempotent,
            kernel_packs,
            target,
        } => {
            let spec = json!({
                "name": name, "artifact": artifact, "accelerator": accelerator,
                "deadline_ms": deadline_ms, "memory_limit_bytes": memory_limit_bytes,
                "idempotent": idempotent, "kernel_packs": kernel_packs,
            });
            print_json(&client(&target).create_function(&spec).await?)
        }
        FunctionCommand::Ls { target } => print_json(&client(&target).functions().await?),
    }
}

pub(crate) async fn invoke(args: InvokeArgs) -> anyhow::Result<ExitCode> {
    let input = if args.input == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading standard input")?;
        buf
    } else {
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input))?
    };
    let answer = client(&args.target)
        .invoke(
            &args.name,
            input,
            &InvokeOptions {
                deadline_ms: args.deadline_ms,
                idempotency_key: args.idempotency_key.clone(),
                here_only: args.local,
            },
        )
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer.receipt())?);
    } else if answer.status.is_success() {
        std::io::stdout().write_all(&answer.body)?;
        std::io::stdout().flush()?;
    } else {
        eprintln!(
            "{} {}",
            answer.status.as_u16(),
            String::from_utf8_lossy(&answer.body)
        );
    }
    Ok(if answer.status.is_success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(crate) async fn ticket(cmd: TicketCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TicketCommand::Create { ttl, target } => {
            let answer = client(&target).create_ticket(ttl).await?;
            println!("{}", answer["ticket"].as_str().unwrap_or_default());
            eprintln!(
                "one-time ticket for {}, valid {ttl} s; on the new host: spillway join <ticket>",
                answer["cluster_id"].as_str().unwrap_or("?")
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) async fn member(cmd: MemberCommand) -> anyhow::Result<ExitCode> {
    let (id, remove, target) = match cmd {
        MemberCommand::Drain { id, target } => (id, false, target),
        MemberCommand::Remove { id, target } => (id, true, target),
    };
    print_json(&client(&target).member(id.0, remove).await?)
}

pub(crate) async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let cluster = client(&args.target).cluster().await?;
    if args.json {
        return print_json(&cluster);
    }
    println!(
        "cluster {}  leader {}  term {}  commit {}  applied {} (on host {})",
        cluster["cluster_id"].as_str().unwrap_or("?"),
        cluster["leader"].as_str().unwrap_or("-"),
        cluster["term"],
        cluster["committed_index"],
        cluster["applied_index"],
        cluster["host"].as_str().unwrap_or("?"),
    );
    println!(
        "{:<4} {:<8} {:<9} {:<7} {:<22} {:>5} {:>7} {:>6} {:>8} {:>8}  backends",
        "id",
        "role",
        "state",
        "health",
        "http",
        "slots",
        "running",
        "queued",
        "restarts",
        "resident"
    );
    for m in cluster["members"].as_array().into_iter().flatten() {
        let backends: Vec<&str> = m["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b.as_str())
            .collect();
        let role = if m["leader"] == true {
            "leader"
        } else {
            m["role"].as_str().unwrap_or("?")
        };
        println!(
            "{:<4} {:<8} {:<9} {:<7} {:<22} {:>5} {:>7} {:>6} {:>8} {:>8}  {}",
            m["id"].as_str().unwrap_or("?"),
            role,
            m["state"].as_str().unwrap_or("?"),
            if m["healthy"] == true { "ok" } else { "down" },
            m["http_addr"].as_str().unwrap_or("?"),
            m["slots"].to_string(),
            m["running"].to_string(),
            m["queued"].to_string(),
            m["node"]["restarts"].to_string(),
            m["resident_artifacts"].to_string(),
            backends.join(","),
        );
    }
    Ok(ExitCode::SUCCESS)
}
