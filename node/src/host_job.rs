//! The host side of the `job` interface.

use crate::bindings::job::{self, Level};
use crate::state::GuestState;
use std::sync::atomic::Ordering;

impl job::Host for GuestState {
    fn input(&mut self) -> Vec<u8> {
        self.input.to_vec()
    }

    fn emit(&mut self, chunk: Vec<u8>) -> Result<(), String> {
        let total = self.emitted + chunk.len() as u64;
        if total > self.max_output {
            return Err(format!(
                "output limit of {} bytes reached ({} already emitted)",
                self.max_output, self.emitted
            ));
        }
        self.emitted = total;
        let seq = self.chunks;
        self.chunks += 1;
        (self.control.emit)(seq, chunk);
        Ok(())
    }

    fn remaining_ms(&mut self) -> u64 {
        GuestState::remaining_ms(self)
    }

    fn should_yield(&mut self) -> bool {
        if self.control.cancel.load(Ordering::Relaxed) {
            return true;
        }
        // Ask for a yield once less than a tenth of the deadline is left.
        let total = self.deadline.saturating_duration_since(self.started);
        self.deadline
            .saturating_duration_since(std::time::Instant::now())
            < total / 10
    }

    fn log(&mut self, level: Level, message: String) {
        let job = self.job.to_string();
        let message = message.chars().take(4096).collect::<String>();
        match level {
            Level::Trace => tracing::trace!(target: "guest", job = %job, "{message}"),
            Level::Debug => tracing::debug!(target: "guest", job = %job, "{message}"),
            Level::Info => tracing::info!(target: "guest", job = %job, "{message}"),
            Level::Warn => tracing::warn!(target: "guest", job = %job, "{message}"),
            Level::Error => tracing::error!(target: "guest", job = %job, "{message}"),
        }
    }
}
