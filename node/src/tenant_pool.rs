//! Each tenant's device memory on one GPU, as a CUDA memory pool of its
//! own (`cuMemPoolCreate`) whose maximum size is the tenant's GPU memory
//! cap: the driver itself refuses an allocation that would take the
//! tenant's pool past it, whatever asked for the memory (a buffer, a
//! resident tensor of weights, a cuBLAS workspace). The driver reserves a
//! pool's memory in chunks and rounds the maximum up to one: seen on an
//! H100 (driver 580), a pool whose maximum is 16 MiB holds 32 MiB, one of
//! 100 MiB holds 128. So the driver's bound is the cap rounded up to its
//! chunk, and the node's ledger (`tenant_gpu`) is what holds the cap to
//! the byte, before the driver is asked.
//!
//! A pool is made at a tenant's first job on the GPU and kept, with the
//! memory its jobs freed kept for reuse up to a threshold, so a tenant's
//! next job allocates without mapping fresh memory. A cap that changes
//! makes a new pool; the old one is destroyed when its last job lets go
//! of it (the driver frees its memory once nothing allocated from it is
//! left). When the device itself is full, the memory every pool keeps
//! idle is handed back to the driver and the allocation is tried once
//! more.
//!
//! The decisions are pure and table-tested: the pool's maximum
//! ([`pool_max`]), how much freed memory it keeps ([`keep_threshold`]) and
//! what a refusal means ([`refusal`]). The driver calls are around them.
//!
//! What it is not: the node-wide count of each tenant's bytes, which
//! enforces the cap exactly on every backend (`tenant_gpu`), or the
//! choice of GPU (`cuda`).

#![allow(unsafe_code)] // the driver's memory-pool calls are unsafe in cudarc

use cudarc::driver::result::{device, mem_pool};
use cudarc::driver::sys::{self, CUmemPool_attribute, CUresult};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DeviceRepr, DriverError};
use spillway_proto::TenantId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What a refused allocation means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The tenant's pool is at its cap: the tenant must free memory (or
    /// have its cap raised).
    CapReached,
    /// The device has no room: other pools may give back what they keep.
    DeviceFull,
}

/// A pool's use when an allocation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pressure {
    /// The pool's maximum (`None`: no cap).
    pub(crate) max: Option<u64>,
    /// Bytes its live allocations take.
    pub(crate) used: u64,
    /// The allocation refused.
    pub(crate) request: u64,
    /// The driver's allocation granularity.
    pub(crate) granularity: u64,
}

/// Why the driver refused an allocation from a pool: past the cap when
/// what is in use and the request (rounded as the driver maps it) do not
/// fit under the maximum; otherwise the device is full.
pub(crate) fn refusal(p: Pressure) -> Refusal {
    match p.max {
        Some(max)
            if p.used
                .checked_add(round_up(p.request, p.granularity))
                .is_none_or(|after| after > max) =>
        {
            Refusal::CapReached
        }
        _ => Refusal::DeviceFull,
    }
}

/// The pool's `maxSize` for a cap: the cap rounded up to the driver's
/// granularity (it maps memory in such units), at least one unit; `0`
/// (the driver's own limit, the device) without a cap.
pub(crate) fn pool_max(cap: Option<u64>, granularity: u64) -> u64 {
    cap.map_or(0, |c| round_up(c.max(1), granularity))
}

/// How much freed memory a pool keeps for its tenant's next allocations:
/// a quarter of the device, and never more than its cap.
pub(crate) fn keep_threshold(cap: Option<u64>, device_bytes: u64) -> u64 {
    let quarter = device_bytes / 4;
    cap.map_or(quarter, |c| c.min(quarter))
}

fn round_up(bytes: u64, unit: u64) -> u64 {
    let unit = unit.max(1);
    bytes.div_ceil(unit).saturating_mul(unit)
}

/// One tenant's pool on one GPU.
pub(crate) struct TenantPool {
    handle: sys::CUmemoryPool,
    ctx: Arc<CudaContext>,
    tenant: TenantId,
    /// The cap it was made for, and its maximum in the driver.
    cap: Option<u64>,
    max: u64,
}

