// QuotaManager against a real index in a temporary directory, a scripted
// backing filesystem and an evictor that only edits the index: LRU order,
// protections, watermark, blocked episodes, ENOSPC handling, updates and the
// background thread.
#include <catch2/catch.hpp>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/unit/temp_dir.hpp"
#include "config/config.hpp"
#include "index/index.hpp"
#include "quota/limits.hpp"
#include "quota/quota_manager.hpp"

namespace ix = artifactfs::index;
namespace q = artifactfs::quota;
namespace cfg = artifactfs::config;
using ix::ArtifactId;
using namespace std::chrono_literals;

using artifactfs::testing::TempDir;

namespace {

ix::TimeNs now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

ix::TimeNs ago(std::chrono::nanoseconds d) { return now_ns() - d.count(); }

// Evicts by removing the record and its usage, as the file system does;
// bytes it frees reach the scripted free space only at wait_for_deletions(),
// like the file system's background deleter.
class FakeEvictor : public q::Evictor {
 public:
  explicit FakeEvictor(ix::Index& index) : index_(index) {}

  q::EvictOutcome evict(ArtifactId id, ix::Usage& freed, Need need, artifactfs::index::EvictionReason) override {
    std::lock_guard lock(mutex_);
    if (in_use_.count(id)) return q::EvictOutcome::in_use;
    if (auto it = grace_.find(id); it != grace_.end() && need == Need::cleanup && it->second > now_ns()) {
      return q::EvictOutcome::recently_written;
    }
    auto record = index_.remove_artifact(id);
    if (!record) return q::EvictOutcome::missing;
    index_.charge_total(-record->usage);
    pending_free_ += static_cast<std::uint64_t>(record->usage.disk_bytes);
    evicted_.push_back(id);
    freed = record->usage;
    return q::EvictOutcome::evicted;
  }
  q::SpaceInfo backing_space() override {
    std::lock_guard lock(mutex_);
    return space_;
  }
  void wait_for_deletions() override {
    std::lock_guard lock(mutex_);
    space_.free_bytes += pending_free_;
    pending_free_ = 0;
    ++waits_;
  }
  std::uint64_t pending_deletion_bytes() override {
    std::lock_guard lock(mutex_);
    return pending_free_;
  }
  std::uint64_t protections_ended() override {
    std::lock_guard lock(mutex_);
    return protections_ended_;
  }
  ix::TimeNs write_grace_ends(ArtifactId id) override {
    std::lock_guard lock(mutex_);
    auto it = grace_.find(id);
    return it == grace_.end() ? 0 : it->second;
  }

  // Written until `ends`: a routine cleanup leaves it alone until then.
  void set_written(ArtifactId id, ix::TimeNs ends) {
    std::lock_guard lock(mutex_);
    grace_[id] = ends;
  }

  void set_space(std::uint64_t capacity, std::uint64_t free) {
    std::lock_guard lock(mutex_);
    space_ = {capacity, free};
  }
  void set_in_use(ArtifactId id, bool in_use) {
    std::lock_guard lock(mutex_);
    if (in_use) {
      in_use_.insert(id);
    } else if (in_use_.erase(id) > 0) {
      ++protections_ended_;
    }
  }
  std::vector<ArtifactId> evicted() {
    std::lock_guard lock(mutex_);
    return evicted_;
  }
  int waits() {
    std::lock_guard lock(mutex_);
    return waits_;
  }

 private:
  ix::Index& index_;
  std::mutex mutex_;
  std::set<ArtifactId> in_use_;
  std::map<ArtifactId, ix::TimeNs> grace_;
  std::uint64_t protections_ended_ = 0;
  q::SpaceInfo space_{1ull << 40, 1ull << 39};  // a roomy disk unless a test says otherwise
  std::uint64_t pending_free_ = 0;
  std::vector<ArtifactId> evicted_;
  int waits_ = 0;
};

// Counts warnings, to check that a blocked episode warns once.
class WarningCounter : public spdlog::sinks::base_sink<std::mutex> {
 public:
  int warnings() {
    std::lock_guard lock(mutex_);
    return warnings_;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (msg.level == spdlog::level::warn) ++warnings_;
  }
  void flush_() override {}

 private:
  int warnings_ = 0;
};

class CaptureLog {
 public:
  CaptureLog() : previous_(spdlog::default_logger()), sink_(std::make_shared<WarningCounter>()) {
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("quota_test", sink_));
  }
  ~CaptureLog() { spdlog::set_default_logger(previous_); }
  int warnings() { return sink_->warnings(); }

