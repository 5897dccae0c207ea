// How the commands print: aligned tables, sizes in human units (exact
// bytes with --bytes), times relative to now ("3 h ago"), and colour only
// when standard output is a terminal (and NO_COLOR is not set).
#pragma once

#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "index/index.hpp"

namespace artifactfs::cli {

struct Style {
  bool colour = false;
  bool exact_bytes = false;  // --bytes
  std::string bold(const std::string& s) const { return wrap("1", s); }
  std::string dim(const std::string& s) const { return wrap("2", s); }
  std::string red(const std::string& s) const { return wrap("31", s); }
  std::string yellow(const std::string& s) const { return wrap("33", s); }
  std::string green(const std::string& s) const { return wrap("32", s); }
  std::string wrap(const char* code, const std::string& s) const {
    return colour ? "\033[" + std::string(code) + "m" + s + "\033[0m" : s;
  }
};

// Colour if stdout is a terminal, NO_COLOR is unset and TERM is not "dumb".
Style terminal_style(bool exact_bytes);

// "1.5 GiB", "512 B"; exact: "1610612736".
std::string size_text(std::uint64_t bytes, const Style& style);
// "1,234,567".
std::string count_text(std::uint64_t n);
// "just now", "42 s ago", "3 min ago", "5 h ago", "2 d ago", "in 3 min".
std::string ago_text(index::TimeNs then, index::TimeNs now);
// "3 h", "2 d 4 h".
std::string duration_text(index::TimeNs ns);
// "2026-11-21 13:45:07" in local time.
std::string clock_text(index::TimeNs when);

// Columns padded to their widest cell (escape sequences not counted);
// right-aligned where asked.
class Table {
 public:
  explicit Table(std::vector<std::string> headers, std::vector<bool> right_aligned = {});
  void add(std::vector<std::string> row);
  void print(std::ostream& out, const Style& style) const;
  bool empty() const { return rows_.empty(); }

 private:
  std::vector<std::string> headers_;
  std::vector<bool> right_;
  std::vector<std::vector<std::string>> rows_;
};

void print_json(std::ostream& out, const nlohmann::json& value);

}  // namespace artifactfs::cli
