// Kernels for fault tests only. A node loads them when started with
// --test-kernels; production nodes never do.

// Writes far outside any allocation: an illegal-address fault that poisons
// the CUDA context.
extern "C" __global__ void test_oob_write(float* p, unsigned int n) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        p[(unsigned long long)n + (1ull << 40)] = 1.0f;
    }
}

// Spins for `ms` milliseconds of the GPU's global timer, ignoring any
// deadline: what the node's GPU watchdog must stop.
extern "C" __global__ void test_spin(unsigned int ms) {
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    } while (now - start < (unsigned long long)ms * 1000000ull);
}
