// CONCURRENCY MODEL
// Threads: the quota thread (run()), FUSE threads (usage_grew, admit_write,
// make_room, status), the mount thread (start, stop, update, describe), the
// control channel's thread (cleanup_to, evict_now: under cleanup_mutex_ like
// every eviction; plan_cleanup_to, state: no lock but settings_mutex_ for a
// copy).
// - cleanup_mutex_ serialises cleanup(), the eviction of admit_write(),
//   make_room() and the control channel's evictions: one eviction walk at a
//   time, so two walks never race for the same victims, and a writer that
//   waited for it sees the room the other walk made. It is held across
//   Evictor::evict, which takes the file system's namespace lock; the file
//   system therefore must not call admit_write() or make_room() with that
//   lock held.
// - settings_mutex_ guards settings_ and is taken after cleanup_mutex_ when
//   both are needed. It is never held across a call into the index or the
//   evictor (statvfs, LMDB), so status() and update() never wait on a cleanup.
// - The limits of the last refresh (cached_*), blocked_, the writers'
//   overshoot episode and the counters are atomics, so that usage_grew() and
//   admit_write() take no lock unless they must wake the thread or evict;
//   wake_requested_ turns a burst of writes over the cleanup mark into one
//   notify.
// - wake_mutex_ (a leaf lock) guards stopping_ and pairs with wake_cv_.
//   stop_requested_ (atomic) mirrors it for a long cleanup, which checks it
//   between evictions so that an unmount does not wait for the whole run.
// - An eviction walk commits its index removals in batches (one write
//   transaction per batch, eviction_walk.hpp), on the thread that runs it,
//   under cleanup_mutex_; what a run evicted is committed before cleanup(),
//   admit_write() or make_room() returns.
#include "quota/quota_manager.hpp"

#include <fmt/format.h>
#include <pthread.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
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

// A writer's eviction reads the LRU order in small pages: it usually needs
// one or two victims.
constexpr std::size_t kMakeRoomPage = 32;

// While writers are over the limit with nothing to evict, they walk the LRU
// order again at least this often: artifacts written since the last walk
// may be evictable (min-age 0) without any protection having ended.
constexpr std::chrono::seconds kOvershootRewalk{1};

// A cleanup stopped by a protection that has already ended (min-age 0: an
// artifact used during the walk) is retried after at least this long, so
// that a stream of uses cannot make the quota thread spin.
constexpr std::chrono::milliseconds kMinRetry{100};

index::TimeNs protect_after(std::chrono::milliseconds min_age) {
  return now_ns() - std::chrono::duration_cast<std::chrono::nanoseconds>(min_age).count();
}

std::string bytes_text(std::uint64_t bytes) { return bytes == kNoLimit ? "unlimited" : std::to_string(bytes); }

std::uint64_t saturating_sub(std::uint64_t a, std::uint64_t b) { return b > a ? 0 : a - b; }

// Whether `bytes` more would take `usage` over `limit`.
bool exceeds(std::uint64_t usage, std::uint64_t bytes, std::uint64_t limit) {
  return limit != kNoLimit && (bytes > limit || usage > limit - bytes);
}

