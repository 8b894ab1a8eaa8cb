#include "engine/timeline.h"

#include <cerrno>
#include <cstring>
#include <sstream>

#include "common/errors.h"

namespace dist_sync {

std::string json_escape(const std::string& text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof(escaped), "\\u%04x", c);
          out += escaped;
        } else {
          out += c;
        }
    }
  }
  return out;
}

Timeline::~Timeline() { stop(); }

void Timeline::start(const std::string& path) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (file_ != nullptr) {
    flush_locked();
    std::fclose(file_);
  }
  file_ = std::fopen(path.c_str(), "w");
  if (file_ == nullptr) {
    enabled_ = false;
    throw Error(detail::concat("cannot write the timeline to '", path, "': ", std::strerror(errno)));
  }
  std::fputs("[\n]", file_);
  std::fflush(file_);
  first_event_ = true;
  rows_.clear();
  origin_ = Clock::now();
  last_flush_ = origin_;
  enabled_ = true;
  buffer_ = "{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": 0, \"args\": {\"name\": \"dist_sync rank 0\"}}";
  first_event_ = false;
  flush_locked();
}

void Timeline::stop() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (file_ == nullptr) return;
  flush_locked();
  std::fclose(file_);
  file_ = nullptr;
  enabled_ = false;
}

int Timeline::row_of(const std::string& tensor) {
  const auto it = rows_.find(tensor);
  if (it != rows_.end()) return it->second;
  const int row = static_cast<int>(rows_.size()) + 1;
  rows_.emplace(tensor, row);
  append(detail::concat("{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": 0, \"tid\": ", row,
                        ", \"args\": {\"name\": \"", json_escape(tensor), "\"}}"));
  return row;
}

void Timeline::append(const std::string& event) {
  if (!first_event_) buffer_ += ",\n";
  first_event_ = false;
  buffer_ += event;
}

void Timeline::span(const std::string& tensor, const std::string& phase, Clock::time_point begin,
                    Clock::time_point end, const std::string& args) {
  if (!enabled_) return;
  std::lock_guard<std::mutex> lock(mutex_);
  if (file_ == nullptr) return;
  const int row = row_of(tensor);
  const auto micros = [this](Clock::time_point t) {
    return std::chrono::duration<double, std::micro>(t - origin_).count();
  };
  std::ostringstream event;
  event.setf(std::ios::fixed);
  event.precision(3);
  event << "{\"name\": \"" << json_escape(phase) << "\", \"ph\": \"X\", \"pid\": 0, \"tid\": " << row
        << ", \"ts\": " << micros(begin) << ", \"dur\": " << micros(end) - micros(begin);
  if (!args.empty()) event << ", \"args\": {" << args << "}";
  event << "}";
  append(event.str());
  const auto now = Clock::now();
  if (buffer_.size() > (64u << 10) || now - last_flush_ > std::chrono::milliseconds(200)) {
    flush_locked();
    last_flush_ = now;
  }
}

void Timeline::flush_locked() {
  if (file_ == nullptr || buffer_.empty()) return;
  // Overwrite the closing bracket, append, close again (Note [Timeline stays valid JSON]), in one
  // write so a process killed mid-flush is unlikely to leave a half-written tail.
  buffer_ += "\n]";
  std::fseek(file_, -1, SEEK_END);
  std::fwrite(buffer_.data(), 1, buffer_.size(), file_);
  std::fflush(file_);
  buffer_.clear();
}

}  // namespace dist_sync
