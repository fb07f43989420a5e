// Which depthwise candidate kernel runs where it applies (fusedconv/launch.h): the switch, and
// under its default the measured rule, the one home of where a candidate beats the kernel it
// replaces (benchmarks/NOTES.md has the measurements).
#pragma once

#include "fusedconv/launch.h"
#include "fusedconv/params.h"

namespace fusedconv {

enum class DepthwiseCandidate : int {
  kRowsForward,         // NCHW forward by vector rows (depthwise.cu)
  kRowsBackward,        // NCHW grad_input and weight pass by vector rows (depthwise_backward.cu)
  kStagedForward,       // channels_last forward with staged filters (depthwise.cu)
  kStagedGradInput,     // channels_last grad_input with staged filters
  kSlidingWeightPass,   // channels_last weight pass by sliding rows
};

// Where each candidate was measured faster than the kernel it replaces, inside its domain (the
// launchers test the domain). None yet: no candidate has been measured.
inline bool candidate_measured_faster(DepthwiseCandidate candidate, const ConvParams& p) {
  (void)candidate;
  (void)p;
  return false;
}

inline bool run_candidate(DepthwiseCandidate candidate, const ConvParams& p) {
  switch (depthwise_candidates()) {
    case DepthwiseCandidates::kAll:
      return true;
    case DepthwiseCandidates::kNone:
      return false;
    default:
      return candidate_measured_faster(candidate, p);
  }
}

}  // namespace fusedconv