std::string seconds_from_now(index::TimeNs when) {
  return fmt::format("{:.1f} s", std::max<index::TimeNs>(0, when - now_ns()) / 1e9);
}

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
    std::uint64_t usage = 0;  // data plus evicted data not yet deleted
    std::uint64_t data = 0;   // the data tree alone, what a cleanup lowers
    Limits limits;
  };

  index::Index& index;
  Evictor& evictor;

  std::mutex cleanup_mutex_;
  mutable std::mutex settings_mutex_;
  config::QuotaSettings settings_;  // guarded by settings_mutex_

  // The limits of the last refresh, for the lock-free checks.
  std::atomic<std::uint64_t> cached_limit_{kNoLimit};
  std::atomic<std::uint64_t> cached_cleanup_at_{kNoLimit};
  std::atomic<std::uint64_t> cached_space_limit_{kNoLimit};
  std::atomic<bool> hard_limit_{false};
  std::atomic<bool> blocked_{false};  // the last cleanup could not meet its target
  // When the temporary protection that stopped the last cleanup ends (ns
  // since the epoch); 0: retry at the check interval.
  std::atomic<index::TimeNs> cleanup_retry_at_{0};
  std::atomic<std::uint64_t> last_cleanup_evicted_{0};
  std::atomic<int> cleanups_running_{0};  // walks under way (status only)

  // Writers over the limit with nothing left to evict: an overshoot
  // episode, reported once. While it lasts a writer walks the LRU order
  // again only when a min-age ends or kOvershootRewalk passed
  // (writers_retry_at_), or a protection ended
  // (Evictor::protections_ended() moved from writers_epoch_).
  std::atomic<bool> over_limit_{false};
  std::atomic<index::TimeNs> writers_retry_at_{0};
  std::atomic<std::uint64_t> writers_epoch_{0};
  // Since the mount: writes that evicted before they went on, went on over
  // the limit, or got ENOSPC from the quota; episodes and the largest
  // overshoot.
  std::atomic<std::uint64_t> writes_waited_{0};
  std::atomic<std::uint64_t> writes_over_limit_{0};
  std::atomic<std::uint64_t> writes_refused_{0};
  std::atomic<std::uint64_t> overshoot_episodes_{0};
  std::atomic<std::uint64_t> peak_overshoot_{0};

  std::mutex wake_mutex_;
  std::condition_variable wake_cv_;
  bool stopping_ = false;  // guarded by wake_mutex_
  std::atomic<bool> wake_requested_{false};
  std::atomic<bool> stop_requested_{false};  // see CONCURRENCY MODEL
  std::thread thread_;  // started and joined by the owner's thread only

  // The data tree's bytes on disk.
  std::uint64_t data_usage() const {
    return static_cast<std::uint64_t>(std::max<std::int64_t>(0, index.totals().usage.disk_bytes));
  }
  // What the store occupies: the data and what evictions left to delete.
  std::uint64_t usage() const { return data_usage() + evictor.pending_deletion_bytes(); }

  config::QuotaSettings settings() const {
    std::lock_guard lock(settings_mutex_);
    return settings_;
  }

  // Measures usage and the backing filesystem, computes the limit and caches
  // it for usage_grew().
  Snapshot refresh() {
    Snapshot s;
    s.space = evictor.backing_space();
    s.data = data_usage();
    s.usage = s.data + evictor.pending_deletion_bytes();
    std::lock_guard lock(settings_mutex_);
    s.settings = settings_;
    s.limits = compute_limits(s.settings, s.usage, s.space);
    cache(s.limits, s.settings);
    return s;
  }

  void cache(const Limits& limits, const config::QuotaSettings& settings) {
    cached_limit_.store(limits.limit, std::memory_order_relaxed);
    cached_cleanup_at_.store(limits.cleanup_at, std::memory_order_relaxed);
    cached_space_limit_.store(limits.space_limit, std::memory_order_relaxed);
    hard_limit_.store(settings.hard_limit, std::memory_order_relaxed);
  }

  // --- writers over the limit ---
  bool writer_walk_due() const {
    const index::TimeNs retry_at = writers_retry_at_.load();
    return (retry_at != 0 && now_ns() >= retry_at) || evictor.protections_ended() != writers_epoch_.load();
  }
  // Nothing more can be evicted: the write goes on over the limit, or not.
  int verdict_over_limit(std::uint64_t usage, std::uint64_t bytes) {
    if (exceeds(usage, bytes, cached_space_limit_.load(std::memory_order_relaxed)) ||
        hard_limit_.load(std::memory_order_relaxed)) {
      writes_refused_.fetch_add(1, std::memory_order_relaxed);
      return ENOSPC;
    }
    writes_over_limit_.fetch_add(1, std::memory_order_relaxed);
    const std::uint64_t over = saturating_sub(usage + bytes, cached_limit_.load(std::memory_order_relaxed));
    std::uint64_t peak = peak_overshoot_.load(std::memory_order_relaxed);
    while (over > peak && !peak_overshoot_.compare_exchange_weak(peak, over)) {
    }
    return 0;
  }
  void begin_overshoot(const Snapshot& s, std::uint64_t bytes);
  void end_overshoot(std::uint64_t usage) {
    if (over_limit_.exchange(false)) spdlog::info("quota: usage {} bytes is within the limit again", usage);
  }
  int make_room_for_write(std::uint64_t bytes);

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
  EvictionWalk walk(index, evictor, protect_after(s.settings.min_age), s.settings.min_age, Evictor::Need::cleanup,
                    reason,
                    EvictionWalk::kBatchSize);
  // Evicted data still in the trash is being deleted (check() waits for
  // it): the target is one for the data.
  std::uint64_t current = s.data;
  while (current > s.limits.target && !stop_requested_.load(std::memory_order_relaxed) && walk.evict_next()) {
    current = data_usage();
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
  result.retry_at = result.target_met ? 0 : walk.retry_at();
  cleanup_retry_at_.store(result.retry_at);
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
          "quota: cannot get usage down to {} bytes: {} bytes remain and every artifact left is pinned, in use, "
          "used within min-age {} or being written; still serving, will retry {}",
          s.limits.target, current, config::format_duration(s.settings.min_age),
          result.retry_at ? "when the first protection ends, in " + seconds_from_now(result.retry_at)
                          : std::string("every check interval"));
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
  // No flush first: the walk orders by the latest uses, flushed or not, and
  // out of space every page the index writes counts.
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

  EvictionWalk walk(index, evictor, protect_after(current_settings.min_age), current_settings.min_age,
                    Evictor::Need::out_of_space, index::EvictionReason::make_room, kMakeRoomPage);
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

