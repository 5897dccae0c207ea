// Size, size-limit and duration parsing: what operators type in quota files.
#include <catch2/catch.hpp>

#include "config/config.hpp"

using namespace artifactfs::config;
using namespace std::chrono_literals;

namespace {

std::string message_of_invalid(const std::function<void()>& parse) {
  try {
    parse();
  } catch (const std::invalid_argument& error) {
    return error.what();
  }
  return "(no std::invalid_argument thrown)";
}

}  // namespace

TEST_CASE("parse_size accepts bytes and binary suffixes", "[config][units]") {
  CHECK(parse_size("0") == 0);
  CHECK(parse_size("4096") == 4096);
  CHECK(parse_size("10K") == 10 * 1024);
  CHECK(parse_size("10k") == 10 * 1024);
  CHECK(parse_size("512M") == 512ULL << 20);
  CHECK(parse_size("1.5G") == 3ULL << 29);
  CHECK(parse_size("2T") == 2ULL << 40);
  CHECK(parse_size("10GiB") == 10ULL << 30);
  CHECK(parse_size("10GB") == 10ULL << 30);
  CHECK(parse_size("100B") == 100);
  CHECK(parse_size(" 7M ") == 7ULL << 20);
}

TEST_CASE("parse_size rejects what is not a size and says what is accepted", "[config][units]") {
  for (const char* bad : {"", "abc", "-1", "+1", "1.5", "10X", "10KiBB", "1e9", "G", "1.G", ".5G", "10 G B", "0x10"}) {
    INFO("input: '" << bad << "'");
    const std::string message = message_of_invalid([&] { parse_size(bad); });
    CHECK_THAT(message, Catch::Contains("expected"));
  }
  CHECK_THAT(message_of_invalid([] { parse_size("99999999999T"); }), Catch::Contains("too large"));
}

TEST_CASE("parse_size_limit reads sizes, percentages and unlimited", "[config][units]") {
  SizeLimit percent = parse_size_limit("80%", false);
  CHECK(percent.kind == SizeLimit::Kind::percent);
  CHECK(percent.percent == 80.0);
  CHECK(parse_size_limit("12.5%", false).percent == 12.5);
  CHECK(parse_size_limit("100%", false).percent == 100.0);

  SizeLimit bytes = parse_size_limit("10G", true);
  CHECK(bytes.kind == SizeLimit::Kind::bytes);
  CHECK(bytes.bytes == 10ULL << 30);

  CHECK(parse_size_limit("unlimited", true).kind == SizeLimit::Kind::unlimited);
}

TEST_CASE("parse_size_limit rejects out-of-range percentages and misplaced unlimited", "[config][units]") {
  CHECK_THAT(message_of_invalid([] { parse_size_limit("0%", true); }), Catch::Contains("more than 0%"));
  CHECK_THAT(message_of_invalid([] { parse_size_limit("100.5%", true); }), Catch::Contains("at most 100%"));
  CHECK_THAT(message_of_invalid([] { parse_size_limit("unlimited", false); }), Catch::Contains("not allowed"));
  CHECK_THAT(message_of_invalid([] { parse_size_limit("lots%", true); }), Catch::Contains("percentage"));
  CHECK_THAT(message_of_invalid([] { parse_size_limit("10Q", true); }), Catch::Contains("unlimited"));
  CHECK_THAT(message_of_invalid([] { parse_size_limit("10Q", false); }), !Catch::Contains("unlimited"));
}

TEST_CASE("SizeLimit resolves against the filesystem and prints in the accepted form", "[config][units]") {
  CHECK_FALSE(SizeLimit{}.resolve(1000).has_value());
  CHECK(SizeLimit{SizeLimit::Kind::bytes, 4096, 0}.resolve(1000) == 4096u);
  CHECK(SizeLimit{SizeLimit::Kind::percent, 0, 50}.resolve(1001) == 500u);
  CHECK(SizeLimit{SizeLimit::Kind::percent, 0, 100}.resolve(1ULL << 40) == 1ULL << 40);

  CHECK(SizeLimit{}.to_string() == "unlimited");
  CHECK(SizeLimit{SizeLimit::Kind::bytes, 100ULL << 30, 0}.to_string() == "100G");
  CHECK(SizeLimit{SizeLimit::Kind::bytes, 3ULL << 29, 0}.to_string() == "1536M");
  CHECK(SizeLimit{SizeLimit::Kind::bytes, 1000, 0}.to_string() == "1000");
  CHECK(SizeLimit{SizeLimit::Kind::percent, 0, 80}.to_string() == "80%");
  CHECK(SizeLimit{SizeLimit::Kind::percent, 0, 12.5}.to_string() == "12.5%");
  for (const char* text : {"unlimited", "100G", "1536M", "1000", "80%", "12.5%", "3T"}) {
    CHECK(parse_size_limit(text, true).to_string() == text);
  }
}

TEST_CASE("parse_duration requires a unit", "[config][units]") {
  CHECK(parse_duration("500ms") == 500ms);
  CHECK(parse_duration("30s") == 30s);
  CHECK(parse_duration("10m") == 10min);
  CHECK(parse_duration("2h") == 2h);
  CHECK(parse_duration("7d") == 7 * 24h);
  CHECK(parse_duration("1.5s") == 1500ms);
  CHECK(parse_duration("0s") == 0ms);

  CHECK_THAT(message_of_invalid([] { parse_duration("10"); }), Catch::Contains("no unit") && Catch::Contains("ms, s, m, h or d"));
  CHECK(parse_duration("0") == std::chrono::milliseconds(0));  // zero needs no unit
  for (const char* bad : {"", "s", "-1s", "10x", "10 minutes", "1h30m", "1e3s"}) {
    INFO("input: '" << bad << "'");
    CHECK_THAT(message_of_invalid([&] { parse_duration(bad); }), Catch::Contains("expected"));
  }
}

TEST_CASE("format_duration and format_size pick the largest exact unit", "[config][units]") {
  CHECK(format_duration(0ms) == "0s");
  CHECK(format_duration(250ms) == "250ms");
  CHECK(format_duration(1500ms) == "1500ms");
  CHECK(format_duration(90s) == "90s");
  CHECK(format_duration(2h) == "2h");
  CHECK(format_duration(48h) == "2d");
  CHECK(format_size(0) == "0");
  CHECK(format_size(1024) == "1K");
  CHECK(format_size(1025) == "1025");
}
