// What an MpiCommunicator holds, for the MPI sources of csrc/comm only (they alone include
// mpi.h), and the error check they share.
#pragma once

#include <mpi.h>

namespace dist_sync {

struct MpiCommunicator::Handle {
  MPI_Comm comm = MPI_COMM_NULL;
};

// Throws Error naming `call` and MPI's text for `code` unless it is MPI_SUCCESS (and remembers a
// lost peer: Note [Surviving a lost rank]).
void check_mpi(int code, const char* call);

}  // namespace dist_sync
