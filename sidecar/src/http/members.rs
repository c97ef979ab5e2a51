//! `POST /v1/tickets`, `POST /v1/members/{id}/drain`, `POST
//! /v1/members/{id}/undrain`, `DELETE /v1/members/{id}`: admitting,
//! draining (and bringing back) and removing hosts.

use super::{ApiError, App};
use crate::control::member_list;
use crate::peer::JoinTicket;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};
use spillway_consensus::Scope;
use spillway_consensus::{ControlCommand, MemberState, TicketEntry};
use std::sync::Arc;

/// The longest a ticket may stay valid.
const MAX_TTL_S: u64 = 7 * 24 * 3600;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateTicket {
    /// Seconds the ticket stays valid (default one hour).
    ttl_s: Option<u64>,
}

pub(super) async fn create_ticket(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Option<Json<CreateTicket>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    app.authorize(&headers, Scope::Admin).await?;
    let ttl_s = body
        .map(|Json(b)| b)
        .unwrap_or_default()
        .ttl_s
        .unwrap_or(3600);
    if !(1..=MAX_TTL_S).contains(&ttl_s) {
        return Err(ApiError::bad_request(
            "bad_ttl",
            format!("ttl_s must be between 1 and {MAX_TTL_S}"),
        ));
    }
    let control = &app.control;
    let expires_unix_ms = crate::now_unix_ms() + ttl_s * 1000;
    let cluster_id = control.state().cluster_id().to_owned();
    let (ticket, key) = JoinTicket::issue(
        control.identity(),
        control.id,
        cluster_id.clone(),
        member_list(&control.state(), None),
        expires_unix_ms,
    )
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let entry = TicketEntry {
        key,
        issuer: control.id,
        expires_unix_ms,
        used_by: None,
    };
    app.commit(&headers, ControlCommand::IssueTicket(entry))
        .await?;
    tracing::info!(ttl_s, "join ticket issued");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "ticket": ticket.encode(),
            "cluster_id": cluster_id,
            "expires_unix_ms": expires_unix_ms,
        })),
    ))
}

/// A host id as shown (`n2`) or bare (`2`).
fn parse_id(id: &str) -> Result<u64, ApiError> {
    id.parse::<spillway_proto::NodeId>()
        .map(|n| n.0)
        .map_err(|_| ApiError::bad_request("bad_member", format!("{id:?} is not a host id")))
}

async fn set_state(
    app: &App,
    headers: &HeaderMap,
    id: u64,
    state: MemberState,
) -> Result<Json<Value>, ApiError> {
    let current = app.control.state();
    let Some(member) = current.member(id) else {
        return Err(ApiError::not_found("member", format!("no member {id}")));
    };
    let raft = app.control.raft_status();
    if state == MemberState::Removed && raft.voters.len() == 1 && raft.voters.contains(&id) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "last_voter",
            format!("host {id} is the only voter; add a voter before removing it"),
        ));
    }
    if let Err(reason) = change_allowed(member.state, state) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            reason.code,
            reason.message(id),
        ));
    }
    let from = member.state.as_str();
    app.commit(headers, ControlCommand::SetMemberState { id, state })
        .await?;
    tracing::info!(host = id, from, to = state.as_str(), "member state changed");
    Ok(Json(json!({"id": id, "state": state.as_str()})))
}

pub(super) async fn drain(
    State(app): State<Arc<App>>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    _body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers, Scope::Admin).await?;
    let Path(id) = id.map_err(ApiError::from_path)?;
    set_state(&app, &headers, parse_id(&id)?, MemberState::Draining).await
}

/// `undrain`: a drained host (after its upgrade, say) takes work again and
/// may be promoted.
pub(super) async fn undrain(
    State(app): State<Arc<App>>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    _body: Result<Json<Value>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers, Scope::Admin).await?;
    let Path(id) = id.map_err(ApiError::from_path)?;
    set_state(&app, &headers, parse_id(&id)?, MemberState::Active).await
}

/// Why a member may not go from one state to another through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refused {
    code: &'static str,
    why: &'static str,
}

impl Refused {
    fn message(self, id: u64) -> String {
        format!("host {id} {}", self.why)
    }
}

/// Which changes an operator may ask for: drain a joining or active host,
/// undrain a draining one, remove any (again, for a removed one). The log
/// itself also refuses to bring back a removed host.
fn change_allowed(from: MemberState, to: MemberState) -> Result<(), Refused> {
    use MemberState::{Active, Draining, Joining, Removed};
    match (from, to) {
        (_, Removed) => Ok(()),
        (Removed, _) => Err(Refused {
            code: "member_removed",
            why: "was removed; it must join again",
        }),
        (Joining | Active | Draining, Draining) | (Draining, Active) => Ok(()),
        (Active, Active) => Err(Refused {
            code: "not_draining",
            why: "is not draining",
        }),
        (Joining, Active) => Err(Refused {
            code: "still_joining",
            why: "is still joining; it becomes active by itself",
        }),
        (_, Joining) => Err(Refused {
            code: "bad_state",
            why: "cannot be made to join",
        }),
    }
}

pub(super) async fn remove(
    State(app): State<Arc<App>>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    app.authorize(&headers, Scope::Admin).await?;
    let Path(id) = id.map_err(ApiError::from_path)?;
    set_state(&app, &headers, parse_id(&id)?, MemberState::Removed).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use MemberState::{Active, Draining, Joining, Removed};

    #[test]
    fn an_operator_drains_undrains_and_removes_but_never_revives() {
        let cases = [
            (Active, Draining, None),
            (Joining, Draining, None),
            (Draining, Draining, None),
            (Draining, Active, None),
            (Active, Active, Some("not_draining")),
            (Joining, Active, Some("still_joining")),
            (Active, Removed, None),
            (Draining, Removed, None),
            (Removed, Removed, None),
            (Removed, Active, Some("member_removed")),
            (Active, Joining, Some("bad_state")),
        ];
        for (from, to, refused) in cases {
            assert_eq!(
                change_allowed(from, to).err().map(|r| r.code),
                refused,
                "{from:?} -> {to:?}"
            );
        }
    }
}
