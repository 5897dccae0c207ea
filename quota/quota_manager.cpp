// CONCURRENCY MODEL
// Threads: the quota thread (run()), FUSE threads (usage_grew, make_room,
// status), the mount thread (start, stop, update, describe), the control
// channel's thread (cleanup_to, evict_now: under cleanup_mutex_ like every
// eviction; plan_cleanup_to, state: no lock but settings_mutex_ for a copy).
// - cleanup_mutex_ serialises cleanup() and make_room(): one eviction walk at
//   a time, so two walks never race for the same victims. It is held across
//   Evictor::evict, which takes the file system's namespace lock; the file
//   system therefore must not call make_room() with that lock held.
// - settings_mutex_ guards settings_ and is taken after cleanup_mutex_ when
//   both are needed. It is never held across a call into the index or the
//   evictor (statvfs, LMDB), so status() and update() never wait on a cleanup.
// - cached_limit_ and blocked_ are atomics so that usage_grew() takes no lock
//   unless it must wake the thread; wake_requested_ turns a burst of writes
//   over the limit into one notify.
// - wake_mutex_ (a leaf lock) guards stopping_ and pairs with wake_cv_.
//   stop_requested_ (atomic) mirrors it for a long cleanup, which checks it
//   between evictions so that an unmount does not wait for the whole run.
// - An eviction walk commits its index removals in batches (one write
//   transaction per batch, eviction_walk.hpp), on the thread that runs it,
//   under cleanup_mutex_; what a run evicted is committed before cleanup()
//   or make_room() returns.
#include "quota/quota_manager.hpp"

#include <fmt/format.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <limits>

#include "quota/cleanup_plan.hpp"
#include "quota/eviction_walk.hpp"
#include "quota/limits.hpp"

namespace artifactfs::quota {

namespace {

// make_room() evicts this many artifacts before it waits for the deletions
// and measures the free space again: few enough not to overshoot much, many
// enough that one slow deletion round is not paid per small artifact.
constexpr std::size_t kMakeRoomBatch = 8;

index::TimeNs now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

index::TimeNs protect_after(std::chrono::milliseconds min_age) {
  return now_ns() - std::chrono::duration_cast<std::chrono::nanoseconds>(min_age).count();
}

std::string bytes_text(std::uint64_t bytes) { return bytes == kNoLimit ? "unlimited" : std::to_string(bytes); }

// Counts a walk as running for status() while it lives.
class RunningCleanup {
 public:
  explicit RunningCleanup(std::atomic<int>& count) : count_(count) { ++count_; }
  ~RunningCleanup() { --count_; }
  RunningCleanup(const RunningCleanup&) = delete;
  RunningCleanup& operator=(const RunningCleanup&) = delete;

 private:
  std::atomic<int>& count_;
};

}  // namespace

struct QuotaManager::Impl {
  Impl(index::Index& index, Evictor& evictor, config::QuotaSettings settings)
      : index(index), evictor(evictor), settings_(std::move(settings)) {}

  // One consistent reading of the inputs of the limit.
  struct Snapshot {
    config::QuotaSettings settings;
    SpaceInfo space;
    std::uint64_t usage = 0;
    Limits limits;
  };

  index::Index& index;
  Evictor& evictor;

  std::mutex cleanup_mutex_;
  mutable std::mutex settings_mutex_;
  config::QuotaSettings settings_;  // guarded by settings_mutex_

  std::atomic<std::uint64_t> cached_limit_{kNoLimit};
  std::atomic<bool> blocked_{false};  // the last cleanup could not meet its target
  std::atomic<std::uint64_t> last_cleanup_evicted_{0};
  std::atomic<int> cleanups_running_{0};  // walks under way (status only)

  std::mutex wake_mutex_;
  std::condition_variable wake_cv_;
  bool stopping_ = false;  // guarded by wake_mutex_
  std::atomic<bool> wake_requested_{false};
  std::atomic<bool> stop_requested_{false};  // see CONCURRENCY MODEL
  std::thread thread_;  // started and joined by the owner's thread only

  std::uint64_t usage() const {
    return static_cast<std::uint64_t>(std::max<std::int64_t>(0, index.totals().usage.disk_bytes));
  }

  config::QuotaSettings settings() const {
    std::lock_guard lock(settings_mutex_);
    return settings_;
  }

