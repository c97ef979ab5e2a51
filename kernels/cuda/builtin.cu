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

// ---- The kernels a transformer's decoding needs (CPU references in
// kernels/src/transformer.rs, whose conventions these follow). ----

// out[r][c] = table[ids[r]][c]; an id that is not a whole number below
// vocab gives a row of NaN.
extern "C" __global__ void embedding(const float* table, const float* ids, float* out,
                                     unsigned int rows, unsigned int vocab, unsigned int dim) {
    const size_t n = (size_t)rows * dim;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const size_t r = i / dim, c = i % dim;
        const float id = ids[r];
        const bool whole = id >= 0.0f && floorf(id) == id && id < (float)vocab;
        out[i] = whole ? table[(size_t)id * dim + c] : __int_as_float(0x7fc00000);
    }
}

// Rotates pair (i, i + head_dim/2) of each head by pos · theta^(-2i/head_dim),
// the angle in double as the CPU reference computes it. One thread per pair.
extern "C" __global__ void rope(float* x, unsigned int rows, unsigned int heads, unsigned int head_dim,
                                unsigned int pos0, float theta) {
    const unsigned int half = head_dim / 2;
    const size_t pairs = (size_t)rows * heads * half;
    for (size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x; p < pairs; p += (size_t)gridDim.x * blockDim.x) {
        const size_t head = p / half;  // row * heads + h
        const unsigned int i = (unsigned int)(p % half);
        const size_t row = head / heads;
        const double angle = (double)(pos0 + row) * pow((double)theta, -2.0 * (double)i / (double)head_dim);
        double s, c;
        sincos(angle, &s, &c);
        float* h = x + head * head_dim;
        const double a = h[i], b = h[i + half];
        h[i] = (float)(a * c - b * s);
        h[i + half] = (float)(a * s + b * c);
    }
}

extern "C" __global__ void swiglu(const float* gate, const float* up, float* out, unsigned int n) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

// The most keys a row sees and the longest head (MAX_ATTENTION_KEYS and
// MAX_HEAD_DIM in kernels/src/transformer.rs; the host checks both).
#define SW_MAX_KEYS 8192
#define SW_MAX_HEAD_DIM 256

// Causal attention, one block per (query row, head): the row's scores in
// shared memory, softmax by block reductions, then each thread sums the
// value columns it owns.
extern "C" __global__ void attention(const float* q, const float* k, const float* v, float* out,
                                     unsigned int rows, unsigned int kv_len, unsigned int heads,
                                     unsigned int kv_heads, unsigned int head_dim, unsigned int pos0,
                                     float scale) {
    __shared__ float scores[SW_MAX_KEYS];
    __shared__ float query[SW_MAX_HEAD_DIM];
    const unsigned int r = blockIdx.x / heads, h = blockIdx.x % heads;
    if (r >= rows) return;
    const unsigned int keys = pos0 + r + 1;
    const unsigned int kv_h = h / (heads / kv_heads);
    const size_t q_width = (size_t)heads * head_dim, kv_width = (size_t)kv_heads * head_dim;
    const float* qr = q + r * q_width + (size_t)h * head_dim;
    for (unsigned int d = threadIdx.x; d < head_dim; d += blockDim.x) query[d] = qr[d];
    __syncthreads();
    float m = SW_NEG_INF;
    for (unsigned int j = threadIdx.x; j < keys; j += blockDim.x) {
        const float* kj = k + j * kv_width + (size_t)kv_h * head_dim;
        float dot = 0.0f;
        for (unsigned int d = 0; d < head_dim; ++d) dot = fmaf(query[d], kj[d], dot);
        dot *= scale;
        scores[j] = dot;
        m = fmaxf(m, dot);
    }
    m = block_max(m);
    float s = 0.0f;
    for (unsigned int j = threadIdx.x; j < keys; j += blockDim.x) {
        const float e = expf(scores[j] - m);
        scores[j] = e;
        s += e;
    }
    s = block_sum(s);
    const float inv = 1.0f / s;
    float* o = out + r * q_width + (size_t)h * head_dim;
    for (unsigned int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float acc = 0.0f;
        for (unsigned int j = 0; j < keys; ++j) acc = fmaf(scores[j], v[j * kv_width + (size_t)kv_h * head_dim + d], acc);
        o[d] = acc * inv;
    }
}

extern "C" __global__ void copy(const float* src, float* dst, unsigned int n,
                                unsigned int src_offset, unsigned int dst_offset) {
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        dst[(size_t)dst_offset + i] = src[(size_t)src_offset + i];
    }
}
