// Keeps the backing storage under its limit by evicting the
// least-recently-used artifacts, whole, never one that is in use, pinned
// or used within min-age.
//
// Two parts do it. The quota thread starts a cleanup when usage passes the
// cleanup mark (halfway between the low watermark and the limit) and evicts
// down to the low watermark, so that writers rarely find the limit in their
// way. A write that would take usage over the limit anyway makes room
// itself before it proceeds (admit_write), least recently used first; when
// nothing more can be evicted it proceeds over the limit (reported), or gets
// ENOSPC with quota.hard-limit, and in either case never takes the backing
// filesystem below min-free. Usage here is the data plus evicted data not yet
// deleted.
//
// CONCURRENCY MODEL
// One quota thread runs cleanups. FUSE threads call usage_grew() and
// admit_write() (cheap unless over the limit: the index's in-memory totals,
// atomics, and a notify), and admit_write() and make_room() evict on the
// calling thread when they must. The control channel's thread calls
// cleanup_to() and evict_now(), which evict on that thread under the same
// cleanup_mutex_, and the read-only plan_cleanup_to(), state() and status().
// `cleanup_mutex_` serialises every eviction walk (quota thread, writers
// making room, ENOSPC callers, the control channel) and is held across
// Evictor::evict, so the file system must not call admit_write() or
// make_room() while holding a lock that evict() takes. `settings_mutex_`
// guards the settings (replaced by update() on SIGHUP) and is never held
// across a call into the index or the Evictor. Lock order: cleanup_mutex_,
// then settings_mutex_. Details in quota_manager.cpp.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "config/config.hpp"
#include "index/index.hpp"

namespace artifactfs::quota {

struct SpaceInfo {
  std::uint64_t capacity_bytes = 0;  // size of the backing filesystem
  std::uint64_t free_bytes = 0;      // available to the daemon (f_bavail)
};

// recently_written: protected for a while only (the write grace of a routine
// cleanup); Evictor::write_grace_ends() says until when.
enum class EvictOutcome { evicted, in_use, recently_written, missing };

// What the quota manager needs from the file system (implemented in fs/).
class Evictor {
 public:
  virtual ~Evictor() = default;
  // Why an eviction is asked for: a routine cleanup of the quota thread, a
  // write that would take usage over the limit making room first, or a
  // writer that got ENOSPC from the backing filesystem. A routine cleanup
  // leaves alone an artifact written a moment ago (it may be half-written
  // between two operations of its writer); a writer that needs the room
  // takes it in its LRU turn.
  enum class Need { cleanup, make_room, out_of_space };
  // Removes the artifact from the mount in one step unless it has an open
  // handle or an operation in progress (in_use) or, for Need::cleanup, was
  // written within the write grace (recently_written); on success `freed`
  // is its usage. `reason` goes into the index's eviction log.
  virtual EvictOutcome evict(index::ArtifactId id, index::Usage& freed, Need need, index::EvictionReason reason) = 0;
  // Whether evict() would refuse the artifact now because it is in use
  // (for a cleanup's dry run; a guess that may change the next moment).
  virtual bool in_use(index::ArtifactId /*id*/) { return false; }
  // When the write grace of an artifact evict() answered recently_written
  // for ends (ns since the epoch); 0 if unknown.
  virtual index::TimeNs write_grace_ends(index::ArtifactId /*id*/) { return 0; }
  // Bytes of evicted artifacts not deleted yet: still on the disk.
  virtual std::uint64_t pending_deletion_bytes() { return 0; }
  // A counter that moves whenever a protection that made evict() answer
  // in_use ends, or a pin is removed: a writer over the limit walks the
  // LRU order again only when it moved (or a min-age ends).
  virtual std::uint64_t protections_ended() { return 0; }
  // Called by the eviction walk of a cleanup with the candidates it is about
  // to try (a page of the LRU order), before it evicts any of them; the walk
  // keeps what this returns until it is done with them (not called on the
  // out-of-space path). Lets the file system do once per page what each
  // eviction would otherwise do alone (mark the candidates in the index's
  // changed set in one write transaction).
  virtual std::shared_ptr<void> prepare(const std::vector<index::ArtifactId>& /*candidates*/) { return {}; }
  virtual SpaceInfo backing_space() = 0;
  // Blocks until evicted data is really deleted (so free space is real).
  virtual void wait_for_deletions() = 0;
};

class QuotaManager {
 public:
  QuotaManager(index::Index& index, Evictor& evictor, config::QuotaSettings settings);
  ~QuotaManager();  // stops the thread
  QuotaManager(const QuotaManager&) = delete;
  QuotaManager& operator=(const QuotaManager&) = delete;

  void start();
  void stop();
  // New settings (SIGHUP); applied at once, with a cleanup if now over.
  void update(const config::QuotaSettings& settings);

  // Called after usage grew; wakes the quota thread if over the cleanup
  // mark.
  void usage_grew();
  // Before a write, create or fallocate that may add up to `bytes` to the
  // usage. If that would take usage over the limit, evicts least recently
  // used artifacts first (min-age, pins and open artifacts are protected,
  // the write grace is not) and waits for their deletion. Returns 0 if the
  // write may proceed (over the limit only if nothing more could be evicted:
  // reported, one warning per episode), ENOSPC if it must not: with
  // quota.hard-limit, or when it would leave the backing filesystem less
  // than min-free.
  int admit_write(std::uint64_t bytes);
  // ENOSPC path: evicts now, on the calling thread, until `bytes` more fit
  // on the backing filesystem (or nothing evictable is left) and waits for
  // the deletions. True if anything was freed.
  bool make_room(std::uint64_t bytes);

  // The quota's state at this moment, for status reports.
  struct State {
    std::uint64_t limit = 0;   // std::numeric_limits<std::uint64_t>::max(): no limit
    std::uint64_t target = 0;  // likewise
    SpaceInfo space;
    bool blocked = false;
    bool cleanup_running = false;
    std::chrono::milliseconds min_age{0};
  };
  State state() const;

  // Facts for `getfattr` on the mount root, names without the
  // "user.artifactfs." prefix: quota.limit_bytes, quota.usage_bytes, ...
  std::vector<std::pair<std::string, std::string>> status() const;
  // One line for logs: "max-size 10G (10737418240 bytes), min-free 5%, ...".
  std::string describe() const;

  struct CleanupResult {
    std::uint64_t evicted = 0;
    std::uint64_t bytes_freed = 0;
    std::uint64_t skipped_protected = 0;
    bool target_met = false;
    // Target not met because of a temporary protection (min-age, write
    // grace): when the first one ends (ns since the epoch); else 0.
    index::TimeNs retry_at = 0;
  };
  // One cleanup now (also used by tests): evicts oldest-first until usage is
  // at or below the low watermark of the effective limit.
  CleanupResult cleanup();

  // --- operator's requests (the control channel) -----------------------------
  // A cleanup down to `target_bytes` of usage instead of the low watermark
  // (evictions logged as manual_cleanup), with the same protections.
  CleanupResult cleanup_to(std::uint64_t target_bytes);
  // What cleanup_to(target_bytes) would evict now, in order.
  std::vector<index::ArtifactRecord> plan_cleanup_to(std::uint64_t target_bytes);
  // Evicts one artifact now (logged as manual_evict), unless it is in use or
  // being written; min-age does not apply: the operator asked for it.
  EvictOutcome evict_now(index::ArtifactId id, index::Usage& freed);
  // Whether a cleanup or an ENOSPC eviction is running at this moment.
  bool cleanup_running() const;

 private:
  // ... implementation-defined members ...
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace artifactfs::quota
