//! Load gossip: every `--gossip-ms` this host sends its load to each
//! active member as one QUIC datagram, and keeps the round-trip time of
//! each connection; what peers send arrives through the peer service.
//!
//! Datagrams are unreliable by design: a lost report is replaced by the
//! next one, and a report that stops arriving goes stale, which the
//! scheduler treats as unknown load.

use super::Burst;
use crate::job::JobHost;
use bytes::Bytes;
use spillway_consensus::{ControlState, MemberState};
use spillway_proto::frame;
use spillway_topology::LoadGossip;
use std::sync::Arc;
use std::time::Instant;

/// Sends this host's load to its peers, for as long as the host runs.
pub(crate) async fn gossip_loop(host: Arc<JobHost>) {
    let burst = host.burst.clone();
    let mut tick = tokio::time::interval(burst.gossip_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let report = burst.report(&host.queue, &host.executors.status());
        let bytes = Bytes::from(frame::encode(&report));
        let state = host.control.state();
        for m in state.members() {
            if m.id == host.control.id || m.state != MemberState::Active {
                continue;
            }
            // One task per peer: an unreachable one must not delay the rest.
            let (client, burst, bytes, peer) =
                (host.client.clone(), burst.clone(), bytes.clone(), m.id);
            let deadline = burst.gossip_every;
            tokio::spawn(async move {
                if let Ok(rtt) = client.send_datagram(peer, bytes, deadline).await {
                    burst.record_rtt(peer, rtt);
                }
            });
        }
    }
}

impl Burst {
    /// A datagram from the peer whose key is `key`: a member's load report
    /// (anything else is dropped).
    pub(crate) fn receive(&self, state: &ControlState, key: &[u8; 32], bytes: &[u8]) {
        let Some(peer) = state.member_by_key(key).map(|m| m.id) else {
            return;
        };
        match frame::decode::<LoadGossip>(bytes, 1024) {
            Ok((report, _)) => self.record_load(peer, report, Instant::now()),
            Err(e) => tracing::debug!(peer, "malformed load report: {e}"),
        }
    }
}
