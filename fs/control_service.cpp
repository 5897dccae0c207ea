#include "fs/control_service.hpp"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <limits>

#include "control/json.hpp"
#include "fs/filesystem.hpp"

namespace artifactfs::fs {

namespace {

constexpr std::uint64_t kNoLimit = std::numeric_limits<std::uint64_t>::max();

std::uint64_t positive(std::int64_t v) { return static_cast<std::uint64_t>(std::max<std::int64_t>(0, v)); }

std::vector<std::string> keys_of(const nlohmann::json& request) {
  auto it = request.find("keys");
  if (it == request.end() || !it->is_array() || it->empty()) throw std::invalid_argument("no keys given");
  return it->get<std::vector<std::string>>();
}

control::SortOrder sort_order(const std::string& name) {
  if (name == "lru") return control::SortOrder::lru;
  if (name == "size") return control::SortOrder::size;
  if (name == "name") return control::SortOrder::name;
  if (name == "hits") return control::SortOrder::hits;
  throw std::invalid_argument("unknown sort order '" + name + "' (expected lru, size, name or hits)");
}

}  // namespace

ControlService::ControlService(Filesystem& filesystem, index::Index& index, quota::QuotaManager& quota,
                               std::optional<unsigned> control_gid, std::filesystem::path store,
                               std::filesystem::path mountpoint)
    : filesystem_(filesystem),
      index_(index),
      quota_(quota),
      control_gid_(control_gid),
      store_(std::move(store)),
      mountpoint_(std::move(mountpoint)) {}

bool ControlService::is_open(index::ArtifactId id) { return filesystem_.in_use(id); }

control::StatusReport ControlService::status() {
  const quota::QuotaManager::State q = quota_.state();
  control::QuotaFacts facts;
  facts.limit_known = true;
  if (q.limit != kNoLimit) facts.limit_bytes = q.limit;
  if (q.target != kNoLimit) facts.target_bytes = q.target;
  if (q.space.capacity_bytes > 0) {
    facts.backing_free_bytes = q.space.free_bytes;
    facts.backing_capacity_bytes = q.space.capacity_bytes;
  }
  facts.cleanup_running = q.cleanup_running;
  facts.blocked = q.blocked;
  facts.min_age = q.min_age;
  control::StatusReport report = control::make_status(index_, facts, this, control::now_ns());
  report.store = store_.string();
  report.mountpoint = mountpoint_.string();
  report.daemon_running = true;
  return report;
}

void ControlService::handle(const nlohmann::json& request, const control::Peer& peer, control::Responder& out) {
  const std::string command = request.value("command", std::string());
  if (command == "status") {
    out.result(status());
    return;
  }
  if (!control::is_operator(peer.uid, peer.gid, peer.groups, geteuid(), control_gid_)) {
    out.error("'" + command + "' is for the cache's operators: root, the store's owner (uid " +
                  std::to_string(geteuid()) + ")" +
                  (control_gid_ ? " and members of group " + std::to_string(*control_gid_)
                                : std::string(" (no control.group is configured)")) +
                  "; uid " + std::to_string(peer.uid) + " is none of them",
              "permission");
    return;
  }
  try {
    if (command == "ls") {
      // Access times of the last flush interval must count in the order.
      index_.flush();
      auto rows = control::list_artifacts(index_, this, sort_order(request.value("sort", std::string("lru"))),
                                          request.value("limit", std::numeric_limits<std::size_t>::max()),
                                          request.value("prefix", std::string()));
      for (const auto& row : rows) out.item(row);
      out.result(rows.size());
    } else if (command == "du") {
      const int depth = request.value("depth", 1);
      if (depth < 1) throw std::invalid_argument("depth must be at least 1");
      auto rows = control::usage_by_namespace(index_, depth, request.value("prefix", std::string()));
      for (const auto& row : rows) out.item(row);
      out.result(rows.size());
    } else if (command == "log") {
      auto entries = index_.eviction_log(request.value("since", index::TimeNs{0}),
                                         request.value("limit", std::numeric_limits<std::size_t>::max()));
      for (const auto& e : entries) out.item(e);
      out.result(entries.size());
    } else if (command == "pin" || command == "unpin") {
      pin(request, command == "pin", out);
    } else if (command == "evict") {
      evict(request, out);
    } else if (command == "cleanup") {
      cleanup(request, out);
    } else {
      out.error("unknown command '" + command + "' (this daemon knows status, ls, du, log, pin, unpin, evict, cleanup)",
                "usage");
    }
  } catch (const std::invalid_argument& e) {
    out.error(e.what(), "usage");
  } catch (const nlohmann::json::exception& e) {
    out.error(std::string("malformed request: ") + e.what(), "usage");
  }
  if (command != "ls" && command != "du" && command != "log") {
    spdlog::info("control: uid {} (pid {}) ran {}", peer.uid, peer.pid,
                 request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  }
}

void ControlService::pin(const nlohmann::json& request, bool pinned, control::Responder& out) {
  bool all = true;
  for (const std::string& key : keys_of(request)) {
    control::ActionResult r{key, "not found", false, 0, 0};
    if (auto id = index_.find(key)) {
      index_.set_pinned(*id, pinned);
      r.outcome = pinned ? "pinned" : "unpinned";
      r.ok = true;
      if (auto rec = index_.get(*id)) r.disk_bytes = positive(rec->usage.disk_bytes);
    }
    all = all && r.ok;
    out.item(r);
  }
  out.result({{"all_done", all}});
}

void ControlService::evict(const nlohmann::json& request, control::Responder& out) {
  bool all = true;
  for (const std::string& key : keys_of(request)) {
    control::ActionResult r{key, "not found", false, 0, 0};
    auto id = index_.find(key);
    auto record = id ? index_.get(*id) : std::nullopt;
    if (record && record->pinned) {
      r.outcome = "is pinned";  // unpin first: a pin is a promise to everyone
    } else if (record) {
      index::Usage freed;
      switch (quota_.evict_now(*id, freed)) {
        case quota::EvictOutcome::evicted:
          r.outcome = "evicted";
          r.ok = true;
          r.disk_bytes = positive(freed.disk_bytes);
          break;
        case quota::EvictOutcome::in_use: r.outcome = "in use"; break;
        // Only routine cleanups respect the write grace; kept for completeness.
        case quota::EvictOutcome::recently_written: r.outcome = "written moments ago"; break;
        case quota::EvictOutcome::missing: break;
      }
      r.last_access = record->last_access;
    }
    all = all && r.ok;
    out.item(r);
  }
  out.result({{"all_done", all}});
}

void ControlService::cleanup(const nlohmann::json& request, control::Responder& out) {
  if (!request.contains("to")) throw std::invalid_argument("cleanup needs a target size ('to')");
  control::CleanupReport report;
  report.target = request.at("to").get<std::uint64_t>();
  report.dry_run = request.value("dry_run", false);
  report.usage_before = positive(index_.totals().usage.disk_bytes);
  if (report.dry_run) {
    std::uint64_t after = report.usage_before;
    for (const auto& rec : quota_.plan_cleanup_to(report.target)) {
      const std::uint64_t bytes = positive(rec.usage.disk_bytes);
      after -= std::min(after, bytes);
      report.artifacts.push_back({rec.name, "would evict", true, bytes, rec.last_access});
    }
    report.usage_after = after;
  } else {
    auto result = quota_.cleanup_to(report.target);
    report.usage_after = positive(index_.totals().usage.disk_bytes);
    // Every eviction path holds the quota manager's cleanup lock, so the
    // newest entries of the log are this cleanup's.
    const auto entries = index_.eviction_log(0, result.evicted);
    for (const auto& e : entries) {
      if (e.reason != index::EvictionReason::manual_cleanup) continue;
      report.artifacts.push_back({e.name, "evicted", true, positive(e.usage.disk_bytes), e.last_access});
    }
  }
  report.target_met = report.usage_after <= report.target;
  out.result(report);
}

}  // namespace artifactfs::fs
