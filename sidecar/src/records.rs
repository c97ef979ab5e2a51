//! The JSON shapes of artifacts and functions in the HTTP API, converted
//! from and to the control log's entries (`spillway_consensus`), and the
//! rule for names clients may use.

use serde::{Deserialize, Serialize};
use spillway_consensus::{
    ArtifactEntry, ControlState, FunctionEntry, MemberEntry, MemberState, shares_a_context,
};
use spillway_proto::{Accelerator, ArtifactKind, NodeId};

/// A stored artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub name: String,
    pub digest: String,
    pub size: u64,
    /// `component`, `kernel_pack` or `weights`.
    #[serde(default)]
    pub kind: ArtifactKind,
    /// The hosts whose nodes hold a checked copy, as the control log
    /// records them (`n1`, …): in a listing; an upload's answer leaves it
    /// out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<String>,
}

/// A registered function: what to run and under which limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRecord {
    pub name: String,
    /// The artifact as given at creation (a name or a digest).
    pub artifact: String,
    pub digest: String,
    pub accelerator: AcceleratorName,
    pub deadline_ms: u64,
    pub memory_limit_bytes: u64,
    pub idempotent: bool,
    /// The kernel packs its guest may launch from, by name.
    #[serde(default)]
    pub kernel_packs: Vec<String>,
    /// The weights its guest may open, by name.
    #[serde(default)]
    pub weights: Vec<String>,
    /// The model name it serves under the OpenAI-compatible API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openai_model: Option<String>,
    /// Whether its GPU jobs may run in a CUDA context with other tenants'
    /// jobs, whose kernel packs can then read its buffers (and its packs
    /// theirs): `shared` on the hosts in `gpu_context_shared_on`, `own`
    /// where every GPU host its tenant may use keeps it apart (`spillway
    /// host --executors …:TENANT`). Absent for `accelerator: none`, or with
    /// no GPU host for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_context: Option<GpuContext>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_context_shared_on: Vec<String>,
}

/// `gpu_context` as it appears in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuContext {
    Own,
    Shared,
}

impl FunctionRecord {
    /// The record with what `state`'s membership says of its GPU context:
    /// over the active members with GPUs whose labels its tenant's
    /// placement allows.
    pub fn with_gpu_context(mut self, f: &FunctionEntry, state: &ControlState) -> Self {
        if f.accelerator == Accelerator::None {
            return self;
        }
        let placement = state.tenant(&f.tenant).map(|t| t.placement.clone());
        let hosts: Vec<&MemberEntry> = state
            .members()
            .filter(|m| m.state == MemberState::Active && !m.gpus.is_empty())
            .filter(|m| (placement.iter().flatten()).all(|(k, v)| m.labels.get(k) == Some(v)))
            .collect();
        if hosts.is_empty() {
            return self;
        }
        self.gpu_context_shared_on = hosts
            .iter()
            .filter(|m| shares_a_context(&f.tenant, true, state.gpu_isolation(m.id)))
            .map(|m| NodeId(m.id).to_string())
            .collect();
        self.gpu_context = Some(match self.gpu_context_shared_on.is_empty() {
            true => GpuContext::Own,
            false => GpuContext::Shared,
        });
        self
    }
}

/// `accelerator` as it appears in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcceleratorName {
    None,
    #[default]
    Preferred,
    Required,
}

impl From<AcceleratorName> for Accelerator {
    fn from(a: AcceleratorName) -> Self {
        match a {
            AcceleratorName::None => Accelerator::None,
            AcceleratorName::Preferred => Accelerator::Preferred,
            AcceleratorName::Required => Accelerator::Required,
        }
    }
}

/// A name clients may use: 1 to 64 of `a-z 0-9 - _ .`, starting with a
/// letter or digit.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
}

impl From<Accelerator> for AcceleratorName {
    fn from(a: Accelerator) -> Self {
        match a {
            Accelerator::None => AcceleratorName::None,
            Accelerator::Preferred => AcceleratorName::Preferred,
            Accelerator::Required => AcceleratorName::Required,
        }
    }
}

