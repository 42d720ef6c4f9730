#include "bench.h"

#include <chrono>

#include "rng.h"

namespace metarobot {

double TimeStepLoop(const mjModel* m, int64_t nstep, int frame_skip, int horizon,
                    uint64_t seed) {
  mjData* d = mj_makeData(m);
  Rng rng;
  rng.Seed(seed, 0);
  const int64_t episode = static_cast<int64_t>(frame_skip) * horizon;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < nstep; ++i) {
    if (i % episode == 0) mj_resetData(m, d);
    if (i % frame_skip == 0) {
      for (int u = 0; u < m->nu; ++u) d->ctrl[u] = rng.Normal();
    }
    mj_step(m, d);
  }
  const auto stop = std::chrono::steady_clock::now();
  mj_deleteData(d);
  return std::chrono::duration<double>(stop - start).count();
}

}  // namespace metarobot
