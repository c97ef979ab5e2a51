//! The control state: what every host agrees on. Pure: changed only by
//! [`ControlState::apply`], the same on every replica.

mod v1;

use crate::command::{
    ControlCommand, ControlResponse, Rejection, ResidencyChange, TICKET_GRACE_MS,
};
use crate::entries::{
    AUDIT_KEEP, ArtifactEntry, AuditRecord, FunctionEntry, GPU_LEASE_UNIT, QuotaLeases,
    ResidencyStatus, StorageQuotaExceeded, TenantEntry,
};
use crate::membership::{
    GpuIsolation, JOIN_VERSION, JoinRefusal, MemberEntry, MemberState, PublicKey, TicketEntry,
};
use crate::tokens::{Scope, TokenEntry};
use serde::{Deserialize, Serialize};
use spillway_proto::{ArtifactKind, Digest, NodeId, TenantId};
use std::collections::BTreeMap;

/// Membership, tickets, artifacts, functions, residency and API tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlState {
    /// Empty until [`ControlCommand::Bootstrap`] is applied.
    cluster_id: String,
    admin_token_hash: Option<[u8; 32]>,
    members: BTreeMap<u64, MemberEntry>,
    tickets: BTreeMap<PublicKey, TicketEntry>,
    artifacts: BTreeMap<(TenantId, String), ArtifactEntry>,
    functions: BTreeMap<(TenantId, String), FunctionEntry>,
    /// digest → host → status (evicted entries are dropped).
    residency: BTreeMap<Digest, BTreeMap<NodeId, ResidencyStatus>>,
    /// API tokens by id (revoked ones stay, marked).
    tokens: BTreeMap<String, TokenEntry>,
    /// Tenants other than the admin tenant (which always exists).
    tenants: BTreeMap<TenantId, TenantEntry>,
    /// Tenants' concurrency quotas as per-host leases (absent: split
    /// evenly among the active members).
    leases: BTreeMap<TenantId, QuotaLeases>,
    /// Changes made through the API, oldest first.
    audit: std::collections::VecDeque<AuditRecord>,
    /// How each member's GPUs are shared (absent: not reported yet). Last,
    /// so a build of snapshot format 1 still reads this one's snapshots
    /// (postcard leaves trailing bytes unread); `v1` reads that format's.
    gpu_isolation: BTreeMap<u64, Vec<GpuIsolation>>,
    /// Tenants' GPU memory quotas as per-host leases, in MiB (absent:
    /// split evenly among the active members). After `gpu_isolation`, for
    /// the same reason.
    gpu_leases: BTreeMap<TenantId, QuotaLeases>,
}

