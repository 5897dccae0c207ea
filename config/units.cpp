// Parsers and printers for the size, size-limit and duration values of the
// configuration. They are strict on purpose: a typo in a quota must be an
// error at load time, not a cache that silently fills the disk.
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>

#include "config/config.hpp"

namespace artifactfs::config {

namespace {

constexpr std::string_view size_help =
    "expected bytes or a number with a K, M, G or T suffix (powers of 1024), e.g. 4096, 512M, 1.5G, 10GiB";
constexpr std::string_view duration_help =
    "expected a number with a unit ms, s, m, h or d, e.g. 500ms, 30s, 10m, 2h, 7d";

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  return text;
}

bool equals_ignoring_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) return false;
  }
  return true;
}

// Splits "1.5G" into the unsigned decimal "1.5" and the rest "G". Signs,
// exponents and hex are not numbers here: nobody means them in a quota.
struct NumberAndUnit {
  long double number = 0;
  std::string_view unit;
};

std::optional<NumberAndUnit> split_number(std::string_view text) {
  std::size_t i = 0;
  std::size_t int_digits = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i, ++int_digits;
  std::size_t frac_digits = 0;
  if (i < text.size() && text[i] == '.') {
    ++i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i, ++frac_digits;
    if (frac_digits == 0) return std::nullopt;  // "1." is more likely a typo than a number
  }
  if (int_digits == 0) return std::nullopt;
  const std::string digits(text.substr(0, i));
  NumberAndUnit result;
  result.number = std::strtold(digits.c_str(), nullptr);
  result.unit = trim(text.substr(i));
  return result;
}

std::string quoted(const std::string& text) { return "'" + text + "'"; }

// Shortest decimal form that reads back as the same double.
std::string format_double(double value) {
  std::array<char, 64> buffer{};
  auto [end, ec] = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value);
  if (ec != std::errc()) return std::to_string(value);
  return std::string(buffer.data(), end);
}

}  // namespace

std::uint64_t parse_size(const std::string& text) {
  const std::string_view body = trim(text);
  auto parsed = split_number(body);
  if (!parsed) throw std::invalid_argument("not a size: " + quoted(text) + " (" + std::string(size_help) + ")");

  std::string_view unit = parsed->unit;
  // "10G", "10GB" and "10GiB" all mean 10 * 1024^3: people write all three
  // and none of them expects powers of 1000 from a cache quota.
  if (unit.size() == 3 && unit.substr(1) == "iB") {
    unit = unit.substr(0, 1);
  } else if (unit.size() == 2 && unit[1] == 'B') {
    unit = unit.substr(0, 1);
  } else if (unit == "B") {
    unit = {};
  }

  long double multiplier = 1;
  if (!unit.empty()) {
    if (unit.size() != 1) throw std::invalid_argument("unknown size unit in " + quoted(text) + " (" + std::string(size_help) + ")");
    switch (std::toupper(static_cast<unsigned char>(unit[0]))) {
      case 'K': multiplier = 1024.0L; break;
      case 'M': multiplier = 1024.0L * 1024; break;
      case 'G': multiplier = 1024.0L * 1024 * 1024; break;
      case 'T': multiplier = 1024.0L * 1024 * 1024 * 1024; break;
      default:
        throw std::invalid_argument("unknown size unit in " + quoted(text) + " (" + std::string(size_help) + ")");
    }
  } else if (body.find('.') != std::string_view::npos) {
    throw std::invalid_argument("a byte count cannot have a fraction: " + quoted(text) + " (" + std::string(size_help) + ")");
  }

  const long double bytes = std::round(parsed->number * multiplier);
  if (bytes > static_cast<long double>(std::numeric_limits<std::uint64_t>::max()) / 2) {
    throw std::invalid_argument("size too large: " + quoted(text) + " (expected at most 8E, i.e. 8388608T)");
  }
  return static_cast<std::uint64_t>(bytes);
}

