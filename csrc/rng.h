// Per-simulation random stream: xoshiro256** seeded by splitmix64 from (seed, simulation index),
// so a simulation's draws never depend on the thread that runs it or on the batch split.
#ifndef METAROBOT_RNG_H_
#define METAROBOT_RNG_H_

#include <cmath>
#include <cstdint>

namespace metarobot {

inline uint64_t SplitMix64(uint64_t* x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

class Rng {
 public:
  void Seed(uint64_t seed, uint64_t stream) {
    uint64_t x = seed;
    uint64_t mix = SplitMix64(&x) ^ (stream * 0xD1B54A32D192ED03ull);
    for (uint64_t& w : s_) w = SplitMix64(&mix);
    has_spare_ = false;
  }

  uint64_t Next() {
    const uint64_t result = Rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = Rotl(s_[3], 45);
    return result;
  }

  // Uniform in (0, 1): 53 random bits, never 0 so that log() is finite.
  double Uniform() { return (static_cast<double>(Next() >> 11) + 0.5) * 0x1.0p-53; }

  // Standard normal (Box-Muller, both values used).
  double Normal() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double r = std::sqrt(-2.0 * std::log(Uniform()));
    const double phi = 6.283185307179586 * Uniform();
    spare_ = r * std::sin(phi);
    has_spare_ = true;
    return r * std::cos(phi);
  }

 private:
  static uint64_t Rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4] = {1, 2, 3, 4};
  double spare_ = 0;
  bool has_spare_ = false;
};

}  // namespace metarobot

#endif  // METAROBOT_RNG_H_
