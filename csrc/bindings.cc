// Python bindings of the engine: convert and check arguments, release the GIL, call the core.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "bench.h"
#include "bindings.h"
#include "engine.h"
#include "policy.h"

namespace py = pybind11;
using metarobot::BatchEngine;

namespace {

template <typename T>
using Array = py::array_t<T, py::array::c_style>;

// A C-contiguous array of dtype T and the given shape, or ValueError naming the argument.
template <typename T>
T* Checked(py::handle obj, const char* name, std::vector<py::ssize_t> shape, bool writable) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::value_error(std::string(name) + " should be a numpy array");
  }
  auto arr = py::reinterpret_borrow<py::array>(obj);
  if (!arr.dtype().is(py::dtype::of<T>())) {
    throw py::value_error(std::string(name) + " should have dtype " +
                          std::string(py::str(py::dtype::of<T>())) + ", got " +
                          std::string(py::str(arr.dtype())));
  }
  bool ok = arr.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = arr.shape(i) == shape[i];
  if (!ok) {
    std::string want = "(", got = "(";
    for (auto s : shape) want += std::to_string(s) + ",";
    for (py::ssize_t i = 0; i < arr.ndim(); ++i) got += std::to_string(arr.shape(i)) + ",";
    throw py::value_error(std::string(name) + " should have shape " + want + ") , got " + got +
                          ")");
  }
  if (!(arr.flags() & py::array::c_style)) {
    throw py::value_error(std::string(name) + " should be C-contiguous");
  }
  if (writable && !arr.writeable()) throw py::value_error(std::string(name) + " is read-only");
  return static_cast<T*>(arr.mutable_data());
}

using ObsTuple = std::tuple<int, int, int, int, double, double, int, int, double, int, double,
                            std::vector<double>>;
using RewardTuple = std::tuple<int, double, int, int, int, double, double, double, int, int,
                               std::vector<int>>;
using TermTuple = std::tuple<int, int, double, double, int, std::vector<int>>;
using CommandsTuple = std::optional<std::tuple<std::vector<double>, std::vector<double>, int>>;
using SuccessTuple = std::optional<std::tuple<RewardTuple, double>>;

metarobot::RewardTerm ToRewardTerm(const RewardTuple& r) {
  const auto& [kind, weight, body, axis, param, scale, lo, hi, flag, other, bodies] = r;
  return {kind, weight, body, axis, param, scale, lo, hi, flag, other, bodies};
}

// The actuator model from plain numbers and lists by name; the core checks sizes and values.
metarobot::ActuatorSpec ToActuators(const py::dict& actuators) {
  metarobot::ActuatorSpec a;
  const char* known[] = {"mode", "qpos_adr", "dof_adr", "q_default", "action_scale", "kp", "kd",
                         "strength", "feedforward", "effort_limit", "saturation_torque",
                         "max_velocity", "delay_lo", "delay_hi", "noise_scale"};
  for (const auto& item : actuators) {
    const std::string key = py::str(item.first);
    bool ok = false;
    for (const char* k : known) ok = ok || key == k;
    if (!ok) throw py::value_error("actuators: unknown setting '" + key + "'");
  }
  auto ints = [&](const char* k, std::vector<int>* out) {
    if (actuators.contains(k)) *out = actuators[k].cast<std::vector<int>>();
  };
  auto doubles = [&](const char* k, std::vector<double>* out) {
    if (actuators.contains(k)) *out = actuators[k].cast<std::vector<double>>();
  };
  if (actuators.contains("mode")) a.mode = actuators["mode"].cast<int>();
  ints("qpos_adr", &a.qpos_adr);
  ints("dof_adr", &a.dof_adr);
  ints("delay_lo", &a.delay_lo);
  ints("delay_hi", &a.delay_hi);
  doubles("q_default", &a.q_default);
  doubles("action_scale", &a.action_scale);
  doubles("kp", &a.kp);
  doubles("kd", &a.kd);
  doubles("strength", &a.strength);
  doubles("feedforward", &a.feedforward);
  doubles("effort_limit", &a.effort_limit);
  doubles("saturation_torque", &a.saturation_torque);
  doubles("max_velocity", &a.max_velocity);
  doubles("noise_scale", &a.noise_scale);
  return a;
}

