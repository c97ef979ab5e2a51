//! The control state as snapshot formats 0 and 1 encoded it: every field
//! of today's [`ControlState`] before `gpu_isolation` (and `gpu_leases`
//! after it), in the same order.
//! Postcard is not self-describing, so a payload of that format is read
//! through this and brought forward; nothing writes it.
//!
//! What it is not: a second state. It is decoded and converted at once,
//! when a host opens a snapshot file written by an earlier build, or
//! installs a snapshot a host of that build sent (a rolling upgrade).

use super::ControlState;
use crate::entries::{
    ArtifactEntry, AuditRecord, FunctionEntry, QuotaLeases, ResidencyStatus, TenantEntry,
};
use crate::membership::{MemberEntry, PublicKey, TicketEntry};
use crate::tokens::TokenEntry;
use serde::{Deserialize, Serialize};
use spillway_proto::{Digest, NodeId, TenantId};
use std::collections::{BTreeMap, VecDeque};

/// The snapshot format that added `gpu_isolation`.
const GPU_ISOLATION_FORMAT: u32 = 2;

#[derive(Serialize, Deserialize)]
struct ControlStateV1 {
    cluster_id: String,
    admin_token_hash: Option<[u8; 32]>,
    members: BTreeMap<u64, MemberEntry>,
    tickets: BTreeMap<PublicKey, TicketEntry>,
    artifacts: BTreeMap<(TenantId, String), ArtifactEntry>,
    functions: BTreeMap<(TenantId, String), FunctionEntry>,
    residency: BTreeMap<Digest, BTreeMap<NodeId, ResidencyStatus>>,
    tokens: BTreeMap<String, TokenEntry>,
    tenants: BTreeMap<TenantId, TenantEntry>,
    leases: BTreeMap<TenantId, QuotaLeases>,
    audit: VecDeque<AuditRecord>,
}

impl From<ControlStateV1> for ControlState {
    fn from(v1: ControlStateV1) -> Self {
        ControlState {
            cluster_id: v1.cluster_id,
            admin_token_hash: v1.admin_token_hash,
            members: v1.members,
            tickets: v1.tickets,
            artifacts: v1.artifacts,
            functions: v1.functions,
            residency: v1.residency,
            tokens: v1.tokens,
            tenants: v1.tenants,
            leases: v1.leases,
            audit: v1.audit,
            gpu_isolation: BTreeMap::new(),
            gpu_leases: BTreeMap::new(),
        }
    }
}

impl ControlState {
    /// Decodes a state a snapshot file of format `version` holds.
    pub(crate) fn decode_format(bytes: &[u8], version: u32) -> postcard::Result<Self> {
        if version < GPU_ISOLATION_FORMAT {
            return postcard::from_bytes::<ControlStateV1>(bytes).map(Self::from);
        }
        postcard::from_bytes(bytes)
    }

    /// Decodes a state a peer sent, of this build's format or of format 1
    /// (a host of the earlier build, during a rolling upgrade). A format-1
    /// payload ends where this build's next field starts, so it never
    /// decodes as this build's.
    pub(crate) fn decode_sent(bytes: &[u8]) -> postcard::Result<Self> {
        postcard::from_bytes(bytes)
            .or_else(|_| postcard::from_bytes::<ControlStateV1>(bytes).map(Self::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::ControlCommand;
    use crate::membership::{GpuIsolation, MemberState};

    fn founded() -> ControlState {
        let mut s = ControlState::default();
        let member = MemberEntry {
            id: 1,
            key: [7; 32],
            quic_addr: "127.0.0.1:1".into(),
            http_addr: "127.0.0.1:2".into(),
            labels: BTreeMap::new(),
            gpus: Vec::new(),
            state: MemberState::Active,
        };
        s.apply(&ControlCommand::Bootstrap {
            cluster_id: "c".into(),
            admin_token_hash: [1; 32],
            first: member,
        });
        s
    }

    fn as_v1(s: &ControlState) -> Vec<u8> {
        let s = s.clone();
        postcard::to_allocvec(&ControlStateV1 {
            cluster_id: s.cluster_id,
            admin_token_hash: s.admin_token_hash,
            members: s.members,
            tickets: s.tickets,
            artifacts: s.artifacts,
            functions: s.functions,
            residency: s.residency,
            tokens: s.tokens,
            tenants: s.tenants,
            leases: s.leases,
            audit: s.audit,
        })
        .unwrap()
    }

    #[test]
    fn a_format_1_state_is_read_forward_with_no_isolation_recorded() {
        let s = founded();
        let old = as_v1(&s);
        for version in [0, 1] {
            assert_eq!(ControlState::decode_format(&old, version).unwrap(), s);
        }
        assert_eq!(ControlState::decode_sent(&old).unwrap(), s);
        // This build's own encoding is read as itself, isolation and all.
        let mut now = s.clone();
        let gpus = vec![GpuIsolation {
            gpu: 0,
            contexts: 2,
            shared: true,
            kept_for: vec![vec![TenantId("acme".into())]],
            mps: false,
            mig: false,
        }];
        now.apply(&ControlCommand::SetGpuIsolation {
            id: 1,
            gpus: gpus.clone(),
        });
        let bytes = postcard::to_allocvec(&now).unwrap();
        for decoded in [
            ControlState::decode_format(&bytes, GPU_ISOLATION_FORMAT).unwrap(),
            ControlState::decode_sent(&bytes).unwrap(),
        ] {
            assert_eq!(decoded.gpu_isolation(1), gpus.as_slice());
        }
        // A host of format 1 reads this build's snapshot too: the new field
        // is trailing bytes it leaves unread.
        let read_by_v1: ControlStateV1 = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(ControlState::from(read_by_v1), s);
        // A format-1 payload is not this build's.
        assert!(ControlState::decode_format(&old, GPU_ISOLATION_FORMAT).is_err());
    }
}