 private:
  std::shared_ptr<spdlog::logger> previous_;
  std::shared_ptr<WarningCounter> sink_;
};

struct Store {
  TempDir tmp;
  std::unique_ptr<ix::Index> index = ix::Index::open(tmp.index_dir());
  FakeEvictor evictor{*index};

  // An artifact last accessed at `last_access` (creation time when never opened).
  ArtifactId add(const std::string& name, std::int64_t disk_bytes, ix::TimeNs created,
                 std::optional<ix::TimeNs> last_access = {}) {
    ix::Usage usage{disk_bytes, disk_bytes, 1};
    ArtifactId id = index->add_artifact(name, created, usage);
    index->charge_total(usage);
    if (last_access) index->record_access(id, *last_access);
    return id;
  }
  std::uint64_t usage() const { return static_cast<std::uint64_t>(index->totals().usage.disk_bytes); }
  bool exists(ArtifactId id) const { return index->get(id).has_value(); }
};

cfg::QuotaSettings settings(std::uint64_t max_bytes, std::chrono::milliseconds min_age = 10min) {
  cfg::QuotaSettings s;
  s.max_size = {cfg::SizeLimit::Kind::bytes, max_bytes, 0};
  s.min_free = {cfg::SizeLimit::Kind::bytes, 0, 0};
  s.low_watermark = 0.9;
  s.min_age = min_age;
  s.check_interval = 1h;  // tests that want the thread wake it explicitly
  return s;
}

std::string status_of(const q::QuotaManager& quota, const std::string& key) {
  for (const auto& [name, value] : quota.status()) {
    if (name == key) return value;
  }
  FAIL("no status key " << key);
  return {};
}

template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds timeout = 20s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

}  // namespace

