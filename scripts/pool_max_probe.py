# Run on a GPU machine (cuda-python): python3 scripts/pool_max_probe.py
# Prints how much a CUDA memory pool with maxSize M lets one allocate;
# docs/gpu.md ("A tenant's GPU memory cap is a hard one") reads it.
from cuda.bindings import driver as d
def ok(r):
    e = r[0] if isinstance(r, tuple) else r
    assert e == d.CUresult.CUDA_SUCCESS, e
    return r[1] if isinstance(r, tuple) and len(r) == 2 else r
ok(d.cuInit(0)); dev = ok(d.cuDeviceGet(0)); ctx = ok(d.cuDevicePrimaryCtxRetain(dev)); ok(d.cuCtxSetCurrent(ctx))
stream = ok(d.cuStreamCreate(0))
MiB = 1 << 20
for max_mib in [2, 4, 8, 16, 20, 24, 32, 33, 48, 64, 100]:
    for piece in [4 * MiB, 1 * MiB]:
        p = d.CUmemPoolProps()
        p.allocType = d.CUmemAllocationType.CU_MEM_ALLOCATION_TYPE_PINNED
        p.location.type = d.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
        p.location.id = 0
        p.maxSize = max_mib * MiB
        pool = ok(d.cuMemPoolCreate(p))
        got = []
        while len(got) * piece < 4 * max_mib * MiB + 64 * MiB:
            r = d.cuMemAllocFromPoolAsync(piece, pool, stream)
            if r[0] != d.CUresult.CUDA_SUCCESS:
                break
            got.append(r[1])
        reserved = ok(d.cuMemPoolGetAttribute(pool, d.CUmemPool_attribute.CU_MEMPOOL_ATTR_RESERVED_MEM_CURRENT))
        print(f"maxSize {max_mib:4d} MiB, pieces of {piece // MiB} MiB: {len(got) * piece // MiB:4d} MiB allocated, reserved {int(reserved) // MiB} MiB")
        for g in got:
            ok(d.cuMemFreeAsync(g, stream))
        ok(d.cuStreamSynchronize(stream))
        ok(d.cuMemPoolDestroy(pool))
