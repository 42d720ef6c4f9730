// The advantage recurrences on the CPU: threads over B, each running t = T-1 .. 0 over its
// columns, so that every row is read once in order.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <unistd.h>

#include "gae.h"

namespace metarobot {
namespace {

// General strides: one element at a time.
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

// One row t of contiguous columns; next is row t + 1 of the output, or null for the last row.
template <typename T, bool kGae, bool kLast>
__attribute__((always_inline)) inline void ContiguousRow(const GaeInputs<T>& in, int64_t t, const T* __restrict next,
                   T* __restrict row, int64_t b0, int64_t b1) {
  const T gamma = in.gamma, lam = in.lam;
  const T* __restrict r = in.reward + t * in.stride[0][0];
  const uint8_t* __restrict d = in.done + t * in.stride[3][0];
  if constexpr (kGae) {
    const T* __restrict v = in.value + t * in.stride[1][0];
    const T* __restrict nv = in.next_value + t * in.stride[2][0];
    const uint8_t* __restrict te = in.terminated + t * in.stride[4][0];
    for (int64_t b = b0; b < b1; ++b) {
      const T follow = kLast ? T(0) : next[b];
      row[b] = Apply(GaeStep(r[b], v[b], nv[b], d[b], te[b], gamma, lam), follow);
    }
  } else {
    for (int64_t b = b0; b < b1; ++b) {
      const T follow = kLast ? T(0) : next[b];
      row[b] = Apply(ReturnStep(r[b], d[b], gamma), follow);
    }
  }
}

// Rows contiguous along B (the usual case): unit-stride rows, which the compiler turns into
// vector code, the branches of the recurrence into blends.
template <typename T, bool kGae>
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#endif
void ContiguousColumns(const GaeInputs<T>& in, T* out, int64_t b0, int64_t b1) {
  const int64_t B = in.batch, last = in.steps - 1;
  ContiguousRow<T, kGae, true>(in, last, nullptr, out + last * B, b0, b1);
  for (int64_t t = last - 1; t >= 0; --t) {
    ContiguousRow<T, kGae, false>(in, t, out + (t + 1) * B, out + t * B, b0, b1);
  }
}

template <typename T>
void AnyColumns(const GaeInputs<T>& in, T* out, int64_t b0, int64_t b1) {
  const bool gae = in.value != nullptr;
  bool unit = in.stride[0][1] == 1 && in.stride[3][1] == 1;
  if (gae) unit = unit && in.stride[1][1] == 1 && in.stride[2][1] == 1 && in.stride[4][1] == 1;
  if (!unit) {
    Columns(in, out, b0, b1);
  } else if (gae) {
    ContiguousColumns<T, true>(in, out, b0, b1);
  } else {
    ContiguousColumns<T, false>(in, out, b0, b1);
  }
}


// Workers that stay alive between calls: starting threads costs more than a mid-sized input
// takes. A call hands each worker a part and runs part 0 itself; workers spin briefly for the
// next call before they sleep.
class Pool {
 public:
  // The process's pool; a forked child, which has none of its parent's threads, makes its own.
  // Never destroyed: its idle workers end with the process.
  static Pool& Get() {
    static std::mutex mutex;
    static Pool* pool = nullptr;
    static pid_t owner = 0;
    std::lock_guard<std::mutex> lock(mutex);
    if (pool == nullptr || owner != getpid()) {
      pool = new Pool(std::max(1u, std::thread::hardware_concurrency()) - 1);
      owner = getpid();
    }
    return *pool;
  }

  int size() const { return nworkers_ + 1; }

  // Runs part(k) for k in [0, n), n <= size(); one call at a time.
  void Run(int n, const std::function<void(int)>& part) {
    std::lock_guard<std::mutex> call(call_mutex_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      part_ = &part;
      nparts_ = n;
      pending_.store(n - 1);
      generation_.fetch_add(1);
    }
    wake_.notify_all();
    part(0);
    while (pending_.load() != 0) std::this_thread::yield();
  }

 private:
  explicit Pool(unsigned nworkers) {
    for (unsigned w = 0; w < nworkers; ++w) {
      std::thread([this, w] { Work(static_cast<int>(w) + 1); }).detach();
      ++nworkers_;
    }
  }

  void Work(int k) {
    uint64_t seen = 0;
    while (true) {
      for (int spin = 0; spin < 1000 && generation_.load() == seen; ++spin) {
        std::this_thread::yield();
      }
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return generation_.load() != seen; });
      seen = generation_.load();
      const std::function<void(int)>* part = part_;
      const bool mine = k < nparts_;
      lock.unlock();
      if (mine) {
        (*part)(k);
        pending_.fetch_sub(1);
      }
    }
  }

  int nworkers_ = 0;
  std::mutex call_mutex_, mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  const std::function<void(int)>* part_ = nullptr;
  int nparts_ = 0;
};

}  // namespace

template <typename T>
void GaeCpu(const GaeInputs<T>& in, T* out, int nthread) {
  const int64_t B = in.batch;
  if (in.steps <= 0 || B <= 0) return;
  Pool& pool = Pool::Get();
  if (nthread <= 0) nthread = pool.size();
  // parts of whole cache lines of columns, and only for inputs large enough to pay for them
  const int64_t work = in.steps * B;
  int64_t n = std::min<int64_t>({nthread, pool.size(), std::max<int64_t>(1, work / (1 << 15)),
                                 std::max<int64_t>(1, B / 64)});
  if (n <= 1) {
    AnyColumns(in, out, 0, B);
    return;
  }
  const int64_t per = ((B + n - 1) / n + 15) / 16 * 16;
  pool.Run(static_cast<int>(n), [&](int k) {
    const int64_t b0 = std::min(B, k * per), b1 = std::min(B, (k + 1) * per);
    if (b0 < b1) AnyColumns(in, out, b0, b1);
  });
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
