//! Publisher signatures on artifacts: checked when an artifact is uploaded
//! (against the tenant's trusted keys and whether it requires signatures)
//! and again when a host fetches it from a peer, before its node sees it.
//! ed25519 through ring (already in the tree for join tickets).

use spillway_consensus::{ArtifactSignature, ControlState, TenantEntry};
use spillway_proto::signing::artifact_message;
use spillway_proto::{ArtifactKind, Digest};

/// Why an artifact's signature is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SignatureRefusal {
    #[error("the tenant requires signed artifacts and this one is not signed")]
    Missing,
    #[error("spillway-signature must be <64 hex public key>:<128 hex signature>")]
    Malformed,
    #[error("the signature does not verify for this artifact's digest and name")]
    Bad,
    #[error("the signing key is not one the tenant trusts")]
    Untrusted,
    #[error(
        "kernel packs run native GPU code and must be signed by a key the tenant trusts; this one is not signed"
    )]
    PackUnsigned,
}

impl SignatureRefusal {
    pub(crate) fn code(&self) -> &'static str {
        match self {
            SignatureRefusal::Missing => "unsigned_artifact",
            SignatureRefusal::PackUnsigned => "unsigned_kernel_pack",
            SignatureRefusal::Malformed | SignatureRefusal::Bad => "bad_signature",
            SignatureRefusal::Untrusted => "untrusted_key",
        }
    }
}

