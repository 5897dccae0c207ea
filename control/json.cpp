#include "control/json.hpp"

namespace artifactfs::control {

namespace {

template <typename T>
nlohmann::json optional_json(const std::optional<T>& v) {
  return v ? nlohmann::json(*v) : nlohmann::json(nullptr);
}

template <typename T>
void read_optional(const nlohmann::json& j, const char* key, std::optional<T>& out) {
  if (auto it = j.find(key); it != j.end() && !it->is_null()) {
    out = it->get<T>();
  } else {
    out.reset();
  }
}

// Missing keys keep their defaults: a newer daemon may add some, an older
// one lack them.
template <typename T>
void read(const nlohmann::json& j, const char* key, T& out) {
  if (auto it = j.find(key); it != j.end() && !it->is_null()) out = it->get<T>();
}

}  // namespace

void to_json(nlohmann::json& j, const Unevictable& u) {
  j = {{"pinned_bytes", u.pinned}, {"open_bytes", u.open}, {"min_age_bytes", u.min_age}, {"total_bytes", u.total}};
}

void from_json(const nlohmann::json& j, Unevictable& u) {
  read(j, "pinned_bytes", u.pinned);
  read(j, "open_bytes", u.open);
  read(j, "min_age_bytes", u.min_age);
  read(j, "total_bytes", u.total);
}

void to_json(nlohmann::json& j, const StatusReport& s) {
  j = {
      {"store", s.store},
      {"mountpoint", s.mountpoint},
      {"daemon_running", s.daemon_running},
      {"now_ns", s.now},
      {"usage_bytes", s.usage_bytes},
      {"apparent_bytes", s.apparent_bytes},
      {"files", s.files},
      {"artifacts", s.artifacts},
      {"limit_known", s.limit_known},
      {"limit_bytes", optional_json(s.limit_bytes)},
      {"target_bytes", optional_json(s.target_bytes)},
      {"backing_free_bytes", optional_json(s.backing_free_bytes)},
      {"backing_capacity_bytes", optional_json(s.backing_capacity_bytes)},
      {"hits", s.hits},
      {"misses", s.misses},
      {"evictions", s.evictions},
      {"bytes_evicted", s.bytes_evicted},
      {"evictions_24h", s.evictions_24h},
      {"bytes_evicted_24h", s.bytes_evicted_24h},
      {"last_24h_complete", s.last_24h_complete},
      {"cleanup_runs", s.cleanup_runs},
      {"cleanup_seconds", s.cleanup_seconds},
      {"oldest_access_ns", optional_json(s.oldest_access)},
      {"unevictable", s.unevictable},
      {"cleanup_running", s.cleanup_running},
      {"quota_blocked", s.quota_blocked},
  };
}

void from_json(const nlohmann::json& j, StatusReport& s) {
  read(j, "store", s.store);
  read(j, "mountpoint", s.mountpoint);
  read(j, "daemon_running", s.daemon_running);
  read(j, "now_ns", s.now);
  read(j, "usage_bytes", s.usage_bytes);
  read(j, "apparent_bytes", s.apparent_bytes);
  read(j, "files", s.files);
  read(j, "artifacts", s.artifacts);
  read(j, "limit_known", s.limit_known);
  read_optional(j, "limit_bytes", s.limit_bytes);
  read_optional(j, "target_bytes", s.target_bytes);
  read_optional(j, "backing_free_bytes", s.backing_free_bytes);
  read_optional(j, "backing_capacity_bytes", s.backing_capacity_bytes);
  read(j, "hits", s.hits);
  read(j, "misses", s.misses);
  read(j, "evictions", s.evictions);
  read(j, "bytes_evicted", s.bytes_evicted);
  read(j, "evictions_24h", s.evictions_24h);
  read(j, "bytes_evicted_24h", s.bytes_evicted_24h);
  read(j, "last_24h_complete", s.last_24h_complete);
  read(j, "cleanup_runs", s.cleanup_runs);
  read(j, "cleanup_seconds", s.cleanup_seconds);
  read_optional(j, "oldest_access_ns", s.oldest_access);
  read(j, "unevictable", s.unevictable);
  read(j, "cleanup_running", s.cleanup_running);
  read(j, "quota_blocked", s.quota_blocked);
}

void to_json(nlohmann::json& j, const ArtifactRow& r) {
  j = {{"key", r.key},
       {"disk_bytes", r.disk_bytes},
       {"apparent_bytes", r.apparent_bytes},
       {"files", r.files},
       {"created_ns", r.created},
       {"last_access_ns", r.last_access},
       {"access_count", r.access_count},
       {"pinned", r.pinned},
       {"open", r.open}};
}

void from_json(const nlohmann::json& j, ArtifactRow& r) {
  read(j, "key", r.key);
  read(j, "disk_bytes", r.disk_bytes);
  read(j, "apparent_bytes", r.apparent_bytes);
  read(j, "files", r.files);
  read(j, "created_ns", r.created);
  read(j, "last_access_ns", r.last_access);
  read(j, "access_count", r.access_count);
  read(j, "pinned", r.pinned);
  read(j, "open", r.open);
}

void to_json(nlohmann::json& j, const NamespaceRow& r) {
  j = {{"namespace", r.name},
       {"disk_bytes", r.disk_bytes},
       {"artifacts", r.artifacts},
       {"hits", r.hits},
       {"last_access_ns", r.last_access}};
}

void from_json(const nlohmann::json& j, NamespaceRow& r) {
  read(j, "namespace", r.name);
  read(j, "disk_bytes", r.disk_bytes);
  read(j, "artifacts", r.artifacts);
  read(j, "hits", r.hits);
  read(j, "last_access_ns", r.last_access);
}

void to_json(nlohmann::json& j, const ActionResult& r) {
  j = {{"key", r.key},
       {"outcome", r.outcome},
       {"ok", r.ok},
       {"disk_bytes", r.disk_bytes},
       {"last_access_ns", r.last_access}};
}

void from_json(const nlohmann::json& j, ActionResult& r) {
  read(j, "key", r.key);
  read(j, "outcome", r.outcome);
  read(j, "ok", r.ok);
  read(j, "disk_bytes", r.disk_bytes);
  read(j, "last_access_ns", r.last_access);
}

void to_json(nlohmann::json& j, const CleanupReport& r) {
  j = {{"dry_run", r.dry_run},         {"usage_before_bytes", r.usage_before}, {"target_bytes", r.target},
       {"usage_after_bytes", r.usage_after}, {"target_met", r.target_met},       {"artifacts", r.artifacts}};
}

void from_json(const nlohmann::json& j, CleanupReport& r) {
  read(j, "dry_run", r.dry_run);
  read(j, "usage_before_bytes", r.usage_before);
  read(j, "target_bytes", r.target);
  read(j, "usage_after_bytes", r.usage_after);
  read(j, "target_met", r.target_met);
  read(j, "artifacts", r.artifacts);
}

}  // namespace artifactfs::control

