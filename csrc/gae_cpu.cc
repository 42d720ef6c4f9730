// The advantage recurrences on the CPU: threads over B, each running t = T-1 .. 0 over its
// columns, so that every row is read once in order.
#include <algorithm>
#include <thread>
#include <vector>

#include "gae.h"

namespace metarobot {
namespace {

template <typename T>
void Columns(const GaeInputs<T>& in, T* out, int64_t b0, int64_t b1) {
  const int64_t B = in.batch;
  for (int64_t t = in.steps - 1; t >= 0; --t) {
    T* row = out + t * B;
    if (t == in.steps - 1) {
      for (int64_t b = b0; b < b1; ++b) row[b] = Apply(in.Step(t, b), T(0));
    } else {
      const T* next = row + B;
      for (int64_t b = b0; b < b1; ++b) row[b] = Apply(in.Step(t, b), next[b]);
    }
  }
}

}  // namespace

template <typename T>
void GaeCpu(const GaeInputs<T>& in, T* out, int nthread) {
  const int64_t B = in.batch;
  if (in.steps <= 0 || B <= 0) return;
  if (nthread <= 0) nthread = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  // threads only pay off on large inputs; each takes whole cache lines of columns
  const int64_t work = in.steps * B;
  int64_t n = std::min<int64_t>(nthread, std::max<int64_t>(1, work / (1 << 16)));
  n = std::min<int64_t>(n, std::max<int64_t>(1, B / 16));
  if (n <= 1) {
    Columns(in, out, 0, B);
    return;
  }
  std::vector<std::thread> threads;
  const int64_t per = ((B + n - 1) / n + 15) / 16 * 16;  // whole cache lines per thread
  for (int64_t k = 1; k < n; ++k) {
    const int64_t b0 = std::min(B, k * per), b1 = std::min(B, (k + 1) * per);
    if (b0 < b1) threads.emplace_back([&in, out, b0, b1] { Columns(in, out, b0, b1); });
  }
  Columns(in, out, 0, std::min(B, per));
  for (auto& th : threads) th.join();
}

template void GaeCpu<float>(const GaeInputs<float>&, float*, int);
template void GaeCpu<double>(const GaeInputs<double>&, double*, int);

#ifndef METAROBOT_WITH_CUDA
bool CudaCompiled() { return false; }
int CudaDeviceCount() { return 0; }
template <typename T>
const char* GaeCuda(const GaeInputs<T>&, T*, void*) {
  return "metarobot was built without CUDA";
}
template const char* GaeCuda<float>(const GaeInputs<float>&, float*, void*);
template const char* GaeCuda<double>(const GaeInputs<double>&, double*, void*);
#endif

}  // namespace metarobot