  // Measures usage and the backing filesystem, computes the limit and caches
  // it for usage_grew().
  Snapshot refresh() {
    Snapshot s;
    s.space = evictor.backing_space();
    s.usage = usage();
    std::lock_guard lock(settings_mutex_);
    s.settings = settings_;
    s.limits = compute_limits(s.settings, s.usage, s.space);
    cached_limit_.store(s.limits.limit, std::memory_order_relaxed);
    return s;
  }

  void request_wake() {
    if (wake_requested_.exchange(true)) return;
    // Taking the mutex between setting the flag and notifying means the
    // thread is either before its predicate check (and sees the flag) or
    // already waiting (and gets the notify): no wake-up is lost.
    { std::lock_guard lock(wake_mutex_); }
    wake_cv_.notify_one();
  }

  void record_run(std::chrono::steady_clock::time_point started, std::uint64_t skipped) {
    auto elapsed = std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - started);
    index.count(index::Stat::cleanup_runs);
    index.count(index::Stat::cleanup_ns, static_cast<std::uint64_t>(std::max<std::int64_t>(0, elapsed.count())));
    if (skipped > 0) index.count(index::Stat::protected_skips, skipped);
  }

  // index.flush() before choosing victims, but never failing the eviction:
  // out of space, the flush may fail too (the index lives on the same
  // filesystem, and the changed set has rows to clear); the last committed
  // LRU order serves then, and the batch stays pending for the next flush.
  void flush_for_victims() {
    try {
      index.flush();
    } catch (const std::exception& e) {
      spdlog::warn("quota: index flush before evicting failed ({}); using the last committed access order", e.what());
    }
  }

  // `target`: the operator's (cleanup_to), else the low watermark's.
  CleanupResult cleanup(std::optional<std::uint64_t> target = std::nullopt);
  bool make_room(std::uint64_t bytes);
  void check();
  void run();
};

QuotaManager::CleanupResult QuotaManager::Impl::cleanup(std::optional<std::uint64_t> operator_target) {
  std::lock_guard cleanup_lock(cleanup_mutex_);
  RunningCleanup running(cleanups_running_);
  const auto started = std::chrono::steady_clock::now();
  // Opens recorded in the last flush interval must count, or the walk would
  // take a just-opened artifact for an old one.
  flush_for_victims();
  Snapshot s = refresh();
  if (operator_target) s.limits.target = *operator_target;  // the operator's, as the dry run plans it
  const auto reason = operator_target ? index::EvictionReason::manual_cleanup : index::EvictionReason::quota;

  // Pages as large as a batch: one read (and one Evictor::prepare) per batch.
  EvictionWalk walk(index, evictor, protect_after(s.settings.min_age), Evictor::Need::cleanup, reason,
                    EvictionWalk::kBatchSize);
  std::uint64_t current = s.usage;
  while (current > s.limits.target && !stop_requested_.load(std::memory_order_relaxed) && walk.evict_next()) {
    current = usage();
  }
  walk.commit();
  // An eviction run reads a page of the index per victim; give back what
  // it mapped and allocated (Index::release_memory).
  if (walk.evicted() >= EvictionWalk::kBatchSize) index.release_memory();

  CleanupResult result;
  result.evicted = walk.evicted();
  result.bytes_freed = walk.bytes_freed();
  result.skipped_protected = walk.skipped_protected();
  result.target_met = current <= s.limits.target;
  record_run(started, result.skipped_protected);
  last_cleanup_evicted_.store(result.evicted, std::memory_order_relaxed);

  if (result.evicted > 0) {
    spdlog::info("quota: evicted {} artifact(s) ({} bytes); usage {} bytes, limit {}, target {}", result.evicted,
                 result.bytes_freed, current, bytes_text(s.limits.limit), bytes_text(s.limits.target));
  }
  if (!result.target_met && stop_requested_.load()) {
    // Stopped half-way (unmount): not blocked; the next mount goes on.
  } else if (operator_target) {
    // The operator's target is theirs: missing it says nothing about the quota.
  } else if (!result.target_met) {
    if (!blocked_.exchange(true)) {
      spdlog::warn(
          "quota: cannot get usage down to {} bytes: {} bytes remain and every artifact left is pinned, in use or "
          "opened within min-age {}; still serving, will retry every check interval",
          s.limits.target, current, config::format_duration(s.settings.min_age));
    }
  } else if (blocked_.exchange(false)) {
    spdlog::info("quota: usage {} bytes is within the target again", current);
  }
  return result;
}

