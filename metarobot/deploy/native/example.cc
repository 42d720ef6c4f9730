// An exported policy on a robot's computer: reads observations (obs_dim numbers per line)
// from stdin and prints the controls (act_dim numbers per line), or with --bench N times N
// evaluations of one observation and prints the latency percentiles in microseconds.
//   ./metarobot_policy_example policy.bin < observations.txt
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "metarobot_policy_file.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s policy.bin [--bench N] < observations\n", argv[0]);
    return 2;
  }
  metarobot::DeployedPolicy policy;
  const std::string err = policy.Load(argv[1]);
  if (!err.empty()) {
    std::fprintf(stderr, "error: %s\n", err.c_str());
    return 1;
  }
  std::vector<float> obs(policy.obs_dim()), ctrl(policy.act_dim());
  if (argc >= 4 && std::string(argv[2]) == "--bench") {
    const int n = std::max(1, std::atoi(argv[3]));
    std::vector<double> us(n);
    for (int k = 0; k < n; ++k) {
      for (int i = 0; i < policy.obs_dim(); ++i) obs[i] = 0.01f * ((k + i) % 17);
      const auto t0 = std::chrono::steady_clock::now();
      policy.Act(obs.data(), ctrl.data());
      us[k] = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
    }
    std::sort(us.begin(), us.end());
    std::printf("p50 %.3f p99 %.3f\n", us[n / 2], us[std::min(n - 1, n * 99 / 100)]);
    return 0;
  }
  std::string line;
  int lineno = 0;
  while (std::getline(std::cin, line)) {
    ++lineno;
    // every non-blank line must be exactly obs_dim finite numbers: a line skipped or cut
    // short would put the output lines out of step with the input lines
    std::istringstream in(line);
    std::string word;
    int got = 0;
    bool blank = true;
    while (in >> word) {
      blank = false;
      char* end = nullptr;
      const float value = std::strtof(word.c_str(), &end);
      if (end == word.c_str() || *end != '\0' || !std::isfinite(value)) {
        std::fprintf(stderr, "error: line %d: '%s' is not a finite number\n", lineno,
                     word.c_str());
        return 1;
      }
      if (got < policy.obs_dim()) obs[got] = value;
      ++got;
    }
    if (blank) continue;
    if (got != policy.obs_dim()) {
      std::fprintf(stderr, "error: line %d has %d numbers, the policy takes %d\n", lineno, got,
                   policy.obs_dim());
      return 1;
    }
    policy.Act(obs.data(), ctrl.data());
    for (int i = 0; i < policy.act_dim(); ++i) std::printf(i ? " %.9g" : "%.9g", ctrl[i]);
    std::printf("\n");
  }
  return 0;
}
