// A last word from a rank that mpirun terminates: which ranks on this host had already died,
// and why dist_sync stopped, if it had (Note [Saying why mpirun ended a rank]).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dist_sync {

// Another rank on this host: its pid and how errors name it ("rank 1 (pid 4242 on node-a)").
struct PeerProcess {
  int32_t pid = 0;
  std::string description;
};

// Installs the SIGTERM handler, unless SIGTERM already has a handler other than the default
// (the user's, or Python's signal module's) — those stay untouched. Safe to call again after
// uninstall_termination_report() (a new session). Returns whether the handler is installed.
bool install_termination_report(int rank, const std::vector<PeerProcess>& peers);

// Restores SIGTERM's default action if the handler is still ours.
void uninstall_termination_report();

// The reason the engine stopped; the first one recorded after install is reported.
void record_termination_reason(const std::string& reason);

}  // namespace dist_sync
