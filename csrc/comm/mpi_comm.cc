#include "comm/mpi_comm.h"

#include <mpi.h>
#include "comm/mpi_handle.h"
#if __has_include(<mpi-ext.h>)
#include <mpi-ext.h>  // Open MPI's extensions, ULFM's MPIX_ calls among them
#endif
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <iterator>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "common/errors.h"

// ULFM as Open MPI ships it: the error classes, revoke/shrink, and the MPIX_FT attribute that
// says whether the launcher enabled it. MPICH declares some MPIX_ names but not the attribute;
// it builds without (Note [Surviving a lost rank]).
#if defined(MPIX_ERR_PROC_FAILED) && defined(MPIX_ERR_REVOKED) && defined(MPIX_FT)
#define DIST_SYNC_HAVE_ULFM 1
#else
#define DIST_SYNC_HAVE_ULFM 0
#endif

namespace dist_sync {
namespace {

bool g_we_initialized_mpi = false;
std::atomic<bool> g_peer_lost{false};

// A code that says a peer died or a communicator was revoked because one did. A batch of
// requests reports MPI_ERR_IN_STATUS (the cause is in statuses the hot path does not ask for), so
// then `comm` itself is asked whether it was revoked or has lost a process.
bool is_peer_failure(int code, MPI_Comm comm) {
#if DIST_SYNC_HAVE_ULFM
  int error_class = code;
  MPI_Error_class(code, &error_class);
  if (error_class == MPIX_ERR_PROC_FAILED || error_class == MPIX_ERR_REVOKED ||
      error_class == MPIX_ERR_PROC_FAILED_PENDING) {
    return true;
  }
  if (error_class != MPI_ERR_IN_STATUS || comm == MPI_COMM_NULL) return false;
  int revoked = 0;
  MPIX_Comm_is_revoked(comm, &revoked);
  if (revoked) return true;
  MPI_Group failed = MPI_GROUP_NULL;
  if (MPIX_Comm_get_failed(comm, &failed) != MPI_SUCCESS) return false;
  int lost = 0;
  MPI_Group_size(failed, &lost);
  MPI_Group_free(&failed);
  return lost > 0;
#else
  static_cast<void>(code);
  static_cast<void>(comm);
  return false;
#endif
}

// Note [Surviving a lost rank]: remembers the loss and revokes `comm`, so the survivors waiting
// on a rank that will now stop sending learn of it as fast as the dead rank's neighbours do.
void note_peer_failure(MPI_Comm comm) {
  g_peer_lost.store(true);
#if DIST_SYNC_HAVE_ULFM
  if (comm != MPI_COMM_NULL) MPIX_Comm_revoke(comm);
#else
  static_cast<void>(comm);
#endif
}

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) return "MPI error " + std::to_string(code);
  return std::string(text, static_cast<size_t>(length));
}

// MPI counts are int; larger messages go as several pieces of this size (matched in order).
constexpr size_t kMaxPieceBytes = size_t{1} << 30;

class MpiTransfer final : public Transfer {
 public:
  MpiTransfer(const MpiCommunicator& comm, MPI_Comm mpi, int peer, bool is_send)
      : comm_(comm), mpi_(mpi), peer_(peer), is_send_(is_send) {}

  ~MpiTransfer() override {
    // Only reached with requests pending when an error abandons a collective; the engine is
    // going down then, so the requests are released rather than waited for.
    for (MPI_Request& request : requests_) {
      if (request == MPI_REQUEST_NULL) continue;
      if (!is_send_) MPI_Cancel(&request);
      MPI_Request_free(&request);
    }
  }

  void add(MPI_Request request) { requests_.push_back(request); }

  bool test() override {
    if (done_) return true;
    int flag = 0;
    const int code = MPI_Testall(static_cast<int>(requests_.size()), requests_.data(), &flag,
                                 MPI_STATUSES_IGNORE);
    if (code != MPI_SUCCESS) fail(code);
    done_ = flag != 0;
    return done_;
  }