std::unique_ptr<BatchEngine> MakeEngine(const std::vector<uintptr_t>& model_addresses,
                                        const std::vector<ObsTuple>& obs,
                                        const std::vector<RewardTuple>& reward,
                                        const std::vector<TermTuple>& termination,
                                        int frame_skip, int horizon, double qpos_noise,
                                        double qvel_noise, bool uniform_noise,
                                        bool normalized_actions, int init_key, int nparam,
                                        const std::vector<double>& params, uint64_t seed,
                                        int nthread, bool autoreset,
                                        const SuccessTuple& success, uint64_t first_stream,
                                        const py::dict& actuators,
                                        const CommandsTuple& commands,
                                        const std::vector<RewardTuple>& metrics,
                                        double reward_floor) {
  metarobot::FamilySpec spec;
  spec.reward_floor = reward_floor;
  for (const RewardTuple& r : metrics) spec.metrics.push_back(ToRewardTerm(r));
  for (const auto& [kind, id, start, size, lo, hi, geom, columns, noise, delay, scale, offset] :
       obs) {
    spec.obs.push_back({kind, id, start, size, lo, hi, geom, columns, noise, delay, scale,
                        offset});
  }
  if (commands) {
    spec.command_lo = std::get<0>(*commands);
    spec.command_hi = std::get<1>(*commands);
    spec.command_resample = std::get<2>(*commands);
  }
  spec.actuators = ToActuators(actuators);
  for (const RewardTuple& r : reward) spec.reward.push_back(ToRewardTerm(r));
  for (const auto& [kind, index, lo, hi, geom, bodies] : termination) {
    spec.termination.push_back({kind, index, lo, hi, geom, bodies});
  }
  if (success) {
    spec.has_success = true;
    spec.success_term = ToRewardTerm(std::get<0>(*success));
    spec.success_threshold = std::get<1>(*success);
  }
  spec.frame_skip = frame_skip;
  spec.horizon = horizon;
  spec.qpos_noise = qpos_noise;
  spec.qvel_noise = qvel_noise;
  spec.uniform_noise = uniform_noise;
  spec.normalized_actions = normalized_actions;
  spec.init_key = init_key;
  spec.nparam = nparam;
  std::vector<const mjModel*> models;
  models.reserve(model_addresses.size());
  for (uintptr_t a : model_addresses) models.push_back(reinterpret_cast<const mjModel*>(a));
  return std::make_unique<BatchEngine>(models, spec, params, seed, nthread, autoreset,
                                       first_stream);
}