bool QuotaManager::Impl::make_room(std::uint64_t bytes) {
  std::lock_guard cleanup_lock(cleanup_mutex_);
  RunningCleanup running(cleanups_running_);
  const auto started = std::chrono::steady_clock::now();
  flush_for_victims();
  const config::QuotaSettings current_settings = settings();
  SpaceInfo space = evictor.backing_space();
  const std::uint64_t reserve = min_free_bytes(current_settings, space);
  const std::uint64_t needed = bytes > kNoLimit - reserve ? kNoLimit : bytes + reserve;
  // The caller saw ENOSPC even if statvfs says there is room (inodes ran
  // out, or another writer took the space since): evict at least one. When
  // the size of the backing filesystem is unknown, free space cannot be
  // measured either, so one eviction is all this call does.
  const bool measurable = space.capacity_bytes > 0;
  bool need_one = true;

  EvictionWalk walk(index, evictor, protect_after(current_settings.min_age), Evictor::Need::out_of_space,
                    index::EvictionReason::make_room);
  for (;;) {
    std::uint64_t expected_free = space.free_bytes;
    std::size_t batch = 0;
    while (batch < kMakeRoomBatch && (need_one || (measurable && expected_free < needed)) && walk.evict_next()) {
      need_one = false;
      ++batch;
      expected_free += walk.last_bytes_freed();
    }
    if (batch == 0) break;
    walk.commit();
    // Evicted artifacts are deleted in the background; the caller retries
    // its write as soon as we return, so the space must be free by then.
    evictor.wait_for_deletions();
    space = evictor.backing_space();
    if (!measurable || space.free_bytes >= needed) break;
  }

  record_run(started, walk.skipped_protected());
  refresh();
  if (walk.evicted() > 0) {
    spdlog::info("quota: out of space, evicted {} artifact(s) ({} bytes); {} bytes free, {} wanted", walk.evicted(),
                 walk.bytes_freed(), space.free_bytes, needed);
  } else {
    spdlog::debug("quota: out of space and nothing evictable ({} protected artifacts passed over)",
                  walk.skipped_protected());
  }
  return walk.evicted() > 0;
}

void QuotaManager::Impl::check() {
  const Snapshot s = refresh();
  // A blocked episode keeps retrying at each check: protections expire
  // (min-age passes, handles are closed) without any write to announce it.
  if (!over_limit(s.usage, s.limits) && !blocked_.load()) return;
  CleanupResult result = cleanup();
  if (result.evicted > 0) {
    // Until the deletions finish the freed space is neither in the usage nor
    // in the free space, which would make the next limit look lower.
    evictor.wait_for_deletions();
    refresh();
  }
}

void QuotaManager::Impl::run() {
  for (;;) {
    const auto interval = settings().check_interval;
    {
      std::unique_lock lock(wake_mutex_);
      wake_cv_.wait_for(lock, interval, [&] { return stopping_ || wake_requested_.load(); });
      if (stopping_) return;
    }
    // Cleared before the check so that growth during it asks for another.
    wake_requested_.store(false);
    try {
      check();
    } catch (const std::exception& e) {
      // Stopping would leave the cache unbounded; the next check retries.
      spdlog::error("quota check failed: {}", e.what());
    }
  }
}

QuotaManager::QuotaManager(index::Index& index, Evictor& evictor, config::QuotaSettings settings)
    : impl_(std::make_unique<Impl>(index, evictor, std::move(settings))) {}

QuotaManager::~QuotaManager() { stop(); }

void QuotaManager::start() {
  if (impl_->thread_.joinable()) return;
  {
    std::lock_guard lock(impl_->wake_mutex_);
    impl_->stopping_ = false;
  }
  impl_->stop_requested_.store(false);
  // Check once at start: the store may already be over a limit that was
  // lowered while it was unmounted.
  impl_->wake_requested_.store(true);
  impl_->refresh();
  impl_->thread_ = std::thread([impl = impl_.get()] { impl->run(); });
  pthread_setname_np(impl_->thread_.native_handle(), "afs-quota");
}

void QuotaManager::stop() {
  impl_->stop_requested_.store(true);
  {
    std::lock_guard lock(impl_->wake_mutex_);
    impl_->stopping_ = true;
  }
  impl_->wake_cv_.notify_one();
  if (impl_->thread_.joinable()) impl_->thread_.join();
}

void QuotaManager::update(const config::QuotaSettings& settings) {
  const SpaceInfo space = impl_->evictor.backing_space();
  const std::uint64_t usage = impl_->usage();
  {
    std::lock_guard lock(impl_->settings_mutex_);
    impl_->settings_ = settings;
    impl_->cached_limit_.store(compute_limits(settings, usage, space).limit, std::memory_order_relaxed);
  }
  impl_->request_wake();
}

