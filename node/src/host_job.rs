//! The host side of the `job` interface. `log` goes through the job's
//! bounded guest log (`guest_log`), like the guest's stdout and stderr.

use crate::bindings::job::{self, Level};
use crate::guest_log::Source;
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
        // A full output window (the consumer is not reading) holds the
        // guest here, until the deadline or a cancel.
        let (cancel, deadline) = (&self.control.cancel, self.deadline);
        let give_up = || cancel.load(Ordering::Relaxed) || std::time::Instant::now() >= deadline;
        if !self.control.output.reserve(chunk.len() as u64, give_up) {
            return Err("the job was cancelled or reached its deadline while its output waited for the client".into());
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
        let source = match level {
            Level::Trace => Source::Trace,
            Level::Debug => Source::Debug,
            Level::Info => Source::Info,
            Level::Warn => Source::Warn,
            Level::Error => Source::Error,
        };
        self.log.message(source, &message);
    }
}
