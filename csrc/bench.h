// The throughput ceiling for benchmarks: a plain single-thread loop of mj_step.
#ifndef METAROBOT_BENCH_H_
#define METAROBOT_BENCH_H_

#include <cstdint>

#include <mujoco/mujoco.h>

#include "engine.h"

namespace metarobot {

// Runs nstep calls of mj_step on a fresh mjData of m, with new N(0, 1) controls every
// frame_skip steps and a reset every frame_skip * horizon steps, as episodes would; returns the
// wall-clock seconds of the loop.
double TimeStepLoop(const mjModel* m, int64_t nstep, int frame_skip, int horizon, uint64_t seed);

// The same loop through servo motors (simulation 0 of a, mode kActuatorsServo): new targets
// q_default + action_scale * N(0, 1) every decimation steps, reaching the motors delay_lo[0]
// physics steps later, and ServoTorque into qfrc_applied before every mj_step; returns the
// wall-clock seconds of the loop. Episodes of horizon env steps start from keyframe key (-1:
// the model's qpos0). Throws std::invalid_argument for other settings.
double TimeServoLoop(const mjModel* m, const ActuatorSpec& a, int64_t nstep, int decimation,
                     int horizon, uint64_t seed, int key = -1);

}  // namespace metarobot

#endif  // METAROBOT_BENCH_H_
