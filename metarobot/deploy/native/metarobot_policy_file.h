// Loads an exported metarobot policy (policy.bin) and computes the robot's controls from an
// observation: controls = map(mean(obs)), the MLP evaluated by the same code as metarobot's
// simulator (policy.h / policy.cc), the map the task family's (centre + a * half-range,
// clipped, for normalised actions; else clipped to the ranges of limited actuators).
// Plain C++17, no dependencies.
//
// policy.bin, little-endian:
//   char[8] "MRPOLICY"; uint32 version (1), nlayers, activation (0 tanh, 1 relu),
//   normalized (0/1); uint32 sizes[nlayers + 1] (obs_dim, hidden..., act_dim);
//   per layer l: float32 weights[sizes[l]][sizes[l+1]] (input-major), float32 bias[sizes[l+1]];
//   float32 log_std[act_dim]; per actuator: float64 low, high, limited (0/1).
#ifndef METAROBOT_POLICY_FILE_H_
#define METAROBOT_POLICY_FILE_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "policy.h"

namespace metarobot {

class DeployedPolicy {
 public:
  // Reads path; returns "" or what is wrong with the file.
  std::string Load(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return "cannot open " + path;
    std::vector<char> bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    size_t at = 0;
    auto take = [&](void* dst, size_t n) {
      if (at + n > bytes.size()) return false;
      std::memcpy(dst, bytes.data() + at, n);
      at += n;
      return true;
    };
    char magic[8];
    uint32_t head[4];
    if (!take(magic, 8) || std::memcmp(magic, "MRPOLICY", 8) != 0) {
      return path + " is not a metarobot policy file";
    }
    if (!take(head, sizeof(head))) return path + " is truncated (header)";
    if (head[0] != 1) return path + " has version " + std::to_string(head[0]) + ", expected 1";
    const uint32_t nlayers = head[1];
    if (nlayers < 1 || nlayers > 64) return path + " has " + std::to_string(nlayers) + " layers";
    mlp_.activation = static_cast<int>(head[2]);
    normalized_ = head[3] != 0;
    std::vector<uint32_t> sizes(nlayers + 1);
    if (!take(sizes.data(), 4 * sizes.size())) return path + " is truncated (sizes)";
    // the sizes say how long the file must be: check that before allocating anything, so a
    // corrupted size is an error message, not an allocation of gigabytes
    uint64_t want = at;
    for (uint32_t l = 0; l <= nlayers; ++l) {
      if (sizes[l] < 1 || sizes[l] > (1u << 20)) {
        return path + " has a layer of " + std::to_string(sizes[l]) + " units (corrupted?)";
      }
    }
    for (uint32_t l = 0; l < nlayers; ++l) {
      want += 4ull * sizes[l] * sizes[l + 1] + 4ull * sizes[l + 1];
    }
    want += 4ull * sizes.back() + 24ull * sizes.back();  // log_std, per actuator 3 float64
    if (want != bytes.size()) {
      return path + " has " + std::to_string(bytes.size()) + " bytes, its layer sizes make " +
             std::to_string(want) + (want > bytes.size() ? " (truncated)" : " (extra bytes)");
    }
    mlp_.sizes.assign(sizes.begin(), sizes.end());
    for (uint32_t l = 0; l < nlayers; ++l) {
      std::vector<float> w(static_cast<size_t>(sizes[l]) * sizes[l + 1]), b(sizes[l + 1]);
      if (!take(w.data(), 4 * w.size()) || !take(b.data(), 4 * b.size())) {
        return path + " is truncated (layer " + std::to_string(l) + ")";
      }
      mlp_.weights_t.push_back(std::move(w));
      mlp_.biases.push_back(std::move(b));
    }
    mlp_.log_std.resize(sizes.back());
    if (!take(mlp_.log_std.data(), 4 * mlp_.log_std.size())) return path + " is truncated";
    ranges_.resize(3 * sizes.back());
    if (!take(ranges_.data(), 8 * ranges_.size())) return path + " is truncated (ranges)";
    if (at != bytes.size()) return path + " has " + std::to_string(bytes.size() - at) + " extra bytes";
    const std::string bad = mlp_.Validate();
    if (!bad.empty()) return path + ": " + bad;
    scratch_.assign(2 * mlp_.widest(), 0.0f);
    mean_.assign(mlp_.act_dim(), 0.0f);
    return "";
  }

  int obs_dim() const { return mlp_.obs_dim(); }
  int act_dim() const { return mlp_.act_dim(); }

  // obs: obs_dim floats -> controls: act_dim floats (not thread-safe: one scratch buffer).
  void Act(const float* obs, float* controls) {
    mlp_.Mean(obs, mean_.data(), scratch_.data());
    for (int i = 0; i < act_dim(); ++i) {
      const double lo = ranges_[3 * i], hi = ranges_[3 * i + 1];
      const bool limited = ranges_[3 * i + 2] != 0.0;
      double u = mean_[i];
      if (normalized_) u = 0.5 * (lo + hi) + u * (0.5 * (hi - lo));
      if (limited) u = std::min(std::max(u, lo), hi);
      controls[i] = static_cast<float>(u);
    }
  }

 private:
  MlpPolicy mlp_;
  bool normalized_ = false;
  std::vector<double> ranges_;  // per actuator: low, high, limited
  std::vector<float> scratch_, mean_;
};

}  // namespace metarobot

#endif  // METAROBOT_POLICY_FILE_H_
