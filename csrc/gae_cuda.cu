// The advantage recurrences on a GPU. Large B: one thread per column walks t = T-1 .. 0.
// Small B with long T: time is split into chunks; each chunk's steps compose into one affine map
// (pass 1), a short scan over the chunks gives each chunk the value that follows it (pass 2),
// and each chunk is replayed from that value (pass 3). Both read rows coalesced along B.
#include <cuda_runtime.h>

#include <algorithm>

#include "gae.h"

namespace metarobot {
namespace {

template <typename T>
__global__ void ColumnKernel(GaeInputs<T> in, T* out) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= in.batch) return;
  T x = T(0);
  for (int64_t t = in.steps - 1; t >= 0; --t) {
    x = Apply(in.Step(t, b), x);
    out[t * in.batch + b] = x;
  }
}

// Pass 1: the composed map of chunk k of column b, into maps[k * B + b].
template <typename T>
__global__ void ChunkMapKernel(GaeInputs<T> in, int64_t chunk, Affine<T>* maps) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t k = blockIdx.y;
  if (b >= in.batch) return;
  const int64_t t0 = k * chunk, t1 = min(in.steps, t0 + chunk);
  Affine<T> f{T(1), T(0)};
  for (int64_t t = t1 - 1; t >= t0; --t) f = Compose(in.Step(t, b), f);
  maps[k * in.batch + b] = f;
}

// Pass 2: per column, the value that follows each chunk, from the last chunk backwards, in
// place of the maps' d (c is no longer needed).
template <typename T>
__global__ void ChunkCarryKernel(int64_t nchunk, int64_t batch, Affine<T>* maps) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= batch) return;
  T x = T(0);
  for (int64_t k = nchunk - 1; k >= 0; --k) {
    const Affine<T> f = maps[k * batch + b];
    maps[k * batch + b].d = x;
    x = Apply(f, x);
  }
}

// Pass 3: replay each chunk from the value that follows it.
template <typename T>
__global__ void ChunkReplayKernel(GaeInputs<T> in, int64_t chunk, const Affine<T>* maps,
                                  T* out) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t k = blockIdx.y;
  if (b >= in.batch) return;
  const int64_t t0 = k * chunk, t1 = min(in.steps, t0 + chunk);
  T x = maps[k * in.batch + b].d;
  for (int64_t t = t1 - 1; t >= t0; --t) {
    x = Apply(in.Step(t, b), x);
    out[t * in.batch + b] = x;
  }
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
  int device = 0, sms = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  const int threads = 256;
  const int64_t want = static_cast<int64_t>(std::max(sms, 1)) * 2048;  // resident threads
  const unsigned bx = static_cast<unsigned>((in.batch + threads - 1) / threads);
  // chunks of time until the GPU is full, each long enough to amortise its extra pass
  int64_t nchunk = std::min<int64_t>(want / in.batch, in.steps / 8);
  nchunk = std::min<int64_t>(nchunk, 65535);
  if (nchunk <= 1) {
    ColumnKernel<T><<<bx, threads, 0, stream>>>(in, out);
  } else {
    const int64_t chunk = (in.steps + nchunk - 1) / nchunk;
    nchunk = (in.steps + chunk - 1) / chunk;
    Affine<T>* maps = nullptr;
    cudaError_t err = cudaMallocAsync(reinterpret_cast<void**>(&maps),
                                      sizeof(Affine<T>) * nchunk * in.batch, stream);
    if (err != cudaSuccess) return cudaGetErrorString(err);
    const dim3 grid(bx, static_cast<unsigned>(nchunk));
    ChunkMapKernel<T><<<grid, threads, 0, stream>>>(in, chunk, maps);
    ChunkCarryKernel<T><<<bx, threads, 0, stream>>>(nchunk, in.batch, maps);
    ChunkReplayKernel<T><<<grid, threads, 0, stream>>>(in, chunk, maps, out);
    cudaFreeAsync(maps, stream);
  }
  const cudaError_t err = cudaGetLastError();
  return err == cudaSuccess ? "" : cudaGetErrorString(err);
}

template const char* GaeCuda<float>(const GaeInputs<float>&, float*, void*);
template const char* GaeCuda<double>(const GaeInputs<double>&, double*, void*);

}  // namespace metarobot
