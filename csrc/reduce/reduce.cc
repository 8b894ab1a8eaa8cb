#include "reduce/reduce.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "common/errors.h"
#include "reduce/half.h"

namespace dist_sync {
namespace {

// How a stored element becomes the type arithmetic is done in, and back.
template <typename T>
struct NativeCodec {
  using Storage = T;
  using Acc = T;
  static Acc load(Storage v) { return v; }
  static Storage store(Acc v) { return v; }
};

struct HalfCodec {
  using Storage = uint16_t;
  using Acc = float;
  static Acc load(Storage v) { return half_to_float(v); }
  static Storage store(Acc v) { return float_to_half(v); }
};

struct BFloat16Codec {
  using Storage = uint16_t;
  using Acc = float;
  static Acc load(Storage v) { return bfloat16_to_float(v); }
  static Storage store(Acc v) { return float_to_bfloat16(v); }
};

// Integer Sum/Product wrap like numpy. Doing the arithmetic in an unsigned type at least as wide
// as `unsigned` keeps it defined behaviour (no signed overflow, no promotion to signed int).
template <typename T>
using WrapType = std::conditional_t<(sizeof(T) < sizeof(unsigned)), unsigned, std::make_unsigned_t<T>>;

struct SumOp {
  template <typename A>
  static A apply(A a, A b) {
    if constexpr (std::is_integral_v<A>) {
      return static_cast<A>(static_cast<WrapType<A>>(a) + static_cast<WrapType<A>>(b));
    } else {
      return a + b;
    }
  }
};

struct ProductOp {
  template <typename A>
  static A apply(A a, A b) {
    if constexpr (std::is_integral_v<A>) {
      return static_cast<A>(static_cast<WrapType<A>>(a) * static_cast<WrapType<A>>(b));
    } else {
      return a * b;
    }
  }
};

// NaN propagates like numpy.minimum/maximum (`a != a` is true only for NaN).
struct MinOp {
  template <typename A>
  static A apply(A a, A b) {
    if constexpr (std::is_integral_v<A>) {
      return a < b ? a : b;
    } else {
      return (a < b || a != a) ? a : b;
    }
  }
};

struct MaxOp {
  template <typename A>
  static A apply(A a, A b) {
    if constexpr (std::is_integral_v<A>) {
      return a > b ? a : b;
    } else {
      return (a > b || a != a) ? a : b;
    }
  }
};

struct BitAndOp {
  template <typename A>
  static A apply(A a, A b) {
    return a & b;
  }
};

// Integer scaling: multiply in double, truncate toward zero, saturate (never UB on overflow).
template <typename A>
A scale_integer(A value, double factor) {
  const double scaled = std::trunc(static_cast<double>(value) * factor);
  constexpr double lo = static_cast<double>(std::numeric_limits<A>::lowest());
  constexpr double hi = static_cast<double>(std::numeric_limits<A>::max());
  if (!(scaled > lo)) return std::numeric_limits<A>::lowest();
  if (!(scaled < hi)) return std::numeric_limits<A>::max();
  return static_cast<A>(scaled);
}

// Applies Scaling in the arithmetic type A. Floating types fold postscale/divisor into one factor.
template <typename A>
struct Scaler {
  A pre_factor;
  A post_factor;
  double prescale;
  double postscale;
  int64_t divisor;

  explicit Scaler(const Scaling& s)
      : pre_factor(static_cast<A>(s.prescale)),
        post_factor(static_cast<A>(s.postscale / static_cast<double>(s.divisor))),
        prescale(s.prescale),
        postscale(s.postscale),
        divisor(s.divisor) {}

  A pre(A v) const {
    if constexpr (std::is_integral_v<A>) {
      return scale_integer(v, prescale);
    } else {
      return v * pre_factor;
    }
  }

