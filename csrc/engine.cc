#include "engine.h"

#include <mujoco/mjbatch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace metarobot {
namespace {

// Warnings MuJoCo raises when it finds a diverged state (and resets the data).
int DivergenceWarnings(const mjData* d) {
  return d->warning[mjWARN_BADQPOS].number + d->warning[mjWARN_BADQVEL].number +
         d->warning[mjWARN_BADQACC].number;
}

bool FiniteState(const mjModel* m, const mjData* d) {
  for (int i = 0; i < m->nq; ++i) {
    if (!std::isfinite(d->qpos[i])) return false;
  }
  for (int i = 0; i < m->nv; ++i) {
    if (!std::isfinite(d->qvel[i])) return false;
  }
  return true;
}

// Scratch buffers of the calling thread; no allocation inside the per-step loop.
std::vector<float>& Scratch(size_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf;
}

std::string Str(int x) { return std::to_string(x); }

// Euclidean distance between the first n coordinates of a and b.
double Distance(const double* a, const double* b, int n) {
  double sq = 0;
  for (int i = 0; i < n; ++i) sq += (a[i] - b[i]) * (a[i] - b[i]);
  return std::sqrt(sq);
}

// Angular (0:3) then linear (3:6) velocity of body b at its frame's origin, in its own frame
// (mjOBJ_XBODY: the body's frame, not its inertial frame, which mjOBJ_BODY would give).
void LocalVelocity(const mjModel* m, const mjData* d, int b, double* out) {
  mj_objectVelocity(m, d, mjOBJ_XBODY, b, out, 1);
}

// Norm of the net contact (external constraint) force on body b, N (needs cfrc_ext).
double ContactForce(const mjData* d, int b) {
  const double* f = d->cfrc_ext + 6 * b + 3;
  return std::sqrt(f[0] * f[0] + f[1] * f[1] + f[2] * f[2]);
}

}  // namespace

double TerrainHeight(const mjModel* m, const mjData* d, int geom, double x, double y) {
  const double* pos = d->geom_xpos + 3 * geom;
  const double top = pos[2] + m->hfield_size[4 * m->geom_dataid[geom] + 2] + 1.0;
  const mjtNum pnt[3] = {x, y, top};
  const mjtNum down[3] = {0, 0, -1};
  const double dist = mj_rayHfield(m, d, geom, pnt, down, nullptr);
  return dist < 0 ? pos[2] : top - dist;
}

int ObsTermSize(const ObsTerm& term, const mjModel* m) {
  switch (term.kind) {
    case kObsCfrcExt:
      return 6 * m->nbody;
    case kObsBodyXmat:
      return 9;
    case kObsSubtreeCom:
    case kObsBodyXpos:
    case kObsProjectedGravity:
    case kObsBodyAngVel:
      return 3;
    case kObsLastAction:
      return m->nu;
    default:
      return term.size;
  }
}

