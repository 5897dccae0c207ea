// Loading configuration files and --set overrides: every problem reported
// with file, line and key; defaults; round trip through to_yaml.
#include <catch2/catch.hpp>

#include <stdlib.h>
#include <unistd.h>

#include <fstream>

#include "tests/unit/temp_dir.hpp"
#include "config/config.hpp"

using namespace artifactfs::config;
using namespace std::chrono_literals;

using artifactfs::testing::TempDir;

namespace {

std::vector<std::string> problems_of(const std::optional<std::filesystem::path>& file,
                                     const std::vector<std::string>& overrides = {}) {
  try {
    load(file, overrides);
  } catch (const ConfigError& error) {
    return error.problems();
  }
  return {};
}

}  // namespace

TEST_CASE("defaults without a file", "[config][load]") {
  const Config config = load(std::nullopt);
  CHECK(config.layout.depth == 1);
  CHECK(config.layout.keep.empty());
  CHECK(config.index.flush_interval == 1s);
  CHECK(config.fuse.threads == 4);
  CHECK(config.fuse.entry_timeout == 1h);
  CHECK(config.fuse.attr_timeout == 1h);
  CHECK(config.fuse.allow_other);
  CHECK(config.quota.max_size.kind == SizeLimit::Kind::unlimited);
  CHECK(config.quota.min_free.kind == SizeLimit::Kind::percent);
  CHECK(config.quota.min_free.percent == 5.0);
  CHECK(config.quota.low_watermark == 0.9);
  CHECK(config.quota.min_age == 10min);
  CHECK(config.quota.check_interval == 10s);
  CHECK(config.log.level == "info");
}

TEST_CASE("an empty file or a comment-only file means all defaults", "[config][load]") {
  TempDir dir;
  CHECK(load(dir.write("empty.yaml", "")).fuse.threads == 4);
  CHECK(load(dir.write("comments.yaml", "# nothing set yet\n")).quota.min_age == 10min);
  CHECK(load(dir.write("sections.yaml", "layout:\nquota:\n")).layout.depth == 1);
}

