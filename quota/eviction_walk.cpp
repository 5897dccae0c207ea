#include "quota/eviction_walk.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace artifactfs::quota {

EvictionWalk::EvictionWalk(index::Index& index, Evictor& evictor, index::TimeNs protect_after,
                           std::chrono::nanoseconds min_age, Evictor::Need need, index::EvictionReason reason,
                           std::size_t page_size)
    : index_(index),
      evictor_(evictor),
      protect_after_(protect_after),
      min_age_(min_age),
      need_(need),
      reason_(reason),
      page_size_(std::max<std::size_t>(page_size, 1)) {}

EvictionWalk::~EvictionWalk() { commit(); }

void EvictionWalk::commit() {
  if (batch_ == 0) return;
  batch_ = 0;
  try {
    index_.commit_removals();
  } catch (const std::exception& e) {
    spdlog::warn("quota: could not commit the removal of evicted artifacts' records ({}); the next index flush "
                 "retries",
                 e.what());
  }
}

bool EvictionWalk::read_page() {
  if (table_done_) return false;
  std::vector<index::TimeNs> positions;
  std::vector<index::ArtifactRecord> page = index_.least_recently_used(page_size_, cursor_, &positions);
  // A short page is the last one: no need to ask again for an empty one.
  if (page.size() < page_size_) table_done_ = true;
  if (page.empty()) return false;
  cursor_ = std::pair{positions.back(), page.back().id};
  // The previous page's preparation goes (its candidates still in the heap
  // are marked again by their own eviction). Only routine cleanups prepare
  // a page: a writer evicts a few artifacts, on a disk where every page the
  // index writes counts.
  prepared_.reset();
  if (need_ == Evictor::Need::cleanup) {
    std::vector<index::ArtifactId> ids;
    ids.reserve(page.size());
    for (const auto& rec : page) ids.push_back(rec.id);
    prepared_ = evictor_.prepare(ids);
  }
  for (auto& rec : page) heap_.push({std::move(rec)});
  return true;
}

bool EvictionWalk::next_record(index::ArtifactRecord& out) {
  for (;;) {
    // The heap's oldest is next if no unread record can be older (EXACT
    // ORDER): unread ones sit after the cursor, and their latest use is at
    // least where they sit.
    if (!heap_.empty() &&
        (table_done_ || std::pair{heap_.top().record.last_access, heap_.top().record.id} <= *cursor_)) {
      out = heap_.top().record;
      heap_.pop();
      return true;
    }
    if (!read_page() && heap_.empty()) return false;
  }
}

void EvictionWalk::end(index::TimeNs retry_at) {
  ended_ = true;
  retry_at_ = retry_at;
  // What is left in the heap is younger still: never evicted by this walk.
  heap_ = {};
  prepared_.reset();
}

bool EvictionWalk::evict_next() {
  last_bytes_freed_ = 0;
  if (ended_) return false;
  index::ArtifactRecord candidate;
  while (next_record(candidate)) {
    if (too_young(candidate)) {
      // Everything after this one is younger still: the walk ends here
      // instead of reading the rest of the table.
      ++skipped_protected_;
      end(candidate.last_access + min_age_.count());
      return false;
    }
    if (candidate.pinned) {
      ++skipped_protected_;
      continue;
    }
    // The record may be a little stale: a pin set or a use recorded since it
    // was read must still count.
    std::optional<index::ArtifactRecord> fresh = index_.get(candidate.id);
    if (!fresh) continue;  // removed by someone else meanwhile
    if (fresh->last_access > candidate.last_access) {
      heap_.push({std::move(*fresh)});  // used again: back in its new place
      continue;
    }
    if (fresh->pinned) {
      ++skipped_protected_;
      continue;
    }
    index::Usage freed;
    switch (evictor_.evict(candidate.id, freed, need_, reason_)) {
      case EvictOutcome::evicted: {
        ++evicted_;
        last_bytes_freed_ = static_cast<std::uint64_t>(std::max<std::int64_t>(0, freed.disk_bytes));
        bytes_freed_ += last_bytes_freed_;
        const auto now = std::chrono::steady_clock::now();
        if (batch_++ == 0) batch_started_ = now;
        if (batch_ >= kBatchSize || now - batch_started_ >= kBatchTime) commit();
        return true;
      }
      case EvictOutcome::in_use:
        ++skipped_protected_;
        break;
      case EvictOutcome::recently_written:
        // Temporary, like min-age: evicting what comes after it would take
        // an artifact used more recently (WHERE A WALK ENDS).
        ++skipped_protected_;
        end(evictor_.write_grace_ends(candidate.id));
        return false;
      case EvictOutcome::missing:
        spdlog::debug("quota: artifact {} ({}) vanished before it could be evicted", candidate.id, candidate.name);
        break;
    }
  }
  return false;
}

}  // namespace artifactfs::quota