BatchEngine::BatchEngine(const std::vector<const mjModel*>& models, const FamilySpec& spec,
                         const std::vector<double>& params, uint64_t seed, int nthread,
                         bool autoreset, uint64_t first_stream)
    : spec_(spec), models_(models), params_(params), autoreset_(autoreset),
      first_stream_(first_stream) {
  nsim_ = static_cast<int>(models.size());
  if (nsim_ <= 0) throw std::invalid_argument("a batch needs at least one simulation, got 0");
  for (int i = 0; i < nsim_; ++i) {
    if (!models[i]) throw std::invalid_argument("model of simulation " + Str(i) + " is null");
  }
  const mjModel* m0 = models[0];
  for (int i = 1; i < nsim_; ++i) {
    const mjModel* m = models[i];
    if (m->nq != m0->nq || m->nv != m0->nv || m->nu != m0->nu || m->na != m0->na ||
        m->nbody != m0->nbody || m->ngeom != m0->ngeom) {
      throw std::invalid_argument("model of simulation " + Str(i) +
                                  " has other sizes than simulation 0's");
    }
  }
  if (spec_.frame_skip < 1) {
    throw std::invalid_argument("frame_skip should be >= 1, got " + Str(spec_.frame_skip));
  }
  if (spec_.horizon < 1) {
    throw std::invalid_argument("horizon should be >= 1, got " + Str(spec_.horizon));
  }
  if (spec_.nparam < 0 ||
      params_.size() != static_cast<size_t>(nsim_) * static_cast<size_t>(spec_.nparam)) {
    throw std::invalid_argument("params should have nsim x nparam = " +
                                Str(nsim_ * spec_.nparam) + " entries, got " +
                                std::to_string(params_.size()));
  }
  nq_ = m0->nq;
  nv_ = m0->nv;
  act_dim_ = m0->nu;
  command_dim_ = static_cast<int>(spec_.command_lo.size());
  if (spec_.command_hi.size() != spec_.command_lo.size()) {
    throw std::invalid_argument("commands: " + Str(command_dim_) + " lows and " +
                                Str(static_cast<int>(spec_.command_hi.size())) + " highs");
  }
  for (int i = 0; i < command_dim_; ++i) {
    if (!std::isfinite(spec_.command_lo[i]) || !std::isfinite(spec_.command_hi[i]) ||
        spec_.command_lo[i] > spec_.command_hi[i]) {
      throw std::invalid_argument("commands: range " + Str(i) + " should be finite with low <= "
                                  "high, got [" + std::to_string(spec_.command_lo[i]) + ", " +
                                  std::to_string(spec_.command_hi[i]) + "]");
    }
  }
  if (spec_.command_resample < 0) {
    throw std::invalid_argument("commands: resample should be >= 0 env steps, got " +
                                Str(spec_.command_resample));
  }
  auto body_ok = [&](int b) { return b >= 0 && b < m0->nbody; };
  auto check_hfield = [&](int g, const char* what) {
    if (g < 0 || g >= m0->ngeom || m0->geom_type[g] != mjGEOM_HFIELD) {
      throw std::invalid_argument(std::string(what) + ": geom id " + Str(g) +
                                  " is not a heightfield geom of the model");
    }
  };
  obs_dim_ = 0;
  int max_obs_delay = 0;
  for (const ObsTerm& t : spec_.obs) {
    if (!(t.noise >= 0) || !std::isfinite(t.noise)) {
      throw std::invalid_argument("observation noise should be a finite std >= 0, got " +
                                  std::to_string(t.noise));
    }
    if (!std::isfinite(t.scale)) {
      throw std::invalid_argument("observation scale should be finite, got " +
                                  std::to_string(t.scale));
    }
    for (double o : t.offset) {
      if (!std::isfinite(o)) throw std::invalid_argument("observation offsets should be finite");
    }
    if (t.delay < 0 || (t.delay > 0 && t.kind != kObsQpos && t.kind != kObsQvel)) {
      throw std::invalid_argument("observation delay should be >= 0 physics steps, and only "
                                  "joint positions and velocities are delayed; got delay " +
                                  Str(t.delay) + " on a term of kind " + Str(t.kind));
    }
    max_obs_delay = std::max(max_obs_delay, t.delay);
    switch (t.kind) {
      case kObsQpos:
      case kObsQvel: {
        const int n = t.kind == kObsQpos ? nq_ : nv_;
        if (t.start < 0 || t.size < 0 || t.start + t.size > n) {
          throw std::invalid_argument("observation slice [" + Str(t.start) + ", " +
                                      Str(t.start + t.size) + ") is outside " +
                                      (t.kind == kObsQpos ? "qpos" : "qvel") + " of size " +
                                      Str(n));
        }
        break;
      }
      case kObsTaskParam:
        if (t.start < 0 || t.size < 0 || t.start + t.size > spec_.nparam) {
          throw std::invalid_argument("observation of task parameters [" + Str(t.start) + ", " +
                                      Str(t.start + t.size) + ") is outside the " +
                                      Str(spec_.nparam) + " parameters");
        }
        break;
      case kObsCfrcExt:
        need_acc_ = true;
        break;
      case kObsZeros:
        if (t.size < 0) throw std::invalid_argument("observation of zeros has size < 0");
        break;
      case kObsHeightScan:
        check_hfield(t.geom, "height scan");
        if (!body_ok(t.id)) {
          throw std::invalid_argument("height scan body id " + Str(t.id) + " is not in [0, " +
                                      Str(m0->nbody) + ")");
        }
        if (t.columns < 1 || t.size < 1 || t.size % t.columns != 0 || !(t.lo > 0)) {
          throw std::invalid_argument("height scan of " + Str(t.size) + " points in " +
                                      Str(t.columns) + " columns, spacing " +
                                      std::to_string(t.lo) + ": expected size a multiple of "
                                      "columns >= 1 and spacing > 0");
        }
        need_posvel_ = true;
        break;
      case kObsBodyXmat:
      case kObsSubtreeCom:
      case kObsBodyXpos:
      case kObsProjectedGravity:
      case kObsBodyAngVel:
        if (!body_ok(t.id)) {
          throw std::invalid_argument("observation body id " + Str(t.id) + " is not in [0, " +
                                      Str(m0->nbody) + ")");
        }
        need_posvel_ = true;
        break;
      case kObsCommand:
        if (t.start < 0 || t.size < 0 ||
            t.start + t.size > static_cast<int>(spec_.command_lo.size())) {
          throw std::invalid_argument("observation of commands [" + Str(t.start) + ", " +
                                      Str(t.start + t.size) + ") is outside the family's " +
                                      Str(static_cast<int>(spec_.command_lo.size())) +
                                      " commands");
        }
        break;
      case kObsLastAction:
        break;
      default:
        throw std::invalid_argument("unknown observation term kind " + Str(t.kind));
    }
    if (!t.offset.empty() && static_cast<int>(t.offset.size()) != ObsTermSize(t, m0)) {
      throw std::invalid_argument("observation offsets: " + Str(static_cast<int>(t.offset.size())) +
                                  " given for a term of " + Str(ObsTermSize(t, m0)) +
                                  " elements");
    }
    obs_dim_ += ObsTermSize(t, m0);
  }
  std::vector<RewardTerm> reward_like = spec_.reward;
  reward_like.insert(reward_like.end(), spec_.metrics.begin(), spec_.metrics.end());
  if (spec_.has_success) {
    if (spec_.success_term.kind != kRewardGoalDistance &&
        spec_.success_term.kind != kRewardBodyDistance) {
      throw std::invalid_argument("the success condition should measure a goal or body distance");
    }
    reward_like.push_back(spec_.success_term);
  }
  for (const RewardTerm& t : reward_like) {
    switch (t.kind) {
      case kRewardConstant:
        break;
      case kRewardControlCost:
        if (!(t.scale > 0)) throw std::invalid_argument("control cost scale should be > 0");
        break;
      case kRewardContactCost:
        need_acc_ = true;
        break;
      case kRewardQposRate:
        if (t.axis < 0 || t.axis >= nq_) {
          throw std::invalid_argument("reward qpos index " + Str(t.axis) + " is not in [0, " +
                                      Str(nq_) + ")");
        }
        break;
      case kRewardTrackLinVel:
      case kRewardTrackYawRate:
      case kRewardBodyVelSquared:
      case kRewardTrackLinVelError:
        if (!body_ok(t.body)) {
          throw std::invalid_argument("reward body id " + Str(t.body) + " is not in [0, " +
                                      Str(m0->nbody) + ")");
        }
        if (t.kind != kRewardBodyVelSquared && command_dim_ < 3) {
          throw std::invalid_argument("velocity tracking rewards read the commands (vx, vy, yaw "
                                      "rate): the family has " + Str(command_dim_) + " commands");
        }
        if ((t.kind == kRewardTrackLinVel || t.kind == kRewardTrackYawRate) && !(t.scale > 0)) {
          throw std::invalid_argument("velocity tracking: sigma (scale) should be > 0");
        }
        need_posvel_ = true;
        break;
      case kRewardTorqueCost:
      case kRewardActionRate:
        break;
      case kRewardJointLimitCost:
        if (!(t.scale > 0 && t.scale <= 1)) {
          throw std::invalid_argument("joint limit cost: the soft range (scale) should be in "
                                      "(0, 1], got " + Str(t.scale));
        }
        break;
      case kRewardJointAccCost:
        if (t.axis < 0 || t.axis > nv_) {
          throw std::invalid_argument("joint acceleration cost: first dof " + Str(t.axis) +
                                      " is not in [0, " + Str(nv_) + "]");
        }
        break;
      case kRewardFeetAirTime:
        if (feet_term_ >= 0 || &t - reward_like.data() >= static_cast<long>(spec_.reward.size())) {
          throw std::invalid_argument("a family has at most one air-time term, among its rewards");
        }
        if (command_dim_ < 2) {
          throw std::invalid_argument("feet air time reads the velocity commands: the family "
                                      "has " + Str(command_dim_) + " commands");
        }
        feet_term_ = static_cast<int>(&t - reward_like.data());
        [[fallthrough]];
      case kRewardBodyContacts:
        if (t.bodies.empty()) throw std::invalid_argument("contact terms need bodies, got none");
        for (int b : t.bodies) {
          if (!body_ok(b)) {
            throw std::invalid_argument("reward body id " + Str(b) + " is not in [0, " +
                                        Str(m0->nbody) + ")");
          }
        }
        need_acc_ = true;
        break;
      case kRewardBodyDistance:
        if (!body_ok(t.body) || !body_ok(t.other)) {
          throw std::invalid_argument("reward body ids " + Str(t.body) + ", " + Str(t.other) +
                                      " are not both in [0, " + Str(m0->nbody) + ")");
        }
        need_posvel_ = true;
        break;
      case kRewardForwardVelocity:
      case kRewardVelocityError:
      case kRewardGoalDistance: {
        if (!body_ok(t.body)) {
          throw std::invalid_argument("reward body id " + Str(t.body) + " is not in [0, " +
                                      Str(m0->nbody) + ")");
        }
        const int ndim = t.kind == kRewardGoalDistance ? t.axis : 1;
        if (t.kind == kRewardGoalDistance ? (ndim < 1 || ndim > 3) : (t.axis < 0 || t.axis > 2)) {
          throw std::invalid_argument("reward axis " + Str(t.axis) + " is out of range");
        }
        const bool needs_param = t.kind != kRewardForwardVelocity;
        if (t.kind != kRewardGoalDistance) need_subtree_vel_ = true;
        if ((needs_param || t.param >= 0) && (t.param < 0 || t.param + ndim > spec_.nparam)) {
          throw std::invalid_argument("reward task parameter " + Str(t.param) +
                                      " is outside the " + Str(spec_.nparam) + " parameters");
        }
        need_posvel_ = true;
        break;
      }
      default:
        throw std::invalid_argument("unknown reward term kind " + Str(t.kind));
    }
  }
  for (const TerminationTerm& t : spec_.termination) {
    if (t.kind == kTermQposOutside) {
      if (t.index < 0 || t.index >= nq_) {
        throw std::invalid_argument("termination qpos index " + Str(t.index) +
                                    " is not in [0, " + Str(nq_) + ")");
      }
    } else if (t.kind == kTermStateBound) {
      if (t.index < 0 || t.index >= nq_ + nv_) {
        throw std::invalid_argument("termination state index " + Str(t.index) +
                                    " is not in [0, " + Str(nq_ + nv_) + ")");
      }
    } else if (t.kind == kTermHeightAboveTerrain) {
      check_hfield(t.geom, "termination height above terrain");
      if (!body_ok(t.index)) {
        throw std::invalid_argument("termination body id " + Str(t.index) + " is not in [0, " +
                                    Str(m0->nbody) + ")");
      }
      need_posvel_ = true;
    } else if (t.kind == kTermBodyContact) {
      if (t.bodies.empty()) throw std::invalid_argument("contact termination needs bodies");
      for (int b : t.bodies) {
        if (!body_ok(b)) {
          throw std::invalid_argument("termination body id " + Str(b) + " is not in [0, " +
                                      Str(m0->nbody) + ")");
        }
      }
      need_acc_ = true;
    } else if (t.kind == kTermTilt) {
      if (!body_ok(t.index)) {
        throw std::invalid_argument("termination body id " + Str(t.index) + " is not in [0, " +
                                    Str(m0->nbody) + ")");
      }
      need_posvel_ = true;
    } else if (t.kind != kTermNonFinite) {
      throw std::invalid_argument("unknown termination term kind " + Str(t.kind));
    }
  }
  if (spec_.init_key >= m0->nkey) {
    throw std::invalid_argument("init keyframe " + Str(spec_.init_key) + " is not in the model's " +
                                Str(m0->nkey) + " keyframes");
  }
  CheckActuators(m0);
  nhistory_ = max_obs_delay > 0 ? max_obs_delay + 1 : 0;
  // mj_step1/mj_step2 split the step only for integrators that run one forward pass.
  split_step_ = true;
  for (const mjModel* m : models_) {
    const int integ = m->opt.integrator;
    if (integ != mjINT_EULER && integ != mjINT_IMPLICIT && integ != mjINT_IMPLICITFAST) {
      split_step_ = false;
    }
  }

  mjBatchConfig config;
  mjb_defaultConfig(&config);
  config.nthread = nthread;
  config.persistent = 0;
  char error[1024] = "";
  batch_ = mjb_makeBatch(m0, nsim_, &config, error, sizeof(error));
  if (!batch_) throw std::runtime_error(std::string("mjb_makeBatch failed: ") + error);
  mjb_setModels(batch_, models_.data());
  nstate_ = mjb_nstate(batch_);
  mjtNum* base = mjb_state(batch_);
  qpos_offset_ = static_cast<int>(mjb_stateComponent(batch_, mjSTATE_QPOS, nullptr) - base);
  qvel_offset_ = static_cast<int>(mjb_stateComponent(batch_, mjSTATE_QVEL, nullptr) - base);

  slots_.resize(nsim_);
  for (SimSlot& s : slots_) {
    // the rings live as long as the engine: nothing is allocated inside the step loop
    if (spec_.actuators.mode != kActuatorsNone) {
      s.commands.assign(static_cast<size_t>(ncommand_) * act_dim_, 0.0);
    }
    s.history.assign(static_cast<size_t>(nhistory_) * (nq_ + nv_), 0.0);
    s.command.assign(command_dim_, 0.0);
    s.last_action.assign(act_dim_, 0.0);
    const size_t feet = feet_term_ >= 0 ? spec_.reward[feet_term_].bodies.size() : 0;
    s.air_time.assign(feet, 0.0);
    s.foot_contact.assign(feet, 0);
  }
  last_obs_.assign(static_cast<size_t>(nsim_) * obs_dim_, 0.0f);
  Seed(seed);
}

