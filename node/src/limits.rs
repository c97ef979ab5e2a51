//! Per-job resource limits, enforced through Wasmtime's `ResourceLimiter`.
//!
//! A growth past the limit raises [`LimitExceeded`] as a trap, so the job
//! ends with a typed `memory_limit_exceeded` failure instead of the guest
//! limping on after a failed `memory.grow`.

use wasmtime::ResourceLimiter;

/// The trap payload raised when a guest grows past its limit.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("guest grew {what} to {desired} (limit {limit})")]
pub(crate) struct LimitExceeded {
    pub(crate) what: &'static str,
    pub(crate) desired: usize,
    pub(crate) limit: usize,
}

/// Memory and table limits of one job.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuestLimits {
    pub(crate) memory_bytes: usize,
    pub(crate) table_elements: usize,
    /// The largest memory size granted so far, in bytes (for a warm
    /// instance: what instantiation created, checked against its job's
    /// limit before the job runs in it).
    pub(crate) largest_memory: usize,
}

impl ResourceLimiter for GuestLimits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            return Err(wasmtime::Error::new(LimitExceeded {
                what: "memory",
                desired,
                limit: self.memory_bytes,
            }));
        }
        self.largest_memory = self.largest_memory.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            return Err(wasmtime::Error::new(LimitExceeded {
                what: "table",
                desired,
                limit: self.table_elements,
            }));
        }
        Ok(true)
    }
}