int QuotaManager::Impl::make_room_for_write(std::uint64_t bytes) {
  std::lock_guard cleanup_lock(cleanup_mutex_);
  const auto started = std::chrono::steady_clock::now();
  Snapshot s = refresh();
  if (!exceeds(s.usage, bytes, s.limits.limit)) {  // another walk made the room meanwhile
    end_overshoot(s.usage);
    return 0;
  }
  // Read before the walk: a protection that ends during it moves the
  // counter, and the next writer walks again.
  const std::uint64_t epoch = evictor.protections_ended();
  EvictionWalk walk(index, evictor, protect_after(s.settings.min_age), s.settings.min_age, Evictor::Need::make_room,
                    index::EvictionReason::make_room, kMakeRoomPage);
  for (;;) {
    // Evicted data counts until it is deleted: evict what should be enough,
    // wait for the deletions, measure again.
    std::uint64_t expected = s.usage;
    std::size_t batch = 0;
    while (batch < kMakeRoomBatch && exceeds(expected, bytes, s.limits.limit) && walk.evict_next()) {
      ++batch;
      expected = saturating_sub(expected, walk.last_bytes_freed());
    }
    if (batch == 0) break;
    walk.commit();
    evictor.wait_for_deletions();
    s = refresh();
    if (!exceeds(s.usage, bytes, s.limits.limit)) break;
  }
  record_run(started, walk.skipped_protected());
  writes_waited_.fetch_add(1, std::memory_order_relaxed);
  if (walk.evicted() > 0) {
    spdlog::info("quota: a write of {} bytes made room first: evicted {} artifact(s) ({} bytes); usage {} bytes, "
                  "limit {}",
                  bytes, walk.evicted(), walk.bytes_freed(), s.usage, bytes_text(s.limits.limit));
  }
  // The quota thread takes usage down to the target, ahead of the next writes.
  if (cleanup_due(s.usage, s.limits) && !blocked_.load()) request_wake();
  if (!exceeds(s.usage, bytes, s.limits.limit)) {
    end_overshoot(s.usage);
    return 0;
  }
  const index::TimeNs rewalk = now_ns() + std::chrono::duration_cast<std::chrono::nanoseconds>(kOvershootRewalk).count();
  writers_retry_at_.store(walk.retry_at() != 0 ? std::min(walk.retry_at(), rewalk) : rewalk);
  writers_epoch_.store(epoch);
  begin_overshoot(s, bytes);
  return verdict_over_limit(s.usage, bytes);
}

void QuotaManager::Impl::begin_overshoot(const Snapshot& s, std::uint64_t bytes) {
  if (over_limit_.exchange(true)) return;
  overshoot_episodes_.fetch_add(1, std::memory_order_relaxed);
  const char* what = exceeds(s.usage, bytes, s.limits.space_limit)
                         ? "writes that would leave the backing filesystem less than quota.min-free fail with ENOSPC"
                     : s.settings.hard_limit ? "writes fail with ENOSPC (quota.hard-limit: true)"
                                             : "writes go on over the limit (quota.hard-limit: false)";
  spdlog::warn("quota: usage {} bytes and a write of {} bytes exceed the limit {} and every artifact left is pinned, "
               "in use or used within min-age {}; {} until room can be made",
               s.usage, bytes, s.limits.limit, config::format_duration(s.settings.min_age), what);
}

