// Spillway's built-in CUDA kernels. Compiled at run time with NVRTC for the
// device's architecture (see kernels/src/nvrtc.rs) and checked against the
// CPU reference implementations in kernels/src/cpu.rs.
//
// Conventions: f32 row-major data, element counts as unsigned int, every
// kernel guards its own bounds. The host checks every buffer length against
// the shape arguments before launching.

#define SW_NEG_INF (-__int_as_float(0x7f800000))

extern "C" __global__ void vector_add(const float* a, const float* b, float* out, unsigned int n) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        out[i] = a[i] + b[i];
    }
}

extern "C" __global__ void saxpy(float alpha, const float* x, float* y, unsigned int n) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        y[i] = alpha * x[i] + y[i];
    }
}

// Sums `v` over the block; every thread gets the total. blockDim.x is a
// multiple of 32 and at most 1024.
__device__ float block_sum(float v) {
    __shared__ float warp_sums[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    const unsigned int lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    __syncthreads();  // warp_sums may still be read by a previous call
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    const unsigned int warps = blockDim.x >> 5;
    v = (threadIdx.x < warps) ? warp_sums[threadIdx.x] : 0.0f;
    if (warp == 0) {
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
        if (lane == 0) warp_sums[0] = v;
    }
    __syncthreads();
    return warp_sums[0];
}

__device__ float block_max(float v) {
    __shared__ float warp_max[32];
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
    const unsigned int lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    __syncthreads();
    if (lane == 0) warp_max[warp] = v;
    __syncthreads();
    const unsigned int warps = blockDim.x >> 5;
    v = (threadIdx.x < warps) ? warp_max[threadIdx.x] : SW_NEG_INF;
    if (warp == 0) {
        for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
        if (lane == 0) warp_max[0] = v;
    }
    __syncthreads();
    return warp_max[0];
}

// One block per row.
extern "C" __global__ void softmax(const float* x, float* out, unsigned int rows, unsigned int cols) {
    const unsigned int row = blockIdx.x;
    if (row >= rows) return;
    const float* in = x + (size_t)row * cols;
    float* o = out + (size_t)row * cols;
    float m = SW_NEG_INF;
    for (unsigned int c = threadIdx.x; c < cols; c += blockDim.x) m = fmaxf(m, in[c]);
    m = block_max(m);
    float s = 0.0f;
    for (unsigned int c = threadIdx.x; c < cols; c += blockDim.x) s += expf(in[c] - m);
    s = block_sum(s);
    const float inv = 1.0f / s;
    for (unsigned int c = threadIdx.x; c < cols; c += blockDim.x) o[c] = expf(in[c] - m) * inv;
}

// One block per row.
extern "C" __global__ void rmsnorm(const float* x, const float* weight, float* out,
                                   unsigned int rows, unsigned int cols, float eps) {
    const unsigned int row = blockIdx.x;
    if (row >= rows) return;
    const float* in = x + (size_t)row * cols;
    float* o = out + (size_t)row * cols;
    float s = 0.0f;
    for (unsigned int c = threadIdx.x; c < cols; c += blockDim.x) s += in[c] * in[c];
    s = block_sum(s);
    const float scale = rsqrtf(s / (float)cols + eps);
    for (unsigned int c = threadIdx.x; c < cols; c += blockDim.x) o[c] = in[c] * scale * weight[c];
}

// out[0] must be zero before the launch (the host zeroes it); each block
// adds its partial sum.
extern "C" __global__ void reduce_sum(const float* x, float* out, unsigned int n) {
    float s = 0.0f;
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) s += x[i];
    s = block_sum(s);
    if (threadIdx.x == 0) atomicAdd(out, s);
}