namespace artifactfs::index {

void to_json(nlohmann::json& j, const EvictionEntry& e) {
  j = {{"when_ns", e.when},
       {"key", e.name},
       {"disk_bytes", e.usage.disk_bytes},
       {"apparent_bytes", e.usage.apparent_bytes},
       {"files", e.usage.files},
       {"created_ns", e.created},
       {"last_access_ns", e.last_access},
       {"access_count", e.access_count},
       {"age_ns", e.when - e.last_access},
       {"reason", std::string(reason_name(e.reason))}};
}

void from_json(const nlohmann::json& j, EvictionEntry& e) {
  e.when = j.value("when_ns", index::TimeNs{0});
  e.name = j.value("key", std::string());
  e.usage.disk_bytes = j.value("disk_bytes", std::int64_t{0});
  e.usage.apparent_bytes = j.value("apparent_bytes", std::int64_t{0});
  e.usage.files = j.value("files", std::int64_t{0});
  e.created = j.value("created_ns", index::TimeNs{0});
  e.last_access = j.value("last_access_ns", index::TimeNs{0});
  e.access_count = j.value("access_count", std::uint64_t{0});
  e.reason = reason_from_name(j.value("reason", std::string())).value_or(EvictionReason::quota);
}

}  // namespace artifactfs::index
