// The engine's settings from Python: the complete dict dist_sync.config.load() returns (the one
// place that declares names, defaults and parsing) and the keys every rank must share.
#pragma once

#include <pybind11/pybind11.h>

#include <vector>

#include "engine/config.h"

namespace dist_sync::python {

// Every key the engine has must be in `settings`; ValueError naming the missing ones, or a value
// of the wrong type.
EngineConfig engine_config(const pybind11::dict& settings);

// key -> DIST_SYNC_ variable of the settings every rank must share (Note [Settings every rank
// must share]), as dist_sync/config.py marks them; ValueError for a key the engine lacks.
std::vector<SharedSetting> shared_settings(const pybind11::dict& shared);

}  // namespace dist_sync::python