SizeLimit parse_size_limit(const std::string& text, bool allow_unlimited) {
  const std::string_view body = trim(text);
  const std::string accepted = allow_unlimited ? "expected a size such as 100G, a percentage of the filesystem such as 80%, or 'unlimited'"
                                               : "expected a size such as 100G or a percentage of the filesystem such as 5%";
  SizeLimit limit;
  if (equals_ignoring_case(body, "unlimited")) {
    if (!allow_unlimited) throw std::invalid_argument("'unlimited' is not allowed here (" + accepted + ")");
    limit.kind = SizeLimit::Kind::unlimited;
    return limit;
  }
  if (!body.empty() && body.back() == '%') {
    auto parsed = split_number(body.substr(0, body.size() - 1));
    if (!parsed || !parsed->unit.empty()) throw std::invalid_argument("not a percentage: " + quoted(text) + " (" + accepted + ")");
    if (!(parsed->number > 0 && parsed->number <= 100)) {
      throw std::invalid_argument("percentage out of range: " + quoted(text) + " (expected more than 0% and at most 100%)");
    }
    limit.kind = SizeLimit::Kind::percent;
    limit.percent = static_cast<double>(parsed->number);
    return limit;
  }
  try {
    limit.bytes = parse_size(text);
  } catch (const std::invalid_argument&) {
    throw std::invalid_argument("not a size limit: " + quoted(text) + " (" + accepted + ")");
  }
  limit.kind = SizeLimit::Kind::bytes;
  return limit;
}

std::chrono::milliseconds parse_duration(const std::string& text) {
  const std::string_view body = trim(text);
  auto parsed = split_number(body);
  if (!parsed) throw std::invalid_argument("not a duration: " + quoted(text) + " (" + std::string(duration_help) + ")");
  if (parsed->unit.empty()) {
    // Zero is zero in every unit ("min-age: 0", "atime-precision: 0").
    if (parsed->number == 0) return std::chrono::milliseconds(0);
    // A bare number is ambiguous (seconds? milliseconds?); guessing wrong
    // by a factor of 1000 is worse than asking.
    throw std::invalid_argument("duration " + quoted(text) + " has no unit (" + std::string(duration_help) + ")");
  }
  long double unit_ms = 0;
  const std::string_view unit = parsed->unit;
  if (unit == "ms") unit_ms = 1;
  else if (unit == "s") unit_ms = 1000;
  else if (unit == "m") unit_ms = 60.0L * 1000;
  else if (unit == "h") unit_ms = 3600.0L * 1000;
  else if (unit == "d") unit_ms = 86400.0L * 1000;
  else throw std::invalid_argument("unknown duration unit in " + quoted(text) + " (" + std::string(duration_help) + ")");

  const long double ms = std::round(parsed->number * unit_ms);
  // Ten thousand years is far beyond any sensible setting and far below
  // the overflow of std::chrono::milliseconds.
  if (ms > 10000.0L * 365 * 86400 * 1000) throw std::invalid_argument("duration too long: " + quoted(text) + " (expected at most 3650000d)");
  return std::chrono::milliseconds(static_cast<std::int64_t>(ms));
}

std::string format_duration(std::chrono::milliseconds duration) {
  const std::int64_t ms = duration.count();
  struct Unit {
    std::int64_t ms;
    const char* suffix;
  };
  static constexpr Unit units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}};
  if (ms != 0) {
    for (const Unit& unit : units) {
      if (ms % unit.ms == 0) return std::to_string(ms / unit.ms) + unit.suffix;
    }
  } else {
    return "0s";
  }
  return std::to_string(ms) + "ms";
}

std::string format_size(std::uint64_t bytes) {
  static constexpr std::pair<std::uint64_t, char> units[] = {
      {1ULL << 40, 'T'}, {1ULL << 30, 'G'}, {1ULL << 20, 'M'}, {1ULL << 10, 'K'}};
  if (bytes != 0) {
    for (const auto& [size, suffix] : units) {
      if (bytes % size == 0) return std::to_string(bytes / size) + suffix;
    }
  }
  return std::to_string(bytes);
}

std::optional<std::uint64_t> SizeLimit::resolve(std::uint64_t capacity_bytes) const {
  switch (kind) {
    case Kind::unlimited: return std::nullopt;
    case Kind::bytes: return bytes;
    case Kind::percent:
      return static_cast<std::uint64_t>(std::floor(static_cast<long double>(capacity_bytes) * percent / 100.0L));
  }
  return std::nullopt;
}

std::string SizeLimit::to_string() const {
  switch (kind) {
    case Kind::unlimited: return "unlimited";
    case Kind::bytes: return format_size(bytes);
    case Kind::percent: return format_double(percent) + "%";
  }
  return "unlimited";
}

}  // namespace artifactfs::config
