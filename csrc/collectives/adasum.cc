#include "collectives/adasum.h"

#include <array>
#include <string>
#include <utility>
#include <vector>

#include "common/errors.h"
#include "reduce/half.h"

namespace dist_sync {
namespace {

double load(const std::byte* base, size_t i, DataType dtype) {
  switch (dtype) {
    case DataType::kFloat16:
      return half_to_float(reinterpret_cast<const uint16_t*>(base)[i]);
    case DataType::kBFloat16:
      return bfloat16_to_float(reinterpret_cast<const uint16_t*>(base)[i]);
    case DataType::kFloat32:
      return reinterpret_cast<const float*>(base)[i];
    default:
      return reinterpret_cast<const double*>(base)[i];
  }
}

void store(std::byte* base, size_t i, DataType dtype, double value) {
  switch (dtype) {
    case DataType::kFloat16:
      reinterpret_cast<uint16_t*>(base)[i] = float_to_half(static_cast<float>(value));
      return;
    case DataType::kBFloat16:
      reinterpret_cast<uint16_t*>(base)[i] = float_to_bfloat16(static_cast<float>(value));
      return;
    case DataType::kFloat32:
      reinterpret_cast<float*>(base)[i] = static_cast<float>(value);
      return;
    default:
      reinterpret_cast<double*>(base)[i] = value;
  }
}

double coefficient(double dot, double norm_squared) {
  return norm_squared > 0.0 ? 1.0 - dot / (2.0 * norm_squared) : 1.0;
}

// The group of 2d ranks that share rank's bits above level log2(d): sums `values` over it.
void sum_over_group(Communicator& comm, std::array<double, 3>& values, int distance, int tag) {
  std::array<double, 3> theirs{};
  for (int e = 1; e <= distance; e <<= 1) {
    comm.sendrecv(values.data(), theirs.data(), sizeof(values), comm.rank() ^ e, tag,
                  "Adasum's dot products");
    for (size_t i = 0; i < values.size(); ++i) values[i] = values[i] + theirs[i];
  }
}

void exchange(Communicator& comm, const void* send, size_t send_bytes, void* receive,
              size_t receive_bytes, int peer, int tag) {
  std::vector<std::pair<TransferPtr, int>> transfers;
  transfers.emplace_back(comm.irecv(receive, receive_bytes, peer, tag), peer);
  transfers.emplace_back(comm.isend(send, send_bytes, peer, tag), peer);
  comm.wait_all(transfers, "Adasum");
}

void scale(std::byte* base, size_t count, DataType dtype, double factor) {
  if (factor == 1.0) return;
  for (size_t i = 0; i < count; ++i) store(base, i, dtype, load(base, i, dtype) * factor);
}

}  // namespace

std::string adasum_unsupported(int size, DataType dtype) {
  if (size < 1 || (size & (size - 1)) != 0) {
    return detail::concat("Adasum needs a power-of-two number of ranks, got ", size);
  }
  if (dtype != DataType::kFloat16 && dtype != DataType::kBFloat16 &&
      dtype != DataType::kFloat32 && dtype != DataType::kFloat64) {
    return detail::concat("Adasum needs float16, bfloat16, float32 or float64 tensors, got ",
                          dtype_name(dtype));
  }
  return "";
}

void adasum_allreduce(Communicator& comm, void* data, size_t count, DataType dtype,
                      double prescale, double postscale, std::byte* scratch, int tag) {
  const int size = comm.size();
  const std::string unsupported = adasum_unsupported(size, dtype);
  DS_CHECK(unsupported.empty(), unsupported);
  const int rank = comm.rank();
  const size_t element = dtype_size(dtype);
  std::byte* base = static_cast<std::byte*>(data);
  scale(base, count, dtype, prescale);
  // The segment held at each level, [start, end), before halving; kept for the gather phase.
  std::vector<std::pair<size_t, size_t>> segments;
  size_t start = 0, end = count;
  for (int distance = 1; distance < size; distance <<= 1) {
    segments.emplace_back(start, end);
    const int partner = rank ^ distance;
    const bool lower = (rank & distance) == 0;
    const size_t mid = start + (end - start) / 2;
    const size_t keep_start = lower ? start : mid, keep_end = lower ? mid : end;
    const size_t give_start = lower ? mid : start, give_end = lower ? end : mid;
    const size_t keep = keep_end - keep_start;
    exchange(comm, base + give_start * element, (give_end - give_start) * element, scratch,
             keep * element, partner, tag);
    // a: the left half-group's vector, b: the right's, whichever side this rank is on.
    const std::byte* a = lower ? base + keep_start * element : scratch;
    const std::byte* b = lower ? scratch : base + keep_start * element;
    std::array<double, 3> dots{};  // a.b, |a|^2, |b|^2 over this rank's range
    for (size_t i = 0; i < keep; ++i) {
      const double x = load(a, i, dtype), y = load(b, i, dtype);
      dots[0] += x * y;
      dots[1] += x * x;
      dots[2] += y * y;
    }
    sum_over_group(comm, dots, distance, tag);
    const double ca = coefficient(dots[0], dots[1]), cb = coefficient(dots[0], dots[2]);
    for (size_t i = 0; i < keep; ++i) {
      store(base + keep_start * element, i, dtype, ca * load(a, i, dtype) + cb * load(b, i, dtype));
    }
    start = keep_start;
    end = keep_end;
  }
  // Distance halving: swap the finished ranges back up the tree.
  for (int distance = size / 2; distance >= 1; distance >>= 1) {
    const auto [segment_start, segment_end] = segments.back();
    segments.pop_back();
    const bool lower = (rank & distance) == 0;
    const size_t mid = segment_start + (segment_end - segment_start) / 2;
    const size_t other_start = lower ? mid : segment_start, other_end = lower ? segment_end : mid;
    exchange(comm, base + start * element, (end - start) * element, base + other_start * element,
             (other_end - other_start) * element, rank ^ distance, tag);
    start = segment_start;
    end = segment_end;
  }
  scale(base, count, dtype, postscale);
}

}  // namespace dist_sync
