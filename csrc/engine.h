// Batched closed-loop simulation of a task family on MuJoCo's batch API (mjbatch.h).
//
// tasks -> per-simulation models -> mjb_apply(closed-loop function per simulation) -> time-major
// outputs. Plain C++: no Python types here; the bindings convert and check arguments.
#ifndef METAROBOT_ENGINE_H_
#define METAROBOT_ENGINE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <mujoco/mjbatch.h>
#include <mujoco/mujoco.h>

#include "policy.h"
#include "rng.h"

namespace metarobot {

// Observation terms, concatenated in order into one float32 vector.
enum ObsKind : int {
  kObsQpos = 0,        // qpos[start : start + size]
  kObsQvel = 1,        // qvel[start : start + size], clipped to [lo, hi] when lo < hi
  kObsCfrcExt = 2,     // clip(cfrc_ext, lo, hi), all bodies (nbody x 6)
  kObsBodyXmat = 3,    // xmat of body id (9)
  kObsSubtreeCom = 4,  // subtree_com of body id (3)
  kObsBodyXpos = 5,    // xpos of body id (3)
  kObsTaskParam = 6,   // task parameters [start : start + size]
  kObsHeightScan = 7,  // body id's height above the heightfield geom at a grid of size points
                       // around it: columns along x, size / columns rows along y, lo metres
                       // apart, centred hi metres ahead (+x) of the body (world axes), m
  kObsZeros = 8,       // size zeros (a slot kept for a hidden quantity)
  kObsProjectedGravity = 9,  // the gravity direction in body id's frame, R^T (0, 0, -1) (3)
  kObsBodyAngVel = 10,       // body id's angular velocity in its own frame, rad/s (3), as a
                             // gyroscope fixed to it reads it
  kObsCommand = 11,          // the simulation's command (FamilySpec commands) [start:+size]
  kObsLastAction = 12,       // the action of the previous env step (zeros after reset) (act_dim)
};

struct ObsTerm {
  int kind = 0;
  int id = 0;     // body id for body terms
  int start = 0;  // first element for slice terms
  int size = 0;   // number of elements this term writes
  double lo = 0;  // clip range (kObsCfrcExt, kObsQvel); spacing (kObsHeightScan)
  double hi = 0;  // clip range; forward offset (kObsHeightScan)
  int geom = -1;     // heightfield geom id (kObsHeightScan)
  int columns = 0;   // grid points along x (kObsHeightScan)
  // sensor noise: each element gets + N(0, noise * noise_scale of the simulation) from the
  // simulation's stream, before the term's clip (0: none, nothing drawn)
  double noise = 0;
  // sensor delay, physics steps: the term reads the state of that many physics steps ago (the
  // reset state before there were that many); kObsQpos and kObsQvel only
  int delay = 0;
  // each element reads scale * (value - offset[i]) (+ noise, then the clip); offset empty: 0
  double scale = 1;
  std::vector<double> offset;
};

// Reward terms; reward = sum(weight * value).
enum RewardKind : int {
  kRewardConstant = 0,         // value 1 (alive bonus)
  kRewardForwardVelocity = 1,  // param[param] (or 1 if param < 0) * v_axis, v the velocity of
                               // the centre of mass of body's subtree (world frame), m/s
  kRewardVelocityError = 2,    // |v_axis - param[param]|, m/s
  kRewardGoalDistance = 3,     // ||xpos[body][:axis] - param[param : param + axis]||, m
  kRewardControlCost = 4,      // sum((a / scale)^2), a clipped to ctrlrange if flag
  kRewardContactCost = 5,      // sum(clip(cfrc_ext, lo, hi)^2)
  kRewardQposRate = 6,         // (qpos[axis] after - before) / env step duration (m/s)
  kRewardBodyDistance = 7,     // ||xpos[body] - xpos[other]||, m
  // Legged locomotion terms (the forms of legged_gym / Isaac Lab); v, w are body's linear and
  // angular velocity in its own frame, c the simulation's command (vx, vy, yaw rate, ...)
  kRewardTrackLinVel = 8,      // exp(-((c[0] - v_x)^2 + (c[1] - v_y)^2) / scale)
  kRewardTrackYawRate = 9,     // exp(-(c[2] - w_z)^2 / scale)
  kRewardBodyVelSquared = 10,  // sum of the squares of (w_x, w_y, w_z, v_x, v_y, v_z) whose
                               // bit is set in flag (bit 0: w_x ... bit 5: v_z)
  kRewardTorqueCost = 11,      // sum(tau^2) of the motors' torques at the last physics step, Nm^2
  kRewardJointAccCost = 12,    // sum over dofs axis.. of ((qvel - qvel at the step's start) /
                               // env step duration)^2, (rad/s^2)^2
  kRewardActionRate = 13,      // sum((a - previous a)^2)
  kRewardBodyContacts = 14,    // number of bodies in contact (contact force norm > lo, N)
  kRewardFeetAirTime = 15,     // sum over bodies (feet) landing this step of (time in the air -
                               // hi), s; 0 when ||c[0:2]|| <= scale (legged_gym's air time)
  kRewardTrackLinVelError = 16,  // ||c[0:2] - (v_x, v_y)|| (flag 0) or |c[0] - v_x| (flag 1),
                                 // m/s: how far the body's velocity is from the command
  kRewardJointLimitCost = 17,  // sum over limited hinge and slide joints of how far qpos is
                               // outside the soft range, the middle `scale` of the joint's
                               // range (legged_gym's dof_pos_limits), rad or m
};

struct RewardTerm {
  int kind = 0;
  double weight = 0;
  int body = 0;
  int axis = 0;  // velocity axis, or number of goal dimensions for kRewardGoalDistance
  int param = -1;
  double scale = 1;
  double lo = 0;
  double hi = 0;
  int flag = 0;
  int other = -1;  // second body id (kRewardBodyDistance)
  std::vector<int> bodies;  // body ids (kRewardBodyContacts, kRewardFeetAirTime)
};

// Termination terms: the episode ends when any holds.
enum TerminationKind : int {
  kTermQposOutside = 0,  // qpos[index] outside [lo, hi]
  kTermNonFinite = 1,    // any qpos or qvel not finite
  kTermStateBound = 2,   // any |s[i]| >= hi, s = (qpos, qvel), i >= index
  kTermHeightAboveTerrain = 3,  // body index's height above heightfield geom outside [lo, hi]
  kTermBodyContact = 4,   // any of bodies in contact (contact force norm > lo, N)
  kTermTilt = 5,          // body index's z axis makes an angle with the world's z whose cosine
                          // is below lo (tilted beyond acos(lo))
};

struct TerminationTerm {
  int kind = 0;
  int index = 0;
  double lo = 0;
  double hi = 0;
  int geom = -1;  // heightfield geom id (kTermHeightAboveTerrain)
  std::vector<int> bodies;  // body ids (kTermBodyContact)
};

// How the policy's action reaches the joints (metarobot.terms.Actuators).
enum ActuatorMode : int {
  kActuatorsNone = 0,    // action -> the model's controls at once (the frame_skip steps' ctrl)
  kActuatorsTorque = 1,  // action -> the model's controls, through the command delay
  kActuatorsServo = 2,   // action -> joint target -> PD torque every physics step
};

// Actuator model of a batch. Servo motor i drives one hinge or slide joint: its target is
// q*_i = q_default_i + action_scale_i * a_i, and before every physics step
//   tau_i = strength (kp (q* - q) - kd qdot) + feedforward,
//   clipped to +-min(effort_limit, max(0, saturation_torque (1 - |qdot| / max_velocity)))
// goes into qfrc_applied (the model's own actuators get ctrl 0). A command reaches the motors
// `delay` physics steps after it is issued; before the first one arrives the motors hold the
// command of action 0. Per-simulation arrays are (nsim, act_dim) row-major.
struct ActuatorSpec {
  int mode = kActuatorsNone;
  std::vector<int> qpos_adr;            // (act_dim) qpos index of each servo's joint
  std::vector<int> dof_adr;             // (act_dim) dof index of each servo's joint
  std::vector<double> q_default;        // (act_dim) target of action 0, rad or m
  std::vector<double> action_scale;     // (act_dim) target per action unit, rad or m
  std::vector<double> kp;               // (nsim, act_dim) Nm/rad (N/m)
  std::vector<double> kd;               // (nsim, act_dim) Nm s/rad (N s/m)
  std::vector<double> strength;         // (nsim, act_dim) factor on the PD torque
  std::vector<double> feedforward;      // (nsim, act_dim) Nm (N)
  std::vector<double> effort_limit;     // (nsim, act_dim) Nm (N), may be inf
  std::vector<double> saturation_torque;  // (nsim, act_dim) DC motor's stall torque, may be inf
  std::vector<double> max_velocity;     // (nsim, act_dim) rad/s (m/s) of no torque, may be inf
  // command delay, physics steps (torque and servo modes): simulation i's episodes draw it
  // uniformly from [delay_lo[i], delay_hi[i]] at reset, from the simulation's stream, when
  // the two differ (nsim each; empty: 0)
  std::vector<int> delay_lo, delay_hi;
  std::vector<double> noise_scale;      // (nsim) factor on every term's noise; empty: 1
};

// The servo law of one motor (ActuatorSpec), Nm: PD torque plus feed-forward, clipped to the
// effort limit and the DC motor's torque-speed envelope at joint velocity w. Written once for
// the engine and the benchmark's plain loop.
inline double ServoTorque(double target, double q, double w, double kp, double kd,
                          double strength, double feedforward, double effort_limit,
                          double saturation_torque, double max_velocity) {
  const double tau = strength * (kp * (target - q) - kd * w) + feedforward;
  // the torque available falls linearly with speed, capped at the effort limit
  const double envelope = saturation_torque * (1.0 - std::fabs(w) / max_velocity);
  const double limit = std::min(effort_limit, std::max(envelope, 0.0));
  return std::min(std::max(tau, -limit), limit);
}

struct FamilySpec {
  std::vector<ObsTerm> obs;
  std::vector<RewardTerm> reward;
  std::vector<TerminationTerm> termination;
  int frame_skip = 1;      // mj_step calls per env step
  int horizon = 200;       // env steps per episode
  double qpos_noise = 0;   // reset: qpos = init + N(0, qpos_noise)
  double qvel_noise = 0;   // reset: qvel = init + N(0, qvel_noise)
  int init_key = -1;       // keyframe of the initial state, -1: qpos0 and zero velocity
  bool uniform_noise = false;  // reset noise U(-noise, noise) instead of N(0, noise)
  // actions in [-1, 1] map affinely onto each actuator's control range (then clipped), as
  // rllab's normalize(); control costs then see the applied controls
  bool normalized_actions = false;
  // a step's reward is max(sum of the terms, reward_floor) (legged_gym's only_positive_rewards
  // with 0: while penalties outweigh the rewards, ending the episode early gains nothing)
  double reward_floor = -std::numeric_limits<double>::infinity();
  int nparam = 0;          // task parameters per simulation
  // success: the value of success_term (a distance reward term, weight ignored) is below
  // success_threshold after a step
  bool has_success = false;
  RewardTerm success_term;
  double success_threshold = 0;
  ActuatorSpec actuators;
  // Commands the policy is given (velocity commands of a legged robot): each simulation draws
  // c_i ~ U[command_lo_i, command_hi_i] from its stream at reset and again after every
  // command_resample env steps (0: only at reset). Observed by kObsCommand, read by rewards.
  std::vector<double> command_lo, command_hi;
  int command_resample = 0;
  // quantities measured at every step beside the reward (their weights are ignored), e.g. a
  // velocity tracking error; rollout() and step() report them per step
  std::vector<RewardTerm> metrics;
};

// Caller-allocated outputs of step(); pointers may be null where noted.
struct StepOutputs {
  float* obs = nullptr;          // (nsim, obs_dim) next observation (after auto-reset)
  float* reward = nullptr;       // (nsim,)
  uint8_t* terminated = nullptr; // (nsim,)
  uint8_t* truncated = nullptr;  // (nsim,)
  uint8_t* diverged = nullptr;   // (nsim,) the simulation failed (warning, non-finite state)
  float* final_obs = nullptr;    // (nsim, obs_dim) last observation of episodes that ended
  uint8_t* ended = nullptr;      // (nsim,) an episode ended: final_obs row is valid
  double* episode_return = nullptr;  // (nsim,) return of the ended episode
  int32_t* episode_length = nullptr; // (nsim,) length of the ended episode
  uint8_t* success = nullptr;    // (nsim,) the step reached the family's success condition
  float* metrics = nullptr;      // (nsim, nmetric) the family's metrics of the step; may be null
};

// Caller-allocated outputs of rollout(); time-major.
struct RolloutOutputs {
  float* obs = nullptr;           // (T, nsim, obs_dim) observation before each action
  float* actions = nullptr;       // (T, nsim, act_dim) sampled actions
  float* rewards = nullptr;       // (T, nsim)
  uint8_t* terminated = nullptr;  // (T, nsim)
  uint8_t* truncated = nullptr;   // (T, nsim)
  uint8_t* valid = nullptr;       // (T, nsim) step t belongs to the episode
  float* final_obs = nullptr;     // (nsim, obs_dim) observation after the last valid step
  int32_t* length = nullptr;      // (nsim,) number of valid steps
  uint8_t* diverged = nullptr;    // (nsim,)
  uint8_t* success = nullptr;     // (T, nsim) the step reached the success condition; may be null
  float* metrics = nullptr;       // (T, nsim, nmetric) the family's metrics (0 after the episode);
                                  // may be null
};

class BatchEngine {
 public:
  // models: one per simulation (pointers may repeat), of identical sizes, owned by the caller
  // and alive as long as the engine. params: (nsim, spec.nparam). nthread <= 0: all CPUs.
  // Simulation i draws from random stream (seed, first_stream + i): a batch holding
  // simulations first_stream.. of a larger one reproduces them exactly.
  // Throws std::invalid_argument or std::runtime_error.
  BatchEngine(const std::vector<const mjModel*>& models, const FamilySpec& spec,
              const std::vector<double>& params, uint64_t seed, int nthread, bool autoreset,
              uint64_t first_stream = 0);
  ~BatchEngine();
  BatchEngine(const BatchEngine&) = delete;
  BatchEngine& operator=(const BatchEngine&) = delete;

