// Error types thrown across layers and turned into Python exceptions by the bindings.
//
// Note [User errors vs internal invariants]
// DS_CHECK reports a misuse the caller can fix (bad argument, mismatched tensors); it throws
// UsageError, which Python sees as ValueError. DS_ASSERT guards our own invariants; a failure is
// a dist_sync bug and says so. Communication failures (a peer died, MPI returned an error) throw
// CommError, which names the peer rank, and are fatal for the engine.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace dist_sync {

// Base of everything dist_sync throws on purpose; maps to dist_sync.DistSyncError.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The ranks disagree on an operation (found by negotiation). Python sees DistSyncError with
// kind == "mismatch", so a front end with its own type for it (TensorFlow's
// FailedPreconditionError) converts it without reading the message.
class MismatchError : public Error {
 public:
  using Error::Error;
};

// A caller mistake; maps to ValueError.
class UsageError : public Error {
 public:
  using Error::Error;
};

// Communication with a peer failed. Fatal: the engine stops and fails every pending operation.
class CommError : public Error {
 public:
  CommError(const std::string& what, int peer) : Error(what), peer_(peer) {}
  int peer() const { return peer_; }

 private:
  int peer_;
};

// A wait exceeded its deadline (stall timeout). Fatal like CommError.
class TimeoutError : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}
}  // namespace detail

}  // namespace dist_sync

#define DS_CHECK(cond, ...)                                                 \
  do {                                                                      \
    if (!(cond)) throw ::dist_sync::UsageError(::dist_sync::detail::concat(__VA_ARGS__)); \
  } while (0)

#define DS_ASSERT(cond, ...)                                                          \
  do {                                                                                \
    if (!(cond))                                                                      \
      throw ::dist_sync::Error(::dist_sync::detail::concat(                           \
          "internal error (a dist_sync bug, please report it) at ", __FILE__, ":",    \
          __LINE__, ": ", #cond, ". ", ##__VA_ARGS__));                               \
  } while (0)
