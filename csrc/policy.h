// Gaussian MLP policy evaluated inside the simulation loop: mean = MLP(obs), action = mean +
// exp(log_std) * N(0, 1). float32 weights, as the torch module that exported them.
#ifndef METAROBOT_POLICY_H_
#define METAROBOT_POLICY_H_

#include <string>
#include <vector>

namespace metarobot {

enum Activation : int { kTanh = 0, kRelu = 1 };

struct MlpPolicy {
  std::vector<int> sizes;                     // obs_dim, hidden..., act_dim
  std::vector<std::vector<float>> weights_t;  // layer l: (sizes[l], sizes[l+1]), input-major
  std::vector<std::vector<float>> biases;     // layer l: (sizes[l+1],)
  std::vector<float> log_std;                 // (act_dim,)
  int activation = kTanh;

  int obs_dim() const { return sizes.front(); }
  int act_dim() const { return sizes.back(); }
  int widest() const;
  // Checks sizes of every array; returns "" or a message naming what does not fit.
  std::string Validate() const;
  // mean: (act_dim,); scratch: 2 * widest() floats.
  void Mean(const float* obs, float* mean, float* scratch) const;
};

}  // namespace metarobot

#endif  // METAROBOT_POLICY_H_