void BatchEngine::CheckActuators(const mjModel* m0) {
  const ActuatorSpec& a = spec_.actuators;
  const size_t n = static_cast<size_t>(nsim_), nu = static_cast<size_t>(act_dim_);
  auto sized = [&](size_t got, size_t want, const char* name) {
    if (got != want) {
      throw std::invalid_argument(std::string("actuators: ") + name + " should have " +
                                  std::to_string(want) + " entries, got " + std::to_string(got));
    }
  };
  if (!a.noise_scale.empty()) {
    sized(a.noise_scale.size(), n, "noise_scale (one per simulation)");
    for (size_t i = 0; i < n; ++i) {
      if (!(a.noise_scale[i] >= 0) || !std::isfinite(a.noise_scale[i])) {
        throw std::invalid_argument("actuators: noise_scale of simulation " + std::to_string(i) +
                                    " should be a finite number >= 0, got " +
                                    std::to_string(a.noise_scale[i]));
      }
    }
  }
  if (a.mode == kActuatorsNone) {
    if (!a.delay_lo.empty() || !a.qpos_adr.empty()) {
      throw std::invalid_argument("actuators: a command delay or servos need actuator mode "
                                  "torque (1) or servo (2), got mode 0");
    }
    return;
  }
  if (act_dim_ > 64) throw std::invalid_argument("actuators: at most 64 motors are supported");
  if (a.mode != kActuatorsTorque && a.mode != kActuatorsServo) {
    throw std::invalid_argument("actuators: mode should be 0 (none), 1 (torque) or 2 (servo), "
                                "got " + Str(a.mode));
  }
  int max_delay = 0;
  if (!a.delay_lo.empty() || !a.delay_hi.empty()) {
    sized(a.delay_lo.size(), n, "delay_lo (one per simulation)");
    sized(a.delay_hi.size(), n, "delay_hi (one per simulation)");
    for (size_t i = 0; i < n; ++i) {
      if (a.delay_lo[i] < 0 || a.delay_hi[i] < a.delay_lo[i]) {
        throw std::invalid_argument("actuators: the command delay of simulation " +
                                    std::to_string(i) + " should be a range 0 <= lo <= hi "
                                    "physics steps, got [" + Str(a.delay_lo[i]) + ", " +
                                    Str(a.delay_hi[i]) + "]");
      }
      max_delay = std::max(max_delay, a.delay_hi[i]);
    }
  }
  // a command issued at env step n acts from physics step n * frame_skip + delay on, so the
  // one in force lags at most ceil(delay / frame_skip) env steps behind the newest
  ncommand_ = (max_delay + spec_.frame_skip - 1) / spec_.frame_skip + 1;
  if (a.mode == kActuatorsTorque) {
    if (!a.qpos_adr.empty() || !a.kp.empty()) {
      throw std::invalid_argument("actuators: torque mode takes no servo settings");
    }
    return;
  }
  if (spec_.normalized_actions) {
    throw std::invalid_argument("actuators: servo actions are joint targets; they cannot also "
                                "be normalized onto control ranges (normalized_actions)");
  }
  sized(a.qpos_adr.size(), nu, "qpos_adr (one per motor = action)");
  sized(a.dof_adr.size(), nu, "dof_adr (one per motor = action)");
  sized(a.q_default.size(), nu, "q_default (one per motor = action)");
  sized(a.action_scale.size(), nu, "action_scale (one per motor = action)");
  for (size_t i = 0; i < nu; ++i) {
    if (a.qpos_adr[i] < 0 || a.qpos_adr[i] >= m0->nq || a.dof_adr[i] < 0 ||
        a.dof_adr[i] >= m0->nv) {
      throw std::invalid_argument("actuators: motor " + std::to_string(i) + " drives qpos " +
                                  Str(a.qpos_adr[i]) + " / dof " + Str(a.dof_adr[i]) +
                                  ", outside the model's nq " + Str(m0->nq) + " / nv " +
                                  Str(m0->nv));
    }
    if (!std::isfinite(a.q_default[i]) || !std::isfinite(a.action_scale[i])) {
      throw std::invalid_argument("actuators: q_default and action_scale of motor " +
                                  std::to_string(i) + " should be finite");
    }
  }
  struct Field {
    const std::vector<double>& v;
    const char* name;
    bool positive;  // > 0 (limits) rather than >= 0 (gains)
    bool may_be_inf;
    bool any_sign;
  };
  const Field fields[] = {{a.kp, "kp", false, false, false},
                          {a.kd, "kd", false, false, false},
                          {a.strength, "strength", false, false, false},
                          {a.feedforward, "feedforward", false, false, true},
                          {a.effort_limit, "effort_limit", true, true, false},
                          {a.saturation_torque, "saturation_torque", true, true, false},
                          {a.max_velocity, "max_velocity", true, true, false}};
  for (const Field& f : fields) {
    sized(f.v.size(), n * nu,
          (std::string(f.name) + " (nsim x motors = " + std::to_string(n) + " x " +
           std::to_string(nu) + ")").c_str());
    for (size_t k = 0; k < f.v.size(); ++k) {
      const double x = f.v[k];
      const bool ok = (f.may_be_inf ? !std::isnan(x) : std::isfinite(x)) &&
                      (f.any_sign || (f.positive ? x > 0 : x >= 0));
      if (!ok) {
        throw std::invalid_argument(
            std::string("actuators: ") + f.name + " of simulation " + std::to_string(k / nu) +
            ", motor " + std::to_string(k % nu) + " should be " +
            (f.any_sign ? "finite" : f.positive ? "> 0" : "a finite number >= 0") + ", got " +
            std::to_string(x));
      }
    }
  }
}