  [[noreturn]] void fail(int code) const {
    if (is_peer_failure(code, mpi_)) note_peer_failure(mpi_);
    throw CommError(detail::concat(is_send_ ? "sending to " : "receiving from ",
                                   comm_.describe_rank(peer_), " failed: ",
                                   comm_.explain_failure(code)),
                    peer_);
  }

 private:
  const MpiCommunicator& comm_;
  MPI_Comm mpi_;
  int peer_;
  bool is_send_;
  bool done_ = false;
  std::vector<MPI_Request> requests_;
};

}  // namespace

void check_mpi(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  if (is_peer_failure(code, MPI_COMM_NULL)) g_peer_lost.store(true);
  throw Error(detail::concat(call, " failed: ", mpi_error_string(code)));
}

namespace {

// Note [Singleton shared memory]
// Started without a launcher (`python train.py`), Open MPI runs as a singleton, and nobody is
// left to remove the 16 MiB file its shared-memory transport creates in MPI_Init
// (/dev/shm/sm_segment.*): every such run would leak one, until /dev/shm fills up. One process
// needs no shared memory, so for the duration of MPI_Init the transport is excluded (added to
// an exclusion list the user set, such as the recommended OMPI_MCA_btl=^ofi; a list of chosen
// transports is the user's choice and stays as it is). The variable is restored afterwards, so
// processes this one starts (an mpirun of its own) are unaffected.
class SingletonSharedMemoryGuard {
 public:
  SingletonSharedMemoryGuard() {
#ifdef OPEN_MPI
    for (const char* launched : {"PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK"}) {
      if (std::getenv(launched) != nullptr) return;  // a launcher started us: it cleans up
    }
    const char* current = std::getenv(kVariable);
    std::string value;
    if (current == nullptr || *current == '\0') {
      value = "^sm";
    } else if (current[0] == '^') {
      value = current;
      for (size_t start = 1; start <= value.size();) {
        const size_t end = std::min(value.find(',', start), value.size());
        const std::string item = value.substr(start, end - start);
        if (item == "sm" || item == "vader") return;  // already excluded
        start = end + 1;
      }
      value += ",sm";
    } else {
      return;
    }
    had_value_ = current != nullptr;
    if (had_value_) previous_ = current;
    active_ = setenv(kVariable, value.c_str(), 1) == 0;
#endif
  }
  ~SingletonSharedMemoryGuard() {
    if (!active_) return;
    if (had_value_) {
      setenv(kVariable, previous_.c_str(), 1);
    } else {
      unsetenv(kVariable);
    }
  }
  SingletonSharedMemoryGuard(const SingletonSharedMemoryGuard&) = delete;
  SingletonSharedMemoryGuard& operator=(const SingletonSharedMemoryGuard&) = delete;

 private:
  static constexpr const char* kVariable = "OMPI_MCA_btl";
  bool active_ = false;
  bool had_value_ = false;
  std::string previous_;
};

}  // namespace

void mpi_initialize() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (mpi_is_finalized()) {
    throw Error("MPI has already been finalized in this process; dist_sync cannot be "
                "initialized again (MPI allows one MPI_Init per process)");
  }
  int provided = MPI_THREAD_SINGLE;
  if (!initialized) {
    const SingletonSharedMemoryGuard singleton;  // Note [Singleton shared memory]
    check_mpi(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
    g_we_initialized_mpi = true;
  } else {
    MPI_Query_thread(&provided);
  }
  if (provided < MPI_THREAD_SERIALIZED) {
    throw Error(detail::concat(
        "MPI was initialized with thread level ", provided,
        " but dist_sync's background thread needs at least MPI_THREAD_SERIALIZED. If you "
        "initialize MPI yourself (e.g. mpi4py with mpi4py.rc.thread_level), ask for "
        "MPI_THREAD_MULTIPLE"));
  }
}

