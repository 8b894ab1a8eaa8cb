#include "common/termination_report.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

namespace dist_sync {
namespace {

// Note [Saying why mpirun ended a rank]
// When a rank dies (killed, crashed, exited), Open MPI's mpirun ends every other rank with
// SIGTERM at once, before their engines' once-a-second liveness check (Waiter) can notice,
// and usually before Python could print anything: SIGTERM's default action kills silently, and
// the user is left with mpirun's own note, or a bare "terminated". So while dist_sync runs, and
// only where SIGTERM still had its default action (a handler of the user's or of Python's
// signal module is never replaced), this handler writes one line to stderr: the ranks on this
// host that had already exited (kill(pid, 0) fails with ESRCH) and the reason dist_sync had
// stopped, if it had (a peer's uncaught exception, a stall timeout). Then it lingers 200 ms, so
// that a peer which got the same SIGTERM a moment later still sees this rank alive and does not
// name it as a lost rank, and dies of SIGTERM as before: SA_RESETHAND restored the default
// action on entry, and the re-raised signal is delivered when the handler returns.
// A signal handler may only call async-signal-safe functions, so everything it reports is
// formatted beforehand into static storage, and it uses kill, write, poll, getpid and raise only.
// A process forked after init() (a DataLoader worker) inherits the handler; it stays silent
// there.

constexpr size_t kMaxPeers = 1024;
constexpr size_t kDescriptionBytes = 160;
constexpr size_t kReasonBytes = 2048;
constexpr int kLingerMilliseconds = 200;

struct Peer {
  pid_t pid;
  char description[kDescriptionBytes];
};

Peer g_peers[kMaxPeers];
std::atomic<size_t> g_peer_count{0};
char g_prefix[64];
pid_t g_owner = 0;
char g_reason[kReasonBytes];
// 0: no reason yet; 1: being written; 2: complete (the handler reads it only then).
std::atomic<int> g_reason_state{0};
std::atomic<bool> g_installed{false};

static_assert(std::atomic<size_t>::is_always_lock_free && std::atomic<int>::is_always_lock_free,
              "the signal handler reads these atomics");

void copy_bounded(char* destination, size_t capacity, const std::string& text) {
  const size_t length = text.size() < capacity - 1 ? text.size() : capacity - 1;
  std::memcpy(destination, text.data(), length);
  destination[length] = '\0';
}

// Appends a C string to line[0..capacity), keeping room for the final newline.
void append(char* line, size_t capacity, size_t* length, const char* text) {
  while (*text != '\0' && *length + 2 < capacity) line[(*length)++] = *text++;
}

void on_sigterm(int signal_number) {
  const int saved_errno = errno;
  if (getpid() == g_owner) {
    char line[4096];
    const size_t capacity = sizeof(line);
    size_t length = 0;
    append(line, capacity, &length, g_prefix);
    append(line, capacity, &length,
           "terminated by SIGTERM, which mpirun sends to every rank when one rank fails or the "
           "job is interrupted. ");
    bool any_gone = false;
    const size_t count = g_peer_count.load(std::memory_order_acquire);
    for (size_t i = 0; i < count; ++i) {
      if (kill(g_peers[i].pid, 0) != 0 && errno == ESRCH) {
        append(line, capacity, &length,
               any_gone ? ", " : "Ranks on this host that had exited or been killed: ");
        append(line, capacity, &length, g_peers[i].description);
        any_gone = true;
      }
    }
    append(line, capacity, &length,
           any_gone ? "."
                    : "No other rank on this host had exited (a rank on another host may have "
                      "failed: see mpirun's message).");
    if (g_reason_state.load(std::memory_order_acquire) == 2) {
      append(line, capacity, &length, " dist_sync had stopped: ");
      append(line, capacity, &length, g_reason);
    }
    line[length++] = '\n';
    size_t written = 0;
    while (written < length) {
      const ssize_t n = write(STDERR_FILENO, line + written, length - written);
      if (n > 0) {
        written += static_cast<size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        break;
      }
    }
    poll(nullptr, 0, kLingerMilliseconds);
  }
  errno = saved_errno;
  raise(signal_number);  // default action again (SA_RESETHAND): dies when the handler returns
}

bool handler_is_ours(const struct sigaction& action) {
  return (action.sa_flags & SA_SIGINFO) == 0 && action.sa_handler == &on_sigterm;
}

}  // namespace

bool install_termination_report(int rank, const std::vector<PeerProcess>& peers) {
  struct sigaction current;
  if (sigaction(SIGTERM, nullptr, &current) != 0) return false;
  const bool ours = handler_is_ours(current);
  if (!ours && ((current.sa_flags & SA_SIGINFO) != 0 || current.sa_handler != SIG_DFL)) {
    return false;  // somebody else's handler (or SIG_IGN): theirs to keep
  }
  // Not yet installed (or installed by a previous session of this process, whose data this
  // replaces): fill the data first, then publish the count the handler reads.
  g_peer_count.store(0, std::memory_order_release);
  size_t count = 0;
  for (const PeerProcess& peer : peers) {
    if (count == kMaxPeers) break;
    g_peers[count].pid = static_cast<pid_t>(peer.pid);
    copy_bounded(g_peers[count].description, kDescriptionBytes, peer.description);
    ++count;
  }
  copy_bounded(g_prefix, sizeof(g_prefix), "[dist_sync rank " + std::to_string(rank) + "] ");
  g_owner = getpid();
  g_reason_state.store(0, std::memory_order_release);
  g_peer_count.store(count, std::memory_order_release);
  if (!ours) {
    struct sigaction action;
    std::memset(&action, 0, sizeof(action));
    action.sa_handler = &on_sigterm;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESETHAND;
    if (sigaction(SIGTERM, &action, nullptr) != 0) return false;
  }
  g_installed.store(true);
  return true;
}

void uninstall_termination_report() {
  if (!g_installed.exchange(false)) return;
  struct sigaction current;
  if (sigaction(SIGTERM, nullptr, &current) != 0 || !handler_is_ours(current)) return;
  struct sigaction action;
  std::memset(&action, 0, sizeof(action));
  action.sa_handler = SIG_DFL;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
}

void record_termination_reason(const std::string& reason) {
  if (!g_installed.load()) return;
  int expected = 0;
  if (!g_reason_state.compare_exchange_strong(expected, 1)) return;  // the first reason wins
  copy_bounded(g_reason, kReasonBytes, reason);
  g_reason_state.store(2, std::memory_order_release);
}

}  // namespace dist_sync
