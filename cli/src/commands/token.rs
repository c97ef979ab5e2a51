//! `spillway token`: scoped API tokens.

use super::{client, parse_ttl, print_json};
use crate::Target;
use serde_json::json;
use std::process::ExitCode;

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
            let answer = client(&target)?
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
            &client(&target)?
                .json_request(reqwest::Method::GET, "/v1/tokens", None)
                .await?,
        ),
        TokenCommand::Revoke { id, target } => print_json(
            &client(&target)?
                .json_request(reqwest::Method::DELETE, &format!("/v1/tokens/{id}"), None)
                .await?,
        ),
    }
}