  int nsim() const { return nsim_; }
  int obs_dim() const { return obs_dim_; }
  int act_dim() const { return act_dim_; }
  int nq() const { return nq_; }
  int nv() const { return nv_; }
  int nthread() const;
  int horizon() const { return spec_.horizon; }
  int nmetric() const { return static_cast<int>(spec_.metrics.size()); }
  // Writes the family's metrics of the step just taken, out: (nmetric).
  void Measure(const mjModel* m, const mjData* d, int sim, const double* action,
               const double* qpos_before, float* out) const;

  // Reseeds every simulation's random stream from (seed, first_stream + simulation index).
  void Seed(uint64_t seed);
  // Resets all simulations (ids == nullptr) or the given ones; writes their observations,
  // obs: (nid or nsim, obs_dim).
  void Reset(const int* ids, int nid, float* obs);
  // One env step of every simulation with actions (nsim, act_dim).
  void Step(const double* actions, const StepOutputs& out);
  // Whole episodes from reset with policies in the loop, for horizon steps; simulation i runs
  // policies[policy_index[i]] (policy_index null: policies[0] everywhere).
  void Rollout(const std::vector<MlpPolicy>& policies, const int* policy_index, int horizon,
               bool deterministic, const RolloutOutputs& out);
  // qpos (nsim, nq), qvel (nsim, nv).
  void GetState(double* qpos, double* qvel) const;
  // Writes qpos/qvel of the given simulations (rows in ids order) and recomputes their
  // observations, obs: (nid, obs_dim).
  void SetState(const int* ids, int nid, const double* qpos, const double* qvel, float* obs);
  // The reward of a step taken outside the engine (a robot's, measured): every simulation's
  // step from the state `before` (nsim, nq + nv: qpos then qvel) to (qpos (nsim, nq), qvel
  // (nsim, nv)) under action (nsim, act_dim), with the command in force (nsim, ncommand; null:
  // the simulation's own) and, for servo families, the motors' torques at the step's end
  // (nsim, act_dim) Nm; null: none). A torque-driven family's motors run the action as
  // issued (no command delay). The family's reward terms, metrics and terminations read that
  // state as they read a simulated one's, with the episode's carry (last action, feet air
  // time); the simulations' states become the new ones. Outputs: reward (nsim,), terminated
  // (nsim,), metrics (nsim, nmetric) or null.
  void Evaluate(const double* before, const double* qpos, const double* qvel,
                const double* actions, const double* commands, const double* torques,
                float* reward, uint8_t* terminated, float* metrics);
  int ncommand() const { return command_dim_; }