void mpi_finalize_if_owned() {
  if (!g_we_initialized_mpi || mpi_is_finalized()) return;
  MPI_Finalize();
  g_we_initialized_mpi = false;
}

bool mpi_is_finalized() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  return finalized != 0;
}

int mpi_thread_level() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized || mpi_is_finalized()) return -1;
  int provided = 0;
  MPI_Query_thread(&provided);
  // Normalise to the standard's order; implementations may use other numeric values.
  if (provided == MPI_THREAD_MULTIPLE) return 3;
  if (provided == MPI_THREAD_SERIALIZED) return 2;
  if (provided == MPI_THREAD_FUNNELED) return 1;
  return 0;
}

std::string mpi_library_version() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING];
  int length = 0;
  MPI_Get_library_version(text, &length);
  std::string version(text, static_cast<size_t>(length));
  const auto line_end = version.find('\n');
  if (line_end != std::string::npos) version.resize(line_end);
  while (!version.empty() && (version.back() == ',' || version.back() == ' ')) version.pop_back();
  return version;
}

bool mpi_fault_tolerant() {
#if DIST_SYNC_HAVE_ULFM
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized || mpi_is_finalized()) return false;
  int* enabled = nullptr;
  int found = 0;
  MPI_Comm_get_attr(MPI_COMM_WORLD, MPIX_FT, &enabled, &found);
  return found != 0 && enabled != nullptr && *enabled != 0;
#else
  return false;
#endif
}

bool mpi_peer_lost() { return g_peer_lost.load(); }

void mpi_clear_peer_lost() { g_peer_lost.store(false); }

MpiCommunicator::MpiCommunicator(std::unique_ptr<Handle> handle) : handle_(std::move(handle)) {}

MpiCommunicator::~MpiCommunicator() {
  if (handle_->comm != MPI_COMM_NULL && !mpi_is_finalized()) MPI_Comm_free(&handle_->comm);
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::adopt(std::unique_ptr<Handle> handle) {
  // Errors come back as codes we turn into exceptions naming the peer, instead of aborting.
  MPI_Comm_set_errhandler(handle->comm, MPI_ERRORS_RETURN);
  std::unique_ptr<MpiCommunicator> comm(new MpiCommunicator(std::move(handle)));
  const MPI_Comm mpi = comm->handle_->comm;
  MPI_Comm_rank(mpi, &comm->rank_);
  MPI_Comm_size(mpi, &comm->size_);
  // pid and host of every rank, so errors can say which process is gone and check_peer can
  // notice a dead local peer.
  const int32_t my_pid = static_cast<int32_t>(getpid());
  comm->pids_.resize(static_cast<size_t>(comm->size_));
  check_mpi(MPI_Allgather(&my_pid, 1, MPI_INT32_T, comm->pids_.data(), 1, MPI_INT32_T, mpi),
            "MPI_Allgather");
  char host[MPI_MAX_PROCESSOR_NAME] = {};
  int host_length = 0;
  MPI_Get_processor_name(host, &host_length);
  std::vector<char> all_hosts(static_cast<size_t>(comm->size_) * MPI_MAX_PROCESSOR_NAME);
  check_mpi(MPI_Allgather(host, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, all_hosts.data(),
                          MPI_MAX_PROCESSOR_NAME, MPI_CHAR, mpi),
            "MPI_Allgather");
  for (int r = 0; r < comm->size_; ++r) {
    const char* name = all_hosts.data() + static_cast<size_t>(r) * MPI_MAX_PROCESSOR_NAME;
    comm->hosts_.emplace_back(name, strnlen(name, MPI_MAX_PROCESSOR_NAME));
  }
  return comm;
}

// Note [init() waits for every rank]
// Creating the engine's communicators is collective. A rank that calls init() when the others
// will not (again after a shutdown(), or after they finished) would block in MPI_Comm_dup for
// ever, deaf to Ctrl-C. So the ranks first meet in a non-blocking barrier, polled politely with a
// deadline and the caller's interrupt check; only once every rank has arrived do the blocking
// creation calls run, and those then complete.
namespace {

// Polls a non-blocking collective on `parent` until it completes, with a deadline and the
// caller's interrupt check; `what` names the collective call in the timeout's message.
void wait_for_every_rank(MPI_Comm parent, MPI_Request& barrier, std::chrono::duration<double> timeout,
                         const std::function<void()>& between_polls, const char* what) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto sleep = std::chrono::microseconds(0);
  while (true) {
    int done = 0;
    check_mpi(MPI_Test(&barrier, &done, MPI_STATUS_IGNORE), "MPI_Test");
    if (done) return;
    const auto waited = Clock::now() - start;
    if (timeout.count() > 0 && waited >= timeout) {
      int rank = 0, size = 0;
      MPI_Comm_rank(parent, &rank);
      MPI_Comm_size(parent, &size);
      throw Error(detail::concat(
          what, " is collective: all ", size, " ranks must call it, but rank ", rank,
          " waited ", static_cast<int64_t>(std::chrono::duration<double>(waited).count()),
          " s (DIST_SYNC_INIT_TIMEOUT_SECONDS) and not every rank did. A rank that calls ", what,
          " on its own (after shutdown(), or after the others finished) waits for ranks "
          "that will not come; call it on every rank"));
    }
    if (between_polls) between_polls();
    if (waited > std::chrono::milliseconds(1)) {
      sleep = std::min(std::chrono::microseconds(10000), sleep * 2 + std::chrono::microseconds(50));
      std::this_thread::sleep_for(sleep);
    }
  }
}

}  // namespace