// SAFETY: a `CUmemoryPool` is a driver handle that may be used from any
// thread once the context is current there (every use binds it first).
unsafe impl Send for TenantPool {}
// SAFETY: as above; the driver serializes calls on a pool.
unsafe impl Sync for TenantPool {}

impl std::fmt::Debug for TenantPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantPool")
            .field("tenant", &self.tenant)
            .field("cap", &self.cap)
            .finish()
    }
}

impl Drop for TenantPool {
    fn drop(&mut self) {
        // The driver releases the pool once nothing allocated from it is
        // left (a resident tensor may outlive the pool's last job).
        let destroyed = self
            .ctx
            .bind_to_thread()
            .and_then(|()| unsafe { mem_pool::destroy(self.handle) });
        if let Err(e) = destroyed {
            tracing::warn!(tenant = %self.tenant, "destroying a tenant's memory pool: {e}");
        }
    }
}

impl TenantPool {
    pub(crate) fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The cap the driver enforces (`None`: the pool has none).
    pub(crate) fn cap(&self) -> Option<u64> {
        self.cap
    }

    /// `len` elements of `T`, uninitialized, from this pool, on `stream`
    /// (freed there, back into this pool, when the slice is dropped).
    pub(crate) fn alloc<T: DeviceRepr>(
        &self,
        stream: &Arc<CudaStream>,
        len: usize,
    ) -> Result<CudaSlice<T>, DriverError> {
        let bytes = (len * std::mem::size_of::<T>()).max(1);
        self.ctx.bind_to_thread()?;
        // SAFETY: the pool and the stream are live and of this context;
        // the slice takes the allocation, of at least `len` elements, and
        // frees it stream-ordered on `stream` when dropped. Its contents
        // are the caller's to set before use.
        unsafe {
            let ptr = mem_pool::alloc_async(self.handle, bytes, stream.cu_stream())?;
            Ok(stream.upgrade_device_ptr(ptr, len))
        }
    }

    /// Bytes the pool holds from the driver, and bytes its live
    /// allocations take.
    pub(crate) fn use_now(&self) -> Result<(u64, u64), DriverError> {
        Ok((
            self.attribute(CUmemPool_attribute::CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT)?,
            self.attribute(CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT)?,
        ))
    }

    /// What a refusal of `request` bytes from this pool means.
    pub(crate) fn refusal(&self, request: u64, granularity: u64) -> Refusal {
        let used = self.use_now().map_or(0, |(_, used)| used);
        refusal(Pressure {
            max: self.cap.map(|_| self.max),
            used,
            request,
            granularity,
        })
    }

    /// Hands the memory the pool keeps idle back to the driver.
    fn trim(&self) -> Result<(), DriverError> {
        self.ctx.bind_to_thread()?;
        // SAFETY: a live pool of this context.
        unsafe { mem_pool::trim_to(self.handle, 0) }
    }

    fn attribute(&self, attr: CUmemPool_attribute) -> Result<u64, DriverError> {
        self.ctx.bind_to_thread()?;
        let mut value: u64 = 0;
        // SAFETY: both attributes are `cuuint64_t`, which `value` is.
        unsafe {
            mem_pool::get_attribute(
                self.handle,
                attr,
                (&raw mut value).cast::<std::ffi::c_void>(),
            )?;
        }
        Ok(value)
    }
}

/// One tenant's pool as the node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PoolUse {
    pub(crate) tenant: TenantId,
    pub(crate) cap: Option<u64>,
    pub(crate) reserved: u64,
    pub(crate) used: u64,
}

/// Every tenant's pool on one GPU.
pub(crate) struct TenantPools {
    ctx: Arc<CudaContext>,
    ordinal: i32,
    device_bytes: u64,
    /// The driver's allocation granularity for this device's pools.
    granularity: u64,
    pools: Mutex<HashMap<TenantId, Arc<TenantPool>>>,
}