  // Per-call helpers run on the batch's threads (public for the C callbacks).
  struct SimSlot {
    Rng rng;
    int t = 0;                // steps into the current episode
    double ret = 0;           // return of the current episode
    bool ended = true;        // the episode ended and no reset followed (or never reset)
    int delay = 0;            // command delay of the episode, physics steps
    int64_t commands_issued = 0;  // env steps whose command entered the ring this episode
    int64_t physics_steps = 0;    // physics steps this episode
    std::vector<double> commands; // (ncommand, act_dim) ring of issued commands
    std::vector<double> history;  // (nhistory, nq + nv) ring of states after physics steps
    std::vector<double> command;      // (ncommand) the command in force (FamilySpec commands)
    std::vector<double> last_action;  // (act_dim) the previous env step's action
    std::vector<double> air_time;     // (feet) seconds since each foot of kRewardFeetAirTime
                                      // left the ground
    std::vector<uint8_t> foot_contact;  // (feet) in contact at the previous env step
    double feet_reward = 0;           // kRewardFeetAirTime's value of the step just taken
  };
  void ResetSim(const mjModel* m, mjData* d, int sim);
  // Unweighted value of one reward term at d's state.
  double TermValue(const RewardTerm& t, const mjModel* m, const mjData* d, int sim,
                   const double* action, const double* qpos_before) const;
  // Computes what the observation and reward terms read at d's state. carry: the next call on
  // d is this simulation's next step (within a rollout), which may then skip work done here.
  void ComputeStages(const mjModel* m, mjData* d, bool carry) const;
  // Writes the observation; draws the sensor noise from the simulation's stream.
  void Observe(const mjModel* m, const mjData* d, int sim, float* out);
  // Restarts the delayed-sensor history from d's state (reset, set_state).
  void RestartHistory(const mjData* d, int sim);
  // qpos_before: qpos then qvel at the start of the env step (nq + nv; kRewardQposRate,
  // kRewardJointAccCost).
  double Reward(const mjModel* m, const mjData* d, int sim, const double* action,
                const double* qpos_before) const;
  bool Terminated(const mjModel* m, const mjData* d) const;
  // Book-keeping of an env step just taken, before its reward: the feet's air time.
  void BeginStepRecord(const mjModel* m, const mjData* d, int sim);
  // ... and after its reward: the last action, the command's resampling.
  void EndStepRecord(int sim, const double* action);
  // Draws the simulation's command c_i ~ U[command_lo_i, command_hi_i] from its stream.
  void DrawCommand(int sim);
  // The family's success condition after a step (false when it has none).
  bool Success(const mjModel* m, const mjData* d, int sim) const;
  // Applies action (through the actuator model), runs frame_skip substeps, computes the
  // stages; returns false if the simulation diverged. carry: d holds this simulation's stages
  // from ComputeStages(carry).
  bool Advance(const mjModel* m, mjData* d, int sim, const double* action, bool carry);
  // The env step's command from action: into the motors' command ring (actuator models),
  // which it returns, else into ctrl (returns null).
  const double* IssueCommand(const mjModel* m, mjData* d, int sim, const double* action);
  // Servo families: torques (act_dim) Nm as the motors' forces (qfrc_applied; null: zero);
  // else nothing.
  void ApplyTorques(mjData* d, const double* torques) const;
  bool servo() const { return spec_.actuators.mode == kActuatorsServo; }
  // The model controls action stands for (action -> ctrl mapping), ctrl: (act_dim).
  void ActionToCtrl(const mjModel* m, const double* action, double* ctrl) const;
  // The controls the control cost sees for the step just taken with action: the mapped
  // action (normalized actions), else the action itself.
  const double* CostControls(const mjData* d, int sim, const double* action) const;