BatchEngine::~BatchEngine() {
  if (batch_) mjb_deleteBatch(batch_);
}

int BatchEngine::nthread() const { return mjb_nthread(batch_); }

void BatchEngine::Seed(uint64_t seed) {
  for (int i = 0; i < nsim_; ++i) slots_[i].rng.Seed(seed, first_stream_ + static_cast<uint64_t>(i));
}

int BatchEngine::Apply(const int* ids, int nid, void (*func)(const mjModel*, mjData*, int, void*),
                       void* arg, std::vector<int>* failed) {
  const int nfail = mjb_apply(batch_, ids, ids ? nid : nsim_, func, arg, 1);
  if (nfail && failed) {
    const int* status = mjb_status(batch_);
    const int n = ids ? nid : nsim_;
    for (int k = 0; k < n; ++k) {
      const int sim = ids ? ids[k] : k;
      if (status[sim]) failed->push_back(sim);
    }
  }
  return nfail;
}

void BatchEngine::ResetSim(const mjModel* m, mjData* d, int sim) {
  if (spec_.init_key >= 0) {
    mj_resetDataKeyframe(m, d, spec_.init_key);
  } else {
    mj_resetData(m, d);
  }
  SimSlot& s = slots_[sim];
  if (spec_.uniform_noise) {
    for (int i = 0; i < m->nq; ++i) d->qpos[i] += spec_.qpos_noise * (2 * s.rng.Uniform() - 1);
    for (int i = 0; i < m->nv; ++i) d->qvel[i] += spec_.qvel_noise * (2 * s.rng.Uniform() - 1);
  } else {
    for (int i = 0; i < m->nq; ++i) d->qpos[i] += spec_.qpos_noise * s.rng.Normal();
    for (int i = 0; i < m->nv; ++i) d->qvel[i] += spec_.qvel_noise * s.rng.Normal();
  }
  const ActuatorSpec& a = spec_.actuators;
  s.delay = 0;
  if (!a.delay_lo.empty()) {
    const int lo = a.delay_lo[sim], hi = a.delay_hi[sim];
    // drawn only for a range, so that a fixed delay leaves the stream as it was
    s.delay = hi > lo ? lo + std::min(static_cast<int>(s.rng.Uniform() * (hi - lo + 1)), hi - lo)
                      : lo;
  }
  s.commands_issued = 0;
  s.physics_steps = 0;
  // drawn after the reset noise and the delay, so that families without commands keep
  // their streams as they were
  DrawCommand(sim);
  std::fill(s.last_action.begin(), s.last_action.end(), 0.0);
  std::fill(s.air_time.begin(), s.air_time.end(), 0.0);
  std::fill(s.foot_contact.begin(), s.foot_contact.end(), 0);
  s.feet_reward = 0;
  RestartHistory(d, sim);
  s.t = 0;
  s.ret = 0;
  s.ended = false;
}

void BatchEngine::RestartHistory(const mjData* d, int sim) {
  SimSlot& s = slots_[sim];
  for (int k = 0; k < nhistory_; ++k) {
    double* row = s.history.data() + static_cast<size_t>(k) * (nq_ + nv_);
    std::memcpy(row, d->qpos, sizeof(double) * nq_);
    std::memcpy(row + nq_, d->qvel, sizeof(double) * nv_);
  }
}

void BatchEngine::ComputeStages(const mjModel* m, mjData* d, bool carry) const {
  if (need_acc_) {
    // as the reference implementations: a forward pass at the new state with the last
    // controls, then the constraint forces on bodies (cfrc_ext). The pass holds mj_step1's
    // stages too: with carry, the next step continues from here with mj_step2
    mj_forward(m, d);
    mj_rnePostConstraint(m, d);
  } else if (need_posvel_) {
    if (carry && split_step_) {
      // the next step continues from here with mj_step2: observing costs nothing
      mj_step1(m, d);
    } else {
      // only what body positions, COMs and velocities need, not collisions or constraints
      mj_kinematics(m, d);
      mj_comPos(m, d);
      mj_comVel(m, d);
    }
  }
  // subtree centre-of-mass velocities, for velocity rewards (from the stages above)
  if (need_subtree_vel_) mj_subtreeVel(m, d);
}

void BatchEngine::ActionToCtrl(const mjModel* m, const double* action, double* ctrl) const {
  if (spec_.normalized_actions) {
    for (int i = 0; i < act_dim_; ++i) {
      // centre + a * half-range: exact (ctrl == a) for a symmetric range [-1, 1], where
      // lo + (a + 1) / 2 * (hi - lo) rounds float64 actions in their last bit
      const double lo = m->actuator_ctrlrange[2 * i], hi = m->actuator_ctrlrange[2 * i + 1];
      const double centre = 0.5 * (lo + hi), half = 0.5 * (hi - lo);
      ctrl[i] = std::min(std::max(centre + action[i] * half, lo), hi);
    }
  } else {
    for (int i = 0; i < act_dim_; ++i) ctrl[i] = action[i];
  }
}

const double* BatchEngine::CostControls(const mjData* d, int sim, const double* action) const {
  if (!spec_.normalized_actions) return action;
  if (spec_.actuators.mode == kActuatorsNone) return d->ctrl;
  // the command just issued, not the delayed one the motors ran: the cost follows the action
  const SimSlot& s = slots_[sim];
  return s.commands.data() + ((s.commands_issued - 1) % ncommand_) * act_dim_;
}

void BatchEngine::ApplyCommand(const mjModel* m, mjData* d, int sim, int j) {
  const ActuatorSpec& a = spec_.actuators;
  SimSlot& s = slots_[sim];
  const int64_t n = s.commands_issued - 1;  // the env step under way
  const int64_t k = n * spec_.frame_skip + j;  // physics step of the episode
  const double* command = nullptr;            // null: no command has arrived yet
  if (k >= s.delay) {
    const int64_t arrived = (k - s.delay) / spec_.frame_skip;  // newest command at the motors
    command = s.commands.data() + (arrived % ncommand_) * act_dim_;
  }
  if (a.mode == kActuatorsTorque) {
    if (command) {
      std::memcpy(d->ctrl, command, sizeof(double) * act_dim_);
    } else {
      const double zero[64] = {};  // act_dim <= 64, checked by the constructor
      ActionToCtrl(m, zero, d->ctrl);
    }
    return;
  }
  const double* target = command ? command : a.q_default.data();
  const size_t o = static_cast<size_t>(sim) * act_dim_;
  for (int i = 0; i < act_dim_; ++i) {
    d->qfrc_applied[a.dof_adr[i]] = ServoTorque(
        target[i], d->qpos[a.qpos_adr[i]], d->qvel[a.dof_adr[i]], a.kp[o + i], a.kd[o + i],
        a.strength[o + i], a.feedforward[o + i], a.effort_limit[o + i],
        a.saturation_torque[o + i], a.max_velocity[o + i]);
  }
}

bool BatchEngine::Advance(const mjModel* m, mjData* d, int sim, const double* action,
                          bool carry) {
  const ActuatorSpec& a = spec_.actuators;
  SimSlot& s = slots_[sim];
  IssueCommand(m, d, sim, action);
  const int warnings = DivergenceWarnings(d);
  for (int k = 0; k < spec_.frame_skip; ++k) {
    // the PD loop runs at the physics rate: its torque is recomputed before every step
    if (a.mode != kActuatorsNone) ApplyCommand(m, d, sim, k);
    if (k == 0 && carry && split_step_ && (need_posvel_ || need_acc_)) {
      mj_step2(m, d);
    } else {
      mj_step(m, d);
    }
    ++s.physics_steps;
    if (nhistory_) {
      double* row = s.history.data() + (s.physics_steps % nhistory_) * (nq_ + nv_);
      std::memcpy(row, d->qpos, sizeof(double) * nq_);
      std::memcpy(row + nq_, d->qvel, sizeof(double) * nv_);
    }
    if (DivergenceWarnings(d) != warnings) return false;
  }
  ComputeStages(m, d, carry);
  return DivergenceWarnings(d) == warnings && FiniteState(m, d);
}

