// The advantage recurrences on a GPU, in one kernel launch and no device allocation (so a call
// is cheap on the host and can be captured in a CUDA graph). A block holds C consecutive
// columns (threadIdx.x, coalesced along B) times K chunks of time (threadIdx.y):
//   1. each thread composes its chunk's steps into one affine map (in shared memory);
//   2. one thread per column scans the K maps from the last chunk backwards, leaving each
//      chunk the value that follows it;
//   3. each thread replays its chunk from that value, writing the outputs.
// K = 1 (large B: the GPU is full with one thread per column) is a plain backward walk.
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
  const int64_t chunk = (in.steps + chunks - 1) / chunks;
  chunks = (in.steps + chunk - 1) / chunk;
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
