#include "engine/config.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <type_traits>

#include "common/errors.h"

namespace dist_sync {
namespace {

using Kind = SettingField::Kind;

std::string to_text(bool value) { return value ? "1" : "0"; }
std::string to_text(double value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.17g", value);
  return text;
}
std::string to_text(const std::string& value) { return value; }
std::string to_text(LogLevel value) { return std::to_string(static_cast<int>(value)); }
template <typename Integer, typename = std::enable_if_t<std::is_integral_v<Integer>>>
std::string to_text(Integer value) {
  return std::to_string(value);
}

[[noreturn]] void malformed(const char* key, const std::string& text, const char* expected) {
  throw UsageError(detail::concat("setting '", key, "' must be ", expected, ", got '", text, "'"));
}

// The whole of `text` as a number (strtoull/strtoll/strtod), or malformed().
template <typename Number, typename Parse>
Number parse_number(const char* key, const std::string& text, const char* expected, Parse parse) {
  errno = 0;
  char* end = nullptr;
  const auto value = parse(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || errno == ERANGE) {
    malformed(key, text, expected);
  }
  return static_cast<Number>(value);
}

void from_text(const char* key, const std::string& text, bool& value) {
  if (text != "0" && text != "1") malformed(key, text, "a boolean (1 or 0)");
  value = text == "1";
}
void from_text(const char* key, const std::string& text, double& value) {
  value = parse_number<double>(key, text, "a number", [](const char* s, char** e) { return std::strtod(s, e); });
}
void from_text(const char* key, const std::string& text, std::string& value) { value = text; }
void from_text(const char* key, const std::string& text, LogLevel& value) {
  const int level = parse_number<int>(key, text, "a log level (0..4)",
                                      [](const char* s, char** e) { return std::strtol(s, e, 10); });
  if (level < static_cast<int>(LogLevel::kDebug) || level > static_cast<int>(LogLevel::kOff)) {
    malformed(key, text, "a log level (0..4)");
  }
  value = static_cast<LogLevel>(level);
}
template <typename Integer, typename = std::enable_if_t<std::is_integral_v<Integer>>>
void from_text(const char* key, const std::string& text, Integer& value) {
  if constexpr (std::is_unsigned_v<Integer>) {
    if (text.find('-') != std::string::npos) malformed(key, text, "a non-negative integer");
    value = parse_number<Integer>(key, text, "a non-negative integer",
                                  [](const char* s, char** e) { return std::strtoull(s, e, 10); });
  } else {
    value = parse_number<Integer>(key, text, "an integer",
                                  [](const char* s, char** e) { return std::strtoll(s, e, 10); });
  }
}

template <typename T>
constexpr Kind kind_of() {
  if constexpr (std::is_same_v<T, bool>) return Kind::kBoolean;
  else if constexpr (std::is_floating_point_v<T>) return Kind::kReal;
  else if constexpr (std::is_same_v<T, std::string>) return Kind::kText;
  else if constexpr (std::is_unsigned_v<T>) return Kind::kUnsigned;
  else return Kind::kInteger;  // signed integers and LogLevel
}

// `access` returns the field of a (const or not) EngineConfig: [](auto& c) -> auto& { ... }.
template <typename Access>
SettingField field(const char* key, Access access) {
  using Value = std::decay_t<decltype(access(std::declval<EngineConfig&>()))>;
  return SettingField{key, kind_of<Value>(),
                      [access](const EngineConfig& config) { return to_text(access(config)); },
                      [key, access](EngineConfig& config, const std::string& text) {
                        from_text(key, text, access(config));
                      }};
}

}  // namespace

const std::vector<SettingField>& setting_fields() {
  static const std::vector<SettingField> fields = {
      field("fusion_threshold_bytes", [](auto& c) -> auto& { return c.fusion_threshold_bytes; }),
      field("cycle_time_ms", [](auto& c) -> auto& { return c.cycle_time_ms; }),
      field("cache_capacity", [](auto& c) -> auto& { return c.cache_capacity; }),
      field("stall_warning_seconds", [](auto& c) -> auto& { return c.stall_warning_seconds; }),
      field("stall_timeout_seconds", [](auto& c) -> auto& { return c.stall_timeout_seconds; }),
      field("init_timeout_seconds", [](auto& c) -> auto& { return c.init_timeout_seconds; }),
      field("fatal_grace_seconds", [](auto& c) -> auto& { return c.fatal_grace_seconds; }),
      field("ring_segment_bytes", [](auto& c) -> auto& { return c.collectives.segment_bytes; }),
      field("ring_in_flight", [](auto& c) -> auto& { return c.collectives.in_flight; }),
      field("small_allreduce_bytes",
            [](auto& c) -> auto& { return c.collectives.small_allreduce_bytes; }),
      field("reproducible", [](auto& c) -> auto& { return c.collectives.reproducible; }),
      field("hierarchical_allreduce", [](auto& c) -> auto& { return c.hierarchical_allreduce; }),
      field("log_level", [](auto& c) -> auto& { return c.log_level; }),
      field("timeline", [](auto& c) -> auto& { return c.timeline_path; }),
  };
  return fields;
}

const SettingField& setting_field(const std::string& key) {
  for (const SettingField& field : setting_fields()) {
    if (key == field.key) return field;
  }
  std::string known;
  for (const SettingField& field : setting_fields()) known += (known.empty() ? "" : ", ") + std::string(field.key);
  throw UsageError(detail::concat("unknown engine setting '", key, "' (known: ", known, ")"));
}

}  // namespace dist_sync