void BatchEngine::Observe(const mjModel* m, const mjData* d, int sim, float* out) {
  SimSlot& s = slots_[sim];
  const std::vector<double>& noise_scale = spec_.actuators.noise_scale;
  for (const ObsTerm& t : spec_.obs) {
    const double sd = t.noise * (noise_scale.empty() ? 1.0 : noise_scale[sim]);
    const double* offset = t.offset.empty() ? nullptr : t.offset.data();
    // a sensor's reading of element i: scale (value - offset_i + noise), the noise in the
    // sensor's units (drawn only for a noisy term, so that noise-free families keep their
    // random streams as they were)
    auto read = [&](double v, int i) {
      if (offset) v -= offset[i];
      if (sd > 0) v += sd * s.rng.Normal();
      return t.scale * v;
    };
    const double* qpos = d->qpos;
    const double* qvel = d->qvel;
    if (t.delay > 0) {
      // the state t.delay physics steps ago (the ring holds the reset state until then)
      const int64_t k = ((s.physics_steps - t.delay) % nhistory_ + nhistory_) % nhistory_;
      qpos = s.history.data() + k * (nq_ + nv_);
      qvel = qpos + nq_;
    }
    switch (t.kind) {
      case kObsQpos:
        for (int i = 0; i < t.size; ++i) out[i] = static_cast<float>(read(qpos[t.start + i], i));
        break;
      case kObsQvel:
        for (int i = 0; i < t.size; ++i) {
          double v = read(qvel[t.start + i], i);
          if (t.lo < t.hi) v = std::min(std::max(v, t.lo), t.hi);
          out[i] = static_cast<float>(v);
        }
        break;
      case kObsCfrcExt:
        for (int i = 0; i < 6 * m->nbody; ++i) {
          out[i] = static_cast<float>(std::min(std::max(read(d->cfrc_ext[i], i), t.lo), t.hi));
        }
        break;
      case kObsBodyXmat:
        for (int i = 0; i < 9; ++i) out[i] = static_cast<float>(read(d->xmat[9 * t.id + i], i));
        break;
      case kObsSubtreeCom:
        for (int i = 0; i < 3; ++i) {
          out[i] = static_cast<float>(read(d->subtree_com[3 * t.id + i], i));
        }
        break;
      case kObsBodyXpos:
        for (int i = 0; i < 3; ++i) out[i] = static_cast<float>(read(d->xpos[3 * t.id + i], i));
        break;
      case kObsTaskParam: {
        const double* p = params(sim);
        for (int i = 0; i < t.size; ++i) out[i] = static_cast<float>(read(p[t.start + i], i));
        break;
      }
      case kObsZeros:
        for (int i = 0; i < t.size; ++i) out[i] = 0.0f;
        break;
      case kObsProjectedGravity: {
        // R^T (0, 0, -1): minus the third row of the row-major body-to-world rotation
        const double* r = d->xmat + 9 * t.id;
        for (int i = 0; i < 3; ++i) out[i] = static_cast<float>(read(-r[6 + i], i));
        break;
      }
      case kObsBodyAngVel: {
        double v[6];
        LocalVelocity(m, d, t.id, v);
        for (int i = 0; i < 3; ++i) out[i] = static_cast<float>(read(v[i], i));
        break;
      }
      case kObsCommand:
        for (int i = 0; i < t.size; ++i) {
          out[i] = static_cast<float>(read(s.command[t.start + i], i));
        }
        break;
      case kObsLastAction:
        for (int i = 0; i < act_dim_; ++i) out[i] = static_cast<float>(read(s.last_action[i], i));
        break;
      case kObsHeightScan: {
        const double* body = d->xpos + 3 * t.id;
        const int rows = t.size / t.columns;
        for (int r = 0; r < rows; ++r) {
          const double y = body[1] + (r - 0.5 * (rows - 1)) * t.lo;
          for (int c = 0; c < t.columns; ++c) {
            const double x = body[0] + t.hi + (c - 0.5 * (t.columns - 1)) * t.lo;
            const double ground = TerrainHeight(m, d, t.geom, x, y);
            out[r * t.columns + c] = static_cast<float>(read(body[2] - ground, r * t.columns + c));
          }
        }
        break;
      }
    }
    out += ObsTermSize(t, m);
  }
}

double BatchEngine::TermValue(const RewardTerm& t, const mjModel* m, const mjData* d, int sim,
                              const double* action, const double* qpos_before) const {
  const double* p = params(sim);
  double value = 0;
  switch (t.kind) {
    case kRewardConstant:
      value = 1;
      break;
    case kRewardForwardVelocity:
    case kRewardVelocityError: {
      // the subtree's centre of mass, as the reference code's body_comvels: the whole robot
      // for the root body, steadier than the root body's own velocity
      const double v = d->subtree_linvel[3 * t.body + t.axis];
      if (t.kind == kRewardForwardVelocity) {
        value = (t.param >= 0 ? p[t.param] : 1.0) * v;
      } else {
        value = std::fabs(v - p[t.param]);
      }
      break;
    }
    case kRewardGoalDistance:
      value = Distance(d->xpos + 3 * t.body, p + t.param, t.axis);
      break;
    case kRewardBodyDistance:
      value = Distance(d->xpos + 3 * t.body, d->xpos + 3 * t.other, 3);
      break;
    case kRewardControlCost: {
      const double* controls = CostControls(d, sim, action);
      for (int i = 0; i < m->nu; ++i) {
        double a = controls[i];
        if (t.flag) {
          a = std::min(std::max(a, m->actuator_ctrlrange[2 * i]),
                       m->actuator_ctrlrange[2 * i + 1]);
        }
        a /= t.scale;
        value += a * a;
      }
      break;
    }
    case kRewardContactCost:
      for (int i = 0; i < 6 * m->nbody; ++i) {
        const double f = std::min(std::max(d->cfrc_ext[i], t.lo), t.hi);
        value += f * f;
      }
      break;
    case kRewardQposRate:
      value = (d->qpos[t.axis] - qpos_before[t.axis]) / (spec_.frame_skip * m->opt.timestep);
      break;
    case kRewardTrackLinVel:
    case kRewardTrackYawRate:
    case kRewardBodyVelSquared:
    case kRewardTrackLinVelError: {
      double v[6];
      LocalVelocity(m, d, t.body, v);
      const double* c = slots_[sim].command.data();
      if (t.kind == kRewardTrackLinVelError) {
        const double ex = c[0] - v[3], ey = t.flag ? 0.0 : c[1] - v[4];
        value = std::sqrt(ex * ex + ey * ey);
      } else if (t.kind == kRewardTrackLinVel) {
        const double ex = c[0] - v[3], ey = c[1] - v[4];
        value = std::exp(-(ex * ex + ey * ey) / t.scale);
      } else if (t.kind == kRewardTrackYawRate) {
        const double e = c[2] - v[2];
        value = std::exp(-(e * e) / t.scale);
      } else {
        for (int i = 0; i < 6; ++i) {
          if (t.flag & (1 << i)) value += v[i] * v[i];
        }
      }
      break;
    }
    case kRewardTorqueCost: {
      const ActuatorSpec& a = spec_.actuators;
      for (int i = 0; i < act_dim_; ++i) {
        // servos push through qfrc_applied; the model's motors through their actuator force
        const double tau = a.mode == kActuatorsServo ? d->qfrc_applied[a.dof_adr[i]]
                                                     : d->actuator_force[i];
        value += tau * tau;
      }
      break;
    }
    case kRewardJointAccCost: {
      const double* qvel_before = qpos_before + m->nq;
      const double dt = spec_.frame_skip * m->opt.timestep;
      for (int i = t.axis; i < m->nv; ++i) {
        const double acc = (d->qvel[i] - qvel_before[i]) / dt;
        value += acc * acc;
      }
      break;
    }
    case kRewardJointLimitCost:
      for (int j = 0; j < m->njnt; ++j) {
        const int type = m->jnt_type[j];
        if (!m->jnt_limited[j] || (type != mjJNT_HINGE && type != mjJNT_SLIDE)) continue;
        const double lo = m->jnt_range[2 * j], hi = m->jnt_range[2 * j + 1];
        const double mid = 0.5 * (lo + hi), half = 0.5 * (hi - lo) * t.scale;
        const double q = d->qpos[m->jnt_qposadr[j]];
        value += std::max(0.0, (mid - half) - q) + std::max(0.0, q - (mid + half));
      }
      break;
    case kRewardActionRate: {
      const double* last = slots_[sim].last_action.data();
      for (int i = 0; i < act_dim_; ++i) value += (action[i] - last[i]) * (action[i] - last[i]);
      break;
    }
    case kRewardBodyContacts:
      for (int b : t.bodies) value += ContactForce(d, b) > t.lo ? 1.0 : 0.0;
      break;
    case kRewardFeetAirTime:
      value = slots_[sim].feet_reward;
      break;
  }
  return value;
}