TEST_CASE("a complete file is read into typed members", "[config][load]") {
  TempDir dir;
  const Config config = load(dir.write("full.yaml", R"(layout:
  depth: 3
  keep: [stats, "*.lock", CACHEDIR.TAG]
index:
  flush-interval: 250ms
fuse:
  threads: 8
  entry-timeout: 0s
  attr-timeout: 30s
  allow-other: false
quota:
  max-size: 100G
  min-free: 2%
  low-watermark: 0.75
  min-age: 1h
  check-interval: 5s
log:
  level: debug
)"));
  CHECK(config.layout.depth == 3);
  CHECK(config.layout.keep == std::vector<std::string>{"stats", "*.lock", "CACHEDIR.TAG"});
  CHECK(config.index.flush_interval == 250ms);
  CHECK(config.fuse.threads == 8);
  CHECK(config.fuse.entry_timeout == 0ms);
  CHECK(config.fuse.attr_timeout == 30s);
  CHECK_FALSE(config.fuse.allow_other);
  CHECK(config.quota.max_size.kind == SizeLimit::Kind::bytes);
  CHECK(config.quota.max_size.bytes == 100ULL << 30);
  CHECK(config.quota.min_free.percent == 2.0);
  CHECK(config.quota.low_watermark == 0.75);
  CHECK(config.quota.min_age == 1h);
  CHECK(config.quota.check_interval == 5s);
  CHECK(config.log.level == "debug");
}

TEST_CASE("three different mistakes are all reported with their lines and keys", "[config][load]") {
  TempDir dir;
  const auto file = dir.write("three.yaml", R"(layout:
  depth: 0
fuse:
  threads: 2
  allow-other: perhaps
quota:
  max-size: 10G
  min-age: 10
)");
  const std::string name = file.string();
  const auto problems = problems_of(file);
  REQUIRE(problems.size() == 3);
  CHECK_THAT(problems[0], Catch::StartsWith(name + ":2: layout.depth: ") && Catch::Contains("expected an integer from 1 to 8"));
  CHECK_THAT(problems[1], Catch::StartsWith(name + ":5: fuse.allow-other: ") && Catch::Contains("true or false"));
  CHECK_THAT(problems[2], Catch::StartsWith(name + ":8: quota.min-age: ") && Catch::Contains("unit"));

  // The exception's message carries all of them too, for callers that only print what().
  try {
    load(file);
    FAIL("no ConfigError");
  } catch (const ConfigError& error) {
    CHECK_THAT(std::string(error.what()), Catch::Contains(":2:") && Catch::Contains(":5:") && Catch::Contains(":8:"));
  }
}

TEST_CASE("an unknown key gets the closest known key as a suggestion", "[config][load]") {
  TempDir dir;
  const auto file = dir.write("typo.yaml", "quota:\n  max-sze: 10G\nmin-age: 1h\nlayout:\n  zzzzzzzz: 1\n");
  const auto problems = problems_of(file);
  REQUIRE(problems.size() == 3);
  CHECK(problems[0] == file.string() + ":2: quota.max-sze: unknown key (did you mean 'max-size'?)");
  // A key in the wrong place points to where it belongs.
  CHECK(problems[1] == file.string() + ":3: min-age: unknown key (did you mean 'quota.min-age'?)");
  // Nothing close: list what is there instead.
  CHECK_THAT(problems[2], Catch::StartsWith(file.string() + ":5: layout.zzzzzzzz: unknown key (expected one of: depth, keep"));
}

TEST_CASE("wrong YAML types are reported, not coerced", "[config][load]") {
  TempDir dir;
  const auto file = dir.write("types.yaml", R"(layout:
  depth: {value: 2}
  keep: stats
fuse: 4
quota:
  max-size: [10G]
)");
  const auto problems = problems_of(file);
  REQUIRE(problems.size() == 4);
  CHECK_THAT(problems[0], Catch::StartsWith(file.string() + ":2: layout.depth: got a map"));
  CHECK_THAT(problems[1], Catch::StartsWith(file.string() + ":3: layout.keep: got a single value") && Catch::Contains("list"));
  CHECK_THAT(problems[2], Catch::StartsWith(file.string() + ":4: fuse: got a single value") && Catch::Contains("map"));
  CHECK_THAT(problems[3], Catch::StartsWith(file.string() + ":6: quota.max-size: got a list"));
}

TEST_CASE("a missing value is reported on the line of its key", "[config][load]") {
  TempDir dir;
  const auto file = dir.write("novalue.yaml", "quota:\n  min-age:\n\n\n  max-size: 1G\n");
  const auto problems = problems_of(file);
  REQUIRE(problems.size() == 1);
  CHECK_THAT(problems[0], Catch::StartsWith(file.string() + ":2: quota.min-age: got no value"));
}

TEST_CASE("bad globs in the keep list are reported one by one", "[config][load]") {
  TempDir dir;
  const auto file = dir.write("keep.yaml", "layout:\n  keep:\n    - stats\n    - tmp/*\n    - \"\"\n");
  const auto problems = problems_of(file);
  REQUIRE(problems.size() == 2);
  CHECK_THAT(problems[0], Catch::StartsWith(file.string() + ":4: layout.keep[1]: 'tmp/*' contains '/'"));
  CHECK_THAT(problems[1], Catch::StartsWith(file.string() + ":5: layout.keep[2]: empty glob"));
}

TEST_CASE("group suffixes: read, written back, and bad ones reported one by one", "[config][load]") {
  TempDir dir;
  const auto good = dir.write("g.yaml", "layout:\n  depth: 3\n  group-suffixes: [\".siginfo\", \".sig\"]\n");
  const auto config = artifactfs::config::load(good);
  CHECK(config.layout.group_suffixes == std::vector<std::string>{".siginfo", ".sig"});
  CHECK(artifactfs::config::load(dir.write("back.yaml", artifactfs::config::to_yaml(config))).layout.group_suffixes ==
        config.layout.group_suffixes);
  const auto file = dir.write("bad.yaml", "layout:\n  group-suffixes:\n    - .sig\n    - a/b\n    - \"\"\n    - .sig\n");
  const auto problems = problems_of(file);
  REQUIRE(problems.size() == 3);
  CHECK_THAT(problems[0], Catch::StartsWith(file.string() + ":4: layout.group-suffixes[1]: 'a/b' contains '/'"));
  CHECK_THAT(problems[1], Catch::StartsWith(file.string() + ":5: layout.group-suffixes[2]: empty suffix"));
  CHECK_THAT(problems[2], Catch::StartsWith(file.string() + ":6: layout.group-suffixes[3]: '.sig' is listed twice"));
}

TEST_CASE("duplicate keys are an error rather than a silent choice", "[config][load]") {
  TempDir dir;
  const auto file = dir.write("dup.yaml", "fuse:\n  threads: 2\n  threads: 4\n");
  const auto problems = problems_of(file);
  REQUIRE(problems.size() == 1);
  CHECK_THAT(problems[0], Catch::StartsWith(file.string() + ":3: fuse.threads: duplicate key"));
}

TEST_CASE("a YAML syntax error names the file and line", "[config][load]") {
  TempDir dir;
  const auto file = dir.write("syntax.yaml", "layout:\n  keep: [stats,\nquota: {\n");
  const auto problems = problems_of(file);
  REQUIRE(problems.size() == 1);
  CHECK_THAT(problems[0], Catch::Matches(file.string() + ":[0-9]+: YAML syntax error.*"));
}

TEST_CASE("a missing file is an error naming the path", "[config][load]") {
  TempDir dir;
  const auto file = dir.path() / "does-not-exist.yaml";
  const auto problems = problems_of(file);
  REQUIRE(problems.size() == 1);
  CHECK_THAT(problems[0], Catch::StartsWith(file.string() + ": ") && Catch::Contains("No such file"));
  CHECK_THAT(problems_of(dir.path()).at(0), Catch::Contains("is a directory"));
}

TEST_CASE("overrides are applied after the file and win", "[config][load]") {
  TempDir dir;
  const auto file = dir.write("base.yaml", "quota:\n  max-size: 10G\n  min-age: 1h\nlayout:\n  keep: [a]\n");
  const Config config =
      load(file, {"quota.max-size=80%", "layout.keep=[stats, '*.lock']", "fuse.threads=8", "fuse.threads=2"});
  CHECK(config.quota.max_size.kind == SizeLimit::Kind::percent);
  CHECK(config.quota.max_size.percent == 80.0);
  CHECK(config.quota.min_age == 1h);  // untouched by the overrides
  CHECK(config.layout.keep == std::vector<std::string>{"stats", "*.lock"});
  CHECK(config.fuse.threads == 2);  // the last one wins

  // A whole section as a flow map only sets the keys it names.
  const Config section = load(file, {"quota={min-age: 5m}"});
  CHECK(section.quota.min_age == 5min);
  CHECK(section.quota.max_size.bytes == 10ULL << 30);
}

TEST_CASE("override problems are reported with the file's, marked --set", "[config][load]") {
  TempDir dir;
  const auto file = dir.write("base.yaml", "fuse:\n  threads: 100\n");
  const auto problems =
      problems_of(file, {"quota.max-size=lots", "fuse.thread=2", "nonsense", "layout.keep=*.lock", "log.level="});
  REQUIRE(problems.size() == 6);
  CHECK_THAT(problems[0], Catch::StartsWith(file.string() + ":2: fuse.threads: 100 is out of range"));
  CHECK_THAT(problems[1], Catch::StartsWith("--set:1: quota.max-size: ") && Catch::Contains("expected"));
  CHECK(problems[2] == "--set:2: fuse.thread: unknown key (did you mean 'fuse.threads'?)");
  CHECK_THAT(problems[3], Catch::StartsWith("--set:3: 'nonsense': ") && Catch::Contains("KEY=VALUE"));
  CHECK_THAT(problems[4], Catch::StartsWith("--set:4: layout.keep: ") && Catch::Contains("quote"));
  CHECK_THAT(problems[5], Catch::StartsWith("--set:5: log.level: got no value"));
}

TEST_CASE("quota values are checked against their own rules", "[config][load]") {
  CHECK_THAT(problems_of(std::nullopt, {"quota.max-size=0"}).at(0), Catch::Contains("evict every artifact"));
  CHECK_THAT(problems_of(std::nullopt, {"quota.min-free=unlimited"}).at(0), Catch::Contains("not allowed"));
  CHECK(load(std::nullopt, {"quota.min-free=0"}).quota.min_free.bytes == 0);
  CHECK_THAT(problems_of(std::nullopt, {"quota.low-watermark=0.4"}).at(0), Catch::Contains("0.5"));
  CHECK_THAT(problems_of(std::nullopt, {"index.flush-interval=5ms"}).at(0), Catch::Contains("from 10ms to 1h"));
  CHECK_THAT(problems_of(std::nullopt, {"index.flush-interval=2h"}).at(0), Catch::Contains("out of range"));
  CHECK_THAT(problems_of(std::nullopt, {"log.level=verbose"}).at(0), Catch::Contains("trace, debug, info, warn, error"));
  CHECK(load(std::nullopt, {"fuse.allow-other=false"}).fuse.allow_other == false);
  CHECK_THAT(problems_of(std::nullopt, {"fuse.io-uring=yes"}).at(0), Catch::Contains("auto, on or off"));
  CHECK(load(std::nullopt, {}).fuse.io_uring == IoUring::automatic);
  CHECK(load(std::nullopt, {"fuse.io-uring=off"}).fuse.io_uring == IoUring::off);
}

TEST_CASE("to_yaml round-trips through load", "[config][load]") {
  TempDir dir;
  const Config original = load(std::nullopt, {"layout.depth=3", "layout.keep=[stats, '*.lock', CACHEDIR.TAG, '#odd: name']",
                                              "index.flush-interval=1500ms", "fuse.threads=4", "fuse.entry-timeout=0s",
                                              "fuse.allow-other=false", "fuse.io-uring=on", "quota.max-size=1.5G", "quota.min-free=12.5%",
                                              "quota.low-watermark=0.95", "quota.min-age=2d", "log.level=warn"});
  const std::string text = to_yaml(original);
  const Config reloaded = load(dir.write("effective.yaml", text));

  CHECK(reloaded.layout.depth == 3);
  CHECK(reloaded.layout.keep == original.layout.keep);
  CHECK(reloaded.index.flush_interval == 1500ms);
  CHECK(reloaded.fuse.threads == 4);
  CHECK(reloaded.fuse.entry_timeout == 0ms);
  CHECK_FALSE(reloaded.fuse.allow_other);
  CHECK(reloaded.fuse.io_uring == IoUring::on);
  CHECK(reloaded.quota.max_size.bytes == 3ULL << 29);
  CHECK(reloaded.quota.min_free.percent == 12.5);
  CHECK(reloaded.quota.low_watermark == 0.95);
  CHECK(reloaded.quota.min_age == 48h);
  CHECK(reloaded.log.level == "warn");
  CHECK(to_yaml(reloaded) == text);

  // Defaults round-trip too, and the text uses the documented spellings.
  const std::string defaults = to_yaml(Config{});
  CHECK_THAT(defaults, Catch::Contains("max-size: unlimited") && Catch::Contains("min-free: 5%") &&
                           Catch::Contains("low-watermark: 0.9") && Catch::Contains("flush-interval: 1s"));
  CHECK(to_yaml(load(dir.write("defaults.yaml", defaults))) == defaults);
}