void QuotaManager::Impl::check() {
  const Snapshot s = refresh();
  if (!over_limit(s.usage, s.limits)) end_overshoot(s.usage);
  // A blocked episode keeps retrying: protections expire (min-age passes,
  // the write grace ends, handles are closed) without any write to announce
  // it.
  if (!cleanup_due(s.usage, s.limits) && !blocked_.load()) return;
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
    // The next check: at the check interval, or when the temporary
    // protection that stopped the last cleanup ends, if sooner.
    std::chrono::nanoseconds wait = settings().check_interval;
    if (const index::TimeNs retry_at = cleanup_retry_at_.load(); retry_at != 0) {
      wait = std::clamp(std::chrono::nanoseconds(retry_at - now_ns() + 1'000'000),
                        std::chrono::nanoseconds(kMinRetry), std::max<std::chrono::nanoseconds>(wait, kMinRetry));
    }
    {
      std::unique_lock lock(wake_mutex_);
      wake_cv_.wait_for(lock, wait, [&] { return stopping_ || wake_requested_.load(); });
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
    : impl_(std::make_unique<Impl>(index, evictor, std::move(settings))) {
  impl_->refresh();  // the limits admit_write() checks against, from the first write on
}

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
    impl_->cache(compute_limits(settings, usage, space), settings);
  }
  // Writers over the limit decide again under the new settings.
  impl_->writers_retry_at_.store(1);
  impl_->request_wake();
}

void QuotaManager::usage_grew() {
  if (impl_->usage() <= impl_->cached_cleanup_at_.load(std::memory_order_relaxed)) return;
  // While blocked every write would wake a cleanup that walks all the
  // protected artifacts again and finds nothing; the thread retries when
  // the first temporary protection ends, or at the check interval.
  if (impl_->blocked_.load(std::memory_order_relaxed)) return;
  impl_->request_wake();
}

int QuotaManager::admit_write(std::uint64_t bytes) {
  Impl& m = *impl_;
  const std::uint64_t usage = m.usage();
  if (!exceeds(usage, bytes, m.cached_limit_.load(std::memory_order_relaxed))) {
    if (m.over_limit_.load(std::memory_order_relaxed)) m.end_overshoot(usage);
    return 0;
  }
  // Over the limit with nothing left to evict: decide without walking the
  // same protected artifacts again, until a protection ends.
  if (m.over_limit_.load() && !m.writer_walk_due()) return m.verdict_over_limit(usage, bytes);
  return m.make_room_for_write(bytes);
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
  const std::uint64_t data = impl_->data_usage();
  const std::uint64_t trash = impl_->evictor.pending_deletion_bytes();
  const std::uint64_t usage = data + trash;
  const config::QuotaSettings s = impl_->settings();
  const Limits limits = compute_limits(s, usage, space);
  return {
      {"quota.max_size", s.max_size.to_string()},
      {"quota.min_free", s.min_free.to_string()},
      {"quota.low_watermark", fmt::format("{}", s.low_watermark)},
      {"quota.min_age_seconds", fmt::format("{}", s.min_age.count() / 1000.0)},
      {"quota.check_interval_seconds", fmt::format("{}", s.check_interval.count() / 1000.0)},
      {"quota.hard_limit", s.hard_limit ? "1" : "0"},
      {"quota.limit_bytes", bytes_text(limits.limit)},
      {"quota.target_bytes", bytes_text(limits.target)},
      {"quota.cleanup_at_bytes", bytes_text(limits.cleanup_at)},
      {"quota.usage_bytes", std::to_string(data)},
      {"quota.trash_bytes", std::to_string(trash)},
      {"quota.backing_free_bytes", std::to_string(space.free_bytes)},
      {"quota.blocked", impl_->blocked_.load() ? "1" : "0"},
      {"quota.cleanup_running", cleanup_running() ? "1" : "0"},
      {"quota.last_cleanup_evicted", std::to_string(impl_->last_cleanup_evicted_.load())},
      {"quota.over_limit", impl_->over_limit_.load() ? "1" : "0"},
      {"quota.overshoot_episodes", std::to_string(impl_->overshoot_episodes_.load())},
      {"quota.peak_overshoot_bytes", std::to_string(impl_->peak_overshoot_.load())},
      {"quota.writes_waited", std::to_string(impl_->writes_waited_.load())},
      {"quota.writes_over_limit", std::to_string(impl_->writes_over_limit_.load())},
      {"quota.writes_refused", std::to_string(impl_->writes_refused_.load())},
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
      "max-size {}, min-free {}, low-watermark {}, min-age {}, check-interval {}, hard-limit {}; limit {} bytes, "
      "usage {} bytes",
      with_bytes(s.max_size), with_bytes(s.min_free), s.low_watermark, config::format_duration(s.min_age),
      config::format_duration(s.check_interval), s.hard_limit, bytes_text(limits.limit), usage);
}

}  // namespace artifactfs::quota