impl std::fmt::Debug for TenantPools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantPools")
            .field("ordinal", &self.ordinal)
            .finish()
    }
}

/// The granularity the driver maps pool memory in when it cannot say
/// (2 MiB on every GPU so far).
const DEFAULT_GRANULARITY: u64 = 2 << 20;

impl TenantPools {
    pub(crate) fn new(ctx: Arc<CudaContext>, device_bytes: u64) -> Self {
        let ordinal = ctx.ordinal() as i32;
        let granularity = granularity(&ctx, ordinal).unwrap_or(DEFAULT_GRANULARITY);
        Self {
            ctx,
            ordinal,
            device_bytes,
            granularity,
            pools: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) fn granularity(&self) -> u64 {
        self.granularity
    }

    /// `tenant`'s pool with `cap`, made now if it has none (or one made
    /// for another cap).
    pub(crate) fn pool(
        &self,
        tenant: &TenantId,
        cap: Option<u64>,
    ) -> Result<Arc<TenantPool>, DriverError> {
        let mut pools = self.pools.lock().expect("tenant pools lock");
        if let Some(p) = pools.get(tenant)
            && p.cap == cap
        {
            return Ok(p.clone());
        }
        let pool = Arc::new(self.create(tenant, cap)?);
        tracing::debug!(gpu = self.ordinal, %tenant, ?cap, max = pool.max, "tenant memory pool made");
        pools.insert(tenant.clone(), pool.clone());
        Ok(pool)
    }

    /// Hands back to the driver what every tenant's pool and the device's
    /// default pool keep idle: for an allocation the full device refused.
    pub(crate) fn trim_idle(&self) {
        let pools: Vec<Arc<TenantPool>> = self
            .pools
            .lock()
            .expect("tenant pools lock")
            .values()
            .cloned()
            .collect();
        for p in pools {
            if let Err(e) = p.trim() {
                tracing::warn!(tenant = %p.tenant, "trimming a tenant's memory pool: {e}");
            }
        }
        let trimmed = self.ctx.bind_to_thread().and_then(|()| {
            // SAFETY: the device of a live context; trimming only returns
            // idle memory.
            unsafe {
                let default = device::get_default_mem_pool(self.ctx.cu_device())?;
                mem_pool::trim_to(default, 0)
            }
        });
        if let Err(e) = trimmed {
            tracing::warn!(gpu = self.ordinal, "trimming the default memory pool: {e}");
        }
    }

    /// Every tenant's pool, in tenant order (a pool the driver does not
    /// answer for is left out).
    pub(crate) fn uses(&self) -> Vec<PoolUse> {
        let pools: Vec<Arc<TenantPool>> = self
            .pools
            .lock()
            .expect("tenant pools lock")
            .values()
            .cloned()
            .collect();
        let mut out: Vec<PoolUse> = pools
            .iter()
            .filter_map(|p| {
                let (reserved, used) = p.use_now().ok()?;
                Some(PoolUse {
                    tenant: p.tenant.clone(),
                    cap: p.cap,
                    reserved,
                    used,
                })
            })
            .collect();
        out.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        out
    }

    fn create(&self, tenant: &TenantId, cap: Option<u64>) -> Result<TenantPool, DriverError> {
        let max = pool_max(cap, self.granularity);
        // SAFETY: plain data; every field the driver reads is set below,
        // the reserved bytes stay zero as it requires.
        let mut props: sys::CUmemPoolProps = unsafe { std::mem::zeroed() };
        props.allocType = sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED;
        props.handleTypes = sys::CUmemAllocationHandleType::CU_MEM_HANDLE_TYPE_NONE;
        props.location = sys::CUmemLocation {
            type_: sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE,
            id: self.ordinal,
        };
        props.maxSize = usize::try_from(max).unwrap_or(usize::MAX);
        self.ctx.bind_to_thread()?;
        // SAFETY: `props` is a valid pool description for this device.
        let handle = unsafe { mem_pool::create(&raw const props)? };
        let pool = TenantPool {
            handle,
            ctx: self.ctx.clone(),
            tenant: tenant.clone(),
            cap,
            max,
        };
        let mut keep = keep_threshold(cap, self.device_bytes);
        // SAFETY: the release threshold is a `cuuint64_t`, which `keep` is;
        // on failure `pool` is dropped, which destroys the handle.
        unsafe {
            mem_pool::set_attribute(
                handle,
                CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&raw mut keep).cast::<std::ffi::c_void>(),
            )?;
        }
        Ok(pool)
    }
}