TEST_CASE("quota: eviction follows last access, not creation", "[quota]") {
  Store store;
  // The base runtime was built first but every build since has read it.
  ArtifactId base = store.add("base-runtime", 1000, ago(48h), ago(1h));
  std::vector<ArtifactId> one_offs;
  for (int i = 0; i < 4; ++i) {
    one_offs.push_back(store.add("one-off-" + std::to_string(i), 1000, ago(24h) + i * 1'000'000'000LL));
  }
  // 5000 bytes over a 4000 limit: the target 3600 needs two evictions.
  q::QuotaManager quota(*store.index, store.evictor, settings(4000, 0ms));
  auto result = quota.cleanup();

  CHECK(result.target_met);
  CHECK(result.evicted == 2);
  CHECK(result.bytes_freed == 2000);
  CHECK(store.evictor.evicted() == std::vector<ArtifactId>{one_offs[0], one_offs[1]});
  CHECK(store.exists(base));
  CHECK(store.usage() == 3000);
}

TEST_CASE("quota: an open recorded but not yet flushed protects by recency", "[quota]") {
  Store store;
  ArtifactId old_but_read = store.add("a", 1000, ago(48h));
  ArtifactId newer = store.add("b", 1000, ago(24h));
  store.index->flush();
  store.index->record_access(old_but_read, ago(2h));  // pending, not in LMDB yet

  q::QuotaManager quota(*store.index, store.evictor, settings(1500, 0ms));
  quota.cleanup();
  CHECK(store.exists(old_but_read));
  CHECK_FALSE(store.exists(newer));
}

TEST_CASE("quota: pinned, in-use and young artifacts are skipped and counted", "[quota]") {
  Store store;
  ArtifactId pinned = store.add("pinned", 1000, ago(72h));
  store.index->set_pinned(pinned, true);
  ArtifactId open = store.add("open", 1000, ago(71h));
  store.evictor.set_in_use(open, true);
  ArtifactId plain = store.add("plain", 1000, ago(70h));
  ArtifactId young1 = store.add("young-1", 1000, ago(2min));
  ArtifactId young2 = store.add("young-2", 1000, ago(1min));

  q::QuotaManager quota(*store.index, store.evictor, settings(100, 10min));
  auto before = store.index->stats();
  auto result = quota.cleanup();

  CHECK(store.evictor.evicted() == std::vector<ArtifactId>{plain});
  CHECK(store.exists(pinned));
  CHECK(store.exists(open));
  CHECK(store.exists(young1));
  CHECK(store.exists(young2));
  CHECK_FALSE(result.target_met);
  // Pinned and in use are passed over one by one; the walk ends at the first
  // young artifact, since everything after it in LRU order is younger.
  CHECK(result.skipped_protected == 3);
  auto after = store.index->stats();
  CHECK(after.protected_skips - before.protected_skips == 3);
  CHECK(after.cleanup_runs - before.cleanup_runs == 1);
  CHECK(after.cleanup_ns > before.cleanup_ns);
  // Evictions are the evictor's to count, not the quota manager's.
  CHECK(after.evictions == before.evictions);

  store.evictor.set_in_use(open, false);
  result = quota.cleanup();
  CHECK(store.evictor.evicted() == std::vector<ArtifactId>{plain, open});
  CHECK(store.index->stats().cleanup_runs - before.cleanup_runs == 2);
}

TEST_CASE("quota: cleanup stops at the low watermark", "[quota]") {
  Store store;
  for (int i = 0; i < 10; ++i) store.add("a" + std::to_string(i), 100, ago(24h) + i * 1'000'000'000LL);
  // 1000 bytes, limit 950, target floor(0.9 * 950) = 855: two evictions.
  q::QuotaManager quota(*store.index, store.evictor, settings(950));
  auto result = quota.cleanup();
  CHECK(result.target_met);
  CHECK(result.evicted == 2);
  CHECK(store.usage() == 800);
  CHECK(store.usage() <= 855);
  CHECK(store.usage() + 100 > 855);  // one fewer eviction would not have met the target
  CHECK(status_of(quota, "quota.last_cleanup_evicted") == "2");

  // Under the limit but above the target is left alone by the thread; an
  // explicit cleanup with nothing to do evicts nothing.
  CHECK(quota.cleanup().evicted == 0);
  CHECK(store.usage() == 800);
}

TEST_CASE("quota: paging through more than one LRU page", "[quota]") {
  Store store;
  // 600 pinned oldest artifacts fill the first pages; the victims are beyond.
  for (int i = 0; i < 600; ++i) {
    ArtifactId id = store.add("pinned-" + std::to_string(i), 10, ago(100h) + i * 1'000'000LL);
    store.index->set_pinned(id, true);
  }
  std::vector<ArtifactId> victims;
  for (int i = 0; i < 5; ++i) victims.push_back(store.add("v-" + std::to_string(i), 100, ago(50h) + i * 1'000'000LL));

  // 6500 bytes, limit 6480, target floor(0.96 * 6480) = 6220: three evictions.
  auto s = settings(6480, 0ms);
  s.low_watermark = 0.96;
  q::QuotaManager quota(*store.index, store.evictor, s);
  auto result = quota.cleanup();
  CHECK(result.target_met);
  CHECK(store.evictor.evicted() == std::vector<ArtifactId>{victims[0], victims[1], victims[2]});
  CHECK(result.skipped_protected == 600);
  CHECK(store.usage() == 6200);
}

TEST_CASE("quota: a blocked episode is flagged and warned about once", "[quota]") {
  CaptureLog log;
  Store store;
  ArtifactId a = store.add("a", 1000, ago(24h));
  ArtifactId b = store.add("b", 1000, ago(23h));
  store.index->set_pinned(a, true);
  store.index->set_pinned(b, true);

  q::QuotaManager quota(*store.index, store.evictor, settings(1500, 0ms));
  CHECK(status_of(quota, "quota.blocked") == "0");
  auto first = quota.cleanup();
  CHECK_FALSE(first.target_met);
  CHECK(first.evicted == 0);
  CHECK(status_of(quota, "quota.blocked") == "1");
  CHECK(log.warnings() == 1);

  quota.cleanup();
  quota.cleanup();
  CHECK(log.warnings() == 1);  // the same episode
  CHECK(status_of(quota, "quota.blocked") == "1");

  // A cleanup that meets its target ends the episode ...
  store.index->set_pinned(a, false);
  CHECK(quota.cleanup().target_met);
  CHECK(status_of(quota, "quota.blocked") == "0");
  CHECK(store.exists(b));

  // ... and the next blocked cleanup starts a new one, with a new warning.
  store.add("c", 1000, ago(1h));
  store.index->set_pinned(*store.index->find("c"), true);
  CHECK_FALSE(quota.cleanup().target_met);
  CHECK(log.warnings() == 2);
}

TEST_CASE("quota: make_room evicts until the free space suffices and waits for deletions", "[quota]") {
  Store store;
  std::vector<ArtifactId> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(store.add("a" + std::to_string(i), 300, ago(24h) + i * 1'000'000'000LL));
  store.evictor.set_space(10000, 0);  // the disk is full
  auto s = settings(1'000'000);       // the quota itself is nowhere near
  s.min_free = {cfg::SizeLimit::Kind::bytes, 100, 0};
  q::QuotaManager quota(*store.index, store.evictor, s);

  // 200 bytes + 100 reserve = 300 free wanted: one artifact.
  CHECK(quota.make_room(200));
  CHECK(store.evictor.evicted() == std::vector<ArtifactId>{ids[0]});
  CHECK(store.evictor.waits() >= 1);
  CHECK(store.evictor.backing_space().free_bytes == 300);

  // 700 + 100 wanted, 300 free: two more.
  CHECK(quota.make_room(700));
  CHECK(store.evictor.evicted() == std::vector<ArtifactId>{ids[0], ids[1], ids[2]});
  CHECK(store.evictor.backing_space().free_bytes >= 800);
  CHECK(store.index->stats().cleanup_runs == 2);
}

TEST_CASE("quota: make_room evicts what it can and reports when nothing is left", "[quota]") {
  Store store;
  ArtifactId old1 = store.add("old-1", 300, ago(24h));
  ArtifactId pinned = store.add("pinned", 300, ago(23h));
  store.index->set_pinned(pinned, true);
  ArtifactId old2 = store.add("old-2", 300, ago(22h));
  ArtifactId young = store.add("young", 300, ago(1min));
  store.evictor.set_space(10000, 0);
  q::QuotaManager quota(*store.index, store.evictor, settings(1'000'000, 10min));

  CHECK(quota.make_room(5000));  // more than all of it
  CHECK(store.evictor.evicted() == std::vector<ArtifactId>{old1, old2});
  CHECK(store.exists(pinned));
  CHECK(store.exists(young));
  CHECK_FALSE(quota.make_room(5000));  // nothing evictable is left
  CHECK(store.evictor.evicted().size() == 2);
}

TEST_CASE("quota: make_room evicts one artifact even when statvfs shows room", "[quota]") {
  // ENOSPC with free blocks left means inodes ran out or another writer took
  // the space meanwhile: freeing something is the only useful answer.
  Store store;
  ArtifactId a = store.add("a", 300, ago(24h));
  store.add("b", 300, ago(23h));
  store.evictor.set_space(10000, 5000);
  q::QuotaManager quota(*store.index, store.evictor, settings(1'000'000));
  CHECK(quota.make_room(0));
  CHECK(store.evictor.evicted() == std::vector<ArtifactId>{a});
}

TEST_CASE("quota: update changes the limit and the next cleanup applies it", "[quota]") {
  Store store;
  for (int i = 0; i < 10; ++i) store.add("a" + std::to_string(i), 100, ago(24h) + i * 1'000'000'000LL);
  q::QuotaManager quota(*store.index, store.evictor, settings(10'000));
  CHECK(status_of(quota, "quota.limit_bytes") == "10000");
  CHECK(quota.cleanup().evicted == 0);

  quota.update(settings(500));
  CHECK(status_of(quota, "quota.limit_bytes") == "500");
  CHECK(status_of(quota, "quota.max_size") == "500");
  auto result = quota.cleanup();
  CHECK(result.target_met);
  CHECK(store.usage() == 400);  // target 450
}

TEST_CASE("quota: min-free follows space taken by others on the backing filesystem", "[quota]") {
  Store store;
  for (int i = 0; i < 10; ++i) store.add("a" + std::to_string(i), 100, ago(24h) + i * 1'000'000'000LL);
  auto s = settings(0);
  s.max_size = {};  // unlimited: only min-free bounds the cache
  s.min_free = {cfg::SizeLimit::Kind::bytes, 500, 0};
  q::QuotaManager quota(*store.index, store.evictor, s);
  store.evictor.set_space(100'000, 50'000);
  CHECK(quota.cleanup().evicted == 0);

  // Someone else filled the disk: 1000 used + 300 free - 500 = limit 800.
  store.evictor.set_space(100'000, 300);
  CHECK(status_of(quota, "quota.limit_bytes") == "800");
  quota.cleanup();
  CHECK(store.usage() <= 720);
}

TEST_CASE("quota: usage_grew wakes the thread, which evicts", "[quota]") {
  Store store;
  store.add("first", 500, ago(48h));
  q::QuotaManager quota(*store.index, store.evictor, settings(1000));
  quota.start();
  // Let the start-up check pass (it finds nothing to do), so that the
  // cleanup below is the wake-up's doing. Correctness does not depend on it.
  std::this_thread::sleep_for(100ms);
  CHECK(store.index->stats().cleanup_runs == 0);

  CHECK(status_of(quota, "quota.cleanup_at_bytes") == "950");  // halfway between target 900 and limit 1000
  for (int i = 0; i < 4; ++i) {
    store.add("a" + std::to_string(i), 100, ago(24h) + i * 1'000'000'000LL);
    quota.usage_grew();
  }
  // At 900, under the cleanup mark: writes do not wake the thread.
  std::this_thread::sleep_for(50ms);
  CHECK(store.index->stats().cleanup_runs == 0);
  for (int i = 4; i < 10; ++i) {
    store.add("a" + std::to_string(i), 100, ago(24h) + i * 1'000'000'000LL);
    quota.usage_grew();
  }
  // The check interval is an hour: only a wake-up explains a cleanup. It may
  // run while the writes go on, so only "back within the limit" is certain.
  CHECK(eventually([&] { return store.usage() <= 1000 && store.index->stats().cleanup_runs >= 1; }));
  CHECK_FALSE(store.index->find("first").has_value());  // the oldest goes first
  quota.stop();
  quota.stop();  // idempotent
  CHECK(store.exists(*store.index->find("a9")));
}

TEST_CASE("quota: while blocked, writes do not trigger futile cleanups", "[quota]") {
  Store store;
  ArtifactId a = store.add("a", 1000, ago(24h));
  store.index->set_pinned(a, true);
  q::QuotaManager quota(*store.index, store.evictor, settings(500));
  quota.start();  // the start-up check finds the store over and blocked
  REQUIRE(eventually([&] { return status_of(quota, "quota.blocked") == "1"; }));
  auto runs = store.index->stats().cleanup_runs;
  for (int i = 0; i < 100; ++i) quota.usage_grew();
  std::this_thread::sleep_for(100ms);
  CHECK(store.index->stats().cleanup_runs == runs);
  quota.stop();
}

TEST_CASE("quota: update wakes the thread, which applies the new limit", "[quota]") {
  Store store;
  for (int i = 0; i < 10; ++i) store.add("a" + std::to_string(i), 100, ago(24h) + i * 1'000'000'000LL);
  q::QuotaManager quota(*store.index, store.evictor, settings(1'000'000));
  quota.start();
  quota.update(settings(500));
  CHECK(eventually([&] { return store.usage() <= 450; }));
  quota.stop();
  CHECK(store.usage() == 400);
}

TEST_CASE("quota: the periodic check notices free space taken by others", "[quota]") {
  Store store;
  for (int i = 0; i < 10; ++i) store.add("a" + std::to_string(i), 100, ago(24h) + i * 1'000'000'000LL);
  auto s = settings(1'000'000);
  s.min_free = {cfg::SizeLimit::Kind::bytes, 300, 0};
  s.check_interval = 20ms;
  q::QuotaManager quota(*store.index, store.evictor, s);
  quota.start();
  // No write and no update: the backing filesystem fills up from outside,
  // leaving usage 1000 + free 0 - reserve 300 = limit 700, target 630.
  store.evictor.set_space(100'000, 0);
  CHECK(eventually([&] { return store.usage() <= 630; }));
  CHECK(store.usage() == 600);
}

TEST_CASE("quota: the destructor stops a running thread", "[quota]") {
  Store store;
  {
    q::QuotaManager quota(*store.index, store.evictor, settings(1000));
    quota.start();
    quota.start();  // a second start is harmless
  }
  SUCCEED();
}

TEST_CASE("quota: status and describe report the settings and the numbers", "[quota]") {
  Store store;
  store.add("a", 4096, ago(1h));
  store.evictor.set_space(1'000'000, 600'000);
  cfg::QuotaSettings s;
  s.max_size = {cfg::SizeLimit::Kind::bytes, 10ull << 30, 0};
  s.min_free = {cfg::SizeLimit::Kind::percent, 0, 5};
  s.low_watermark = 0.9;
  s.min_age = 10min;
  q::QuotaManager quota(*store.index, store.evictor, s);

  std::map<std::string, std::string> status;
  for (const auto& [k, v] : quota.status()) status[k] = v;
  CHECK(status["quota.max_size"] == "10G");
  CHECK(status["quota.min_free"] == "5%");
  CHECK(status["quota.low_watermark"] == "0.9");
  CHECK(status["quota.min_age_seconds"] == "600");
  CHECK(status["quota.usage_bytes"] == "4096");
  CHECK(status["quota.backing_free_bytes"] == "600000");
  CHECK(status["quota.limit_bytes"] == std::to_string(4096 + 600'000 - 50'000));
  CHECK(status["quota.blocked"] == "0");
  CHECK(status["quota.last_cleanup_evicted"] == "0");

  std::string line = quota.describe();
  CHECK(line.find("max-size 10G (10737418240 bytes)") != std::string::npos);
  CHECK(line.find("min-free 5% (50000 bytes)") != std::string::npos);
  CHECK(line.find("min-age 10m") != std::string::npos);
}

// --- writers over the limit, the exact order, temporary protections -------

TEST_CASE("quota: a write that would go over the limit evicts least recently used first", "[quota][admit]") {
  Store store;
  std::vector<ArtifactId> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(store.add("a" + std::to_string(i), 1000, ago(24h) + i * 1'000'000'000LL));
  q::QuotaManager quota(*store.index, store.evictor, settings(4000, 0ms));
  CHECK(quota.admit_write(0) == 0);  // at the limit, not over it: nothing to do
  CHECK(store.evictor.evicted().empty());
  CHECK(quota.admit_write(100) == 0);
  CHECK(store.evictor.evicted() == std::vector<ArtifactId>{ids[0]});  // just enough, oldest first
  CHECK(store.evictor.waits() >= 1);  // evicted data deleted before the write goes on
  CHECK(status_of(quota, "quota.writes_waited") == "1");
  CHECK(status_of(quota, "quota.over_limit") == "0");
}

TEST_CASE("quota: the walk orders by the latest use, flushed or not", "[quota][admit]") {
  Store store;
  ArtifactId b = store.add("b", 1000, ago(4h));
  ArtifactId a = store.add("a", 1000, ago(3h));
  store.add("c", 1000, ago(1h));
  store.index->flush();
  // b sits first in the table, but was used two hours ago: not flushed yet.
  store.index->record_access(b, ago(2h));
  q::QuotaManager quota(*store.index, store.evictor, settings(3000, 0ms));
  CHECK(quota.admit_write(500) == 0);
  CHECK(store.evictor.evicted() == std::vector<ArtifactId>{a});
  CHECK(store.exists(b));
}

TEST_CASE("quota: an artifact used again during a walk goes back in its new place", "[quota][admit]") {
  Store store;
  std::vector<ArtifactId> ids;
  for (int i = 0; i < 300; ++i) ids.push_back(store.add("a" + std::to_string(i), 10, ago(24h) + i * 1'000'000'000LL));
  store.index->flush();
  // Unflushed uses move the first 100 behind all the others.
  for (int i = 0; i < 100; ++i) store.index->record_access(ids[i], ago(1h) + i);
  q::QuotaManager quota(*store.index, store.evictor, settings(3000, 0ms));
  CHECK(quota.admit_write(1000) == 0);  // 100 artifacts of 10 bytes must go
  auto evicted = store.evictor.evicted();
  REQUIRE(evicted.size() == 100);
  CHECK(evicted == std::vector<ArtifactId>(ids.begin() + 100, ids.begin() + 200));
}

TEST_CASE("quota: the write grace ends a cleanup's walk; the retry comes when it ends", "[quota][admit]") {
  Store store;
  ArtifactId old = store.add("old", 1000, ago(3h));
  ArtifactId written = store.add("written", 1000, ago(2h));
  ArtifactId newer = store.add("newer", 1000, ago(1h));
  const ix::TimeNs grace_ends = now_ns() + 1'500'000'000;
  store.evictor.set_written(written, grace_ends);
  q::QuotaManager quota(*store.index, store.evictor, settings(2000, 0ms));  // target 1800: two must go
  auto result = quota.cleanup();
  store.evictor.wait_for_deletions();  // as the quota thread does after a cleanup
  // "newer" was used after "written": taking it instead would break the order.
  CHECK(store.evictor.evicted() == std::vector<ArtifactId>{old});
  CHECK_FALSE(result.target_met);
  CHECK(result.retry_at == grace_ends);
  CHECK(store.exists(newer));
  // A writer that needs the room takes it in its LRU turn.
  CHECK(quota.admit_write(600) == 0);
  CHECK(store.evictor.evicted() == std::vector<ArtifactId>{old, written});
}

TEST_CASE("quota: min-age ends a walk; the retry comes when it ends", "[quota][admit]") {
  Store store;
  store.add("young", 1000, ago(1min));
  q::QuotaManager quota(*store.index, store.evictor, settings(500, 10min));
  auto result = quota.cleanup();
  CHECK(result.evicted == 0);
  const ix::TimeNs expected = ago(1min) + std::chrono::nanoseconds(10min).count();
  CHECK(std::llabs(result.retry_at - expected) < 5'000'000'000LL);
}

TEST_CASE("quota: nothing left to evict: over the limit once reported, or ENOSPC", "[quota][admit]") {
  CaptureLog log;
  Store store;
  ArtifactId a = store.add("a", 1000, ago(24h));
  store.index->set_pinned(a, true);
  q::QuotaManager quota(*store.index, store.evictor, settings(1000, 0ms));
  CHECK(quota.admit_write(100) == 0);  // soft limit: goes on, reported
  CHECK(status_of(quota, "quota.over_limit") == "1");
  CHECK(status_of(quota, "quota.overshoot_episodes") == "1");
  CHECK(status_of(quota, "quota.peak_overshoot_bytes") == "100");
  const auto skips = store.index->stats().protected_skips;
  for (int i = 0; i < 10; ++i) CHECK(quota.admit_write(100) == 0);
  CHECK(store.index->stats().protected_skips == skips);  // no walk until a protection ends
  CHECK(status_of(quota, "quota.writes_over_limit") == "11");
  CHECK(log.warnings() == 1);

  auto hard = settings(1000, 0ms);
  hard.hard_limit = true;
  quota.update(hard);
  CHECK(quota.admit_write(100) == ENOSPC);
  CHECK(quota.admit_write(0) == 0);  // at the limit: nothing more is added
  CHECK(status_of(quota, "quota.writes_refused") == "1");
  CHECK(status_of(quota, "quota.hard_limit") == "1");
  CHECK(store.exists(a));
}

TEST_CASE("quota: min-free is the floor even without a hard limit", "[quota][admit]") {
  Store store;
  ArtifactId a = store.add("a", 1000, ago(24h));
  store.index->set_pinned(a, true);
  auto s = settings(0, 0ms);
  s.max_size = {};  // unlimited
  s.min_free = {cfg::SizeLimit::Kind::bytes, 500, 0};
  store.evictor.set_space(100'000, 600);  // limit 1000 + 600 - 500 = 1100
  q::QuotaManager quota(*store.index, store.evictor, s);
  CHECK(quota.admit_write(100) == 0);
  CHECK(quota.admit_write(200) == ENOSPC);
}

TEST_CASE("quota: a protection that ends lets a writer over the limit evict again", "[quota][admit]") {
  Store store;
  ArtifactId a = store.add("a", 1000, ago(24h));
  store.evictor.set_in_use(a, true);
  q::QuotaManager quota(*store.index, store.evictor, settings(1000, 0ms));
  CHECK(quota.admit_write(100) == 0);
  CHECK(status_of(quota, "quota.over_limit") == "1");
  store.evictor.set_in_use(a, false);  // its last handle closed
  CHECK(quota.admit_write(100) == 0);
  CHECK(store.evictor.evicted() == std::vector<ArtifactId>{a});
  CHECK(status_of(quota, "quota.over_limit") == "0");
}

TEST_CASE("quota: evicted data not yet deleted counts as usage", "[quota][admit]") {
  Store store;
  ArtifactId a = store.add("a", 1000, ago(24h));
  store.add("b", 1000, ago(23h));
  q::QuotaManager quota(*store.index, store.evictor, settings(2000, 0ms));
  ix::Usage freed;
  REQUIRE(store.evictor.evict(a, freed, q::Evictor::Need::cleanup, artifactfs::index::EvictionReason::quota) == q::EvictOutcome::evicted);
  CHECK(status_of(quota, "quota.trash_bytes") == "1000");
  CHECK(quota.admit_write(500) == 0);  // 1000 data + 1000 not deleted: over, makes room
  CHECK(store.evictor.waits() >= 1);
}