double BatchEngine::Reward(const mjModel* m, const mjData* d, int sim, const double* action,
                           const double* qpos_before) const {
  double reward = 0;
  for (const RewardTerm& t : spec_.reward) {
    reward += t.weight * TermValue(t, m, d, sim, action, qpos_before);
  }
  // NaN stays NaN (a diverged step is caught as one)
  return reward < spec_.reward_floor ? spec_.reward_floor : reward;
}

void BatchEngine::Measure(const mjModel* m, const mjData* d, int sim, const double* action,
                          const double* qpos_before, float* out) const {
  for (size_t k = 0; k < spec_.metrics.size(); ++k) {
    out[k] = static_cast<float>(TermValue(spec_.metrics[k], m, d, sim, action, qpos_before));
  }
}

bool BatchEngine::Success(const mjModel* m, const mjData* d, int sim) const {
  if (!spec_.has_success) return false;
  return TermValue(spec_.success_term, m, d, sim, nullptr, nullptr) < spec_.success_threshold;
}

void BatchEngine::BeginStepRecord(const mjModel* m, const mjData* d, int sim) {
  if (feet_term_ < 0) return;
  // legged_gym's feet air time: a foot lands when it touches the ground now or touched it
  // at the last step (contacts flicker on impact) after time in the air; that time counts
  // against the target, only while the robot is told to move
  const RewardTerm& t = spec_.reward[feet_term_];
  SimSlot& s = slots_[sim];
  const double dt = spec_.frame_skip * m->opt.timestep;
  const double* c = s.command.data();
  const bool moving = std::sqrt(c[0] * c[0] + c[1] * c[1]) > t.scale;
  double reward = 0;
  for (size_t k = 0; k < t.bodies.size(); ++k) {
    const bool contact = ContactForce(d, t.bodies[k]) > t.lo;
    const bool touching = contact || s.foot_contact[k];
    s.foot_contact[k] = contact;
    const bool landed = s.air_time[k] > 0 && touching;
    s.air_time[k] += dt;
    if (landed) reward += s.air_time[k] - t.hi;
    if (touching) s.air_time[k] = 0;
  }
  s.feet_reward = moving ? reward : 0.0;
}

void BatchEngine::EndStepRecord(int sim, const double* action) {
  SimSlot& s = slots_[sim];
  std::copy(action, action + act_dim_, s.last_action.begin());
  // s.t counts the steps taken, this one included
  if (command_dim_ && spec_.command_resample > 0 && s.t % spec_.command_resample == 0) {
    DrawCommand(sim);
  }
}

void BatchEngine::DrawCommand(int sim) {
  SimSlot& s = slots_[sim];
  for (int i = 0; i < command_dim_; ++i) {
    s.command[i] = spec_.command_lo[i] +
                   (spec_.command_hi[i] - spec_.command_lo[i]) * s.rng.Uniform();
  }
}

