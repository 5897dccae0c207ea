#include "quota/eviction_walk.hpp"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace artifactfs::quota {

EvictionWalk::EvictionWalk(index::Index& index, Evictor& evictor, index::TimeNs protect_after, Evictor::Need need,
                           index::EvictionReason reason, std::size_t page_size)
    : index_(index),
      evictor_(evictor),
      protect_after_(protect_after),
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

bool EvictionWalk::next_record(index::ArtifactRecord& out) {
  if (position_ == page_.size()) {
    if (finished_) return false;
    page_ = index_.least_recently_used(page_size_, cursor_);
    position_ = 0;
    // Every eviction of the previous page has returned: its preparation goes.
    // Only routine cleanups prepare a page: an ENOSPC writer evicts a few
    // artifacts, on a disk where every page the index writes counts.
    prepared_.reset();
    if (!page_.empty() && need_ == Evictor::Need::cleanup) {
      std::vector<index::ArtifactId> ids;
      ids.reserve(page_.size());
      for (const auto& rec : page_) ids.push_back(rec.id);
      prepared_ = evictor_.prepare(ids);
    }
    // A short page is the last one: no need to ask again for an empty one.
    if (page_.size() < page_size_) finished_ = true;
    if (page_.empty()) return false;
  }
  out = std::move(page_[position_++]);
  cursor_ = std::pair{out.last_access, out.id};
  return true;
}

bool EvictionWalk::evict_next() {
  last_bytes_freed_ = 0;
  index::ArtifactRecord candidate;
  while (next_record(candidate)) {
    if (too_young(candidate)) {
      // The order is by last access, so everything after this one is younger
      // still: the walk ends here instead of reading the rest of the table.
      ++skipped_protected_;
      finished_ = true;
      page_.clear();
      position_ = 0;
      return false;
    }
    if (candidate.pinned) {
      ++skipped_protected_;
      continue;
    }
    // The page may be a little stale: a pin set or an open recorded since it
    // was read must still protect the artifact.
    std::optional<index::ArtifactRecord> fresh = index_.get(candidate.id);
    if (!fresh) continue;  // removed by someone else meanwhile
    if (fresh->pinned || too_young(*fresh)) {
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
      case EvictOutcome::missing:
        spdlog::debug("quota: artifact {} ({}) vanished before it could be evicted", candidate.id, candidate.name);
        break;
    }
  }
  return false;
}

}  // namespace artifactfs::quota