impl ControlState {
    /// Applies one command. A rejected command leaves the state unchanged.
    pub fn apply(&mut self, command: &ControlCommand) -> ControlResponse {
        match command {
            ControlCommand::Bootstrap {
                cluster_id,
                admin_token_hash,
                first,
            } => {
                if !self.cluster_id.is_empty() {
                    return ControlResponse::Rejected(Rejection::Conflict(format!(
                        "the cluster {} is already bootstrapped",
                        self.cluster_id
                    )));
                }
                self.cluster_id = cluster_id.clone();
                self.admin_token_hash = Some(*admin_token_hash);
                let mut first = first.clone();
                first.state = MemberState::Active;
                self.members.insert(first.id, first);
            }
            ControlCommand::Restore(contents) => {
                if self.cluster_id.is_empty() {
                    return ControlResponse::Rejected(Rejection::Conflict(
                        "a backup is restored into a founded cluster".into(),
                    ));
                }
                if !(self.tenants.is_empty()
                    && self.tokens.is_empty()
                    && self.artifacts.is_empty()
                    && self.functions.is_empty())
                {
                    return ControlResponse::Rejected(Rejection::Conflict(format!(
                        "the cluster {} has tenants, tokens, artifacts or functions of its own: a backup is restored only into a new one",
                        self.cluster_id
                    )));
                }
                let c = contents.as_ref().clone();
                self.admin_token_hash = Some(c.admin_token_hash);
                self.tenants = c.tenants;
                self.tokens = c.tokens;
                self.artifacts = c.artifacts;
                self.functions = c.functions;
                self.audit = c.audit;
            }
            ControlCommand::IssueTicket(ticket) => {
                if !self.members.contains_key(&ticket.issuer) {
                    return ControlResponse::Rejected(Rejection::Missing(format!(
                        "ticket issuer {} is not a member",
                        ticket.issuer
                    )));
                }
                self.tickets.insert(ticket.key, ticket.clone());
            }
            ControlCommand::Admit {
                ticket,
                cluster_id,
                version,
                now_unix_ms,
                member,
            } => {
                return match self.admit(ticket, cluster_id, *version, *now_unix_ms, member) {
                    Ok(id) => ControlResponse::Admitted { id },
                    Err(refusal) => ControlResponse::Refused(refusal),
                };
            }
            ControlCommand::SetMemberState { id, state } => {
                let Some(m) = self.members.get_mut(id) else {
                    return ControlResponse::Rejected(Rejection::Missing(format!(
                        "no member {id}"
                    )));
                };
                if m.state == MemberState::Removed && *state != MemberState::Removed {
                    return ControlResponse::Rejected(Rejection::Conflict(format!(
                        "member {id} was removed; it must join again"
                    )));
                }
                m.state = *state;
            }
            ControlCommand::UpdateMember {
                id,
                quic_addr,
                http_addr,
                gpus,
            } => {
                let Some(m) = self.members.get_mut(id) else {
                    return ControlResponse::Rejected(Rejection::Missing(format!(
                        "no member {id}"
                    )));
                };
                m.quic_addr.clone_from(quic_addr);
                m.http_addr.clone_from(http_addr);
                m.gpus.clone_from(gpus);
            }
            ControlCommand::PutArtifact {
                name,
                digest,
                size,
                tenant,
                signature,
                kind,
            } => {
                if !self.tenant_exists(tenant) {
                    return ControlResponse::Rejected(Rejection::Missing(format!(
                        "no tenant {tenant}"
                    )));
                }
                if *kind == ArtifactKind::KernelPack && signature.is_none() {
                    return ControlResponse::Rejected(Rejection::Invalid(format!(
                        "kernel pack {name} is not signed"
                    )));
                }
                if let Err(over) = self.storage_room(tenant, name, *size) {
                    return ControlResponse::Rejected(over.into());
                }
                self.artifacts.insert(
                    (tenant.clone(), name.clone()),
                    ArtifactEntry {
                        name: name.clone(),
                        digest: *digest,
                        size: *size,
                        tenant: tenant.clone(),
                        signature: signature.clone(),
                        kind: *kind,
                    },
                );
            }
            ControlCommand::PutFunction(f) => {
                let kind_of = |digest: &Digest| {
                    self.artifacts_of(&f.tenant)
                        .find(|a| a.digest == *digest)
                        .map(|a| a.kind)
                };
                if kind_of(&f.digest) != Some(ArtifactKind::Component) {
                    return ControlResponse::Rejected(Rejection::Invalid(format!(
                        "function {} names artifact {} which is not a registered component",
                        f.name, f.digest
                    )));
                }
                if let Some(p) = f
                    .kernel_packs
                    .iter()
                    .find(|p| kind_of(&p.digest) != Some(ArtifactKind::KernelPack))
                {
                    return ControlResponse::Rejected(Rejection::Invalid(format!(
                        "function {} names kernel pack {} ({}) which is not a registered pack",
                        f.name, p.name, p.digest
                    )));
                }
                if let Some(w) = f
                    .weights
                    .iter()
                    .find(|w| kind_of(&w.digest) != Some(ArtifactKind::Weights))
                {
                    return ControlResponse::Rejected(Rejection::Invalid(format!(
                        "function {} names weights {} ({}) which are not registered weights",
                        f.name, w.name, w.digest
                    )));
                }
                if let Some(model) = &f.openai_model
                    && let Some(other) = self.openai_model(&f.tenant, model)
                    && other.name != f.name
                {
                    return ControlResponse::Rejected(Rejection::Conflict(format!(
                        "function {} serves model {model:?} already; one function serves a model",
                        other.name
                    )));
                }
                self.functions
                    .insert((f.tenant.clone(), f.name.clone()), f.clone());
            }
            ControlCommand::FromHost { command, .. } => {
                if matches!(
                    **command,
                    ControlCommand::Audited { .. } | ControlCommand::FromHost { .. }
                ) {
                    return ControlResponse::Rejected(Rejection::Invalid(
                        "a host's change may not wrap another wrapped change".into(),
                    ));
                }
                return self.apply(command);
            }
            ControlCommand::Audited {
                by,
                tenant,
                unix_ms,
                via,
                command,
            } => {
                if matches!(**command, ControlCommand::Audited { .. }) {
                    return ControlResponse::Rejected(Rejection::Invalid(
                        "an audited change inside another".into(),
                    ));
                }
                let response = self.apply(command);
                if matches!(
                    response,
                    ControlResponse::Done | ControlResponse::Admitted { .. }
                ) {
                    self.audit.push_back(AuditRecord {
                        unix_ms: *unix_ms,
                        by: by.clone(),
                        via: *via,
                        tenant: command.tenant().unwrap_or(tenant).clone(),
                        what: command.to_string(),
                    });
                    while self.audit.len() > AUDIT_KEEP {
                        self.audit.pop_front();
                    }
                }
                return response;
            }
            ControlCommand::CreateTenant(t) => {
                if self.tenant_exists(&t.id) {
                    return ControlResponse::Rejected(Rejection::Conflict(format!(
                        "tenant {} exists",
                        t.id
                    )));
                }
                self.tenants.insert(t.id.clone(), t.clone());
            }
            ControlCommand::UpdateTenant { id, patch } => {
                let Some(current) = self.tenants.get(id) else {
                    return ControlResponse::Rejected(Rejection::Missing(format!(
                        "no tenant {id} to change"
                    )));
                };
                let updated = patch.apply_to(current);
                if updated.max_concurrent != current.max_concurrent {
                    // Leases of the old quota do not fit the new one.
                    self.leases.remove(id);
                }
                if updated.max_gpu_memory_bytes != current.max_gpu_memory_bytes {
                    self.gpu_leases.remove(id);
                }
                self.tenants.insert(id.clone(), updated);
            }
            ControlCommand::SetQuotaLeases {
                tenant,
                epoch,
                shares,
            } => {
                let Some(quota) = self.tenants.get(tenant).and_then(|t| t.max_concurrent) else {
                    return ControlResponse::Rejected(Rejection::Invalid(format!(
                        "tenant {tenant} has no concurrency quota"
                    )));
                };
                let next = next_lease(self.leases.get(tenant), *epoch, shares, quota, "jobs");
                match next {
                    Ok(leases) => self.leases.insert(tenant.clone(), leases),
                    Err(rejected) => return ControlResponse::Rejected(rejected),
                };
            }
            ControlCommand::SetGpuLeases {
                tenant,
                epoch,
                shares,
            } => {
                let Some(quota) = self
                    .tenants
                    .get(tenant)
                    .and_then(|t| t.max_gpu_memory_bytes)
                else {
                    return ControlResponse::Rejected(Rejection::Invalid(format!(
                        "tenant {tenant} has no GPU memory quota"
                    )));
                };
                let units = u32::try_from(quota / GPU_LEASE_UNIT).unwrap_or(u32::MAX);
                let current = self.gpu_leases.get(tenant);
                match next_lease(current, *epoch, shares, units, "MiB of GPU memory") {
                    Ok(leases) => self.gpu_leases.insert(tenant.clone(), leases),
                    Err(rejected) => return ControlResponse::Rejected(rejected),
                };
            }
            ControlCommand::SetResidency(changes) => {
                for change in changes {
                    self.set_residency(change);
                }
            }
            ControlCommand::CreateToken(token) => {
                if self.tokens.contains_key(&token.id) {
                    return ControlResponse::Rejected(Rejection::Conflict(format!(
                        "token id {} is taken",
                        token.id
                    )));
                }
                if !self.tenant_exists(&token.tenant) {
                    return ControlResponse::Rejected(Rejection::Missing(format!(
                        "no tenant {}",
                        token.tenant
                    )));
                }
                if !token.tenant.is_admin() && token.scopes.contains(&Scope::Admin) {
                    return ControlResponse::Rejected(Rejection::Invalid(
                        "only the admin tenant's tokens may have the admin scope".into(),
                    ));
                }
                self.tokens.insert(token.id.clone(), token.clone());
            }
            ControlCommand::RevokeToken { id } => {
                let Some(token) = self.tokens.get_mut(id) else {
                    return ControlResponse::Rejected(Rejection::Missing(format!("no token {id}")));
                };
                token.revoked = true;
            }
            ControlCommand::PruneTickets { now_unix_ms } => {
                self.tickets.retain(|_, t| {
                    t.expires_unix_ms.saturating_add(TICKET_GRACE_MS) > *now_unix_ms
                });
            }
            ControlCommand::SetGpuIsolation { id, gpus } => {
                if !self.members.contains_key(id) {
                    return ControlResponse::Rejected(Rejection::Missing(format!(
                        "no member {id}"
                    )));
                }
                self.gpu_isolation.insert(*id, gpus.clone());
            }
        }
        ControlResponse::Done
    }

