//! Per-job resource limits, enforced through Wasmtime's `ResourceLimiter`.
//!
//! One budget covers a job's memory: every linear memory of its component
//! (a component from a real toolchain has several) **and** its `gpu`
//! buffers, together. A memory growth that would take the sum past the
//! limit raises [`LimitExceeded`] as a trap, so the job ends with a typed
//! `memory_limit_exceeded` failure instead of the guest limping on after a
//! failed `memory.grow`; a buffer that would is refused with `gpu`'s
//! `out-of-memory` error (see `host_gpu`).

use wasmtime::ResourceLimiter;

/// The trap payload raised when a guest grows past its limit.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("guest grew {what} to {desired} (limit {limit})")]
pub(crate) struct LimitExceeded {
    pub(crate) what: &'static str,
    pub(crate) desired: usize,
    pub(crate) limit: usize,
}

/// Memory and table limits of one job, and what it holds against them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GuestLimits {
    /// Linear memories plus `gpu` buffers, in bytes.
    pub(crate) memory_bytes: usize,
    pub(crate) table_elements: usize,
    /// Bytes of all the instance's linear memories now (for a warm
    /// instance: what instantiation created, checked against its job's
    /// limit before the job runs in it).
    pub(crate) linear_bytes: usize,
    /// Bytes held by the job's live `gpu` buffers.
    pub(crate) gpu_bytes: u64,
}

impl GuestLimits {
    /// A job's limits, holding nothing yet.
    pub(crate) fn new(memory_bytes: usize, table_elements: usize) -> Self {
        Self {
            memory_bytes,
            table_elements,
            linear_bytes: 0,
            gpu_bytes: 0,
        }
    }

    /// Bytes of memory and buffers held now.
    pub(crate) fn held(&self) -> u64 {
        self.linear_bytes as u64 + self.gpu_bytes
    }

    /// Whether `more` bytes of buffers still fit.
    pub(crate) fn buffer_fits(&self, more: u64) -> bool {
        self.held() + more <= self.memory_bytes as u64
    }
}

impl ResourceLimiter for GuestLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let linear = self.linear_bytes - current.min(self.linear_bytes) + desired;
        let total = linear as u64 + self.gpu_bytes;
        if total > self.memory_bytes as u64 {
            return Err(wasmtime::Error::new(LimitExceeded {
                what: "memory (all linear memories and gpu buffers)",
                desired: total as usize,
                limit: self.memory_bytes,
            }));
        }
        self.linear_bytes = linear;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memories_and_buffers_share_one_budget() {
        let mut limits = GuestLimits::new(100, 10);
        // Two memories instantiated, then the first grows.
        assert!(limits.memory_growing(0, 30, None).unwrap());
        assert!(limits.memory_growing(0, 30, None).unwrap());
        assert!(limits.memory_growing(30, 50, None).unwrap());
        assert_eq!(limits.linear_bytes, 80);
        assert!(limits.buffer_fits(20));
        assert!(!limits.buffer_fits(21));
        limits.gpu_bytes = 15;
        // 50 + 30 + 15 held: a growth of the second memory by 6 is too much.
        let e = limits.memory_growing(30, 36, None).unwrap_err();
        let over = e.downcast_ref::<LimitExceeded>().unwrap();
        assert_eq!((over.desired, over.limit), (101, 100));
        assert!(limits.memory_growing(30, 35, None).unwrap());
        assert_eq!(limits.held(), 100);
    }
}
