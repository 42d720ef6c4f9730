// The advantage recurrences on a GPU, in one kernel launch and no device allocation (so a call
// is cheap on the host and can be captured in a CUDA graph). A block holds C consecutive
// columns (threadIdx.x, coalesced along B) times K chunks of time (threadIdx.y):
//   1. each thread composes its chunk's steps into one affine map (in shared memory);
//   2. one thread per column scans the K maps from the last chunk backwards, leaving each
//      chunk the value that follows it;
//   3. each thread replays its chunk from that value, writing the outputs.
// K = 1 (large B: the GPU is full with one thread per column) is a plain backward walk. Chunks
// of at most 16 steps keep their steps in registers between passes 1 and 3
// (CachedScanKernel), so that the inputs are read once, as in a plain walk; longer chunks read
// them twice (ScanKernel).
#include <cuda_runtime.h>

#include <algorithm>

#include "gae.h"

namespace metarobot {
namespace {

constexpr int kColumns = 32;       // C: a warp's width of consecutive columns
constexpr int kMaxThreads = 1024;  // C x K

template <typename T>
__global__ void ScanKernel(GaeInputs<T> in, int64_t chunk, T* out) {
  extern __shared__ unsigned char shared_bytes[];
  Affine<T>* maps = reinterpret_cast<Affine<T>*>(shared_bytes);  // [K][C]
  const int c = threadIdx.x, k = threadIdx.y, K = blockDim.y;
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + c;
  const bool live = b < in.batch;
  const int64_t t0 = k * chunk, t1 = min(in.steps, t0 + chunk);
  T x = T(0);
  if (K > 1) {
    Affine<T> f{T(1), T(0)};
    if (live) {
      for (int64_t t = t1 - 1; t >= t0; --t) f = Compose(in.Step(t, b), f);
    }
    maps[k * blockDim.x + c] = f;
    __syncthreads();
    if (k == 0) {
      T after = T(0);
      for (int j = K - 1; j >= 0; --j) {
        const Affine<T> g = maps[j * blockDim.x + c];
        maps[j * blockDim.x + c].d = after;
        after = Apply(g, after);
      }
    }
    __syncthreads();
    x = maps[k * blockDim.x + c].d;
  }
  if (!live) return;
  for (int64_t t = t1 - 1; t >= t0; --t) {
    x = Apply(in.Step(t, b), x);
    out[t * in.batch + b] = x;
  }
}

// at most 8192 / L threads a block: the L steps' registers of a block fit the register file
template <typename T, int L>
__global__ void __launch_bounds__(8192 / L) CachedScanKernel(GaeInputs<T> in, T* out) {
  extern __shared__ unsigned char shared_bytes[];
  Affine<T>* maps = reinterpret_cast<Affine<T>*>(shared_bytes);  // [K][C]
  const int c = threadIdx.x, k = threadIdx.y;
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + c;
  const bool live = b < in.batch;
  const int64_t t0 = static_cast<int64_t>(k) * L;
  // steps past the end (and dead columns) are the identity map, which composes exactly
  Affine<T> steps[L];
  Affine<T> f{T(1), T(0)};
#pragma unroll
  for (int i = L - 1; i >= 0; --i) {
    const int64_t t = t0 + i;
    steps[i] = (live && t < in.steps) ? in.Step(t, b) : Affine<T>{T(1), T(0)};
    f = Compose(steps[i], f);
  }
  maps[k * blockDim.x + c] = f;
  __syncthreads();
  if (k == 0) {
    T after = T(0);
    for (int j = static_cast<int>(blockDim.y) - 1; j >= 0; --j) {
      const Affine<T> g = maps[j * blockDim.x + c];
      maps[j * blockDim.x + c].d = after;
      after = Apply(g, after);
    }
  }
  __syncthreads();
  if (!live) return;
  T x = maps[k * blockDim.x + c].d;
#pragma unroll
  for (int i = L - 1; i >= 0; --i) {
    const int64_t t = t0 + i;
    if (t < in.steps) {
      x = Apply(steps[i], x);
      out[t * in.batch + b] = x;
    }
  }
}

// Resident threads of the device, queried once per device (an attribute query per call costs
// host time).
int64_t ResidentThreads() {
  static int cached[64] = {};
  int device = 0;
  cudaGetDevice(&device);
  if (device < 0 || device >= 64) return 2048 * 100;
  if (cached[device] == 0) {
    int sms = 0, per_sm = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxThreadsPerMultiProcessor, device);
    cached[device] = std::max(sms, 1) * std::max(per_sm, 1024);
  }
  return cached[device];
}

}  // namespace

