#include "engine/wire.h"

#include <cstring>
#include <string>
#include <type_traits>

#include "common/errors.h"

namespace dist_sync {
namespace {

class Writer {
 public:
  template <typename T>
  void put(T value) {
    static_assert(std::is_trivially_copyable_v<T>);
    const auto* bytes = reinterpret_cast<const uint8_t*>(&value);
    out_.insert(out_.end(), bytes, bytes + sizeof(T));
  }
  void put(const std::string& text) {
    put<uint64_t>(text.size());
    out_.insert(out_.end(), text.begin(), text.end());
  }
  template <typename T>
  void put(const std::vector<T>& values) {
    put<uint64_t>(values.size());
    for (const T& value : values) put(value);
  }
  std::vector<uint8_t> take() { return std::move(out_); }

 private:
  std::vector<uint8_t> out_;
};

class Reader {
 public:
  explicit Reader(const std::vector<uint8_t>& in) : in_(in) {}
  template <typename T>
  T get() {
    static_assert(std::is_trivially_copyable_v<T>);
    need(sizeof(T));
    T value;
    std::memcpy(&value, in_.data() + offset_, sizeof(T));
    offset_ += sizeof(T);
    return value;
  }
  std::string get_string() {
    const auto length = get<uint64_t>();
    need(length);
    std::string text(reinterpret_cast<const char*>(in_.data() + offset_), length);
    offset_ += length;
    return text;
  }
  template <typename T>
  std::vector<T> get_vector() {
    const auto length = get<uint64_t>();
    need(length);  // every element takes at least one byte: bounds the allocation
    std::vector<T> values;
    values.reserve(length);
    for (uint64_t i = 0; i < length; ++i) values.push_back(get<T>());
    return values;
  }
  uint64_t get_count() {
    const auto count = get<uint64_t>();
    need(count);
    return count;
  }
  bool at_end() const { return offset_ == in_.size(); }

 private:
  void need(uint64_t bytes) const {
    DS_ASSERT(bytes <= in_.size() - offset_, "truncated negotiation message");
  }
  const std::vector<uint8_t>& in_;
  size_t offset_ = 0;
};

void put_meta(Writer& w, const RequestMeta& meta) {
  w.put<int32_t>(static_cast<int32_t>(meta.type));
  w.put(meta.name);
  w.put<uint64_t>(meta.tensors.size());
  for (const TensorMeta& tensor : meta.tensors) {
    w.put(tensor.name);
    w.put<int32_t>(static_cast<int32_t>(tensor.dtype));
    w.put(tensor.shape);
  }
  w.put<int32_t>(static_cast<int32_t>(meta.reduce_op));
  w.put<double>(meta.prescale);
  w.put<double>(meta.postscale);
  w.put<int32_t>(meta.root);
  w.put<int32_t>(static_cast<int32_t>(meta.device));
  w.put<uint8_t>(meta.cacheable ? 1 : 0);
  w.put(meta.splits);
}

RequestMeta get_meta(Reader& r) {
  RequestMeta meta;
  meta.type = static_cast<OpType>(r.get<int32_t>());
  meta.name = r.get_string();
  const uint64_t tensors = r.get_count();
  for (uint64_t i = 0; i < tensors; ++i) {
    TensorMeta tensor;
    tensor.name = r.get_string();
    tensor.dtype = static_cast<DataType>(r.get<int32_t>());
    tensor.shape = r.get_vector<int64_t>();
    meta.tensors.push_back(std::move(tensor));
  }
  meta.reduce_op = static_cast<ReduceOp>(r.get<int32_t>());
  meta.prescale = r.get<double>();
  meta.postscale = r.get<double>();
  meta.root = r.get<int32_t>();
  meta.device = static_cast<DeviceKind>(r.get<int32_t>());
  meta.cacheable = r.get<uint8_t>() != 0;
  meta.splits = r.get_vector<int64_t>();
  return meta;
}

}  // namespace

std::vector<uint8_t> encode(const RankMessage& message) {
  Writer w;
  w.put<uint64_t>(message.requests.size());
  for (const RequestMeta& meta : message.requests) put_meta(w, meta);
  w.put<uint8_t>(message.shutdown ? 1 : 0);
  w.put(message.shutdown_reason);
  w.put<uint8_t>(message.stall_report ? 1 : 0);
  w.put(message.pending_cache_bits);
  return w.take();
}

RankMessage decode_rank_message(const std::vector<uint8_t>& bytes) {
  Reader r(bytes);
  RankMessage message;
  const uint64_t count = r.get_count();
  for (uint64_t i = 0; i < count; ++i) message.requests.push_back(get_meta(r));
  message.shutdown = r.get<uint8_t>() != 0;
  message.shutdown_reason = r.get_string();
  message.stall_report = r.get<uint8_t>() != 0;
  message.pending_cache_bits = r.get_vector<uint32_t>();
  DS_ASSERT(r.at_end(), "trailing bytes in a negotiation message");
  return message;
}

std::vector<uint8_t> encode(const ResponseList& list) {
  Writer w;
  w.put<uint64_t>(list.responses.size());
  for (const Response& response : list.responses) {
    w.put<int32_t>(static_cast<int32_t>(response.type));
    w.put<uint64_t>(response.requests.size());
    for (const RequestMeta& meta : response.requests) put_meta(w, meta);
    w.put(response.error);
    w.put<uint64_t>(response.rows_by_rank.size());
    for (const auto& rows : response.rows_by_rank) w.put(rows);
    w.put(response.split_matrix);
    w.put<int32_t>(response.last_joined);
  }
  w.put(list.fatal_error);
  w.put<uint8_t>(list.shutdown ? 1 : 0);
  w.put(list.shutdown_reason);
  return w.take();
}

ResponseList decode_response_list(const std::vector<uint8_t>& bytes) {
  Reader r(bytes);
  ResponseList list;
  const uint64_t count = r.get_count();
  for (uint64_t i = 0; i < count; ++i) {
    Response response;
    response.type = static_cast<OpType>(r.get<int32_t>());
    const uint64_t requests = r.get_count();
    for (uint64_t j = 0; j < requests; ++j) response.requests.push_back(get_meta(r));
    response.error = r.get_string();
    const uint64_t tensors = r.get_count();
    for (uint64_t j = 0; j < tensors; ++j) response.rows_by_rank.push_back(r.get_vector<int64_t>());
    response.split_matrix = r.get_vector<int64_t>();
    response.last_joined = r.get<int32_t>();
    list.responses.push_back(std::move(response));
  }
  list.fatal_error = r.get_string();
  list.shutdown = r.get<uint8_t>() != 0;
  list.shutdown_reason = r.get_string();
  DS_ASSERT(r.at_end(), "trailing bytes in a negotiation message");
  return list;
}

std::vector<uint8_t> encode(const std::vector<SharedSetting>& settings) {
  Writer w;
  w.put<uint64_t>(settings.size());
  for (const SharedSetting& setting : settings) {
    w.put(setting.key);
    w.put(setting.variable);
    w.put(setting.value);
  }
  return w.take();
}

std::vector<SharedSetting> decode_shared_settings(const std::vector<uint8_t>& bytes) {
  Reader r(bytes);
  std::vector<SharedSetting> settings;
  const uint64_t count = r.get_count();
  for (uint64_t i = 0; i < count; ++i) {
    SharedSetting setting;
    setting.key = r.get_string();
    setting.variable = r.get_string();
    setting.value = r.get_string();
    settings.push_back(std::move(setting));
  }
  DS_ASSERT(r.at_end(), "trailing bytes in a negotiation message");
  return settings;
}

}  // namespace dist_sync
