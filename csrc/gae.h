// Advantage (GAE) and discounted-return recurrences, written once for the CPU and CUDA code.
//
// Both are backward affine recurrences x_t = d_t + c_t * x_{t+1} with x_T = 0:
//   GAE (TorchRL's convention): delta_t = r_t + gamma * V(s_{t+1}) * (1 - terminated_t) - V(s_t),
//                               c_t = gamma * lam * (1 - done_t)
//   returns:                    d_t = r_t, c_t = gamma * (1 - done_t)
// done ends the lambda recursion at any episode boundary; terminated stops bootstrapping; a
// truncated step (done, not terminated) bootstraps from next_value. The maps (c, d) compose
// associatively, so time can be split into chunks that are combined afterwards.
#ifndef METAROBOT_GAE_H_
#define METAROBOT_GAE_H_

#include <cstdint>

#if defined(__CUDACC__)
#define METAROBOT_HD __host__ __device__ __forceinline__
#else
#define METAROBOT_HD inline
#endif

namespace metarobot {

// The affine map x -> d + c * x of one time step.
template <typename T>
struct Affine {
  T c;
  T d;
};

// Flags are 0 or 1 and enter as factors, as in TorchRL, so that vector code needs no branches.
template <typename T>
METAROBOT_HD Affine<T> GaeStep(T reward, T value, T next_value, uint8_t done, uint8_t terminated,
                               T gamma, T lam) {
  const T not_done = T(1) - T(done), not_terminated = T(1) - T(terminated);
  return {gamma * lam * not_done, reward + gamma * next_value * not_terminated - value};
}

template <typename T>
METAROBOT_HD Affine<T> ReturnStep(T reward, uint8_t done, T gamma) {
  return {gamma * (T(1) - T(done)), reward};
}

template <typename T>
METAROBOT_HD T Apply(const Affine<T>& f, T x) {
  return f.d + f.c * x;
}

// earlier after later: x -> earlier(later(x)), for the chunk that spans both steps.
template <typename T>
METAROBOT_HD Affine<T> Compose(const Affine<T>& earlier, const Affine<T>& later) {
  return {earlier.c * later.c, earlier.d + earlier.c * later.d};
}

// Strided (T, B) inputs; strides in elements, any sign; done and terminated hold 0 or 1. next_value, done, terminated are
// unused for discounted returns (value and next_value null).
template <typename T>
struct GaeInputs {
  int64_t steps = 0;  // T
  int64_t batch = 0;  // B
  const T* reward = nullptr;
  const T* value = nullptr;
  const T* next_value = nullptr;
  const uint8_t* done = nullptr;
  const uint8_t* terminated = nullptr;
  int64_t stride[5][2] = {};  // (t, b) strides of reward, value, next_value, done, terminated
  T gamma = 0;
  T lam = 0;

  METAROBOT_HD Affine<T> Step(int64_t t, int64_t b) const {
    const T r = reward[t * stride[0][0] + b * stride[0][1]];
    const uint8_t dn = done[t * stride[3][0] + b * stride[3][1]];
    if (value == nullptr) return ReturnStep(r, dn, gamma);
    return GaeStep(r, value[t * stride[1][0] + b * stride[1][1]],
                   next_value[t * stride[2][0] + b * stride[2][1]], dn,
                   terminated[t * stride[4][0] + b * stride[4][1]], gamma, lam);
  }
};

// CPU: out (T, B) contiguous; threads over B; nthread <= 0: one per CPU.
template <typename T>
void GaeCpu(const GaeInputs<T>& in, T* out, int nthread);

// CUDA (when compiled with it): out (T, B) contiguous on the device, launched on stream.
// Returns "" or an error message.
template <typename T>
const char* GaeCuda(const GaeInputs<T>& in, T* out, void* stream);

bool CudaCompiled();
// Number of CUDA devices the runtime sees (0 without CUDA or without a GPU).
int CudaDeviceCount();

}  // namespace metarobot

#endif  // METAROBOT_GAE_H_
