// Kernels for fault tests only. A node loads them when started with
// --test-kernels; production nodes never do.

// Writes far outside any allocation: an illegal-address fault that poisons
// the CUDA context.
extern "C" __global__ void test_oob_write(float* p, unsigned int n) {
    if (blockIdx.x == 0 && threadIdx.x == 0) {
        p[(unsigned long long)n + (1ull << 40)] = 1.0f;
    }
}