impl From<&ArtifactEntry> for ArtifactRecord {
    fn from(a: &ArtifactEntry) -> Self {
        Self {
            name: a.name.clone(),
            digest: a.digest.to_string(),
            size: a.size,
            kind: a.kind,
            holders: Vec::new(),
        }
    }
}

impl From<&FunctionEntry> for FunctionRecord {
    fn from(f: &FunctionEntry) -> Self {
        Self {
            name: f.name.clone(),
            artifact: f.artifact.clone(),
            digest: f.digest.to_string(),
            accelerator: f.accelerator.into(),
            deadline_ms: f.deadline_ms,
            memory_limit_bytes: f.memory_limit_bytes,
            idempotent: f.idempotent,
            kernel_packs: f.kernel_packs.iter().map(|p| p.name.clone()).collect(),
            weights: f.weights.iter().map(|w| w.name.clone()).collect(),
            openai_model: f.openai_model.clone(),
            gpu_context: None,
            gpu_context_shared_on: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_consensus::{ControlCommand, GpuIsolation};
    use spillway_proto::{Digest, GpuDevice, TenantId};
    use std::collections::BTreeMap;

    #[test]
    fn a_function_record_says_where_its_gpu_jobs_share_a_context() {
        let acme = TenantId("acme".into());
        let member = |id, gpus: usize| MemberEntry {
            id,
            key: [id as u8; 32],
            quic_addr: String::new(),
            http_addr: String::new(),
            labels: BTreeMap::new(),
            gpus: (0..gpus as u32)
                .map(|index| GpuDevice {
                    index,
                    model: "H100".into(),
                    memory_bytes: 1,
                    compute_capability: (9, 0),
                })
                .collect(),
            state: MemberState::Active,
        };
        let isolation = |id, kept: &[&str]| ControlCommand::SetGpuIsolation {
            id,
            gpus: vec![GpuIsolation {
                gpu: 0,
                contexts: 2,
                shared: true,
                kept_for: vec![kept.iter().map(|t| TenantId((*t).into())).collect()],
                mps: false,
                mig: false,
            }],
        };
        let mut state = ControlState::default();
        state.apply(&ControlCommand::Bootstrap {
            cluster_id: "c".into(),
            admin_token_hash: [0; 32],
            first: member(1, 1),
        });
        let function = |accelerator| FunctionEntry {
            name: "f".into(),
            artifact: "f".into(),
            digest: Digest::of(b"f"),
            accelerator,
            deadline_ms: 1,
            memory_limit_bytes: 1,
            idempotent: false,
            tenant: acme.clone(),
            kernel_packs: Vec::new(),
            weights: Vec::new(),
            openai_model: None,
        };
        let seen = |state: &ControlState, accelerator| {
            let f = function(accelerator);
            let r = FunctionRecord::from(&f).with_gpu_context(&f, state);
            (r.gpu_context, r.gpu_context_shared_on)
        };
        // n1 has recorded nothing: one context for every tenant.
        assert_eq!(
            seen(&state, Accelerator::Required),
            (Some(GpuContext::Shared), vec!["n1".to_owned()])
        );
        assert_eq!(seen(&state, Accelerator::None), (None, Vec::new()));
        // n1 keeps an executor for acme.
        state.apply(&isolation(1, &["acme"]));
        assert_eq!(
            seen(&state, Accelerator::Preferred),
            (Some(GpuContext::Own), Vec::new())
        );
        // Another tenant's kept context does not keep acme apart.
        state.apply(&isolation(1, &["globex"]));
        assert_eq!(
            seen(&state, Accelerator::Required),
            (Some(GpuContext::Shared), vec!["n1".to_owned()])
        );
    }

    #[test]
    fn names_are_checked() {
        for ok in ["echo", "gemm-2", "a.b_c", "9lives"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Echo", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
