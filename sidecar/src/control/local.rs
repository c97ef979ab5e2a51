//! What a host remembers of its own membership across restarts:
//! `dir/membership.json` with the cluster id, its host id and the addresses
//! it last served on (so a restart with port 0 asks for the same ports).

use crate::peer::TicketMember;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LocalMembership {
    pub(crate) cluster_id: String,
    pub(crate) id: u64,
    pub(crate) quic_addr: String,
    pub(crate) http_addr: String,
    /// The other members as last seen: trusted and reachable at start,
    /// before the log has caught this host up.
    #[serde(default)]
    pub(crate) peers: Vec<TicketMember>,
}

fn path(dir: &Path) -> PathBuf {
    dir.join("membership.json")
}

impl LocalMembership {
    /// The saved membership, if this host has joined or founded a cluster.
    pub(crate) fn load(dir: &Path) -> std::io::Result<Option<Self>> {
        match std::fs::read(path(dir)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Saves atomically (write, fsync, rename).
    pub(crate) fn save(&self, dir: &Path) -> std::io::Result<()> {
        let path = path(dir);
        let tmp = path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    }
}