    fn set_residency(&mut self, change: &ResidencyChange) {
        let ResidencyChange {
            host,
            digest,
            status,
        } = change;
        let hosts = self.residency.entry(*digest).or_default();
        match status {
            ResidencyStatus::Evicted => {
                hosts.remove(host);
                if hosts.is_empty() {
                    self.residency.remove(digest);
                }
            }
            s => {
                hosts.insert(*host, *s);
            }
        }
    }

    fn admit(
        &mut self,
        ticket: &PublicKey,
        cluster_id: &str,
        version: u16,
        now_unix_ms: u64,
        member: &MemberEntry,
    ) -> Result<u64, JoinRefusal> {
        self.admission(ticket, cluster_id, version, now_unix_ms, member)?;
        let id = self.members.keys().next_back().map_or(1, |last| last + 1);
        self.members.insert(
            id,
            MemberEntry {
                id,
                state: MemberState::Joining,
                ..member.clone()
            },
        );
        if let Some(t) = self.tickets.get_mut(ticket) {
            t.used_by = Some(id);
        }
        Ok(id)
    }

    /// Whether `tenant` may store `size` bytes under `name` (a new name,
    /// or a new version replacing the name's current one) within its
    /// storage quota.
    pub fn storage_room(
        &self,
        tenant: &TenantId,
        name: &str,
        size: u64,
    ) -> Result<(), StorageQuotaExceeded> {
        let Some(t) = self.tenant(tenant) else {
            return Ok(());
        };
        let mut names = 0u64;
        let mut bytes = size;
        for a in self.artifacts_of(tenant) {
            if a.name != name {
                names += 1;
                bytes = bytes.saturating_add(a.size);
            }
        }
        if let Some(max) = t.max_artifacts
            && names + 1 > u64::from(max)
        {
            return Err(StorageQuotaExceeded::Artifacts {
                tenant: tenant.clone(),
                max,
            });
        }
        if let Some(max) = t.max_artifact_bytes
            && bytes > max
        {
            return Err(StorageQuotaExceeded::Bytes {
                tenant: tenant.clone(),
                max,
                would_be: bytes,
            });
        }
        Ok(())
    }

    /// Whether a join with `ticket` would be admitted now, and if not,
    /// why: the same checks `Admit` makes, without changing anything, so a
    /// member refuses a used, expired or unknown ticket before it costs a
    /// log entry (the log still decides when two joins race).
    pub fn admission(
        &self,
        ticket: &PublicKey,
        cluster_id: &str,
        version: u16,
        now_unix_ms: u64,
        member: &MemberEntry,
    ) -> Result<(), JoinRefusal> {
        if version != JOIN_VERSION {
            return Err(JoinRefusal::VersionIncompatible {
                ours: JOIN_VERSION,
                theirs: version,
            });
        }
        if cluster_id != self.cluster_id {
            return Err(JoinRefusal::WrongCluster {
                ticket: cluster_id.to_owned(),
                cluster: self.cluster_id.clone(),
            });
        }
        let entry = self.tickets.get(ticket).ok_or(JoinRefusal::UnknownTicket)?;
        if let Some(by) = entry.used_by {
            return Err(JoinRefusal::AlreadyUsed { by });
        }
        if now_unix_ms > entry.expires_unix_ms {
            return Err(JoinRefusal::Expired);
        }
        if let Some(m) = self.member_by_key(&member.key) {
            return Err(JoinRefusal::AlreadyMember { id: m.id });
        }
        Ok(())
    }

    /// The cluster id; empty before bootstrap.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// The BLAKE3 hash of the admin token.
    pub fn admin_token_hash(&self) -> Option<[u8; 32]> {
        self.admin_token_hash
    }

    /// Every member ever admitted (removed ones included), by id.
    pub fn members(&self) -> impl Iterator<Item = &MemberEntry> {
        self.members.values()
    }

    pub fn member(&self, id: u64) -> Option<&MemberEntry> {
        self.members.get(&id)
    }

    /// How member `id`'s GPUs are shared, as it last recorded (empty: not
    /// recorded, or no GPUs).
    pub fn gpu_isolation(&self, id: u64) -> &[GpuIsolation] {
        self.gpu_isolation.get(&id).map_or(&[], Vec::as_slice)
    }

    /// The member (not removed) with this identity key.
    pub fn member_by_key(&self, key: &PublicKey) -> Option<&MemberEntry> {
        self.members
            .values()
            .find(|m| m.key == *key && m.state != MemberState::Removed)
    }

    pub fn ticket(&self, key: &PublicKey) -> Option<&TicketEntry> {
        self.tickets.get(key)
    }

    pub fn token(&self, id: &str) -> Option<&TokenEntry> {
        self.tokens.get(id)
    }

    pub fn tokens(&self) -> impl Iterator<Item = &TokenEntry> {
        self.tokens.values()
    }

    pub fn tickets(&self) -> impl Iterator<Item = &TicketEntry> {
        self.tickets.values()
    }

    /// The audit trail, oldest first.
    /// What a backup of this state carries (`backup.rs`); `None` before
    /// the cluster is founded.
    pub fn backup_contents(&self) -> Option<crate::backup::BackupContents> {
        Some(crate::backup::BackupContents {
            admin_token_hash: self.admin_token_hash?,
            tenants: self.tenants.clone(),
            tokens: self.tokens.clone(),
            artifacts: self.artifacts.clone(),
            functions: self.functions.clone(),
            audit: self.audit.clone(),
        })
    }

    pub fn audit(&self) -> impl Iterator<Item = &AuditRecord> {
        self.audit.iter()
    }

    /// Whether `id` names a tenant (the admin tenant always exists).
    pub fn tenant_exists(&self, id: &TenantId) -> bool {
        id.is_admin() || self.tenants.contains_key(id)
    }

    /// A tenant other than the admin tenant.
    /// The tenant's placement leases, once the leader has written any.
    /// A tenant's GPU memory leases, in MiB per host (`None`: none written
    /// yet, the even split holds).
    pub fn gpu_leases(&self, tenant: &TenantId) -> Option<&QuotaLeases> {
        self.gpu_leases.get(tenant)
    }

    pub fn quota_leases(&self, tenant: &TenantId) -> Option<&QuotaLeases> {
        self.leases.get(tenant)
    }

    pub fn tenant(&self, id: &TenantId) -> Option<&TenantEntry> {
        self.tenants.get(id)
    }

    /// The tenants other than the admin tenant.
    pub fn tenants(&self) -> impl Iterator<Item = &TenantEntry> {
        self.tenants.values()
    }

