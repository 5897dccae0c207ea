#include "cli/output.hpp"

#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ostream>

namespace artifactfs::cli {

namespace {

constexpr index::TimeNs kSecond = 1'000'000'000;

// Display width: bytes outside escape sequences, UTF-8 continuation bytes
// not counted.
std::size_t width_of(const std::string& s) {
  std::size_t w = 0;
  bool escape = false;
  for (unsigned char c : s) {
    if (escape) {
      if (c == 'm') escape = false;
    } else if (c == 0x1b) {
      escape = true;
    } else if ((c & 0xc0) != 0x80) {
      ++w;
    }
  }
  return w;
}

}  // namespace

Style terminal_style(bool exact_bytes) {
  Style s;
  const char* term = std::getenv("TERM");
  s.colour = isatty(STDOUT_FILENO) && !std::getenv("NO_COLOR") && !(term && std::strcmp(term, "dumb") == 0);
  s.exact_bytes = exact_bytes;
  return s;
}

std::string size_text(std::uint64_t bytes, const Style& style) {
  if (style.exact_bytes) return std::to_string(bytes);
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  int unit = 0;
  while (v >= 1024 && unit < 6) {
    v /= 1024;
    ++unit;
  }
  char buf[32];
  if (unit == 0) std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  else std::snprintf(buf, sizeof buf, v < 10 ? "%.1f %s" : "%.0f %s", v, units[unit]);
  return buf;
}

std::string count_text(std::uint64_t n) {
  std::string digits = std::to_string(n);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string duration_text(index::TimeNs ns) {
  const long long s = ns / kSecond;
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%lld s", s);
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%lld min", s / 60);
  else if (s < 86400) std::snprintf(buf, sizeof buf, "%lld h", s / 3600);
  else if (s < 86400 * 14) std::snprintf(buf, sizeof buf, "%lld d %lld h", s / 86400, (s % 86400) / 3600);
  else std::snprintf(buf, sizeof buf, "%lld d", s / 86400);
  return buf;
}

std::string ago_text(index::TimeNs then, index::TimeNs now) {
  if (then <= 0) return "never";
  const index::TimeNs diff = now - then;
  if (diff < 0) return "in " + duration_text(-diff);
  if (diff < kSecond) return "just now";
  return duration_text(diff) + " ago";
}

std::string clock_text(index::TimeNs when) {
  time_t t = static_cast<time_t>(when / kSecond);
  struct tm tm {};
  localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

Table::Table(std::vector<std::string> headers, std::vector<bool> right_aligned)
    : headers_(std::move(headers)), right_(std::move(right_aligned)) {
  right_.resize(headers_.size(), false);
}

void Table::add(std::vector<std::string> row) {
  row.resize(headers_.size());
  rows_.push_back(std::move(row));
}

void Table::print(std::ostream& out, const Style& style) const {
  std::vector<std::size_t> widths(headers_.size());
  for (std::size_t i = 0; i < headers_.size(); ++i) widths[i] = width_of(headers_[i]);
  for (const auto& row : rows_) {
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], width_of(row[i]));
  }
  auto line = [&](const std::vector<std::string>& cells, bool header) {
    std::string text;
    for (std::size_t i = 0; i < cells.size(); ++i) {
      const std::string pad(widths[i] - width_of(cells[i]), ' ');
      const bool last = i + 1 == cells.size();
      std::string cell = right_[i] ? pad + cells[i] : cells[i] + (last ? "" : pad);
      text += (i ? "  " : "") + (header ? style.bold(cell) : cell);
    }
    out << text << '\n';
  };
  line(headers_, true);
  for (const auto& row : rows_) line(row, false);
}

void print_json(std::ostream& out, const nlohmann::json& value) {
  out << value.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
}

}  // namespace artifactfs::cli
