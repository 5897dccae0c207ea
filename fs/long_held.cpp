// See long_held.hpp for what this is for and its concurrency model.
#include "fs/long_held.hpp"

namespace artifactfs::fs {

HandleUse::~HandleUse() {
  if (list) list->remove(*this);
}

void LongHeldHandles::add(HandleUse& use, InodePtr inode, std::int64_t now_ns) {
  use.inode = std::move(inode);
  use.last_use_ns.store(now_ns, std::memory_order_relaxed);
  std::lock_guard lock(mutex_);
  use.prev = nullptr;
  use.next = head_;
  if (head_) head_->prev = &use;
  head_ = &use;
  use.list = this;
}

void LongHeldHandles::remove(HandleUse& use) {
  std::lock_guard lock(mutex_);
  if (use.prev) use.prev->next = use.next;
  else head_ = use.next;
  if (use.next) use.next->prev = use.prev;
  use.prev = use.next = nullptr;
  use.list = nullptr;
}

std::vector<InodePtr> LongHeldHandles::take_idle(std::int64_t now_ns, std::int64_t idle_ns) {
  std::vector<InodePtr> idle;
  std::lock_guard lock(mutex_);
  for (HandleUse* use = head_; use; use = use->next) {
    if (now_ns - use->last_use_ns.load(std::memory_order_relaxed) < idle_ns) continue;
    // exchange: an inode held by several handles is taken once.
    if (use->inode->pages_dropped.exchange(true, std::memory_order_relaxed)) continue;
    idle.push_back(use->inode);
  }
  return idle;
}

}  // namespace artifactfs::fs