bool CudaCompiled() { return true; }

int CudaDeviceCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return n;
}

template <typename T>
const char* GaeCuda(const GaeInputs<T>& in, T* out, void* stream_ptr) {
  if (in.steps <= 0 || in.batch <= 0) return "";
  auto stream = static_cast<cudaStream_t>(stream_ptr);
  // chunks of time until the GPU is full, each at least 8 steps to amortise passes 1 and 2
  int64_t chunks = std::min<int64_t>(ResidentThreads() / in.batch, in.steps / 8);
  chunks = std::max<int64_t>(chunks, 1);
  // a warp's width of columns, fewer (down to 8, a 32-byte sector of floats) where more
  // chunks are wanted than a block of 32 columns holds
  int columns = kColumns;
  while (columns > 8 && chunks > kMaxThreads / columns) columns /= 2;
  columns = static_cast<int>(std::min<int64_t>(columns, in.batch));
  chunks = std::min<int64_t>(chunks, kMaxThreads / columns);
  int64_t chunk = (in.steps + chunks - 1) / chunks;
  chunks = (in.steps + chunk - 1) / chunk;
  if (chunks > 1) {
    // chunks of a register-sized power of two (fewer, longer chunks need no more threads),
    // so that inputs are read once. Up to 16 steps: on an H200, 32-step chunks in registers
    // (130 registers a thread) ran slower than two reads of 64-step chunks (1.48 against
    // 1.72 TB/s at 256 x 65536), 16-step ones faster (52.9 against 65.7 us at 1000 x 4096).
    constexpr int kMaxCached = 16;
    int cached = 8;
    while (cached < chunk && cached < kMaxCached) cached *= 2;
    if (chunk <= cached) {
      const int64_t k = (in.steps + cached - 1) / cached;
      const int64_t most = 8192 / cached;  // CachedScanKernel's launch bound
      int c = columns;
      while (c > 1 && c * k > most) c /= 2;
      if (c * k <= most && k > 1) {
        const dim3 block(static_cast<unsigned>(c), static_cast<unsigned>(k));
        const unsigned grid = static_cast<unsigned>((in.batch + c - 1) / c);
        const size_t shared = sizeof(Affine<T>) * c * k;
        if (cached == 8) {
          CachedScanKernel<T, 8><<<grid, block, shared, stream>>>(in, out);
        } else {
          CachedScanKernel<T, kMaxCached><<<grid, block, shared, stream>>>(in, out);
        }
        const cudaError_t err = cudaGetLastError();
        return err == cudaSuccess ? "" : cudaGetErrorString(err);
      }
    }
  }
  const dim3 block(static_cast<unsigned>(columns), static_cast<unsigned>(chunks));
  const unsigned grid = static_cast<unsigned>((in.batch + columns - 1) / columns);
  const size_t shared = chunks > 1 ? sizeof(Affine<T>) * columns * chunks : 0;
  ScanKernel<T><<<grid, block, shared, stream>>>(in, chunk, out);
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? "" : cudaGetErrorString(err);
}

template const char* GaeCuda<float>(const GaeInputs<float>&, float*, void*);
template const char* GaeCuda<double>(const GaeInputs<double>&, double*, void*);

}  // namespace metarobot
