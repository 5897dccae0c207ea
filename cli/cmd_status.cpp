// artifactfs status: how full the cache is and what the quota is doing, as
// text, JSON, or Prometheus metrics for the node exporter's textfile
// collector.
#include <sys/statvfs.h>

#include <cmath>
#include <iostream>
#include <sstream>

#include "cli/commands.hpp"
#include "cli/exit_codes.hpp"
#include "cli/output.hpp"
#include "cli/target.hpp"
#include "config/config.hpp"
#include "control/json.hpp"
#include "control/queries.hpp"
#include "quota/limits.hpp"

namespace artifactfs::cli {

namespace {

// Without a daemon the quota's settings are only known from a
// configuration the caller names (-c, --set).
control::QuotaFacts offline_quota(const ParsedArgs& args, const Target& target, std::uint64_t usage) {
  control::QuotaFacts facts;
  struct statvfs sv {};
  quota::SpaceInfo space;
  if (statvfs((target.store / "data").c_str(), &sv) == 0) {
    space = {static_cast<std::uint64_t>(sv.f_blocks) * sv.f_frsize, static_cast<std::uint64_t>(sv.f_bavail) * sv.f_frsize};
    facts.backing_free_bytes = space.free_bytes;
    facts.backing_capacity_bytes = space.capacity_bytes;
  }
  if (!args.has("config") && !args.has("set")) return facts;
  std::optional<std::filesystem::path> file;
  if (auto c = args.value("config")) file = *c;
  config::Config cfg;
  try {
    cfg = config::load(file, args.values("set"));
  } catch (const config::ConfigError& e) {
    std::string text;
    for (const auto& p : e.problems()) text += (text.empty() ? "" : "\n") + p;
    throw CommandError(text, exit_code::usage);
  }
  const quota::Limits limits = quota::compute_limits(cfg.quota, usage, space);
  facts.limit_known = true;
  if (limits.limit != quota::kNoLimit) facts.limit_bytes = limits.limit;
  if (limits.target != quota::kNoLimit) facts.target_bytes = limits.target;
  facts.min_age = cfg.quota.min_age;
  return facts;
}

std::string escape_label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

// The Prometheus text format (version 0.0.4), one sample per metric,
// labelled with the store and mountpoint.
void print_prometheus(std::ostream& out, const control::StatusReport& s) {
  const std::string labels =
      "{store=\"" + escape_label(s.store) + "\",mountpoint=\"" + escape_label(s.mountpoint) + "\"}";
  auto metric = [&](const char* name, const char* type, const char* help, double value,
                    const std::string& extra_labels = "") {
    out << "# HELP artifactfs_" << name << ' ' << help << '\n';
    out << "# TYPE artifactfs_" << name << ' ' << type << '\n';
    std::ostringstream v;
    v.precision(17);
    v << value;
    out << "artifactfs_" << name << (extra_labels.empty() ? labels : extra_labels) << ' ' << v.str() << '\n';
  };
  metric("up", "gauge", "Whether a daemon serves the store (0: read from the index directly).",
         s.daemon_running ? 1 : 0);
  metric("usage_bytes", "gauge", "Bytes on disk used by the cache (what the quota counts).",
         static_cast<double>(s.usage_bytes));
  metric("apparent_bytes", "gauge", "Apparent size of the cache's files.", static_cast<double>(s.apparent_bytes));
  if (s.limit_bytes) {
    metric("limit_bytes", "gauge", "Effective limit: min(max-size, usage + free - min-free).",
           static_cast<double>(*s.limit_bytes));
  }
  if (s.target_bytes) {
    metric("target_bytes", "gauge", "A cleanup evicts down to this usage.", static_cast<double>(*s.target_bytes));
  }
  if (s.backing_free_bytes) {
    metric("backing_free_bytes", "gauge", "Free bytes on the backing filesystem.",
           static_cast<double>(*s.backing_free_bytes));
  }
  metric("artifacts", "gauge", "Artifacts in the cache.", static_cast<double>(s.artifacts));
  metric("files", "gauge", "Files in the cache.", static_cast<double>(s.files));
  metric("hits_total", "counter", "Opens inside artifacts.", static_cast<double>(s.hits));
  metric("misses_total", "counter", "Lookups of absent artifact names.", static_cast<double>(s.misses));
  metric("evictions_total", "counter", "Artifacts evicted.", static_cast<double>(s.evictions));
  metric("evicted_bytes_total", "counter", "Bytes on disk freed by evictions.", static_cast<double>(s.bytes_evicted));
  metric("evictions_last_24h", "gauge", "Artifacts evicted in the last 24 hours (from the eviction log).",
         static_cast<double>(s.evictions_24h));
  metric("evicted_bytes_last_24h", "gauge", "Bytes freed by evictions in the last 24 hours.",
         static_cast<double>(s.bytes_evicted_24h));
  metric("cleanup_runs_total", "counter", "Cleanup runs of the quota.", static_cast<double>(s.cleanup_runs));
  metric("cleanup_seconds_total", "counter", "Time spent in cleanup runs.", s.cleanup_seconds);
  if (s.oldest_access) {
    metric("oldest_access_timestamp_seconds", "gauge", "Last access of the least recently used artifact.",
           static_cast<double>(*s.oldest_access) / 1e9);
  }
  const std::string base = labels.substr(0, labels.size() - 1);
  out << "# HELP artifactfs_unevictable_bytes Bytes no cleanup could take now, by reason.\n";
  out << "# TYPE artifactfs_unevictable_bytes gauge\n";
  for (const auto& [reason, bytes] : {std::pair{"pinned", s.unevictable.pinned}, std::pair{"open", s.unevictable.open},
                                      std::pair{"min_age", s.unevictable.min_age}, std::pair{"any", s.unevictable.total}}) {
    out << "artifactfs_unevictable_bytes" << base << ",reason=\"" << reason << "\"} " << bytes << '\n';
  }
  metric("cleanup_running", "gauge", "Whether a cleanup is running.", s.cleanup_running ? 1 : 0);
  metric("quota_blocked", "gauge", "Whether the quota cannot be met (all that is left is protected).",
         s.quota_blocked ? 1 : 0);
}

void print_text(std::ostream& out, const control::StatusReport& s, const Style& st) {
  Table t({"", ""});
  auto size = [&](std::uint64_t b) { return size_text(b, st); };
  t.add({"cache", (s.mountpoint.empty() ? st.dim("not mounted") : s.mountpoint) + "  (store " + s.store + ")"});
  t.add({"daemon", s.daemon_running ? st.green("running") : st.yellow("not running (read from the index directly)")});
  std::string usage = size(s.usage_bytes);
  if (s.limit_bytes && *s.limit_bytes > 0) {
    const double pct = 100.0 * static_cast<double>(s.usage_bytes) / static_cast<double>(*s.limit_bytes);
    char p[16];
    std::snprintf(p, sizeof p, "%.0f%%", pct);
    std::string text = usage + " of " + size(*s.limit_bytes) + " limit (" + p + ")";
    usage = pct > 100 ? st.red(text) : pct > 90 ? st.yellow(text) : text;
    if (s.target_bytes) usage += ", cleanups evict down to " + size(*s.target_bytes);
  } else if (s.limit_known) {
    usage += " (no limit: max-size unlimited and the backing filesystem's size unknown)";
  } else {
    usage += " (limit unknown: no daemon runs; pass -c CONFIG to compute it)";
  }
  t.add({"usage", usage});
  if (s.backing_free_bytes) {
    t.add({"free", size(*s.backing_free_bytes) + " on the backing filesystem" +
                       (s.backing_capacity_bytes ? " of " + size(*s.backing_capacity_bytes) : "")});
  }
  t.add({"artifacts", count_text(s.artifacts) + " (" + count_text(s.files) + " files, " + size(s.apparent_bytes) +
                          " apparent)"});
  const std::uint64_t lookups = s.hits + s.misses;
  char rate[32] = "no lookups yet";
  if (lookups > 0) std::snprintf(rate, sizeof rate, "%.1f%%", 100.0 * static_cast<double>(s.hits) / static_cast<double>(lookups));
  t.add({"hit rate", std::string(rate) + " (" + count_text(s.hits) + " hits, " + count_text(s.misses) + " misses)"});
  t.add({"evictions", count_text(s.evictions) + " (" + size(s.bytes_evicted) + ") in total, " +
                          (s.last_24h_complete ? "" : "at least ") + count_text(s.evictions_24h) + " (" +
                          size(s.bytes_evicted_24h) + ") in the last 24 h"});
  t.add({"oldest", s.oldest_access ? "least recently used artifact last used " + ago_text(*s.oldest_access, s.now)
                                   : std::string("no artifacts")});
  t.add({"unevictable", size(s.unevictable.total) + " now (pinned " + size(s.unevictable.pinned) + ", open " +
                            size(s.unevictable.open) + ", within min-age " + size(s.unevictable.min_age) + ")"});
  std::string state = !s.daemon_running     ? st.dim("not running")
                      : s.quota_blocked     ? st.red("BLOCKED: over the limit and all that is left is pinned, open or too young")
                      : s.cleanup_running   ? st.yellow("cleanup running")
                                            : st.green("ok");
  t.add({"quota", state});
  // No header line: a table of labels and values.
  std::ostringstream body;
  t.print(body, Style{});
  std::string text = body.str();
  out << text.substr(text.find('\n') + 1);
}

}  // namespace

int run_status_command(const ParsedArgs& args) {
  const std::string mount = args.arguments.empty() ? "" : args.arguments[0];
  const Target target = resolve_target(args, mount);
  control::StatusReport report;
  if (auto answer = ask_daemon(target, {{"command", "status"}})) {
    report = answer->get<control::StatusReport>();
  } else {
    OfflineIndex offline = open_offline(target);
    const auto usage = static_cast<std::uint64_t>(std::max<std::int64_t>(0, offline.index->totals().usage.disk_bytes));
    report = control::make_status(*offline.index, offline_quota(args, target, usage), nullptr, control::now_ns());
    report.store = target.store.string();
  }
  if (args.has("prometheus")) {
    print_prometheus(std::cout, report);
  } else if (args.has("json")) {
    print_json(std::cout, report);
  } else {
    print_text(std::cout, report, terminal_style(args.has("bytes")));
  }
  return exit_code::ok;
}

}  // namespace artifactfs::cli