bool BatchEngine::Terminated(const mjModel* m, const mjData* d) const {
  for (const TerminationTerm& t : spec_.termination) {
    if (t.kind == kTermQposOutside) {
      const double x = d->qpos[t.index];
      if (!(x >= t.lo && x <= t.hi)) return true;
    } else if (t.kind == kTermNonFinite) {
      if (!FiniteState(m, d)) return true;
    } else if (t.kind == kTermStateBound) {
      for (int i = t.index; i < m->nq + m->nv; ++i) {
        const double x = i < m->nq ? d->qpos[i] : d->qvel[i - m->nq];
        if (!(std::fabs(x) < t.hi)) return true;
      }
    } else if (t.kind == kTermHeightAboveTerrain) {
      const double* body = d->xpos + 3 * t.index;
      const double h = body[2] - TerrainHeight(m, d, t.geom, body[0], body[1]);
      if (!(h >= t.lo && h <= t.hi)) return true;
    } else if (t.kind == kTermBodyContact) {
      for (int b : t.bodies) {
        if (ContactForce(d, b) > t.lo) return true;
      }
    } else if (t.kind == kTermTilt) {
      if (!(d->xmat[9 * t.index + 8] >= t.lo)) return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Per-simulation functions run by mjb_apply on the batch's threads.

namespace {

struct ResetArgs {
  BatchEngine* engine;
  float* obs;  // (nsim, obs_dim)
};

void ResetFunc(const mjModel* m, mjData* d, int sim, void* arg) {
  auto* a = static_cast<ResetArgs*>(arg);
  BatchEngine* e = a->engine;
  e->ResetSim(m, d, sim);
  e->ComputeStages(m, d, false);
  float* obs = a->obs + static_cast<size_t>(sim) * e->obs_dim();
  e->Observe(m, d, sim, obs);
  std::memcpy(e->last_obs(sim), obs, sizeof(float) * e->obs_dim());
}

struct ObserveArgs {
  BatchEngine* engine;
  float* obs;  // (nsim, obs_dim)
};

void ObserveFunc(const mjModel* m, mjData* d, int sim, void* arg) {
  auto* a = static_cast<ObserveArgs*>(arg);
  BatchEngine* e = a->engine;
  e->RestartHistory(d, sim);  // a state set from outside starts the sensors' history anew
  e->ComputeStages(m, d, false);
  float* obs = a->obs + static_cast<size_t>(sim) * e->obs_dim();
  e->Observe(m, d, sim, obs);
  std::memcpy(e->last_obs(sim), obs, sizeof(float) * e->obs_dim());
}

struct StepArgs {
  BatchEngine* engine;
  const double* actions;
  const StepOutputs* out;
};

// Ends the episode of sim: records it, then resets (auto-reset) or marks it ended.
void EndEpisode(BatchEngine* e, const mjModel* m, mjData* d, int sim, const StepOutputs& out,
                float* obs) {
  const int od = e->obs_dim();
  BatchEngine::SimSlot& s = e->slot(sim);
  out.ended[sim] = 1;
  std::memcpy(out.final_obs + static_cast<size_t>(sim) * od, obs, sizeof(float) * od);
  out.episode_return[sim] = s.ret;
  out.episode_length[sim] = s.t;
  if (e->autoreset()) {
    e->ResetSim(m, d, sim);
    e->ComputeStages(m, d, false);
    e->Observe(m, d, sim, obs);
  } else {
    s.ended = true;
  }
}

void StepFunc(const mjModel* m, mjData* d, int sim, void* arg) {
  auto* a = static_cast<StepArgs*>(arg);
  BatchEngine* e = a->engine;
  const StepOutputs& out = *a->out;
  const int od = e->obs_dim();
  const double* action = a->actions + static_cast<size_t>(sim) * e->act_dim();
  float* obs = out.obs + static_cast<size_t>(sim) * od;
  BatchEngine::SimSlot& s = e->slot(sim);

  std::vector<float>& scratch = Scratch(2 * (m->nq + m->nv));
  double* qpos_before = reinterpret_cast<double*>(scratch.data());  // then qvel before
  std::memcpy(qpos_before, d->qpos, sizeof(double) * m->nq);
  std::memcpy(qpos_before + m->nq, d->qvel, sizeof(double) * m->nv);
  const bool ok = e->Advance(m, d, sim, action, false);
  double reward = 0;
  bool terminated = true, success = false;
  s.t += 1;
  if (ok) {
    e->BeginStepRecord(m, d, sim);
    reward = e->Reward(m, d, sim, action, qpos_before);
    terminated = e->Terminated(m, d);
    success = e->Success(m, d, sim);
    if (out.metrics) {
      e->Measure(m, d, sim, action, qpos_before,
                 out.metrics + static_cast<size_t>(sim) * e->nmetric());
    }
    e->EndStepRecord(sim, action);
    e->Observe(m, d, sim, obs);
  } else {
    // MuJoCo reset the diverged state: the last sound observation ends the episode
    std::memcpy(obs, e->last_obs(sim), sizeof(float) * od);
    if (out.metrics) {
      std::fill_n(out.metrics + static_cast<size_t>(sim) * e->nmetric(), e->nmetric(), 0.0f);
    }
  }
  s.ret += reward;
  const bool truncated = !terminated && s.t >= e->horizon();
  out.reward[sim] = static_cast<float>(reward);
  out.terminated[sim] = terminated;
  out.truncated[sim] = truncated;
  out.diverged[sim] = !ok;
  out.ended[sim] = 0;
  if (out.success) out.success[sim] = success;
  if (terminated || truncated) EndEpisode(e, m, d, sim, out, obs);
  std::memcpy(e->last_obs(sim), obs, sizeof(float) * od);
}

struct RolloutArgs {
  BatchEngine* engine;
  const MlpPolicy* policies;
  const int* policy_index;
  int widest;
  int horizon;
  bool deterministic;
  const RolloutOutputs* out;
};

void RolloutFunc(const mjModel* m, mjData* d, int sim, void* arg) {
  auto* a = static_cast<RolloutArgs*>(arg);
  BatchEngine* e = a->engine;
  const RolloutOutputs& out = *a->out;
  const MlpPolicy& policy = a->policies[a->policy_index ? a->policy_index[sim] : 0];
  const int n = e->nsim(), od = e->obs_dim(), ad = e->act_dim(), T = a->horizon;
  BatchEngine::SimSlot& s = e->slot(sim);

  const int w = a->widest;
  std::vector<float>& scratch = Scratch(2 * w + 2 * od + ad + 2 * (m->nq + m->nv) + 2);
  double* qpos_before = reinterpret_cast<double*>(
      scratch.data() + ((2 * w + 2 * od + ad + 1) & ~1));  // 8-byte aligned
  float* hidden = scratch.data();
  float* obs = hidden + 2 * w;
  float* next_obs = obs + od;
  float* mean = next_obs + od;
  double action[64];  // actuators of one robot; checked against act_dim by the bindings

  // within one episode the thread's mjData stays with this simulation, so the positions and
  // velocities computed for each observation carry into the next step
  e->ResetSim(m, d, sim);
  e->ComputeStages(m, d, true);
  e->Observe(m, d, sim, obs);

  int t = 0;
  bool ok = true;
  for (; t < T; ++t) {
    const size_t row = static_cast<size_t>(t) * n + sim;
    std::memcpy(out.obs + row * od, obs, sizeof(float) * od);
    policy.Mean(obs, mean, hidden);
    float* act = out.actions + row * ad;
    for (int i = 0; i < ad; ++i) {
      float ai = mean[i];
      if (!a->deterministic) {
        ai += std::exp(policy.log_std[i]) * static_cast<float>(s.rng.Normal());
      }
      act[i] = ai;
      action[i] = ai;
    }
    std::memcpy(qpos_before, d->qpos, sizeof(double) * m->nq);
    std::memcpy(qpos_before + m->nq, d->qvel, sizeof(double) * m->nv);
    ok = e->Advance(m, d, sim, action, true);
    double reward = 0;
    bool terminated = true, success = false;
    s.t = t + 1;
    if (ok) {
      e->BeginStepRecord(m, d, sim);
      reward = e->Reward(m, d, sim, action, qpos_before);
      terminated = e->Terminated(m, d);
      success = e->Success(m, d, sim);
      if (out.metrics) {
        e->Measure(m, d, sim, action, qpos_before, out.metrics + row * e->nmetric());
      }
      e->EndStepRecord(sim, action);
      e->Observe(m, d, sim, next_obs);
    } else {
      std::memcpy(next_obs, obs, sizeof(float) * od);
      if (out.metrics) std::fill_n(out.metrics + row * e->nmetric(), e->nmetric(), 0.0f);
    }
    s.ret += reward;
    out.rewards[row] = static_cast<float>(reward);
    out.terminated[row] = terminated;
    out.truncated[row] = !terminated && t + 1 == T;
    out.valid[row] = 1;
    if (out.success) out.success[row] = success;
    std::swap(obs, next_obs);
    std::memcpy(e->last_obs(sim), obs, sizeof(float) * od);
    if (terminated) {
      ++t;
      break;
    }
  }
  // steps after the episode ended: padding, marked invalid
  for (int k = t; k < T; ++k) {
    const size_t row = static_cast<size_t>(k) * n + sim;
    std::memcpy(out.obs + row * od, obs, sizeof(float) * od);
    std::memset(out.actions + row * ad, 0, sizeof(float) * ad);
    out.rewards[row] = 0;
    out.terminated[row] = 0;
    out.truncated[row] = 0;
    out.valid[row] = 0;
    if (out.success) out.success[row] = 0;
    if (out.metrics) std::fill_n(out.metrics + row * e->nmetric(), e->nmetric(), 0.0f);
  }
  std::memcpy(out.final_obs + static_cast<size_t>(sim) * od, obs, sizeof(float) * od);
  out.length[sim] = t;
  out.diverged[sim] = !ok;
  s.ended = true;
}

struct EvaluateArgs {
  BatchEngine* engine;
  const double* before;
  const double* actions;
  const double* commands;
  const double* torques;
  float* reward;
  uint8_t* terminated;
  float* metrics;
};

void EvaluateFunc(const mjModel* m, mjData* d, int sim, void* arg) {
  auto* a = static_cast<EvaluateArgs*>(arg);
  BatchEngine* e = a->engine;
  const int ad = e->act_dim();
  const double* action = a->actions + static_cast<size_t>(sim) * ad;
  const double* before = a->before + static_cast<size_t>(sim) * (m->nq + m->nv);
  BatchEngine::SimSlot& s = e->slot(sim);
  if (a->commands) {
    const double* c = a->commands + static_cast<size_t>(sim) * e->ncommand();
    std::copy(c, c + e->ncommand(), s.command.begin());
  }
  const double* command = e->IssueCommand(m, d, sim, action);
  // a torque family's motors run the command as issued (a simulated step's, delayed, is in
  // force only within Advance)
  if (command && !e->servo()) std::memcpy(d->ctrl, command, sizeof(double) * ad);
  // the servos' torques given, else none (not the previous call's)
  e->ApplyTorques(d, a->torques ? a->torques + static_cast<size_t>(sim) * ad : nullptr);
  // the model's own motors: a forward pass makes their force (actuator_force) the action's,
  // which the stages alone compute only where the terms need accelerations
  if (!e->servo()) mj_forward(m, d);
  // the stages a simulated step ends with, at the measured state and torques
  e->ComputeStages(m, d, false);
  s.t += 1;
  e->BeginStepRecord(m, d, sim);
  const double reward = e->Reward(m, d, sim, action, before);
  a->reward[sim] = static_cast<float>(reward);
  a->terminated[sim] = e->Terminated(m, d);
  if (a->metrics) {
    e->Measure(m, d, sim, action, before, a->metrics + static_cast<size_t>(sim) * e->nmetric());
  }
  // the last action, without the command's resampling: the robot's operator owns the command
  std::copy(action, action + ad, s.last_action.begin());
  s.ret += reward;
}

}  // namespace

const double* BatchEngine::IssueCommand(const mjModel* m, mjData* d, int sim,
                                        const double* action) {
  const ActuatorSpec& a = spec_.actuators;
  SimSlot& s = slots_[sim];
  if (a.mode == kActuatorsNone) {
    ActionToCtrl(m, action, d->ctrl);
    return nullptr;
  }
  double* command = s.commands.data() + (s.commands_issued % ncommand_) * act_dim_;
  if (a.mode == kActuatorsServo) {
    for (int i = 0; i < act_dim_; ++i) command[i] = a.q_default[i] + a.action_scale[i] * action[i];
  } else {
    ActionToCtrl(m, action, command);
  }
  ++s.commands_issued;
  return command;
}

void BatchEngine::ApplyTorques(mjData* d, const double* torques) const {
  const ActuatorSpec& a = spec_.actuators;
  if (a.mode != kActuatorsServo) return;  // the model's own motors: their force is ctrl's
  for (int i = 0; i < act_dim_; ++i) d->qfrc_applied[a.dof_adr[i]] = torques ? torques[i] : 0.0;
}

void BatchEngine::Evaluate(const double* before, const double* qpos, const double* qvel,
                           const double* actions, const double* commands,
                           const double* torques, float* reward, uint8_t* terminated,
                           float* metrics) {
  for (int i = 0; i < nsim_; ++i) {
    if (slots_[i].ended) {
      throw std::runtime_error("simulation " + Str(i) +
                               " has no episode running: call reset() first");
    }
  }
  if (commands && command_dim_ == 0) {
    throw std::invalid_argument("the family has no commands, got some");
  }
  if (torques && spec_.actuators.mode != kActuatorsServo) {
    throw std::invalid_argument("torques are for servo families (the model's motors' force is "
                                "their control)");
  }
  WriteState(nullptr, nsim_, qpos, qvel);
  EvaluateArgs args{this, before, actions, commands, torques, reward, terminated, metrics};
  std::vector<int> failed;
  Apply(nullptr, 0, EvaluateFunc, &args, &failed);
  if (!failed.empty()) {
    throw std::runtime_error("MuJoCo failed on the state given to simulation " + Str(failed[0]) +
                             ": " + mjb_error(batch_, failed[0]));
  }
}

void BatchEngine::Reset(const int* ids, int nid, float* obs) {
  ResetArgs args{this, obs};
  std::vector<int> failed;
  Apply(ids, nid, ResetFunc, &args, &failed);
  if (!failed.empty()) {
    throw std::runtime_error("MuJoCo failed to reset simulation " + Str(failed[0]) + ": " +
                             mjb_error(batch_, failed[0]));
  }
}

void BatchEngine::Step(const double* actions, const StepOutputs& out) {
  for (int i = 0; i < nsim_; ++i) {
    if (slots_[i].ended) {
      throw std::runtime_error("simulation " + Str(i) +
                               " has no episode running: call reset() first");
    }
  }
  StepArgs args{this, actions, &out};
  std::vector<int> failed;
  Apply(nullptr, 0, StepFunc, &args, &failed);
  if (failed.empty()) return;
  // MuJoCo raised an error in these simulations and kept their previous state: end their
  // episodes as diverged; the other simulations are untouched
  for (int sim : failed) {
    SimSlot& s = slots_[sim];
    float* obs = out.obs + static_cast<size_t>(sim) * obs_dim_;
    std::memcpy(obs, last_obs(sim), sizeof(float) * obs_dim_);
    out.reward[sim] = 0;
    out.terminated[sim] = 1;
    out.truncated[sim] = 0;
    out.diverged[sim] = 1;
    out.ended[sim] = 1;
    if (out.success) out.success[sim] = 0;
    if (out.metrics) std::fill_n(out.metrics + static_cast<size_t>(sim) * nmetric(), nmetric(), 0.0f);
    std::memcpy(out.final_obs + static_cast<size_t>(sim) * obs_dim_, obs,
                sizeof(float) * obs_dim_);
    out.episode_return[sim] = s.ret;
    out.episode_length[sim] = s.t + 1;
    s.ended = true;
  }
  if (autoreset_) {
    Reset(failed.data(), static_cast<int>(failed.size()), out.obs);
  }
}

void BatchEngine::Rollout(const std::vector<MlpPolicy>& policies, const int* policy_index,
                          int horizon, bool deterministic, const RolloutOutputs& out) {
  if (horizon < 1) throw std::invalid_argument("horizon should be >= 1, got " + Str(horizon));
  if (policies.empty()) throw std::invalid_argument("rollout needs at least one policy");
  int widest = 0;
  for (const MlpPolicy& policy : policies) {
    const std::string problem = policy.Validate();
    if (!problem.empty()) throw std::invalid_argument(problem);
    if (policy.obs_dim() != obs_dim_ || policy.act_dim() != act_dim_) {
      throw std::invalid_argument("policy maps " + Str(policy.obs_dim()) + " -> " +
                                  Str(policy.act_dim()) + ", the family needs " +
                                  Str(obs_dim_) + " -> " + Str(act_dim_));
    }
    widest = std::max(widest, policy.widest());
  }
  if (policy_index) {
    for (int i = 0; i < nsim_; ++i) {
      if (policy_index[i] < 0 || policy_index[i] >= static_cast<int>(policies.size())) {
        throw std::invalid_argument("policy index of simulation " + Str(i) + " is " +
                                    Str(policy_index[i]) + ", not in [0, " +
                                    Str(static_cast<int>(policies.size())) + ")");
      }
    }
  }
  if (act_dim_ > 64) throw std::invalid_argument("at most 64 actuators are supported");
  RolloutArgs args{this, policies.data(), policy_index, widest, horizon, deterministic, &out};
  std::vector<int> failed;
  Apply(nullptr, 0, RolloutFunc, &args, &failed);
  // MuJoCo raised an error in these simulations: their episode ends at the last step that
  // completed, flagged diverged
  for (int sim : failed) {
    const int len = slots_[sim].t;
    for (int k = len; k < horizon; ++k) {
      const size_t row = static_cast<size_t>(k) * nsim_ + sim;
      out.valid[row] = 0;
      out.rewards[row] = 0;
      out.terminated[row] = 0;
      out.truncated[row] = 0;
      if (out.success) out.success[row] = 0;
      if (out.metrics) std::fill_n(out.metrics + row * nmetric(), nmetric(), 0.0f);
    }
    if (len > 0) {
      const size_t row = static_cast<size_t>(len - 1) * nsim_ + sim;
      out.terminated[row] = 1;
      out.truncated[row] = 0;
    }
    std::memcpy(out.final_obs + static_cast<size_t>(sim) * obs_dim_, last_obs(sim),
                sizeof(float) * obs_dim_);
    out.length[sim] = len;
    out.diverged[sim] = 1;
    slots_[sim].ended = true;
  }
}

void BatchEngine::GetState(double* qpos, double* qvel) const {
  const mjtNum* state = mjb_state(batch_);
  for (int i = 0; i < nsim_; ++i) {
    const mjtNum* row = state + static_cast<size_t>(i) * nstate_;
    std::memcpy(qpos + static_cast<size_t>(i) * nq_, row + qpos_offset_, sizeof(double) * nq_);
    std::memcpy(qvel + static_cast<size_t>(i) * nv_, row + qvel_offset_, sizeof(double) * nv_);
  }
}

void BatchEngine::WriteState(const int* ids, int nid, const double* qpos, const double* qvel) {
  mjtNum* state = mjb_state(batch_);
  for (int k = 0; k < nid; ++k) {
    mjtNum* row = state + static_cast<size_t>(ids ? ids[k] : k) * nstate_;
    std::memcpy(row + qpos_offset_, qpos + static_cast<size_t>(k) * nq_, sizeof(double) * nq_);
    std::memcpy(row + qvel_offset_, qvel + static_cast<size_t>(k) * nv_, sizeof(double) * nv_);
  }
}

void BatchEngine::SetState(const int* ids, int nid, const double* qpos, const double* qvel,
                           float* obs) {
  WriteState(ids, nid, qpos, qvel);
  ObserveArgs args{this, obs};
  std::vector<int> failed;
  Apply(ids, nid, ObserveFunc, &args, &failed);
  if (!failed.empty()) {
    throw std::runtime_error("MuJoCo failed on the state given to simulation " + Str(failed[0]) +
                             ": " + mjb_error(batch_, failed[0]));
  }
}

}  // namespace metarobot