  SimSlot& slot(int sim) { return slots_[sim]; }
  float* last_obs(int sim) { return last_obs_.data() + static_cast<size_t>(sim) * obs_dim_; }
  bool autoreset() const { return autoreset_; }

 private:
  // Runs func on ids (nullptr: all); simulations MuJoCo reports failed are listed in failed.
  int Apply(const int* ids, int nid, void (*func)(const mjModel*, mjData*, int, void*), void* arg,
            std::vector<int>* failed);

  FamilySpec spec_;
  std::vector<const mjModel*> models_;
  std::vector<double> params_;
  std::vector<SimSlot> slots_;
  std::vector<float> last_obs_;
  mjBatch* batch_ = nullptr;
  int nsim_ = 0, obs_dim_ = 0, act_dim_ = 0, nq_ = 0, nv_ = 0;
  int qpos_offset_ = 0, qvel_offset_ = 0, nstate_ = 0;
  bool autoreset_ = true;
  uint64_t first_stream_ = 0;  // stream of simulation 0
  bool split_step_ = false, need_acc_ = false, need_posvel_ = false, need_subtree_vel_ = false;
  int ncommand_ = 1;  // ring length: commands a delayed one can lag behind, + 1
  int command_dim_ = 0;  // size of FamilySpec's commands
  int feet_term_ = -1;   // index of the kRewardFeetAirTime term in spec_.reward, -1: none
  int nhistory_ = 0;  // ring length of the delayed sensors (0: none delayed)

  // Writes the motors' inputs for physics step j of the current env step.
  void ApplyCommand(const mjModel* m, mjData* d, int sim, int j);
  void CheckActuators(const mjModel* m0);
  // Writes qpos (nid, nq) and qvel (nid, nv) into the state rows of simulations ids (null:
  // 0..nid-1), in order.
  void WriteState(const int* ids, int nid, const double* qpos, const double* qvel);

 public:
  const double* params(int sim) const {
    return params_.data() + static_cast<size_t>(sim) * spec_.nparam;
  }
};

// Height of the heightfield geom's surface at world (x, y), m; the geom's base height where
// (x, y) is outside it. Needs d's geom positions (mj_kinematics).
double TerrainHeight(const mjModel* m, const mjData* d, int geom, double x, double y);

// Number of float32 entries an observation term writes for model m.
int ObsTermSize(const ObsTerm& term, const mjModel* m);

}  // namespace metarobot

#endif  // METAROBOT_ENGINE_H_