std::unique_ptr<MpiCommunicator> MpiCommunicator::create(int64_t parent_f2c,
                                                         std::chrono::duration<double> timeout,
                                                         const std::function<void()>& between_polls) {
  Handle parent;
  parent.comm = parent_f2c < 0 ? MPI_COMM_WORLD : MPI_Comm_f2c(static_cast<MPI_Fint>(parent_f2c));
  return create_over(parent, timeout, between_polls);
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::create(const MpiCommunicator& parent,
                                                         std::chrono::duration<double> timeout,
                                                         const std::function<void()>& between_polls) {
  return create_over(*parent.handle_, timeout, between_polls);
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::create_over(const Handle& parent_handle,
                                                              std::chrono::duration<double> timeout,
                                                              const std::function<void()>& between_polls) {
  const MPI_Comm parent = parent_handle.comm;
  MPI_Request barrier = MPI_REQUEST_NULL;
  check_mpi(MPI_Ibarrier(parent, &barrier), "MPI_Ibarrier");
  wait_for_every_rank(parent, barrier, timeout, between_polls, "dist_sync.init()");
  auto handle = std::make_unique<Handle>();
  check_mpi(MPI_Comm_dup(parent, &handle->comm), "MPI_Comm_dup");
  std::unique_ptr<MpiCommunicator> comm = adopt(std::move(handle));
  std::unique_ptr<MpiCommunicator> local = comm->split_local();
  std::unique_ptr<MpiCommunicator> cross = comm->split_cross();
  Topology& topo = comm->topology_;
  topo.local_rank = local->rank();
  topo.local_size = local->size();
  topo.cross_rank = cross->rank();
  topo.cross_size = cross->size();
  int min_local = 0, max_local = 0;
  check_mpi(MPI_Allreduce(&topo.local_size, &min_local, 1, MPI_INT, MPI_MIN, comm->handle_->comm),
            "MPI_Allreduce");
  check_mpi(MPI_Allreduce(&topo.local_size, &max_local, 1, MPI_INT, MPI_MAX, comm->handle_->comm),
            "MPI_Allreduce");
  topo.homogeneous = min_local == max_local;
  return comm;
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::duplicate() const {
  auto handle = std::make_unique<Handle>();
  check_mpi(MPI_Comm_dup(handle_->comm, &handle->comm), "MPI_Comm_dup");
  std::unique_ptr<MpiCommunicator> comm = adopt(std::move(handle));
  comm->topology_ = topology_;
  return comm;
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::split_members(const std::vector<int>& members) const {
  const bool member = std::find(members.begin(), members.end(), rank_) != members.end();
  auto handle = std::make_unique<Handle>();
  check_mpi(MPI_Comm_split(handle_->comm, member ? 0 : MPI_UNDEFINED, rank_, &handle->comm),
            "MPI_Comm_split");
  if (!member) return nullptr;
  return adopt(std::move(handle));
}

std::vector<std::vector<uint8_t>> MpiCommunicator::allgather_bytes(
    const std::vector<uint8_t>& mine, std::chrono::duration<double> timeout,
    const std::function<void()>& between_polls) const {
  const MPI_Comm mpi = handle_->comm;
  const int my_count = static_cast<int>(mine.size());
  std::vector<int> counts(static_cast<size_t>(size_));
  MPI_Request request = MPI_REQUEST_NULL;
  check_mpi(MPI_Iallgather(&my_count, 1, MPI_INT, counts.data(), 1, MPI_INT, mpi, &request),
            "MPI_Iallgather");
  wait_for_every_rank(mpi, request, timeout, between_polls, "this process-set call");
  std::vector<int> offsets(static_cast<size_t>(size_), 0);
  for (size_t r = 1; r < counts.size(); ++r) offsets[r] = offsets[r - 1] + counts[r - 1];
  std::vector<uint8_t> all(static_cast<size_t>(offsets.back() + counts.back()));
  check_mpi(MPI_Iallgatherv(mine.data(), my_count, MPI_BYTE, all.data(), counts.data(),
                            offsets.data(), MPI_BYTE, mpi, &request),
            "MPI_Iallgatherv");
  wait_for_every_rank(mpi, request, timeout, between_polls, "this process-set call");
  std::vector<std::vector<uint8_t>> out;
  for (size_t r = 0; r < counts.size(); ++r) {
    out.emplace_back(all.begin() + offsets[r], all.begin() + offsets[r] + counts[r]);
  }
  return out;
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::split_local() const {
  auto handle = std::make_unique<Handle>();
  check_mpi(MPI_Comm_split_type(handle_->comm, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL,
                                &handle->comm),
            "MPI_Comm_split_type");
  return adopt(std::move(handle));
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::split_cross() const {
  int local_rank = 0;
  {
    MPI_Comm local = MPI_COMM_NULL;
    check_mpi(MPI_Comm_split_type(handle_->comm, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local),
              "MPI_Comm_split_type");
    MPI_Comm_rank(local, &local_rank);
    MPI_Comm_free(&local);
  }
  auto handle = std::make_unique<Handle>();
  check_mpi(MPI_Comm_split(handle_->comm, local_rank, rank_, &handle->comm), "MPI_Comm_split");
  return adopt(std::move(handle));
}

namespace {

// Posts `bytes` from `cursor` as pieces of at most kMaxPieceBytes, each with `post(pointer,
// count, &request)` (MPI_Isend or MPI_Irecv bound to the peer, tag and communicator).
template <typename Byte, typename Post>
TransferPtr post_in_pieces(std::unique_ptr<MpiTransfer> transfer, Byte* cursor, size_t bytes,
                           Post post) {
  size_t remaining = bytes;
  do {
    const size_t piece = std::min(remaining, kMaxPieceBytes);
    MPI_Request request = MPI_REQUEST_NULL;
    const int code = post(cursor, static_cast<int>(piece), &request);
    if (code != MPI_SUCCESS) transfer->fail(code);
    transfer->add(request);
    cursor += piece;
    remaining -= piece;
  } while (remaining > 0);
  return transfer;
}

}  // namespace

TransferPtr MpiCommunicator::isend(const void* data, size_t bytes, int peer, int tag) {
  return post_in_pieces(std::make_unique<MpiTransfer>(*this, handle_->comm, peer, /*is_send=*/true),
                        static_cast<const char*>(data), bytes,
                        [&](const char* piece, int count, MPI_Request* request) {
                          return MPI_Isend(piece, count, MPI_BYTE, peer, tag, handle_->comm,
                                           request);
                        });
}

TransferPtr MpiCommunicator::irecv(void* data, size_t bytes, int peer, int tag) {
  return post_in_pieces(std::make_unique<MpiTransfer>(*this, handle_->comm, peer, /*is_send=*/false),
                        static_cast<char*>(data), bytes,
                        [&](char* piece, int count, MPI_Request* request) {
                          return MPI_Irecv(piece, count, MPI_BYTE, peer, tag, handle_->comm,
                                           request);
                        });
}

// Note [Eager pieces]
// Open MPI sends a message of up to 4 KiB *including its header* eagerly over shared memory;
// anything larger waits for a rendezvous handshake. A 4 KiB recursive-doubling exchange took
// 4.3 us as one message against 1.6 us for 4000 bytes, so small exchanges travel as several
// eager-sized pieces posted at once (a handful at most; larger ones go as one message).
constexpr size_t kEagerPieceBytes = 4000;
constexpr size_t kMaxEagerPieces = 8;

void MpiCommunicator::shift(const void* send, int to, void* recv, int from, size_t bytes, int tag,
                            const char* what) {
  if (bytes > kMaxPieceBytes) {  // rare: keep the piecewise path of the base class
    Communicator::shift(send, to, recv, from, bytes, tag, what);
    return;
  }
  const size_t pieces = (bytes > kEagerPieceBytes && bytes <= kEagerPieceBytes * kMaxEagerPieces)
                            ? (bytes + kEagerPieceBytes - 1) / kEagerPieceBytes
                            : 1;
  const size_t piece_bytes = pieces == 1 ? bytes : kEagerPieceBytes;
  MPI_Request requests[2 * kMaxEagerPieces];
  std::fill(std::begin(requests), std::end(requests), MPI_REQUEST_NULL);
  int code = MPI_SUCCESS;
  for (size_t i = 0; i < pieces && code == MPI_SUCCESS; ++i) {
    const size_t offset = i * piece_bytes;
    const int length = static_cast<int>(std::min(piece_bytes, bytes - offset));
    code = MPI_Irecv(static_cast<char*>(recv) + offset, length, MPI_BYTE, from, tag, handle_->comm,
                     &requests[2 * i]);
    if (code == MPI_SUCCESS) {
      code = MPI_Isend(static_cast<const char*>(send) + offset, length, MPI_BYTE, to, tag,
                       handle_->comm, &requests[2 * i + 1]);
    }
  }
  Waiter waiter(*this, what);
  int done = 0;
  while (code == MPI_SUCCESS) {
    code = MPI_Testall(static_cast<int>(2 * pieces), requests, &done, MPI_STATUSES_IGNORE);
    if (code != MPI_SUCCESS || done) break;
    waiter.idle(from);
  }
  if (code != MPI_SUCCESS) {
    if (is_peer_failure(code, handle_->comm)) note_peer_failure(handle_->comm);
    for (MPI_Request& request : requests) {
      if (request != MPI_REQUEST_NULL) MPI_Request_free(&request);
    }
    throw CommError(detail::concat("exchanging with ", describe_rank(from),
                                   to == from ? "" : " and " + describe_rank(to), " failed: ",
                                   explain_failure(code)),
                    from);
  }
}

void MpiCommunicator::check_peer(int peer) const {
  // Only a peer on this host can be checked cheaply; a remote peer's death reaches us through
  // mpirun, which ends the job.
  const auto check = [this](int r) {
    if (r < 0 || r >= size_ || r == rank_) return;
    if (hosts_[static_cast<size_t>(r)] != hosts_[static_cast<size_t>(rank_)]) return;
    if (kill(static_cast<pid_t>(pids_[static_cast<size_t>(r)]), 0) != 0 && errno == ESRCH) {
      if (mpi_fault_tolerant()) note_peer_failure(handle_->comm);
      throw CommError(describe_rank(r) + " has exited or been killed", r);
    }
  };
  check(peer);
  // Then every other rank on this host: the awaited peer may be alive but itself stuck waiting
  // for the dead one (a ring of 3: rank 0 waits for rank 2, which waits for a dead rank 1), and
  // every collective needs every rank, so any lost rank ends the job. The error should name the
  // rank that died, not the neighbour that stopped sending. One kill(2) per rank per check
  // (about once a second of waiting) costs nothing.
  for (int r = 0; r < size_; ++r) {
    if (r != peer) check(r);
  }
}

std::vector<std::pair<int, int32_t>> MpiCommunicator::same_host_peers() const {
  std::vector<std::pair<int, int32_t>> peers;
  for (int r = 0; r < size_; ++r) {
    const auto index = static_cast<size_t>(r);
    if (r != rank_ && hosts_[index] == hosts_[static_cast<size_t>(rank_)]) peers.emplace_back(r, pids_[index]);
  }
  return peers;
}

bool MpiCommunicator::single_host() const {
  return std::all_of(hosts_.begin(), hosts_.end(), [&](const std::string& host) { return host == hosts_.front(); });
}

std::string MpiCommunicator::describe_rank(int peer) const {
  if (peer < 0 || peer >= size_) return "rank " + std::to_string(peer);
  const auto index = static_cast<size_t>(peer);
  return detail::concat("rank ", peer, " (pid ", pids_[index], " on ", hosts_[index], ")");
}

void MpiCommunicator::revoke() {
#if DIST_SYNC_HAVE_ULFM
  if (mpi_fault_tolerant()) MPIX_Comm_revoke(handle_->comm);
#endif
}

std::string MpiCommunicator::explain_failure(int code) const {
  const std::string text = mpi_error_string(code);
#if DIST_SYNC_HAVE_ULFM
  if (!is_peer_failure(code, handle_->comm)) return text;
  MPI_Group failed = MPI_GROUP_NULL;
  if (MPIX_Comm_get_failed(handle_->comm, &failed) != MPI_SUCCESS) return text;
  int lost = 0;
  MPI_Group_size(failed, &lost);
  std::string ranks;
  if (lost > 0) {
    MPI_Group all = MPI_GROUP_NULL;
    MPI_Comm_group(handle_->comm, &all);
    std::vector<int> positions(static_cast<size_t>(lost));
    std::vector<int> translated(static_cast<size_t>(lost));
    for (int i = 0; i < lost; ++i) positions[static_cast<size_t>(i)] = i;
    MPI_Group_translate_ranks(failed, lost, positions.data(), all, translated.data());
    MPI_Group_free(&all);
    for (const int r : translated) ranks += (ranks.empty() ? "" : ", ") + describe_rank(r);
  }
  MPI_Group_free(&failed);
  if (ranks.empty()) return "a rank was lost elsewhere and the communication revoked (" + text + ")";
  return "lost " + ranks + " (" + text + ")";
#else
  return text;
#endif
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::shrink() const {
#if DIST_SYNC_HAVE_ULFM
  auto handle = std::make_unique<Handle>();
  check_mpi(MPIX_Comm_shrink(handle_->comm, &handle->comm), "MPIX_Comm_shrink");
  return adopt(std::move(handle));
#else
  throw Error("shrinking a communicator needs an MPI with User-Level Failure Mitigation (Open MPI "
              "5 launched with mpirun --with-ft ulfm)");
#endif
}

void MpiCommunicator::abort_job(int exit_code) const {
  MPI_Abort(handle_->comm, exit_code);
  std::_Exit(exit_code);
}

}  // namespace dist_sync
