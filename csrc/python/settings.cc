#include "python/settings.h"

#include <string>

#include "common/errors.h"

namespace py = pybind11;

namespace dist_sync::python {
namespace {

// A setting's Python value as the text SettingField::set reads (converting as pybind11 does).
std::string setting_text(const SettingField& field, const py::handle& value) {
  try {
    switch (field.kind) {
      case SettingField::Kind::kUnsigned: return std::to_string(value.cast<uint64_t>());
      case SettingField::Kind::kInteger: return std::to_string(value.cast<int64_t>());
      case SettingField::Kind::kReal: return py::str(py::float_(value.cast<double>()));
      case SettingField::Kind::kBoolean: return value.cast<bool>() ? "1" : "0";
      case SettingField::Kind::kText: return value.cast<std::string>();
    }
  } catch (const py::cast_error&) {
  }
  static const char* const expected[] = {"a non-negative int", "an int", "a number", "a bool", "a str"};
  throw UsageError(detail::concat("setting '", field.key, "' must be ",
                                  expected[static_cast<int>(field.kind)], ", got ",
                                  py::repr(value).cast<std::string>()));
}

}  // namespace

EngineConfig engine_config(const py::dict& settings) {
  EngineConfig config{};
  std::string missing;
  for (const SettingField& field : setting_fields()) {
    if (!settings.contains(field.key)) {
      missing += (missing.empty() ? "'" : ", '") + std::string(field.key) + "'";
      continue;
    }
    field.set(config, setting_text(field, settings[field.key]));
  }
  DS_CHECK(missing.empty(), "the settings lack ", missing,
           ": pass the complete dict dist_sync.config.load() returns");
  return config;
}

std::vector<SharedSetting> shared_settings(const py::dict& shared) {
  std::vector<SharedSetting> settings;
  for (const auto& [key, variable] : shared) {
    SharedSetting setting{key.cast<std::string>(), variable.cast<std::string>(), ""};
    setting_field(setting.key);  // a key the engine has, or UsageError
    settings.push_back(std::move(setting));
  }
  return settings;
}

}  // namespace dist_sync::python
