#include "collectives/recursive_doubling.h"

#include "reduce/reduce.h"

namespace dist_sync {

void recursive_doubling_allreduce(Communicator& comm, void* data, size_t count, DataType dtype,
                                  ReduceOp op, std::byte* scratch, int tag) {
  const int size = comm.size();
  const int rank = comm.rank();
  const size_t bytes = count * dtype_size(dtype);
  if (size == 1 || count == 0) return;
  int pow2 = 1;
  while (pow2 * 2 <= size) pow2 *= 2;
  const int extra = size - pow2;
  const Scaling plain;
  // Note [Deterministic pairing]
  auto combine = [&](bool mine_is_lower) {
    if (mine_is_lower) {
      reduce(data, data, scratch, count, dtype, op, plain, false);
    } else {
      reduce(data, scratch, data, count, dtype, op, plain, false);
    }
  };

  // Ranks 0..2*extra-1 pair up (even, odd); the even one hands its data to the odd one and sits
  // out, so a power-of-two group remains.
  int group_rank;
  if (rank < 2 * extra) {
    if (rank % 2 == 0) {
      TransferPtr sending = comm.isend(data, bytes, rank + 1, tag);
      comm.wait(*sending, "recursive-doubling allreduce", rank + 1);
      TransferPtr receiving = comm.irecv(data, bytes, rank + 1, tag);
      comm.wait(*receiving, "recursive-doubling allreduce", rank + 1);
      return;
    }
    TransferPtr receiving = comm.irecv(scratch, bytes, rank - 1, tag);
    comm.wait(*receiving, "recursive-doubling allreduce", rank - 1);
    combine(/*mine_is_lower=*/false);
    group_rank = rank / 2;
  } else {
    group_rank = rank - extra;
  }
  for (int mask = 1; mask < pow2; mask <<= 1) {
    const int partner_group = group_rank ^ mask;
    const int partner = partner_group < extra ? partner_group * 2 + 1 : partner_group + extra;
    comm.sendrecv(data, scratch, bytes, partner, tag, "recursive-doubling allreduce");
    combine(group_rank < partner_group);
  }
  if (rank < 2 * extra) {
    TransferPtr sending = comm.isend(data, bytes, rank - 1, tag);
    comm.wait(*sending, "recursive-doubling allreduce", rank - 1);
  }
}

}  // namespace dist_sync
