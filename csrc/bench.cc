#include "bench.h"

#include <chrono>
#include <stdexcept>
#include <vector>

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

double TimeServoLoop(const mjModel* m, const ActuatorSpec& a, int64_t nstep, int decimation,
                     int horizon, uint64_t seed, int key) {
  if (key >= m->nkey) {
    throw std::invalid_argument("keyframe " + std::to_string(key) + " is not in the model's " +
                                std::to_string(m->nkey));
  }
  const int nu = m->nu;
  const size_t n = static_cast<size_t>(nu);
  if (a.mode != kActuatorsServo || a.qpos_adr.size() != n || a.dof_adr.size() != n ||
      a.q_default.size() != n || a.action_scale.size() != n || a.kp.size() < n ||
      a.kd.size() < n || a.strength.size() < n || a.feedforward.size() < n ||
      a.effort_limit.size() < n || a.saturation_torque.size() < n ||
      a.max_velocity.size() < n) {
    throw std::invalid_argument("the servo loop needs servo settings for the model's " +
                                std::to_string(nu) + " actuators");
  }
  const int delay = a.delay_lo.empty() ? 0 : a.delay_lo[0];
  const int ncommand = (delay + decimation - 1) / decimation + 1;
  std::vector<double> commands(static_cast<size_t>(ncommand) * nu);
  mjData* d = mj_makeData(m);
  Rng rng;
  rng.Seed(seed, 0);
  const int64_t episode = static_cast<int64_t>(decimation) * horizon;
  int64_t issued = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < nstep; ++i) {
    const int64_t k = i % episode;
    if (k == 0) {
      if (key >= 0) {
        mj_resetDataKeyframe(m, d, key);  // the family's initial state, as its episodes start
      } else {
        mj_resetData(m, d);
      }
      issued = 0;
    }
    if (k % decimation == 0) {
      double* c = commands.data() + (issued % ncommand) * nu;
      for (int u = 0; u < nu; ++u) c[u] = a.q_default[u] + a.action_scale[u] * rng.Normal();
      ++issued;
    }
    const double* target = k >= delay
        ? commands.data() + (((k - delay) / decimation) % ncommand) * nu
        : a.q_default.data();
    for (int u = 0; u < nu; ++u) {
      d->qfrc_applied[a.dof_adr[u]] = ServoTorque(
          target[u], d->qpos[a.qpos_adr[u]], d->qvel[a.dof_adr[u]], a.kp[u], a.kd[u],
          a.strength[u], a.feedforward[u], a.effort_limit[u], a.saturation_torque[u],
          a.max_velocity[u]);
    }
    mj_step(m, d);
  }
  const auto stop = std::chrono::steady_clock::now();
  mj_deleteData(d);
  return std::chrono::duration<double>(stop - start).count();
}

}  // namespace metarobot
