//! What a publisher signs for an artifact: the artifact's digest and the
//! name it is published under, with a fixed prefix so the signature cannot
//! be taken for anything else. Publishers sign with ed25519
//! (`spillway keygen`, `spillway artifact push --sign`); hosts verify.

use crate::ids::Digest;

/// The bytes a publisher signs for `name` = `digest`.
pub fn artifact_message(digest: &Digest, name: &str) -> Vec<u8> {
    let mut m = b"spillway-artifact-v1\n".to_vec();
    m.extend_from_slice(&digest.0);
    m.extend_from_slice(name.as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_binds_digest_and_name() {
        let d = Digest::of(b"x");
        assert_ne!(artifact_message(&d, "a"), artifact_message(&d, "b"));
        assert_ne!(
            artifact_message(&d, "a"),
            artifact_message(&Digest::of(b"y"), "a")
        );
        assert!(artifact_message(&d, "a").starts_with(b"spillway-artifact-v1\n"));
    }
}