/// The driver's minimum allocation granularity for pinned device memory.
fn granularity(ctx: &Arc<CudaContext>, ordinal: i32) -> Result<u64, DriverError> {
    ctx.bind_to_thread()?;
    // SAFETY: plain data, zero where unset, as the driver requires.
    let mut prop: sys::CUmemAllocationProp = unsafe { std::mem::zeroed() };
    prop.type_ = sys::CUmemAllocationType::CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location = sys::CUmemLocation {
        type_: sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE,
        id: ordinal,
    };
    let mut bytes: usize = 0;
    // SAFETY: `bytes` and `prop` are valid for the call.
    unsafe {
        sys::cuMemGetAllocationGranularity(
            &raw mut bytes,
            &raw const prop,
            sys::CUmemAllocationGranularity_flags::CU_MEM_ALLOC_GRANULARITY_MINIMUM,
        )
        .result()?;
    }
    Ok(bytes as u64)
}

/// Whether a driver error is the device (or a pool) out of memory.
pub(crate) fn is_out_of_memory(e: &DriverError) -> bool {
    e.0 == CUresult::CUDA_ERROR_OUT_OF_MEMORY
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_refusal_is_the_cap_when_use_and_request_pass_it() {
        let p = |max, used, request| Pressure {
            max,
            used,
            request,
            granularity: 2 * MIB,
        };
        let table = [
            // (max, used, request) → refusal
            (Some(64 * MIB), 48 * MIB, 16 * MIB, Refusal::DeviceFull),
            (Some(64 * MIB), 48 * MIB, 16 * MIB + 1, Refusal::CapReached),
            (Some(64 * MIB), 0, 65 * MIB, Refusal::CapReached),
            // a small request is mapped as a whole granule
            (Some(64 * MIB), 63 * MIB, 1, Refusal::CapReached),
            (Some(64 * MIB), 62 * MIB, 1, Refusal::DeviceFull),
            (None, 80 << 30, 1 << 30, Refusal::DeviceFull),
            (Some(u64::MAX), u64::MAX - 1, 10, Refusal::CapReached),
        ];
        for (max, used, request, want) in table {
            assert_eq!(
                refusal(p(max, used, request)),
                want,
                "{max:?} {used} {request}"
            );
        }
    }

    #[test]
    fn a_pools_maximum_is_its_cap_in_whole_granules() {
        let table = [
            (None, 2 * MIB, 0),
            (Some(0), 2 * MIB, 2 * MIB),
            (Some(1), 2 * MIB, 2 * MIB),
            (Some(64 * MIB), 2 * MIB, 64 * MIB),
            (Some(64 * MIB + 1), 2 * MIB, 66 * MIB),
            (Some(1000), 0, 1000),
        ];
        for (cap, granularity, want) in table {
            assert_eq!(pool_max(cap, granularity), want, "{cap:?} {granularity}");
        }
    }

    #[test]
    fn a_pool_keeps_a_quarter_of_the_device_at_most_and_never_past_its_cap() {
        let gib = 1u64 << 30;
        let table = [
            (None, 80 * gib, 20 * gib),
            (Some(64 * MIB), 80 * gib, 64 * MIB),
            (Some(40 * gib), 80 * gib, 20 * gib),
            (None, 0, 0),
        ];
        for (cap, device, want) in table {
            assert_eq!(keep_threshold(cap, device), want, "{cap:?} {device}");
        }
    }
}