  A post(A v) const {
    if constexpr (std::is_integral_v<A>) {
      if (postscale != 1.0) v = scale_integer(v, postscale);
      return divisor != 1 ? static_cast<A>(v / static_cast<A>(divisor)) : v;
    } else {
      return v * post_factor;
    }
  }
};

// The hot loop. Each combination of flags is its own instantiation so the common case
// (no scaling) is a plain load-combine-store loop that the compiler vectorises. Kept out of line
// so the build's vectorisation report (tests/packaging/test_vectorized_local.py) can name each
// instantiation.
template <typename Codec, typename Op, bool kPre, bool kPost>
__attribute__((noinline, noclone)) void reduce_loop(typename Codec::Storage* dst, const typename Codec::Storage* own,
                 const typename Codec::Storage* other, size_t count,
                 const Scaler<typename Codec::Acc>& scaler) {
  using Acc = typename Codec::Acc;
  for (size_t i = 0; i < count; ++i) {
    Acc mine = Codec::load(own[i]);
    if constexpr (kPre) mine = scaler.pre(mine);
    Acc combined = Op::apply(mine, Codec::load(other[i]));
    if constexpr (kPost) combined = scaler.post(combined);
    dst[i] = Codec::store(combined);
  }
}

template <typename Codec, typename Op>
void reduce_typed(void* dst, const void* own, const void* other, size_t count,
                  const Scaling& scaling, bool finalize) {
  using Storage = typename Codec::Storage;
  auto* d = static_cast<Storage*>(dst);
  const auto* a = static_cast<const Storage*>(own);
  const auto* b = static_cast<const Storage*>(other);
  const Scaler<typename Codec::Acc> scaler(scaling);
  const bool pre = scaling.has_prescale();
  const bool post = finalize && scaling.has_postscale();
  if (pre && post) {
    reduce_loop<Codec, Op, true, true>(d, a, b, count, scaler);
  } else if (pre) {
    reduce_loop<Codec, Op, true, false>(d, a, b, count, scaler);
  } else if (post) {
    reduce_loop<Codec, Op, false, true>(d, a, b, count, scaler);
  } else {
    reduce_loop<Codec, Op, false, false>(d, a, b, count, scaler);
  }
}

template <typename Codec>
void reduce_codec(void* dst, const void* own, const void* other, size_t count, ReduceOp op,
                  const Scaling& scaling, bool finalize) {
  switch (op) {
    case ReduceOp::kAverage:  // the division is the caller's Scaling (Note [Scaling fused into the reduction])
    case ReduceOp::kSum: return reduce_typed<Codec, SumOp>(dst, own, other, count, scaling, finalize);
    case ReduceOp::kMin: return reduce_typed<Codec, MinOp>(dst, own, other, count, scaling, finalize);
    case ReduceOp::kMax: return reduce_typed<Codec, MaxOp>(dst, own, other, count, scaling, finalize);
    case ReduceOp::kProduct:
      return reduce_typed<Codec, ProductOp>(dst, own, other, count, scaling, finalize);
    case ReduceOp::kBitAnd:
      if constexpr (std::is_same_v<typename Codec::Acc, uint64_t>) {
        return reduce_typed<Codec, BitAndOp>(dst, own, other, count, scaling, finalize);
      }
      break;
    case ReduceOp::kAdasum: break;
  }
  DS_ASSERT(false, "reduction ", reduce_op_name(op), " is not defined for this dtype");
}

template <typename Codec>
__attribute__((noinline, noclone)) void scale_loop(typename Codec::Storage* dst, const typename Codec::Storage* src, size_t count,
                const Scaler<typename Codec::Acc>& scaler) {
  for (size_t i = 0; i < count; ++i) {
    dst[i] = Codec::store(scaler.post(Codec::load(src[i])));
  }
}

template <typename Codec>
void scale_codec(void* dst, const void* src, size_t count, double factor, int64_t divisor) {
  using Storage = typename Codec::Storage;
  const Scaling scaling{1.0, factor, divisor};
  scale_loop<Codec>(static_cast<Storage*>(dst), static_cast<const Storage*>(src), count,
                          Scaler<typename Codec::Acc>(scaling));
}

}  // namespace

void reduce(void* dst, const void* own, const void* other, size_t count, DataType dtype,
            ReduceOp op, const Scaling& scaling, bool finalize) {
  if (count == 0) return;
  switch (dtype) {
    case DataType::kUInt8: return reduce_codec<NativeCodec<uint8_t>>(dst, own, other, count, op, scaling, finalize);
    case DataType::kInt8: return reduce_codec<NativeCodec<int8_t>>(dst, own, other, count, op, scaling, finalize);
    case DataType::kInt16: return reduce_codec<NativeCodec<int16_t>>(dst, own, other, count, op, scaling, finalize);
    case DataType::kInt32: return reduce_codec<NativeCodec<int32_t>>(dst, own, other, count, op, scaling, finalize);
    case DataType::kInt64: return reduce_codec<NativeCodec<int64_t>>(dst, own, other, count, op, scaling, finalize);
    case DataType::kUInt64: return reduce_codec<NativeCodec<uint64_t>>(dst, own, other, count, op, scaling, finalize);
    case DataType::kFloat16: return reduce_codec<HalfCodec>(dst, own, other, count, op, scaling, finalize);
    case DataType::kBFloat16: return reduce_codec<BFloat16Codec>(dst, own, other, count, op, scaling, finalize);
    case DataType::kFloat32: return reduce_codec<NativeCodec<float>>(dst, own, other, count, op, scaling, finalize);
    case DataType::kFloat64: return reduce_codec<NativeCodec<double>>(dst, own, other, count, op, scaling, finalize);
  }
  DS_ASSERT(false, "unknown dtype ", static_cast<int>(dtype));
}

void scale_copy(void* dst, const void* src, size_t count, DataType dtype, double factor,
                int64_t divisor) {
  if (count == 0) return;
  if (factor == 1.0 && divisor == 1) {
    if (dst != src) std::memcpy(dst, src, count * dtype_size(dtype));
    return;
  }
  switch (dtype) {
    case DataType::kUInt8: return scale_codec<NativeCodec<uint8_t>>(dst, src, count, factor, divisor);
    case DataType::kInt8: return scale_codec<NativeCodec<int8_t>>(dst, src, count, factor, divisor);
    case DataType::kInt16: return scale_codec<NativeCodec<int16_t>>(dst, src, count, factor, divisor);
    case DataType::kInt32: return scale_codec<NativeCodec<int32_t>>(dst, src, count, factor, divisor);
    case DataType::kInt64: return scale_codec<NativeCodec<int64_t>>(dst, src, count, factor, divisor);
    case DataType::kUInt64: return scale_codec<NativeCodec<uint64_t>>(dst, src, count, factor, divisor);
    case DataType::kFloat16: return scale_codec<HalfCodec>(dst, src, count, factor, divisor);
    case DataType::kBFloat16: return scale_codec<BFloat16Codec>(dst, src, count, factor, divisor);
    case DataType::kFloat32: return scale_codec<NativeCodec<float>>(dst, src, count, factor, divisor);
    case DataType::kFloat64: return scale_codec<NativeCodec<double>>(dst, src, count, factor, divisor);
  }
  DS_ASSERT(false, "unknown dtype ", static_cast<int>(dtype));
}

}  // namespace dist_sync