    /// Every registration of `digest`, in any tenant.
    pub fn artifacts_with<'a>(
        &'a self,
        digest: &'a Digest,
    ) -> impl Iterator<Item = &'a ArtifactEntry> + 'a {
        self.artifacts.values().filter(move |a| a.digest == *digest)
    }

    /// `tenant`'s artifacts.
    pub fn artifacts_of<'a>(
        &'a self,
        tenant: &'a TenantId,
    ) -> impl Iterator<Item = &'a ArtifactEntry> + 'a {
        self.artifacts.values().filter(move |a| a.tenant == *tenant)
    }

    /// The function of `tenant` that serves `model` under the
    /// OpenAI-compatible API.
    pub fn openai_model(&self, tenant: &TenantId, model: &str) -> Option<&FunctionEntry> {
        self.functions
            .values()
            .find(|f| f.tenant == *tenant && f.openai_model.as_deref() == Some(model))
    }

    /// `tenant`'s functions.
    pub fn functions_of<'a>(
        &'a self,
        tenant: &'a TenantId,
    ) -> impl Iterator<Item = &'a FunctionEntry> + 'a {
        self.functions.values().filter(move |f| f.tenant == *tenant)
    }

    /// Resolves an artifact reference within `tenant`: one of its names, or
    /// the digest of one of its artifacts (another tenant's artifact is as
    /// good as absent).
    pub fn resolve_artifact(&self, tenant: &TenantId, reference: &str) -> Option<Digest> {
        self.find_artifact(tenant, reference).map(|a| a.digest)
    }

    /// The tenant's artifact named `reference` (or with that digest).
    pub fn find_artifact(&self, tenant: &TenantId, reference: &str) -> Option<&ArtifactEntry> {
        if let Some(a) = self.artifact(tenant, reference) {
            return Some(a);
        }
        let digest: Digest = reference.parse().ok()?;
        self.artifacts
            .values()
            .find(|a| a.tenant == *tenant && a.digest == digest)
    }

    /// The registered size of the artifact with this digest.
    pub fn artifact_size(&self, digest: &Digest) -> Option<u64> {
        self.artifacts
            .values()
            .find(|a| a.digest == *digest)
            .map(|a| a.size)
    }

    /// What each host holds of `digest`.
    pub fn residency(&self, digest: &Digest) -> Vec<(NodeId, ResidencyStatus)> {
        self.residency
            .get(digest)
            .into_iter()
            .flatten()
            .map(|(h, s)| (*h, *s))
            .collect()
    }

    /// The digests `host` holds as resident.
    pub fn resident_on(&self, host: NodeId) -> std::collections::BTreeSet<Digest> {
        self.residency
            .iter()
            .filter(|(_, hosts)| hosts.get(&host) == Some(&ResidencyStatus::Resident))
            .map(|(d, _)| *d)
            .collect()
    }

    /// Every digest with the hosts that hold it as resident.
    pub fn residency_table(&self) -> BTreeMap<Digest, Vec<NodeId>> {
        self.residency
            .iter()
            .map(|(d, hosts)| {
                let holders = hosts
                    .iter()
                    .filter(|(_, s)| **s == ResidencyStatus::Resident)
                    .map(|(h, _)| *h)
                    .collect();
                (*d, holders)
            })
            .collect()
    }

    /// A digest of the whole state: two replicas that applied the same
    /// entries have the same fingerprint (every map is ordered, so the
    /// encoding is canonical).
    pub fn fingerprint(&self) -> Digest {
        Digest::of(&postcard::to_allocvec(self).expect("the control state encodes"))
    }

    /// How many artifacts `host` holds as resident.
    pub fn resident_count(&self, host: NodeId) -> usize {
        self.residency
            .values()
            .filter(|hosts| hosts.get(&host) == Some(&ResidencyStatus::Resident))
            .count()
    }

    pub fn artifact(&self, tenant: &TenantId, name: &str) -> Option<&ArtifactEntry> {
        self.artifacts.get(&(tenant.clone(), name.to_owned()))
    }

    pub fn function(&self, tenant: &TenantId, name: &str) -> Option<&FunctionEntry> {
        self.functions.get(&(tenant.clone(), name.to_owned()))
    }

    /// Hosts holding `digest` as resident.
    pub fn holders(&self, digest: &Digest) -> Vec<NodeId> {
        self.residency
            .get(digest)
            .into_iter()
            .flatten()
            .filter(|(_, s)| **s == ResidencyStatus::Resident)
            .map(|(h, _)| *h)
            .collect()
    }
}

