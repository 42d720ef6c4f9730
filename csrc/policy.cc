#include "policy.h"

#include <algorithm>
#include <cmath>

namespace metarobot {

int MlpPolicy::widest() const { return *std::max_element(sizes.begin(), sizes.end()); }

std::string MlpPolicy::Validate() const {
  if (sizes.size() < 2) return "policy needs at least an input and an output size";
  for (int s : sizes) {
    if (s <= 0) return "policy layer sizes must be positive";
  }
  const size_t nlayer = sizes.size() - 1;
  if (weights_t.size() != nlayer || biases.size() != nlayer) {
    return "policy has " + std::to_string(weights_t.size()) + " weight and " +
           std::to_string(biases.size()) + " bias arrays, expected " + std::to_string(nlayer);
  }
  for (size_t l = 0; l < nlayer; ++l) {
    const size_t want = static_cast<size_t>(sizes[l]) * sizes[l + 1];
    if (weights_t[l].size() != want) {
      return "policy layer " + std::to_string(l) + " weight has " +
             std::to_string(weights_t[l].size()) + " entries, expected " + std::to_string(want);
    }
    if (biases[l].size() != static_cast<size_t>(sizes[l + 1])) {
      return "policy layer " + std::to_string(l) + " bias has " +
             std::to_string(biases[l].size()) + " entries, expected " +
             std::to_string(sizes[l + 1]);
    }
  }
  if (log_std.size() != static_cast<size_t>(act_dim())) {
    return "policy log_std has " + std::to_string(log_std.size()) + " entries, expected " +
           std::to_string(act_dim());
  }
  if (activation != kTanh && activation != kRelu) return "unknown policy activation";
  return "";
}

void MlpPolicy::Mean(const float* obs, float* mean, float* scratch) const {
  const int w = widest();
  const float* in = obs;
  float* bufs[2] = {scratch, scratch + w};
  const size_t nlayer = sizes.size() - 1;
  for (size_t l = 0; l < nlayer; ++l) {
    const int nin = sizes[l], nout = sizes[l + 1];
    float* out = (l + 1 == nlayer) ? mean : bufs[l % 2];
    const float* b = biases[l].data();
    const float* wt = weights_t[l].data();
    std::copy(b, b + nout, out);
    // input-major weights: the inner loop runs over contiguous outputs and vectorizes
    for (int i = 0; i < nin; ++i) {
      const float x = in[i];
      const float* row = wt + static_cast<size_t>(i) * nout;
      for (int j = 0; j < nout; ++j) out[j] += x * row[j];
    }
    if (l + 1 < nlayer) {
      if (activation == kRelu) {
        for (int j = 0; j < nout; ++j) out[j] = out[j] > 0.0f ? out[j] : 0.0f;
      } else {
        for (int j = 0; j < nout; ++j) out[j] = std::tanh(out[j]);
      }
    }
    in = out;
  }
}

}  // namespace metarobot
