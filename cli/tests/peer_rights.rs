//! What a member may do over QUIC (security review finding 1), tried as a
//! compromised member would: a client of our own holding host 2's identity
//! key talks to the leader directly. It may report its own facts, not make
//! a client's change (an admin token) on its own authority nor with a
//! made-up token, and once removed its open connection is closed.

use crate::common;

use common::hosts::{self, Host, member};
use serde_json::Value;
use spillway_consensus::{ControlCommand, ResidencyChange, ResidencyStatus, Scope, TokenEntry};
use spillway_proto::{Digest, NodeId, TenantId};
use spillway_sidecar::peer::{
    HostIdentity, PeerClient, PeerEndpoint, PeerReply, PeerRequest, PinnedPeers, ProposeError,
};
use std::time::Duration;

fn identity(host: &Host) -> HostIdentity {
    HostIdentity::load_or_create(&host.dir.join("sidecar")).unwrap()
}

/// A token entry with the admin scope, as a forger would write it.
fn forged_admin_token() -> TokenEntry {
    TokenEntry {
        id: "0123456789abcdef".into(),
        hash: Digest::of(b"forged").0,
        tenant: TenantId::admin(),
        scopes: [Scope::Admin].into_iter().collect(),
        label: "forged".into(),
        created_unix_ms: 0,
        expires_unix_ms: None,
        revoked: false,
        rate_per_s: None,
    }
}

async fn propose(client: &PeerClient, request: PeerRequest) -> Result<PeerReply, String> {
    client
        .call(1, &request, Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())
}

fn refused(reply: &Result<PeerReply, String>) -> bool {
    matches!(
        reply,
        Ok(PeerReply::Proposed(Err(
            ProposeError::Refused(_) | ProposeError::Denied(_)
        )))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_may_report_only_its_own_facts_and_loses_its_rights_when_removed() {
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = hosts::form(root.path(), &[&[], &[]]).await;
    let (h1, h2) = (&hosts[0], &hosts[1]);
    let view = api.cluster(h1).await;
    let leader_addr: std::net::SocketAddr = member(&view, "n1")["quic_addr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();

    // Our client: host 2's key, pinning host 1's.
    let pinned = PinnedPeers::default();
    pinned.pin(identity(h1).public_key());
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let endpoint = PeerEndpoint::bind(socket, &identity(h2), pinned).unwrap();
    let client = PeerClient::new(endpoint);
    client.set_address(1, leader_addr);

    // Its own residency: taken.
    let own = ResidencyChange {
        host: NodeId(2),
        digest: Digest::of(b"held by host 2"),
        status: ResidencyStatus::Evicted,
    };
    let reply = propose(
        &client,
        PeerRequest::Propose(ControlCommand::SetResidency(vec![own])),
    )
    .await;
    assert!(matches!(reply, Ok(PeerReply::Proposed(Ok(_)))), "{reply:?}");

    // Another host's residency, and a client's change on its own
    // authority: refused.
    let other = ResidencyChange {
        host: NodeId(1),
        ..own
    };
    let reply = propose(
        &client,
        PeerRequest::Propose(ControlCommand::SetResidency(vec![other])),
    )
    .await;
    assert!(refused(&reply), "{reply:?}");
    let forge = ControlCommand::CreateToken(forged_admin_token());
    let reply = propose(&client, PeerRequest::Propose(forge.clone())).await;
    assert!(refused(&reply), "{reply:?}");
    // Quota leases are the leader's to write: a member may not give
    // itself a tenant's whole quota.
    let leases = ControlCommand::SetQuotaLeases {
        tenant: TenantId::admin(),
        epoch: 1,
        shares: [(2, 1000)].into(),
    };
    let reply = propose(&client, PeerRequest::Propose(leases)).await;
    assert!(refused(&reply), "{reply:?}");
    // An audited change it wrote itself, or one with a made-up token.
    let self_audited = ControlCommand::Audited {
        by: "admin-token".into(),
        tenant: TenantId::admin(),
        unix_ms: 0,
        via: 2,
        command: Box::new(forge.clone()),
    };
    let reply = propose(&client, PeerRequest::Propose(self_audited)).await;
    assert!(refused(&reply), "{reply:?}");
    let reply = propose(
        &client,
        PeerRequest::ProposeAudited {
            token: "swt_made_up".into(),
            command: forge,
        },
    )
    .await;
    assert!(
        matches!(reply, Ok(PeerReply::Proposed(Err(ProposeError::Denied(_))))),
        "{reply:?}"
    );
    // The forged token works nowhere, and the audit trail names no change
    // of ours.
    let r = api
        .http
        .get(format!("{}/v1/tenants", h1.endpoint))
        .bearer_auth(format!("swk_0123456789abcdef_{}", "00".repeat(32)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let audit: Value = api.get(h1, "/v1/audit").await.unwrap();
    assert!(!audit.to_string().contains("0123456789abcdef"), "{audit:#}");

    // A client change through host 2's API is audited as made via n2.
    let r = api
        .http
        .post(format!("{}/v1/tenants", h2.endpoint))
        .bearer_auth(&api.token)
        .json(&serde_json::json!({"name": "acme"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let audit: Value = api.get(h1, "/v1/audit").await.unwrap();
    let last = audit.as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["what"].as_str(), last["via"].as_str()),
        (Some("create tenant acme"), Some("n2")),
        "{audit:#}"
    );

    // Removed, host 2's key loses its open connection and its rights.
    let r = api
        .http
        .delete(format!("{}/v1/members/n2", h1.endpoint))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    api.wait(h1, "n2 removed", |v| member(v, "n2")["state"] == "removed")
        .await;
    let own = ResidencyChange {
        host: NodeId(2),
        digest: Digest::of(b"after removal"),
        status: ResidencyStatus::Evicted,
    };
    let mut refused_after = false;
    for _ in 0..50 {
        let reply = propose(
            &client,
            PeerRequest::Propose(ControlCommand::SetResidency(vec![own])),
        )
        .await;
        if reply.is_err() || refused(&reply) {
            refused_after = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(refused_after, "a removed member's proposals are refused");
}

/// Security review finding 14: a flood of refused handshakes (a key that
/// is no member's) is logged once a window, not once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_handshakes_do_not_flood_the_log() {
    let root = tempfile::tempdir().unwrap();
    let (api, hosts) = hosts::form(root.path(), &[&[]]).await;
    let h1 = &hosts[0];
    let view = api.cluster(h1).await;
    let addr: std::net::SocketAddr = member(&view, "n1")["quic_addr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let stranger = HostIdentity::generate().unwrap();
    let pinned = PinnedPeers::default();
    pinned.pin(identity(h1).public_key());
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let endpoint = PeerEndpoint::bind(socket, &stranger, pinned).unwrap();
    for _ in 0..40 {
        // The client may finish its side before the host checks its
        // certificate; the host then closes the connection.
        if let Ok(Ok(conn)) =
            tokio::time::timeout(Duration::from_secs(5), endpoint.connect(addr)).await
        {
            let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
            assert!(closed.is_ok(), "a key that is no member's is refused");
        }
    }
    // The first refusal is logged at once; wait (bounded) until it is.
    let handshake_lines = || {
        std::fs::read_to_string(h1.dir.join("host.log"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("peer handshake"))
            .count()
    };
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while handshake_lines() == 0 && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lines = handshake_lines();
    assert!(
        (1..=2).contains(&lines),
        "{lines} lines for 40 refused handshakes"
    );
}
