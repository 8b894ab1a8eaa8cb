#include "comm/mpi_spawn.h"

#include <dlfcn.h>
#include <mpi.h>
#if __has_include(<mpi-ext.h>)
#include <mpi-ext.h>
#endif

#include "comm/mpi_handle.h"
#include "common/errors.h"

namespace dist_sync {

SpawnedRanks::SpawnedRanks() : intercomm_(std::make_unique<MpiCommunicator::Handle>()) {}

SpawnedRanks::~SpawnedRanks() {
  if (intercomm_ && intercomm_->comm != MPI_COMM_NULL && !mpi_is_finalized()) {
    MPI_Comm_free(&intercomm_->comm);
  }
}

std::unique_ptr<SpawnedRanks> SpawnedRanks::spawn(const MpiCommunicator& parents,
                                                  const std::string& command,
                                                  const std::vector<std::string>& args,
                                                  int count) {
  // MPI wants a NULL-terminated array of writable C strings.
  std::vector<std::vector<char>> storage;
  std::vector<char*> argv;
  for (const std::string& arg : args) {
    storage.emplace_back(arg.begin(), arg.end());
    storage.back().push_back('\0');
  }
  for (std::vector<char>& arg : storage) argv.push_back(arg.data());
  argv.push_back(nullptr);
  std::vector<char> command_c(command.begin(), command.end());
  command_c.push_back('\0');
  std::vector<int> codes(static_cast<size_t>(count), MPI_SUCCESS);
  std::unique_ptr<SpawnedRanks> spawned(new SpawnedRanks());
  check_mpi(MPI_Comm_spawn(command_c.data(), argv.data(), count, MPI_INFO_NULL, 0,
                           parents.handle_->comm, &spawned->intercomm_->comm, codes.data()),
            "MPI_Comm_spawn");
  for (const int code : codes) check_mpi(code, "MPI_Comm_spawn (a spawned process)");
  MPI_Comm_set_errhandler(spawned->intercomm_->comm, MPI_ERRORS_RETURN);
  return spawned;
}

std::unique_ptr<MpiCommunicator> SpawnedRanks::merge() {
  auto merged = std::make_unique<MpiCommunicator::Handle>();
  check_mpi(MPI_Intercomm_merge(intercomm_->comm, 0, &merged->comm), "MPI_Intercomm_merge");
  MPI_Comm_free(&intercomm_->comm);
  return MpiCommunicator::adopt(std::move(merged));
}

void SpawnedRanks::revoke() {
#if defined(MPIX_ERR_REVOKED) && defined(MPIX_FT)
  if (intercomm_->comm != MPI_COMM_NULL && mpi_fault_tolerant()) MPIX_Comm_revoke(intercomm_->comm);
#endif
}

std::unique_ptr<MpiCommunicator> mpi_merge_with_parents() {
  MPI_Comm parent = MPI_COMM_NULL;
  check_mpi(MPI_Comm_get_parent(&parent), "MPI_Comm_get_parent");
  if (parent == MPI_COMM_NULL) return nullptr;
  MPI_Comm_set_errhandler(parent, MPI_ERRORS_RETURN);
  auto merged = std::make_unique<MpiCommunicator::Handle>();
  check_mpi(MPI_Intercomm_merge(parent, 1, &merged->comm), "MPI_Intercomm_merge");
  // The parent intercommunicator stays: MPI owns it, and freeing it would disconnect nothing.
  return MpiCommunicator::adopt(std::move(merged));
}

void mpi_spawned_process_ends() {
  // Note [A spawned process ends without MPI_Finalize]. RTLD_NOLOAD: only the library libmpi
  // already brought in, found by its soname whatever scope it was loaded into.
  for (const char* library : {"libpmix.so.2", "libpmix.so"}) {
    void* handle = dlopen(library, RTLD_LAZY | RTLD_NOLOAD);
    if (handle == nullptr) continue;
    using Finalize = int (*)(const void* info, size_t ninfo);
    const auto finalize = reinterpret_cast<Finalize>(dlsym(handle, "PMIx_Finalize"));
    if (finalize != nullptr) finalize(nullptr, 0);
    dlclose(handle);
    return;
  }
}

}  // namespace dist_sync
