// artifactfs pin, unpin, evict and cleanup: an operator steering the cache.
// They act only through the running daemon (control/channel.hpp), so an
// eviction is the same all-or-nothing step the quota takes and never takes an
// open artifact.
#include <iostream>

#include "cli/commands.hpp"
#include "cli/exit_codes.hpp"
#include "cli/output.hpp"
#include "cli/target.hpp"
#include "config/config.hpp"
#include "control/json.hpp"
#include "control/queries.hpp"

namespace artifactfs::cli {

namespace {

nlohmann::json ask_running(const Target& target, const nlohmann::json& request,
                           const std::function<void(const nlohmann::json&)>& on_item = {}) {
  auto answer = ask_daemon(target, request, on_item);
  if (!answer) {
    throw CommandError("no daemon serves " + target.store.string() + "; '" + request.value("command", "") +
                           "' acts through the running daemon (mount the cache first)",
                       exit_code::not_running);
  }
  return *answer;
}

// pin, unpin, evict: KEY... (keys, or paths under the mountpoint).
int run_keys_command(const ParsedArgs& args, const std::string& command) {
  // The cache: --mount, --store, the mount the first key's path lies in, or
  // the only mount there is.
  std::string mount = args.value("mount").value_or("");
  if (mount.empty() && !args.arguments.empty() && args.arguments[0].size() > 1 && args.arguments[0][0] == '/') {
    mount = mount_containing(args.arguments[0]);
  }
  const Target target = resolve_target(args, mount);
  nlohmann::json keys = nlohmann::json::array();
  for (const auto& a : args.arguments) keys.push_back(key_of(target, a));
  std::vector<control::ActionResult> results;
  ask_running(target, {{"command", command}, {"keys", keys}},
              [&](const nlohmann::json& item) { results.push_back(item.get<control::ActionResult>()); });
  bool all = true;
  for (const auto& r : results) all = all && r.ok;
  if (args.has("json")) {
    print_json(std::cout, results);
  } else {
    const Style st = terminal_style(args.has("bytes"));
    Table t({"KEY", "RESULT", "SIZE"}, {false, false, true});
    for (const auto& r : results) {
      t.add({r.key, r.ok ? st.green(r.outcome) : st.red(r.outcome), r.ok ? size_text(r.disk_bytes, st) : ""});
    }
    t.print(std::cout, st);
  }
  return all ? exit_code::ok : exit_code::failure;
}

}  // namespace

int run_pin_command(const ParsedArgs& args) { return run_keys_command(args, "pin"); }
int run_unpin_command(const ParsedArgs& args) { return run_keys_command(args, "unpin"); }
int run_evict_command(const ParsedArgs& args) { return run_keys_command(args, "evict"); }

int run_cleanup_command(const ParsedArgs& args) {
  const Target target = resolve_target(args, args.arguments.empty() ? "" : args.arguments[0]);
  std::uint64_t to = 0;
  try {
    to = config::parse_size(*args.value("to"));
  } catch (const std::invalid_argument& e) {
    throw UsageError(std::string("--to: ") + e.what());
  }
  const bool dry_run = args.has("dry-run");
  auto report =
      ask_running(target, {{"command", "cleanup"}, {"to", to}, {"dry_run", dry_run}}).get<control::CleanupReport>();
  if (args.has("json")) {
    print_json(std::cout, report);
    return exit_code::ok;
  }
  const Style st = terminal_style(args.has("bytes"));
  const index::TimeNs now = control::now_ns();
  Table t({"#", "KEY", "SIZE", "LAST ACCESS"}, {true, false, true, false});
  std::size_t n = 0;
  for (const auto& a : report.artifacts) {
    t.add({std::to_string(++n), a.key, size_text(a.disk_bytes, st), ago_text(a.last_access, now)});
  }
  if (!t.empty()) t.print(std::cout, st);
  std::cout << (dry_run ? "would evict " : "evicted ") << count_text(report.artifacts.size()) << " artifact"
            << (report.artifacts.size() == 1 ? "" : "s") << ": usage " << size_text(report.usage_before, st) << " -> "
            << size_text(report.usage_after, st) << (dry_run ? " (expected)" : "") << ", target "
            << size_text(report.target, st) << "\n";
  if (!report.target_met) {
    std::cout << st.yellow("the target cannot be met: what is left is pinned, open or within min-age") << "\n";
  }
  return exit_code::ok;
}

}  // namespace artifactfs::cli
