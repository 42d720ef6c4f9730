// The throughput ceiling for benchmarks: a plain single-thread loop of mj_step.
#ifndef METAROBOT_BENCH_H_
#define METAROBOT_BENCH_H_

#include <cstdint>

#include <mujoco/mujoco.h>

namespace metarobot {

// Runs nstep calls of mj_step on a fresh mjData of m, with new N(0, 1) controls every
// frame_skip steps and a reset every frame_skip * horizon steps, as episodes would; returns the
// wall-clock seconds of the loop.
double TimeStepLoop(const mjModel* m, int64_t nstep, int frame_skip, int horizon, uint64_t seed);

}  // namespace metarobot

#endif  // METAROBOT_BENCH_H_