/// Parses `<key hex>:<signature hex>`.
pub(crate) fn parse(header: &str) -> Result<ArtifactSignature, SignatureRefusal> {
    let (key, signature) = header
        .trim()
        .split_once(':')
        .ok_or(SignatureRefusal::Malformed)?;
    let key: [u8; 32] = hex::decode(key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or(SignatureRefusal::Malformed)?;
    let signature = hex::decode(signature)
        .ok()
        .filter(|s| s.len() == 64)
        .ok_or(SignatureRefusal::Malformed)?;
    Ok(ArtifactSignature { key, signature })
}

/// Whether `sig` signs `name` = `digest`.
pub(crate) fn verifies(sig: &ArtifactSignature, digest: &Digest, name: &str) -> bool {
    ed25519_strict(&sig.key, &artifact_message(digest, name), &sig.signature)
}

/// Whether `signature` is `key`'s Ed25519 signature of `message`, checked
/// strictly (`ed25519-dalek`'s `verify_strict`): a small-order or
/// non-canonical key, or a non-canonical signature, never verifies, so
/// no key can sign every message.
pub(crate) fn ed25519_strict(key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(key) else {
        return false;
    };
    let Ok(signature) = ed25519_dalek::Signature::from_slice(signature) else {
        return false;
    };
    key.verify_strict(message, &signature).is_ok()
}

/// The upload check: `signature` (if given) must verify, and satisfy the
/// tenant's rules (`None`: the admin tenant, which has none).
pub(crate) fn check_upload(
    tenant: Option<&TenantEntry>,
    signature: Option<ArtifactSignature>,
    digest: &Digest,
    name: &str,
) -> Result<Option<ArtifactSignature>, SignatureRefusal> {
    let require = tenant.is_some_and(|t| t.require_signed);
    let Some(sig) = signature else {
        return if require {
            Err(SignatureRefusal::Missing)
        } else {
            Ok(None)
        };
    };
    if !verifies(&sig, digest, name) {
        return Err(SignatureRefusal::Bad);
    }
    let trusted = tenant.map_or(&[][..], |t| &t.trusted_keys[..]);
    if (require || !trusted.is_empty()) && !trusted.contains(&sig.key) {
        return Err(SignatureRefusal::Untrusted);
    }
    Ok(Some(sig))
}

/// The upload check for a kernel pack: whatever the tenant's rules for
/// components, a pack is native GPU code, so it must carry a signature
/// that verifies under a key the tenant trusts (the admin tenant trusts
/// none, so its tokens cannot publish packs).
pub(crate) fn check_pack_upload(
    tenant: Option<&TenantEntry>,
    signature: Option<ArtifactSignature>,
    digest: &Digest,
    name: &str,
) -> Result<ArtifactSignature, SignatureRefusal> {
    let sig = signature.ok_or(SignatureRefusal::PackUnsigned)?;
    if !verifies(&sig, digest, name) {
        return Err(SignatureRefusal::Bad);
    }
    if !tenant.is_some_and(|t| t.trusted_keys.contains(&sig.key)) {
        return Err(SignatureRefusal::Untrusted);
    }
    Ok(sig)
}

/// The fetch check: every registration of `digest` that needs a signature
/// (a kernel pack, or any artifact of a tenant that requires signatures)
/// still carries one that verifies under a key the tenant trusts.
pub(crate) fn registrations_trusted(state: &ControlState, digest: &Digest) -> bool {
    state.artifacts_with(digest).all(|a| {
        let pack = a.kind == ArtifactKind::KernelPack;
        let tenant = state.tenant(&a.tenant);
        if !pack && !tenant.is_some_and(|t| t.require_signed) {
            return true;
        }
        let Some(tenant) = tenant else {
            return false; // a pack of the admin tenant, which trusts no key
        };
        a.signature
            .as_ref()
            .is_some_and(|s| tenant.trusted_keys.contains(&s.key) && verifies(s, digest, &a.name))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};
    use spillway_proto::TenantId;

    fn key() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn sign(k: &Ed25519KeyPair, digest: &Digest, name: &str) -> ArtifactSignature {
        ArtifactSignature {
            key: k.public_key().as_ref().try_into().unwrap(),
            signature: k.sign(&artifact_message(digest, name)).as_ref().to_vec(),
        }
    }

    fn tenant(trusted: &[&Ed25519KeyPair], require_signed: bool) -> TenantEntry {
        TenantEntry {
            id: TenantId("t".into()),
            created_unix_ms: 0,
            placement: Default::default(),
            trusted_keys: trusted
                .iter()
                .map(|k| k.public_key().as_ref().try_into().unwrap())
                .collect(),
            require_signed,
            max_concurrent: None,
            max_job_memory_bytes: None,
            rate_per_s: None,
            max_gpu_memory_bytes: None,
            max_artifacts: None,
            max_artifact_bytes: None,
        }
    }

    #[test]
    fn a_small_order_key_cannot_sign_every_message() {
        // The identity point as the key, and R = identity, S = 0 as the
        // signature: it satisfies [S]B = R + [k]A for every message, and a
        // lenient verifier (ring's) accepts it. A strict one refuses.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let mut signature = vec![0u8; 64];
        signature[0] = 1;
        let forged = ArtifactSignature {
            key: identity,
            signature,
        };
        for name in ["echo", "anything"] {
            assert!(!verifies(&forged, &Digest::of(name.as_bytes()), name));
        }
        // A real signature still verifies, and not for another name.
        let k = key();
        let d = Digest::of(b"x");
        assert!(verifies(&sign(&k, &d, "x"), &d, "x"));
        assert!(!verifies(&sign(&k, &d, "x"), &d, "y"));
    }

    #[test]
    fn uploads_are_checked_against_the_tenants_rules() {
        let (good, other) = (key(), key());
        let d = Digest::of(b"wasm");
        let strict = tenant(&[&good], true);
        assert_eq!(
            check_upload(Some(&strict), None, &d, "f"),
            Err(SignatureRefusal::Missing)
        );
        assert!(check_upload(Some(&strict), Some(sign(&good, &d, "f")), &d, "f").is_ok());
        // Signed for another name or digest: does not verify.
        assert_eq!(
            check_upload(Some(&strict), Some(sign(&good, &d, "g")), &d, "f"),
            Err(SignatureRefusal::Bad)
        );
        assert_eq!(
            check_upload(
                Some(&strict),
                Some(sign(&good, &Digest::of(b"x"), "f")),
                &d,
                "f"
            ),
            Err(SignatureRefusal::Bad)
        );
        assert_eq!(
            check_upload(Some(&strict), Some(sign(&other, &d, "f")), &d, "f"),
            Err(SignatureRefusal::Untrusted)
        );
        // A tenant without rules takes unsigned and validly signed uploads.
        let lax = tenant(&[], false);
        assert_eq!(check_upload(Some(&lax), None, &d, "f"), Ok(None));
        assert!(check_upload(None, Some(sign(&other, &d, "f")), &d, "f").is_ok());
        // The header round-trips.
        let s = sign(&good, &d, "f");
        let header = format!("{}:{}", hex::encode(s.key), hex::encode(&s.signature));
        assert_eq!(parse(&header), Ok(s));
        assert_eq!(parse("nope"), Err(SignatureRefusal::Malformed));
    }

    #[test]
    fn kernel_packs_need_a_trusted_signature_whatever_the_tenants_rules() {
        let (good, other) = (key(), key());
        let d = Digest::of(b"{pack}");
        let lax = tenant(&[&good], false);
        let pack = |t: Option<&TenantEntry>, s| check_pack_upload(t, s, &d, "ops");
        assert_eq!(pack(Some(&lax), None), Err(SignatureRefusal::PackUnsigned));
        assert!(pack(Some(&lax), Some(sign(&good, &d, "ops"))).is_ok());
        let bad = sign(&good, &d, "other");
        assert_eq!(pack(Some(&lax), Some(bad)), Err(SignatureRefusal::Bad));
        let untrusted = sign(&other, &d, "ops");
        assert_eq!(
            pack(Some(&lax), Some(untrusted.clone())),
            Err(SignatureRefusal::Untrusted)
        );
        // The admin tenant trusts no key.
        assert_eq!(
            pack(None, Some(untrusted)),
            Err(SignatureRefusal::Untrusted)
        );
        assert_eq!(
            SignatureRefusal::PackUnsigned.code(),
            "unsigned_kernel_pack"
        );
    }

    #[test]
    fn fetches_check_pack_signatures_even_for_lax_tenants() {
        use spillway_consensus::ControlCommand;
        let (good, other) = (key(), key());
        let d = Digest::of(b"{pack}");
        let t = tenant(&[&good], false);
        let mut state = ControlState::default();
        state.apply(&ControlCommand::CreateTenant(t.clone()));
        let put = |signature| ControlCommand::PutArtifact {
            name: "ops".into(),
            digest: d,
            size: 6,
            tenant: t.id.clone(),
            signature: Some(signature),
            kind: ArtifactKind::KernelPack,
        };
        state.apply(&put(sign(&good, &d, "ops")));
        assert!(registrations_trusted(&state, &d));
        // Registered under a key the tenant does not trust (say, one it
        // has since stopped trusting): no host fetches it.
        state.apply(&put(sign(&other, &d, "ops")));
        assert!(!registrations_trusted(&state, &d));
    }
}
