// artifactfs ls, du and log: what the cache holds, where its space goes, and
// what was evicted. Through the daemon when it runs (which knows what is
// open), else from the index opened read-only.
#include <charconv>
#include <iostream>
#include <limits>

#include "cli/commands.hpp"
#include "cli/exit_codes.hpp"
#include "cli/output.hpp"
#include "cli/target.hpp"
#include "config/config.hpp"
#include "control/json.hpp"
#include "control/queries.hpp"

namespace artifactfs::cli {

namespace {

std::size_t parse_count(const std::string& option, const std::string& text) {
  std::size_t n = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || end != text.data() + text.size()) {
    throw UsageError("--" + option + " needs a whole number, not '" + text + "'");
  }
  return n;
}

control::SortOrder parse_sort(const std::string& text) {
  if (text == "lru") return control::SortOrder::lru;
  if (text == "size") return control::SortOrder::size;
  if (text == "name") return control::SortOrder::name;
  if (text == "hits") return control::SortOrder::hits;
  throw UsageError("--sort takes lru, size, name or hits, not '" + text + "'");
}

// "2h", "7d", "30m" (ago), or "2026-11-21" / "2026-11-21 13:00" local time,
// or seconds since the epoch with '@'.
index::TimeNs parse_since(const std::string& text, index::TimeNs now) {
  if (!text.empty() && text[0] == '@') {
    return static_cast<index::TimeNs>(parse_count("since", text.substr(1))) * 1'000'000'000;
  }
  try {
    auto ago = config::parse_duration(text);
    return now - std::chrono::duration_cast<std::chrono::nanoseconds>(ago).count();
  } catch (const std::invalid_argument&) {
  }
  struct tm tm {};
  const char* end = strptime(text.c_str(), "%Y-%m-%d %H:%M:%S", &tm);
  if (!end || *end) {
    tm = {};
    end = strptime(text.c_str(), "%Y-%m-%d %H:%M", &tm);
  }
  if (!end || *end) {
    tm = {};
    end = strptime(text.c_str(), "%Y-%m-%d", &tm);
  }
  if (!end || *end) {
    throw UsageError("--since takes a duration ago (30m, 2h, 7d), a local time (2026-11-21 or \"2026-11-21 13:00\") "
                     "or @SECONDS since the epoch, not '" + text + "'");
  }
  tm.tm_isdst = -1;
  return static_cast<index::TimeNs>(mktime(&tm)) * 1'000'000'000;
}

// Runs `request` through the daemon, or `offline` against the read-only
// index; the rows either way.
template <typename Row>
std::vector<Row> rows_of(const Target& target, const nlohmann::json& request,
                         const std::function<std::vector<Row>(const index::Index&)>& offline, bool& live) {
  std::vector<Row> rows;
  live = ask_daemon(target, request, [&](const nlohmann::json& item) { rows.push_back(item.get<Row>()); })
             .has_value();
  if (!live) {
    OfflineIndex index = open_offline(target);
    rows = offline(*index.index);
  }
  return rows;
}

}  // namespace

