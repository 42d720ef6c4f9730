#include "policy.h"

#include <algorithm>
#include <cmath>
#include <cstring>

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

namespace {

// Eight floats in a vector register (GCC/Clang vector extension: AVX where the CPU has it,
// two SSE registers otherwise).
typedef float Vec8 __attribute__((vector_size(32)));

__attribute__((always_inline)) inline Vec8 Load(const float* p) {
  Vec8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

__attribute__((always_inline)) inline void Store(float* p, Vec8 v) {
  std::memcpy(p, &v, sizeof(v));
}

// NB accumulators of 8 outputs each, starting at output j0; the inputs stream by. Enough
// independent accumulators hide the latency of the multiply-adds.
template <int NB>
__attribute__((always_inline)) inline void Block(const float* in, int nin, const float* wt,
                                                 const float* b, int nout, int j0, float* out) {
  Vec8 acc[NB];
  for (int k = 0; k < NB; ++k) acc[k] = Load(b + j0 + 8 * k);
  for (int i = 0; i < nin; ++i) {
    const Vec8 x = Vec8{} + in[i];
    const float* w = wt + static_cast<size_t>(i) * nout + j0;
    for (int k = 0; k < NB; ++k) acc[k] += x * Load(w + 8 * k);
  }
  for (int k = 0; k < NB; ++k) Store(out + j0 + 8 * k, acc[k]);
}

// out[j] = b[j] + sum_i in[i] * wt[i][j], weights input-major and read once, in order.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
void Layer(const float* in, int nin, const float* wt, const float* b, int nout, float* out) {
  int j0 = 0;
  for (; j0 + 64 <= nout; j0 += 64) Block<8>(in, nin, wt, b, nout, j0, out);
  if (j0 + 32 <= nout) {
    Block<4>(in, nin, wt, b, nout, j0, out);
    j0 += 32;
  }
  for (; j0 + 8 <= nout; j0 += 8) Block<1>(in, nin, wt, b, nout, j0, out);
  for (; j0 < nout; ++j0) {
    float a = b[j0];
    for (int i = 0; i < nin; ++i) a += in[i] * wt[static_cast<size_t>(i) * nout + j0];
    out[j0] = a;
  }
}

}  // namespace

void MlpPolicy::Mean(const float* obs, float* mean, float* scratch) const {
  const int w = widest();
  const float* in = obs;
  float* bufs[2] = {scratch, scratch + w};
  const size_t nlayer = sizes.size() - 1;
  for (size_t l = 0; l < nlayer; ++l) {
    const int nin = sizes[l], nout = sizes[l + 1];
    float* out = (l + 1 == nlayer) ? mean : bufs[l % 2];
    Layer(in, nin, weights_t[l].data(), biases[l].data(), nout, out);
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
