//! Load gossip: every `--gossip-ms` this host sends its load to each
//! active member as one QUIC datagram, and keeps the round-trip time of
//! each connection; what peers send arrives through the peer service.
//!
//! Datagrams are unreliable by design: a lost report is replaced by the
//! next one, and a report that stops arriving goes stale, which the
//! scheduler treats as unknown load.

use crate::control::Control;
use bytes::Bytes;
use spillway_consensus::MemberState;
use spillway_proto::frame;
use spillway_topology::LoadGossip;
use std::sync::Arc;
use std::time::Instant;

/// Sends this host's load to its peers, for as long as the host runs.
pub(crate) async fn gossip_loop(control: Arc<Control>) {
    let burst = control.burst().clone();
    let mut tick = tokio::time::interval(burst.gossip_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let report = burst.report(control.queue(), &control.link().status());
        let bytes = Bytes::from(frame::encode(&report));
        let state = control.state();
        for m in state.members() {
            if m.id == control.id || m.state != MemberState::Active {
                continue;
            }
            // One task per peer: an unreachable one must not delay the rest.
            let (control, bytes, peer) = (control.clone(), bytes.clone(), m.id);
            let deadline = burst.gossip_every;
            tokio::spawn(async move {
                if let Ok(rtt) = control.client().send_datagram(peer, bytes, deadline).await {
                    control.burst().record_rtt(peer, rtt);
                }
            });
        }
    }
}

impl Control {
    /// A member's datagram: its load report.
    pub(crate) fn receive_gossip(&self, key: &[u8; 32], bytes: &[u8]) {
        let Some(peer) = self.state().member_by_key(key).map(|m| m.id) else {
            return;
        };
        match frame::decode::<LoadGossip>(bytes, 1024) {
            Ok((report, _)) => self.burst().record_load(peer, report, Instant::now()),
            Err(e) => tracing::debug!(peer, "malformed load report: {e}"),
        }
    }
}