/// The leases `epoch` and `shares` make after `current`, if they may: the
/// next epoch, adding up to no more than `quota` (in `unit`).
fn next_lease(
    current: Option<&QuotaLeases>,
    epoch: u64,
    shares: &BTreeMap<u64, u32>,
    quota: u32,
    unit: &str,
) -> Result<QuotaLeases, Rejection> {
    let current = current.map_or(0, |l| l.epoch);
    if epoch != current + 1 {
        return Err(Rejection::Conflict(format!(
            "lease epoch {epoch} does not follow {current}"
        )));
    }
    let total: u64 = shares.values().map(|s| u64::from(*s)).sum();
    if total > u64::from(quota) {
        return Err(Rejection::Invalid(format!(
            "leases add up to {total} {unit}, over the quota of {quota}"
        )));
    }
    Ok(QuotaLeases {
        epoch,
        shares: shares.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entries::{ArtifactSignature, TenantPatch};
    use crate::membership::TicketEntry;
    use spillway_proto::{Accelerator, NamedArtifact};

    fn function(name: &str, digest: Digest) -> FunctionEntry {
        FunctionEntry {
            name: name.into(),
            artifact: name.into(),
            digest,
            accelerator: Accelerator::Preferred,
            deadline_ms: 1000,
            memory_limit_bytes: 1 << 20,
            idempotent: false,
            tenant: TenantId::admin(),
            kernel_packs: Vec::new(),
            weights: Vec::new(),
            openai_model: None,
        }
    }

    #[test]
    fn kernel_packs_must_be_signed_and_functions_name_them_by_kind() {
        let admin = TenantId::admin();
        let mut s = ControlState::default();
        let (wasm, pack) = (Digest::of(b"wasm"), Digest::of(b"{pack}"));
        let put_pack = |signature| ControlCommand::PutArtifact {
            name: "ops".into(),
            digest: pack,
            size: 6,
            tenant: admin.clone(),
            signature,
            kind: ArtifactKind::KernelPack,
        };
        assert!(
            matches!(s.apply(&put_pack(None)), ControlResponse::Rejected(Rejection::Invalid(m)) if m.contains("not signed"))
        );
        let signed = Some(ArtifactSignature {
            key: [1; 32],
            signature: vec![2; 64],
        });
        assert_eq!(s.apply(&put_pack(signed)), ControlResponse::Done);
        assert_eq!(s.apply(&put(&admin, "f", wasm)), ControlResponse::Done);
        assert_eq!(
            put_pack(None).to_string(),
            "put kernel pack admin/ops = ".to_owned() + &pack.to_string()
        );
        let with = |digest, packs: Vec<NamedArtifact>| FunctionEntry {
            kernel_packs: packs,
            weights: Vec::new(),
            ..function("f", digest)
        };
        let ops = NamedArtifact {
            name: "ops".into(),
            digest: pack,
        };
        // A pack is not a component, and a component is not a pack.
        let rejected = |r: ControlResponse| matches!(r, ControlResponse::Rejected(_));
        assert!(rejected(
            s.apply(&ControlCommand::PutFunction(with(pack, vec![])))
        ));
        let not_a_pack = NamedArtifact {
            name: "f".into(),
            digest: wasm,
        };
        assert!(rejected(s.apply(&ControlCommand::PutFunction(with(
            wasm,
            vec![not_a_pack]
        )))));
        assert_eq!(
            s.apply(&ControlCommand::PutFunction(with(wasm, vec![ops.clone()]))),
            ControlResponse::Done
        );
        assert_eq!(s.function(&admin, "f").unwrap().kernel_packs, [ops]);
        assert_eq!(
            s.find_artifact(&admin, "ops").unwrap().kind,
            ArtifactKind::KernelPack
        );
        assert_eq!(
            s.find_artifact(&admin, &pack.to_string()).unwrap().name,
            "ops"
        );
    }

    /// A tenant with no rules or limits.
    fn tenant(id: &TenantId) -> TenantEntry {
        TenantEntry {
            id: id.clone(),
            created_unix_ms: 1,
            placement: BTreeMap::new(),
            trusted_keys: Vec::new(),
            require_signed: false,
            max_concurrent: None,
            max_job_memory_bytes: None,
            rate_per_s: None,
            max_gpu_memory_bytes: None,
            max_artifacts: None,
            max_artifact_bytes: None,
        }
    }

    fn put(tenant: &TenantId, name: &str, digest: Digest) -> ControlCommand {
        ControlCommand::PutArtifact {
            name: name.into(),
            digest,
            size: 10,
            tenant: tenant.clone(),
            signature: None,
            kind: spillway_proto::ArtifactKind::Component,
        }
    }

    #[test]
    fn a_tenants_storage_quota_counts_names_and_bytes_and_a_new_version_replaces() {
        let mut s = ControlState::default();
        let acme = TenantId("acme".into());
        let limited = TenantEntry {
            max_artifacts: Some(2),
            max_artifact_bytes: Some(25),
            ..tenant(&acme)
        };
        assert_eq!(
            s.apply(&ControlCommand::CreateTenant(limited)),
            ControlResponse::Done
        );
        // 10 bytes each: two names fit, a third does not.
        assert_eq!(
            s.apply(&put(&acme, "a", Digest::of(b"a"))),
            ControlResponse::Done
        );
        assert_eq!(
            s.apply(&put(&acme, "b", Digest::of(b"b"))),
            ControlResponse::Done
        );
        assert!(matches!(
            s.apply(&put(&acme, "c", Digest::of(b"c"))),
            ControlResponse::Rejected(Rejection::StorageQuota(StorageQuotaExceeded::Artifacts {
                max: 2,
                ..
            }))
        ));
        // A new version of a name replaces it: it fits in count and bytes.
        assert_eq!(
            s.apply(&put(&acme, "a", Digest::of(b"a2"))),
            ControlResponse::Done
        );
        // Bytes: 10 + 20 would be 30, over 25.
        let bigger = ControlCommand::PutArtifact {
            name: "b".into(),
            digest: Digest::of(b"b2"),
            size: 20,
            tenant: acme.clone(),
            signature: None,
            kind: spillway_proto::ArtifactKind::Component,
        };
        assert!(matches!(
            s.apply(&bigger),
            ControlResponse::Rejected(Rejection::StorageQuota(StorageQuotaExceeded::Bytes {
                max: 25,
                would_be: 30,
                ..
            }))
        ));
        assert_eq!(s.artifacts_of(&acme).count(), 2);
        // Other tenants are not counted.
        assert_eq!(
            s.apply(&put(&TenantId::admin(), "c", Digest::of(b"c"))),
            ControlResponse::Done
        );
    }

    #[test]
    fn replicas_that_applied_the_same_entries_share_a_fingerprint() {
        let admin = TenantId::admin();
        let commands = [
            put(&admin, "echo", Digest::of(b"echo")),
            put(&admin, "spin", Digest::of(b"spin")),
            ControlCommand::PutFunction(function("echo", Digest::of(b"echo"))),
        ];
        let (mut a, mut b) = (ControlState::default(), ControlState::default());
        for c in &commands {
            a.apply(c);
            b.apply(c);
        }
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.apply(&put(&admin, "uppercase", Digest::of(b"uppercase")));
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn functions_need_a_registered_artifact() {
        let mut s = ControlState::default();
        let d = Digest::of(b"echo");
        let before = s.clone();
        assert!(matches!(
            s.apply(&ControlCommand::PutFunction(function("echo", d))),
            ControlResponse::Rejected(_)
        ));
        assert_eq!(s, before, "a rejected command changes nothing");
        let admin = TenantId::admin();
        assert_eq!(s.apply(&put(&admin, "echo", d)), ControlResponse::Done);
        assert_eq!(
            s.apply(&ControlCommand::PutFunction(function("echo", d))),
            ControlResponse::Done
        );
        assert_eq!(s.function(&admin, "echo").unwrap().digest, d);
        assert_eq!(s.artifact(&admin, "echo").unwrap().size, 10);
    }

    #[test]
    fn one_function_serves_a_model_name_within_a_tenant() {
        let mut s = ControlState::default();
        let (admin, d) = (TenantId::admin(), Digest::of(b"lm"));
        assert_eq!(s.apply(&put(&admin, "lm", d)), ControlResponse::Done);
        let serving = |name: &str| FunctionEntry {
            openai_model: Some("tiny".into()),
            ..function(name, d)
        };
        let put_fn = |s: &mut ControlState, f| s.apply(&ControlCommand::PutFunction(f));
        assert_eq!(put_fn(&mut s, serving("a")), ControlResponse::Done);
        // Replacing the function that serves it is fine; another is not.
        assert_eq!(put_fn(&mut s, serving("a")), ControlResponse::Done);
        assert!(matches!(
            put_fn(&mut s, serving("b")),
            ControlResponse::Rejected(Rejection::Conflict(_))
        ));
        assert_eq!(s.openai_model(&admin, "tiny").unwrap().name, "a");
        assert!(s.openai_model(&TenantId::admin(), "other").is_none());
        // Once "a" serves another name, "b" may take it.
        let moved = FunctionEntry {
            openai_model: Some("tiny-2".into()),
            ..function("a", d)
        };
        assert_eq!(put_fn(&mut s, moved), ControlResponse::Done);
        assert_eq!(put_fn(&mut s, serving("b")), ControlResponse::Done);
        assert_eq!(s.openai_model(&admin, "tiny").unwrap().name, "b");
    }

    #[test]
    fn a_rejection_says_what_the_caller_should_do() {
        let mut s = ControlState::default();
        let acme = TenantId("acme".into());
        assert_eq!(
            s.apply(&ControlCommand::CreateTenant(tenant(&acme))),
            ControlResponse::Done
        );
        let kind = |r: ControlResponse| match r {
            ControlResponse::Rejected(Rejection::Missing(_)) => "missing",
            ControlResponse::Rejected(Rejection::Conflict(_)) => "conflict",
            ControlResponse::Rejected(Rejection::Invalid(_)) => "invalid",
            ControlResponse::Rejected(Rejection::StorageQuota(_)) => "storage",
            _ => "applied",
        };
        let table = [
            (ControlCommand::RevokeToken { id: "nope".into() }, "missing"),
            (
                ControlCommand::SetMemberState {
                    id: 9,
                    state: MemberState::Draining,
                },
                "missing",
            ),
            (ControlCommand::CreateTenant(tenant(&acme)), "conflict"),
            (
                ControlCommand::SetQuotaLeases {
                    tenant: acme.clone(),
                    epoch: 1,
                    shares: Default::default(),
                },
                "invalid",
            ),
            (
                ControlCommand::SetGpuIsolation {
                    id: 9,
                    gpus: Vec::new(),
                },
                "missing",
            ),
        ];
        for (command, want) in table {
            assert_eq!(kind(s.apply(&command)), want, "{command}");
        }
    }

    #[test]
    fn a_hosts_change_applies_as_its_command_and_wraps_nothing_else() {
        let mut s = ControlState::default();
        let from = |host, command| ControlCommand::FromHost {
            host,
            command: Box::new(command),
        };
        let prune = ControlCommand::PruneTickets { now_unix_ms: 0 };
        assert_eq!(s.apply(&from(2, prune.clone())), s.clone().apply(&prune));
        assert_eq!(
            from(2, prune.clone()).to_string(),
            "prune expired tickets (from host 2)"
        );
        let before = s.clone();
        assert!(matches!(
            s.apply(&from(2, from(2, prune.clone()))),
            ControlResponse::Rejected(_)
        ));
        let audited = ControlCommand::Audited {
            by: "admin-token".into(),
            tenant: TenantId::admin(),
            unix_ms: 0,
            via: 2,
            command: Box::new(prune),
        };
        assert!(matches!(
            s.apply(&from(2, audited)),
            ControlResponse::Rejected(_)
        ));
        assert_eq!(s, before);
        assert_eq!(s.audit().count(), 0, "a host's change is not a client's");
    }

    #[test]
    fn audited_changes_are_recorded_with_who_when_and_tenant() {
        let mut s = ControlState::default();
        let acme = TenantId("acme".into());
        let audited = |command: ControlCommand| ControlCommand::Audited {
            by: "admin-token".into(),
            tenant: TenantId::admin(),
            unix_ms: 42,
            via: 3,
            command: Box::new(command),
        };
        let tenant = tenant(&acme);
        assert_eq!(
            s.apply(&audited(ControlCommand::CreateTenant(tenant.clone()))),
            ControlResponse::Done
        );
        // Refused: state and trail unchanged.
        assert!(matches!(
            s.apply(&audited(ControlCommand::CreateTenant(tenant))),
            ControlResponse::Rejected(_)
        ));
        assert_eq!(
            s.apply(&audited(put(&TenantId::admin(), "x", Digest::of(b"x")))),
            ControlResponse::Done
        );
        let trail: Vec<_> = s.audit().cloned().collect();
        assert_eq!(trail.len(), 2);
        assert_eq!(
            trail[0],
            AuditRecord {
                unix_ms: 42,
                by: "admin-token".into(),
                via: 3,
                tenant: acme,
                what: "create tenant acme".into(),
            }
        );
        assert_eq!(trail[1].tenant, TenantId::admin());
        assert!(matches!(
            s.apply(&audited(audited(ControlCommand::PruneTickets {
                now_unix_ms: 0
            }))),
            ControlResponse::Rejected(_)
        ));
    }

    #[test]
    fn a_tenant_patch_changes_only_what_it_names() {
        let mut s = ControlState::default();
        let acme = TenantId("acme".into());
        let patch = TenantPatch {
            max_concurrent: Some(Some(4)),
            ..TenantPatch::default()
        };
        let update = ControlCommand::UpdateTenant {
            id: acme.clone(),
            patch,
        };
        assert!(matches!(s.apply(&update), ControlResponse::Rejected(_)));
        let tenant = TenantEntry {
            id: acme.clone(),
            created_unix_ms: 1,
            placement: [("zone".to_owned(), "b".to_owned())].into(),
            trusted_keys: vec![[7; 32]],
            require_signed: true,
            max_concurrent: None,
            max_job_memory_bytes: Some(1 << 20),
            rate_per_s: Some(5),
            max_gpu_memory_bytes: None,
            max_artifacts: None,
            max_artifact_bytes: None,
        };
        s.apply(&ControlCommand::CreateTenant(tenant.clone()));
        assert_eq!(s.apply(&update), ControlResponse::Done);
        let t = s.tenant(&acme).unwrap();
        assert_eq!(t.max_concurrent, Some(4));
        assert_eq!(
            (
                &t.placement,
                &t.trusted_keys,
                t.require_signed,
                t.max_job_memory_bytes,
                t.rate_per_s
            ),
            (
                &tenant.placement,
                &tenant.trusted_keys,
                true,
                Some(1 << 20),
                Some(5)
            )
        );
        let clear = ControlCommand::UpdateTenant {
            id: acme.clone(),
            patch: TenantPatch {
                rate_per_s: Some(None),
                require_signed: Some(false),
                ..TenantPatch::default()
            },
        };
        assert_eq!(s.apply(&clear), ControlResponse::Done);
        let t = s.tenant(&acme).unwrap();
        assert_eq!(
            (t.rate_per_s, t.require_signed, t.max_concurrent),
            (None, false, Some(4))
        );
        assert_eq!(t.created_unix_ms, 1);
    }

    #[test]
    fn leases_follow_their_epochs_and_never_exceed_the_quota() {
        let mut s = ControlState::default();
        let acme = TenantId("acme".into());
        let set = |epoch, shares: &[(u64, u32)]| ControlCommand::SetQuotaLeases {
            tenant: acme.clone(),
            epoch,
            shares: shares.iter().copied().collect(),
        };
        // No tenant, or no quota: nothing to lease.
        assert!(matches!(
            s.apply(&set(1, &[(1, 1)])),
            ControlResponse::Rejected(_)
        ));
        s.apply(&ControlCommand::CreateTenant(TenantEntry {
            max_concurrent: Some(3),
            ..tenant(&acme)
        }));
        assert!(
            matches!(s.apply(&set(2, &[(1, 3)])), ControlResponse::Rejected(_)),
            "epochs go one at a time"
        );
        assert!(
            matches!(
                s.apply(&set(1, &[(1, 3), (2, 1)])),
                ControlResponse::Rejected(_)
            ),
            "4 > 3"
        );
        assert_eq!(
            s.apply(&set(1, &[(1, 1), (2, 1), (3, 1)])),
            ControlResponse::Done
        );
        assert_eq!(
            s.apply(&set(2, &[(1, 3), (2, 0), (3, 0)])),
            ControlResponse::Done
        );
        assert!(
            matches!(s.apply(&set(2, &[(1, 3)])), ControlResponse::Rejected(_)),
            "a stale epoch"
        );
        let leases = s.quota_leases(&acme).unwrap();
        assert_eq!((leases.epoch, leases.shares.get(&1)), (2, Some(&3)));
        // A new quota drops the leases (hosts split it evenly until the
        // leader writes new ones).
        s.apply(&ControlCommand::UpdateTenant {
            id: acme.clone(),
            patch: TenantPatch {
                max_concurrent: Some(Some(6)),
                ..TenantPatch::default()
            },
        });
        assert!(s.quota_leases(&acme).is_none());
        assert_eq!(s.apply(&set(1, &[(1, 6)])), ControlResponse::Done);
    }

    #[test]
    fn gpu_memory_leases_are_whole_mib_within_the_quota() {
        let mut s = ControlState::default();
        let acme = TenantId("acme".into());
        let set = |epoch, shares: &[(u64, u32)]| ControlCommand::SetGpuLeases {
            tenant: acme.clone(),
            epoch,
            shares: shares.iter().copied().collect(),
        };
        s.apply(&ControlCommand::CreateTenant(TenantEntry {
            max_concurrent: Some(3),
            ..tenant(&acme)
        }));
        assert!(
            matches!(s.apply(&set(1, &[(1, 1)])), ControlResponse::Rejected(_)),
            "no GPU memory quota"
        );
        let quota = |bytes| ControlCommand::UpdateTenant {
            id: acme.clone(),
            patch: TenantPatch {
                max_gpu_memory_bytes: Some(Some(bytes)),
                ..TenantPatch::default()
            },
        };
        // 32.5 MiB: 32 whole MiB to lease.
        s.apply(&quota(32 * GPU_LEASE_UNIT + GPU_LEASE_UNIT / 2));
        assert!(
            matches!(
                s.apply(&set(1, &[(1, 20), (2, 13)])),
                ControlResponse::Rejected(_)
            ),
            "33 MiB > 32"
        );
        assert_eq!(s.apply(&set(1, &[(1, 16), (2, 16)])), ControlResponse::Done);
        assert!(
            matches!(s.apply(&set(3, &[(1, 32)])), ControlResponse::Rejected(_)),
            "epochs go one at a time"
        );
        assert_eq!(s.apply(&set(2, &[(1, 32)])), ControlResponse::Done);
        assert_eq!(s.gpu_leases(&acme).unwrap().shares.get(&1), Some(&32));
        // The concurrency leases are another tenant setting's.
        assert!(s.quota_leases(&acme).is_none());
        // A new GPU memory quota drops its leases.
        s.apply(&quota(64 * GPU_LEASE_UNIT));
        assert!(s.gpu_leases(&acme).is_none());
        assert_eq!(s.apply(&set(1, &[(1, 64)])), ControlResponse::Done);
    }

    #[test]
    fn tenants_see_only_their_own_names_and_digests() {
        let mut s = ControlState::default();
        let (admin, acme) = (TenantId::admin(), TenantId("acme".into()));
        let d = Digest::of(b"f");
        // No tenant, no artifacts.
        assert!(matches!(
            s.apply(&put(&acme, "f", d)),
            ControlResponse::Rejected(_)
        ));
        let tenant = tenant(&acme);
        assert_eq!(
            s.apply(&ControlCommand::CreateTenant(tenant.clone())),
            ControlResponse::Done
        );
        assert!(matches!(
            s.apply(&ControlCommand::CreateTenant(tenant)),
            ControlResponse::Rejected(_)
        ));
        assert_eq!(s.apply(&put(&admin, "f", d)), ControlResponse::Done);
        // The admin's artifact is invisible to acme, by name and by digest.
        assert!(s.artifact(&acme, "f").is_none());
        assert_eq!(s.resolve_artifact(&acme, &d.to_string()), None);
        let acme_fn = FunctionEntry {
            tenant: acme.clone(),
            ..function("f", d)
        };
        assert!(matches!(
            s.apply(&ControlCommand::PutFunction(acme_fn.clone())),
            ControlResponse::Rejected(_)
        ));
        assert_eq!(s.apply(&put(&acme, "f", d)), ControlResponse::Done);
        assert_eq!(
            s.apply(&ControlCommand::PutFunction(acme_fn)),
            ControlResponse::Done
        );
        assert_eq!(s.resolve_artifact(&acme, &d.to_string()), Some(d));
        assert!(s.function(&admin, "f").is_none());
        assert_eq!(s.functions_of(&acme).count(), 1);
        assert_eq!(s.artifacts_of(&admin).count(), 1);
    }

    /// A backup's contents replace an empty new cluster's namespaces and
    /// admin token; they are refused before founding and over a cluster
    /// with contents of its own.
    #[test]
    fn a_backup_is_restored_only_into_a_new_cluster() {
        let acme = TenantId("acme".into());
        let mut old = ControlState::default();
        old.apply(&ControlCommand::Bootstrap {
            cluster_id: "sw-old".into(),
            admin_token_hash: [5; 32],
            first: MemberEntry { id: 1, ..member(1) },
        });
        assert_eq!(
            old.apply(&ControlCommand::CreateTenant(tenant(&acme))),
            ControlResponse::Done
        );
        let contents = old.backup_contents().unwrap();
        let restore = ControlCommand::Restore(Box::new(contents.clone()));
        assert_eq!(ControlState::default().backup_contents(), None);

        let mut unfounded = ControlState::default();
        assert!(matches!(
            unfounded.apply(&restore),
            ControlResponse::Rejected(Rejection::Conflict(_))
        ));
        let mut new = ControlState::default();
        new.apply(&ControlCommand::Bootstrap {
            cluster_id: "sw-new".into(),
            admin_token_hash: [6; 32],
            first: MemberEntry { id: 7, ..member(7) },
        });
        assert_eq!(new.apply(&restore), ControlResponse::Done);
        assert_eq!(new.cluster_id(), "sw-new");
        assert!(new.member(7).is_some() && new.member(1).is_none());
        assert!(new.tenant(&acme).is_some());
        assert_eq!(new.backup_contents().unwrap().admin_token_hash, [5; 32]);
        // Again: the cluster has a tenant of its own now.
        assert!(matches!(
            new.apply(&restore),
            ControlResponse::Rejected(Rejection::Conflict(_))
        ));
    }

    #[test]
    fn residency_tracks_holders_and_eviction() {
        let mut s = ControlState::default();
        let d = Digest::of(b"x");
        let set = |host, status| {
            ControlCommand::SetResidency(vec![ResidencyChange {
                host: NodeId(host),
                digest: d,
                status,
            }])
        };
        s.apply(&set(1, ResidencyStatus::Resident));
        s.apply(&set(2, ResidencyStatus::Fetching));
        assert_eq!(s.holders(&d), vec![NodeId(1)]);
        s.apply(&set(2, ResidencyStatus::Resident));
        assert_eq!(s.holders(&d), vec![NodeId(1), NodeId(2)]);
        s.apply(&set(1, ResidencyStatus::Evicted));
        s.apply(&set(2, ResidencyStatus::Evicted));
        assert!(s.holders(&d).is_empty());
        assert_eq!(
            s,
            ControlState::default(),
            "evicting every holder forgets the digest"
        );
    }

    fn member(key: u8) -> MemberEntry {
        MemberEntry {
            id: 0,
            key: [key; 32],
            quic_addr: format!("127.0.0.1:{}", 7000 + u16::from(key)),
            http_addr: String::new(),
            labels: BTreeMap::new(),
            gpus: Vec::new(),
            state: MemberState::Joining,
        }
    }

    fn bootstrapped() -> ControlState {
        let mut s = ControlState::default();
        let first = MemberEntry { id: 1, ..member(1) };
        let boot = ControlCommand::Bootstrap {
            cluster_id: "sw-a".into(),
            admin_token_hash: [9; 32],
            first,
        };
        assert_eq!(s.apply(&boot), ControlResponse::Done);
        assert!(matches!(s.apply(&boot), ControlResponse::Rejected(_)));
        let ticket = TicketEntry {
            key: [100; 32],
            issuer: 1,
            expires_unix_ms: 1_000,
            used_by: None,
        };
        assert_eq!(
            s.apply(&ControlCommand::IssueTicket(ticket)),
            ControlResponse::Done
        );
        s
    }

    fn admit(ticket: u8, cluster: &str, version: u16, now: u64, key: u8) -> ControlCommand {
        ControlCommand::Admit {
            ticket: [ticket; 32],
            cluster_id: cluster.into(),
            version,
            now_unix_ms: now,
            member: member(key),
        }
    }

    /// One row per refusal; each leaves the state as it was.
    #[test]
    fn join_refusals_are_typed_and_change_nothing() {
        let cases: [(&str, ControlCommand, JoinRefusal); 5] = [
            (
                "version",
                admit(100, "sw-a", JOIN_VERSION + 1, 10, 2),
                JoinRefusal::VersionIncompatible {
                    ours: JOIN_VERSION,
                    theirs: JOIN_VERSION + 1,
                },
            ),
            (
                "foreign",
                admit(100, "sw-b", JOIN_VERSION, 10, 2),
                JoinRefusal::WrongCluster {
                    ticket: "sw-b".into(),
                    cluster: "sw-a".into(),
                },
            ),
            (
                "unknown",
                admit(101, "sw-a", JOIN_VERSION, 10, 2),
                JoinRefusal::UnknownTicket,
            ),
            (
                "expired",
                admit(100, "sw-a", JOIN_VERSION, 1_001, 2),
                JoinRefusal::Expired,
            ),
            (
                "duplicate identity",
                admit(100, "sw-a", JOIN_VERSION, 10, 1),
                JoinRefusal::AlreadyMember { id: 1 },
            ),
        ];
        for (case, command, refusal) in cases {
            let mut s = bootstrapped();
            let before = s.clone();
            assert_eq!(
                s.apply(&command),
                ControlResponse::Refused(refusal),
                "{case}"
            );
            assert_eq!(s, before, "{case}: a refused join changes nothing");
        }
    }

    #[test]
    fn tickets_are_pruned_a_grace_period_after_they_expire() {
        let mut s = bootstrapped();
        // Used, and expiring later: both kept until their grace ends.
        assert!(matches!(
            s.apply(&admit(100, "sw-a", JOIN_VERSION, 500, 2)),
            ControlResponse::Admitted { .. }
        ));
        let later = TicketEntry {
            key: [101; 32],
            issuer: 1,
            expires_unix_ms: 5_000,
            used_by: None,
        };
        s.apply(&ControlCommand::IssueTicket(later));
        let prune = |now| ControlCommand::PruneTickets { now_unix_ms: now };
        assert_eq!(
            s.apply(&prune(1_000 + TICKET_GRACE_MS - 1)),
            ControlResponse::Done
        );
        assert_eq!(s.tickets().count(), 2);
        // Within its grace a late join still hears why.
        assert_eq!(
            s.apply(&admit(100, "sw-a", JOIN_VERSION, 2_000, 3)),
            ControlResponse::Refused(JoinRefusal::AlreadyUsed { by: 2 })
        );
        s.apply(&prune(1_000 + TICKET_GRACE_MS));
        assert_eq!(s.tickets().map(|t| t.key[0]).collect::<Vec<_>>(), [101]);
        assert_eq!(
            s.apply(&admit(100, "sw-a", JOIN_VERSION, 2_000, 3)),
            ControlResponse::Refused(JoinRefusal::UnknownTicket)
        );
        s.apply(&prune(5_000 + TICKET_GRACE_MS));
        assert_eq!(s.tickets().count(), 0);
    }

    #[test]
    fn a_ticket_admits_one_host_with_the_next_id() {
        let mut s = bootstrapped();
        assert_eq!(
            s.apply(&admit(100, "sw-a", JOIN_VERSION, 10, 2)),
            ControlResponse::Admitted { id: 2 }
        );
        let m = s.member(2).unwrap();
        assert_eq!((m.key, m.state), ([2; 32], MemberState::Joining));
        assert_eq!(
            s.apply(&admit(100, "sw-a", JOIN_VERSION, 10, 3)),
            ControlResponse::Refused(JoinRefusal::AlreadyUsed { by: 2 })
        );
        assert_eq!(s.member_by_key(&[2; 32]).map(|m| m.id), Some(2));
        s.apply(&ControlCommand::SetMemberState {
            id: 2,
            state: MemberState::Removed,
        });
        assert!(s.member_by_key(&[2; 32]).is_none(), "removed keys are out");
        assert!(matches!(
            s.apply(&ControlCommand::SetMemberState {
                id: 2,
                state: MemberState::Active
            }),
            ControlResponse::Rejected(_)
        ));
    }
}