int run_ls_command(const ParsedArgs& args) {
  // ls [MOUNT] [PREFIX]: one argument is the mount if it is one.
  std::string mount, prefix;
  if (args.arguments.size() == 2) {
    mount = args.arguments[0];
    prefix = args.arguments[1];
  } else if (args.arguments.size() == 1) {
    (is_artifactfs_mount(args.arguments[0]) ? mount : prefix) = args.arguments[0];
  }
  const Target target = resolve_target(args, mount);
  prefix = key_of(target, prefix);
  const auto order = parse_sort(args.value("sort").value_or("lru"));
  const std::size_t limit =
      args.has("limit") ? parse_count("limit", *args.value("limit")) : std::numeric_limits<std::size_t>::max();
  nlohmann::json request = {{"command", "ls"}, {"sort", args.value("sort").value_or("lru")}, {"prefix", prefix}};
  if (args.has("limit")) request["limit"] = limit;
  bool live = false;
  auto rows = rows_of<control::ArtifactRow>(
      target, request,
      [&](const index::Index& index) { return control::list_artifacts(index, nullptr, order, limit, prefix); }, live);
  if (args.has("json")) {
    print_json(std::cout, rows);
    return exit_code::ok;
  }
  const Style st = terminal_style(args.has("bytes"));
  const index::TimeNs now = control::now_ns();
  Table t({"KEY", "SIZE", "FILES", "LAST ACCESS", "HITS", "PINNED", "OPEN"}, {false, true, true, false, true, false, false});
  for (const auto& r : rows) {
    t.add({r.key, size_text(r.disk_bytes, st), count_text(r.files), ago_text(r.last_access, now),
           count_text(r.access_count), r.pinned ? st.green("pinned") : "-", r.open ? st.yellow("open") : (live ? "-" : "?")});
  }
  t.print(std::cout, st);
  if (!live) std::cerr << "artifactfs: no daemon runs: read from the index directly (OPEN unknown)\n";
  return exit_code::ok;
}

int run_du_command(const ParsedArgs& args) {
  const Target target = resolve_target(args, args.arguments.empty() ? "" : args.arguments[0]);
  const int depth = static_cast<int>(parse_count("depth", args.value("depth").value_or("1")));
  if (depth < 1) throw UsageError("--depth must be at least 1");
  bool live = false;
  auto rows = rows_of<control::NamespaceRow>(
      target, {{"command", "du"}, {"depth", depth}},
      [&](const index::Index& index) { return control::usage_by_namespace(index, depth, ""); }, live);
  if (args.has("json")) {
    print_json(std::cout, rows);
    return exit_code::ok;
  }
  const Style st = terminal_style(args.has("bytes"));
  const index::TimeNs now = control::now_ns();
  Table t({"NAMESPACE", "SIZE", "ARTIFACTS", "HITS", "LAST ACCESS"}, {false, true, true, true, false});
  std::uint64_t bytes = 0, artifacts = 0, hits = 0;
  for (const auto& r : rows) {
    t.add({r.name, size_text(r.disk_bytes, st), count_text(r.artifacts), count_text(r.hits), ago_text(r.last_access, now)});
    bytes += r.disk_bytes;
    artifacts += r.artifacts;
    hits += r.hits;
  }
  t.add({st.bold("total"), size_text(bytes, st), count_text(artifacts), count_text(hits), ""});
  t.print(std::cout, st);
  return exit_code::ok;
}

int run_log_command(const ParsedArgs& args) {
  const Target target = resolve_target(args, args.arguments.empty() ? "" : args.arguments[0]);
  const index::TimeNs now = control::now_ns();
  const index::TimeNs since = args.has("since") ? parse_since(*args.value("since"), now) : 0;
  const std::size_t limit =
      args.has("limit") ? parse_count("limit", *args.value("limit")) : std::numeric_limits<std::size_t>::max();
  nlohmann::json request = {{"command", "log"}, {"since", since}};
  if (args.has("limit")) request["limit"] = limit;
  bool live = false;
  auto entries = rows_of<index::EvictionEntry>(
      target, request, [&](const index::Index& index) { return index.eviction_log(since, limit); }, live);
  if (args.has("json")) {
    print_json(std::cout, entries);
    return exit_code::ok;
  }
  const Style st = terminal_style(args.has("bytes"));
  Table t({"WHEN", "KEY", "SIZE", "LAST ACCESS", "AGE", "REASON"}, {false, false, true, false, true, false});
  for (const auto& e : entries) {
    t.add({ago_text(e.when, now), e.name,
           size_text(static_cast<std::uint64_t>(std::max<std::int64_t>(0, e.usage.disk_bytes)), st),
           clock_text(e.last_access), duration_text(e.when - e.last_access), std::string(index::reason_name(e.reason))});
  }
  t.print(std::cout, st);
  return exit_code::ok;
}

}  // namespace artifactfs::cli