void QuotaManager::usage_grew() {
  if (impl_->usage() <= impl_->cached_limit_.load(std::memory_order_relaxed)) return;
  // While blocked every write would wake a cleanup that walks all the
  // protected artifacts again and finds nothing; the periodic check retries.
  if (impl_->blocked_.load(std::memory_order_relaxed)) return;
  impl_->request_wake();
}

bool QuotaManager::make_room(std::uint64_t bytes) { return impl_->make_room(bytes); }

QuotaManager::CleanupResult QuotaManager::cleanup() { return impl_->cleanup(); }

QuotaManager::CleanupResult QuotaManager::cleanup_to(std::uint64_t target_bytes) {
  return impl_->cleanup(target_bytes);
}

std::vector<index::ArtifactRecord> QuotaManager::plan_cleanup_to(std::uint64_t target_bytes) {
  impl_->flush_for_victims();
  return plan_evictions(impl_->index, impl_->evictor, protect_after(impl_->settings().min_age), impl_->usage(),
                        target_bytes);
}

EvictOutcome QuotaManager::evict_now(index::ArtifactId id, index::Usage& freed) {
  std::lock_guard cleanup_lock(impl_->cleanup_mutex_);
  EvictOutcome outcome = impl_->evictor.evict(id, freed, Evictor::Need::cleanup, index::EvictionReason::manual_evict);
  if (outcome == EvictOutcome::evicted) {
    impl_->index.commit_removals();
    impl_->refresh();
  }
  return outcome;
}

bool QuotaManager::cleanup_running() const { return impl_->cleanups_running_.load() > 0; }

QuotaManager::State QuotaManager::state() const {
  State out;
  out.space = impl_->evictor.backing_space();
  const config::QuotaSettings s = impl_->settings();
  const Limits limits = compute_limits(s, impl_->usage(), out.space);
  out.limit = limits.limit;
  out.target = limits.target;
  out.blocked = impl_->blocked_.load();
  out.cleanup_running = cleanup_running();
  out.min_age = s.min_age;
  return out;
}

std::vector<std::pair<std::string, std::string>> QuotaManager::status() const {
  const SpaceInfo space = impl_->evictor.backing_space();
  const std::uint64_t usage = impl_->usage();
  const config::QuotaSettings s = impl_->settings();
  const Limits limits = compute_limits(s, usage, space);
  return {
      {"quota.max_size", s.max_size.to_string()},
      {"quota.min_free", s.min_free.to_string()},
      {"quota.low_watermark", fmt::format("{}", s.low_watermark)},
      {"quota.min_age_seconds", fmt::format("{}", s.min_age.count() / 1000.0)},
      {"quota.check_interval_seconds", fmt::format("{}", s.check_interval.count() / 1000.0)},
      {"quota.limit_bytes", bytes_text(limits.limit)},
      {"quota.target_bytes", bytes_text(limits.target)},
      {"quota.usage_bytes", std::to_string(usage)},
      {"quota.backing_free_bytes", std::to_string(space.free_bytes)},
      {"quota.blocked", impl_->blocked_.load() ? "1" : "0"},
      {"quota.cleanup_running", cleanup_running() ? "1" : "0"},
      {"quota.last_cleanup_evicted", std::to_string(impl_->last_cleanup_evicted_.load())},
  };
}

std::string QuotaManager::describe() const {
  const SpaceInfo space = impl_->evictor.backing_space();
  const std::uint64_t usage = impl_->usage();
  const config::QuotaSettings s = impl_->settings();
  const Limits limits = compute_limits(s, usage, space);
  auto with_bytes = [&](const config::SizeLimit& size) {
    if (size.kind == config::SizeLimit::Kind::unlimited) return size.to_string();
    auto resolved = size.resolve(space.capacity_bytes);
    if (size.kind == config::SizeLimit::Kind::percent && space.capacity_bytes == 0) resolved.reset();
    return resolved ? fmt::format("{} ({} bytes)", size.to_string(), *resolved) : size.to_string();
  };
  return fmt::format(
      "max-size {}, min-free {}, low-watermark {}, min-age {}, check-interval {}; limit {} bytes, usage {} bytes",
      with_bytes(s.max_size), with_bytes(s.min_free), s.low_watermark, config::format_duration(s.min_age),
      config::format_duration(s.check_interval), bytes_text(limits.limit), usage);
}

}  // namespace artifactfs::quota