const int* Ids(py::handle ids, int nsim, int* nid) {
  if (ids.is_none()) {
    *nid = nsim;
    return nullptr;
  }
  auto arr = py::reinterpret_borrow<py::array>(ids);
  if (arr.ndim() != 1) throw py::value_error("ids should be one-dimensional");
  *nid = static_cast<int>(arr.shape(0));
  const int* p = Checked<int32_t>(ids, "ids", {arr.shape(0)}, false);
  for (int k = 0; k < *nid; ++k) {
    if (p[k] < 0 || p[k] >= nsim || (k && p[k] <= p[k - 1])) {
      throw py::value_error("ids should be sorted, unique and in [0, " + std::to_string(nsim) +
                            ")");
    }
  }
  return p;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "metarobot's C++ core: batched closed-loop MuJoCo rollouts and advantage kernels";
  m.attr("MUJOCO_HEADER_VERSION") = mjVERSION_HEADER;
  m.def("mujoco_library_version", [] { return mj_version(); },
        "mj_version() of the libmujoco this extension runs on");

  m.def(
      "time_mj_step_loop",
      [](uintptr_t model_address, int64_t nstep, int frame_skip, int horizon, uint64_t seed) {
        if (nstep < 1 || frame_skip < 1 || horizon < 1) {
          throw py::value_error("nstep, frame_skip and horizon should be >= 1");
        }
        const auto* model = reinterpret_cast<const mjModel*>(model_address);
        py::gil_scoped_release release;
        return metarobot::TimeStepLoop(model, nstep, frame_skip, horizon, seed);
      },
      py::arg("model_address"), py::arg("nstep"), py::arg("frame_skip"), py::arg("horizon"),
      py::arg("seed") = 0,
      "Seconds of a single-thread C loop of nstep mj_step calls (the benchmark ceiling)");
  m.def(
      "time_servo_loop",
      [](uintptr_t model_address, const py::dict& actuators, int64_t nstep, int decimation,
         int horizon, uint64_t seed, int key) {
        if (nstep < 1 || decimation < 1 || horizon < 1) {
          throw py::value_error("nstep, decimation and horizon should be >= 1");
        }
        const auto* model = reinterpret_cast<const mjModel*>(model_address);
        const metarobot::ActuatorSpec spec = ToActuators(actuators);
        py::gil_scoped_release release;
        return metarobot::TimeServoLoop(model, spec, nstep, decimation, horizon, seed, key);
      },
      py::arg("model_address"), py::arg("actuators"), py::arg("nstep"), py::arg("decimation"),
      py::arg("horizon"), py::arg("seed") = 0, py::arg("key") = -1,
      "Seconds of a single-thread C loop of nstep mj_step calls through servo motors (the "
      "ceiling of sampling with actuators); actuators as BatchEngine's, simulation 0's used");

  py::class_<BatchEngine>(m, "BatchEngine")
      .def(py::init(&MakeEngine), py::arg("model_addresses"), py::arg("obs_terms"),
           py::arg("reward_terms"), py::arg("termination_terms"), py::arg("frame_skip"),
           py::arg("horizon"), py::arg("qpos_noise"), py::arg("qvel_noise"),
           py::arg("uniform_noise"), py::arg("normalized_actions"), py::arg("init_key"), py::arg("nparam"), py::arg("params"),
           py::arg("seed"),
           py::arg("nthread"), py::arg("autoreset"), py::arg("success") = py::none(),
           py::arg("first_stream") = 0, py::arg("actuators") = py::dict(),
           py::arg("commands") = py::none(),
           py::arg("metric_terms") = std::vector<RewardTuple>(),
           py::arg("reward_floor") = -std::numeric_limits<double>::infinity())
      .def_property_readonly("nmetric", &BatchEngine::nmetric)
      .def_property_readonly("nsim", &BatchEngine::nsim)
      .def_property_readonly("obs_dim", &BatchEngine::obs_dim)
      .def_property_readonly("act_dim", &BatchEngine::act_dim)
      .def_property_readonly("nq", &BatchEngine::nq)
      .def_property_readonly("nv", &BatchEngine::nv)
      .def_property_readonly("nthread", &BatchEngine::nthread)
      .def("seed", [](BatchEngine& e, uint64_t seed) { e.Seed(seed); })
      .def("reset",
           [](BatchEngine& e, py::object ids, py::object obs) {
             int nid = 0;
             const int* p = Ids(ids, e.nsim(), &nid);
             float* o = Checked<float>(obs, "obs", {e.nsim(), e.obs_dim()}, true);
             py::gil_scoped_release release;
             e.Reset(p, nid, o);
           })
      .def("step",
           [](BatchEngine& e, py::object actions, py::object obs, py::object reward,
              py::object terminated, py::object truncated, py::object diverged,
              py::object final_obs, py::object ended, py::object episode_return,
              py::object episode_length, py::object success, py::object metrics) {
             const py::ssize_t n = e.nsim(), od = e.obs_dim();
             const double* a = Checked<double>(actions, "actions", {n, e.act_dim()}, false);
             metarobot::StepOutputs out;
             out.obs = Checked<float>(obs, "obs", {n, od}, true);
             out.reward = Checked<float>(reward, "reward", {n}, true);
             out.terminated = Checked<uint8_t>(terminated, "terminated", {n}, true);
             out.truncated = Checked<uint8_t>(truncated, "truncated", {n}, true);
             out.diverged = Checked<uint8_t>(diverged, "diverged", {n}, true);
             out.final_obs = Checked<float>(final_obs, "final_obs", {n, od}, true);
             out.ended = Checked<uint8_t>(ended, "ended", {n}, true);
             out.episode_return = Checked<double>(episode_return, "episode_return", {n}, true);
             out.episode_length = Checked<int32_t>(episode_length, "episode_length", {n}, true);
             out.success = Checked<uint8_t>(success, "success", {n}, true);
             out.metrics = Checked<float>(metrics, "metrics", {n, e.nmetric()}, true);
             py::gil_scoped_release release;
             e.Step(a, out);
           })
      .def("rollout",
           [](BatchEngine& e, const std::vector<py::tuple>& policies, py::object policy_index,
              int horizon, bool deterministic, py::object obs, py::object actions,
              py::object rewards, py::object terminated, py::object truncated, py::object valid,
              py::object final_obs, py::object length, py::object diverged,
              py::object success, py::object metrics) {
             // each policy: (sizes, weights (in, out) float32, biases, log_std, activation)
             std::vector<metarobot::MlpPolicy> converted;
             for (const py::tuple& p : policies) {
               if (p.size() != 5) throw py::value_error("a policy is a tuple of 5 entries");
               metarobot::MlpPolicy policy;
               policy.sizes = p[0].cast<std::vector<int>>();
               const auto weights = p[1].cast<std::vector<py::object>>();
               const auto biases = p[2].cast<std::vector<py::object>>();
               policy.activation = p[4].cast<int>();
               const std::vector<int>& sizes = policy.sizes;
               if (sizes.size() < 2 || weights.size() + 1 != sizes.size() ||
                   biases.size() + 1 != sizes.size()) {
                 throw py::value_error("policy needs one weight and one bias per layer");
               }
               for (size_t l = 0; l + 1 < sizes.size(); ++l) {
                 const float* w =
                     Checked<float>(weights[l], "policy weight", {sizes[l], sizes[l + 1]}, false);
                 const float* b = Checked<float>(biases[l], "policy bias", {sizes[l + 1]}, false);
                 policy.weights_t.emplace_back(w, w + sizes[l] * sizes[l + 1]);
                 policy.biases.emplace_back(b, b + sizes[l + 1]);
               }
               const float* ls = Checked<float>(p[3], "policy log_std", {sizes.back()}, false);
               policy.log_std.assign(ls, ls + sizes.back());
               converted.push_back(std::move(policy));
             }
             const int* index = nullptr;
             if (!policy_index.is_none()) {
               index = Checked<int32_t>(policy_index, "policy_index", {e.nsim()}, false);
             }
             if (horizon < 1) {
               throw py::value_error("horizon should be >= 1, got " + std::to_string(horizon));
             }
             const py::ssize_t n = e.nsim(), od = e.obs_dim(), ad = e.act_dim(), T = horizon;
             metarobot::RolloutOutputs out;
             out.obs = Checked<float>(obs, "observations", {T, n, od}, true);
             out.actions = Checked<float>(actions, "actions", {T, n, ad}, true);
             out.rewards = Checked<float>(rewards, "rewards", {T, n}, true);
             out.terminated = Checked<uint8_t>(terminated, "terminated", {T, n}, true);
             out.truncated = Checked<uint8_t>(truncated, "truncated", {T, n}, true);
             out.valid = Checked<uint8_t>(valid, "valid", {T, n}, true);
             out.final_obs = Checked<float>(final_obs, "final_observations", {n, od}, true);
             out.length = Checked<int32_t>(length, "lengths", {n}, true);
             out.diverged = Checked<uint8_t>(diverged, "diverged", {n}, true);
             out.success = Checked<uint8_t>(success, "success", {T, n}, true);
             out.metrics = Checked<float>(metrics, "metrics", {T, n, e.nmetric()}, true);
             py::gil_scoped_release release;
             e.Rollout(converted, index, horizon, deterministic, out);
           })
      .def_property_readonly("ncommand", &BatchEngine::ncommand)
      .def("evaluate",
           [](BatchEngine& e, py::object before, py::object qpos, py::object qvel,
              py::object actions, py::object commands, py::object torques, py::object reward,
              py::object terminated, py::object metrics) {
             const py::ssize_t n = e.nsim();
             const double* b = Checked<double>(before, "before", {n, e.nq() + e.nv()}, false);
             const double* q = Checked<double>(qpos, "qpos", {n, e.nq()}, false);
             const double* v = Checked<double>(qvel, "qvel", {n, e.nv()}, false);
             const double* a = Checked<double>(actions, "actions", {n, e.act_dim()}, false);
             const double* c = commands.is_none()
                                   ? nullptr
                                   : Checked<double>(commands, "commands", {n, e.ncommand()},
                                                     false);
             const double* t = torques.is_none()
                                   ? nullptr
                                   : Checked<double>(torques, "torques", {n, e.act_dim()}, false);
             float* r = Checked<float>(reward, "reward", {n}, true);
             uint8_t* term = Checked<uint8_t>(terminated, "terminated", {n}, true);
             float* mt = Checked<float>(metrics, "metrics", {n, e.nmetric()}, true);
             py::gil_scoped_release release;
             e.Evaluate(b, q, v, a, c, t, r, term, mt);
           })
      .def("get_state",
           [](const BatchEngine& e, py::object qpos, py::object qvel) {
             double* q = Checked<double>(qpos, "qpos", {e.nsim(), e.nq()}, true);
             double* v = Checked<double>(qvel, "qvel", {e.nsim(), e.nv()}, true);
             py::gil_scoped_release release;
             e.GetState(q, v);
           })
      .def("set_state",
           [](BatchEngine& e, py::object ids, py::object qpos, py::object qvel, py::object obs) {
             int nid = 0;
             const int* p = Ids(ids, e.nsim(), &nid);
             std::vector<int> all;
             if (!p) {
               all.resize(e.nsim());
               for (int i = 0; i < e.nsim(); ++i) all[i] = i;
               p = all.data();
             }
             const double* q = Checked<double>(qpos, "qpos", {nid, e.nq()}, false);
             const double* v = Checked<double>(qvel, "qvel", {nid, e.nv()}, false);
             float* o = Checked<float>(obs, "obs", {e.nsim(), e.obs_dim()}, true);
             py::gil_scoped_release release;
             e.SetState(p, nid, q, v, o);
           });

  metarobot::BindGae(m);
}
