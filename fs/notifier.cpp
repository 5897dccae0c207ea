// See notifier.hpp for the concurrency model.
#include "fs/notifier.hpp"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>

namespace artifactfs::fs {

Notifier::Notifier() = default;

Notifier::~Notifier() { stop(); }

void Notifier::set_session(fuse_session* session) {
  std::lock_guard lock(mutex_);
  session_ = session;
  // Started only now: the daemon stays single-threaded until it has mounted
  // (and confined itself, confinement.hpp).
  if (!worker_.joinable() && !stopping_) {
    worker_ = std::thread([this] { run(); });
    pthread_setname_np(worker_.native_handle(), "afs-notify");
  }
}

void Notifier::entry_gone(std::uint64_t parent_node, const std::string& name) {
  std::lock_guard lock(mutex_);
  if (!session_ || stopping_) return;
  queue_.push_back({parent_node, name});
  wake_.notify_one();
}

void Notifier::queue_inode_locked(std::uint64_t node, bool contents) {
  if (!session_ || stopping_) return;
  if (!queued_inodes_.insert(node * 2 + (contents ? 1 : 0)).second) return;  // see COALESCING
  queue_.push_back({node, {}, contents});
  wake_.notify_one();
}

void Notifier::attributes_changed(std::uint64_t node) {
  std::lock_guard lock(mutex_);
  queue_inode_locked(node, false);
}

void Notifier::contents_changed(std::uint64_t node) {
  std::lock_guard lock(mutex_);
  queue_inode_locked(node, true);
}

void Notifier::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    stopping_ = true;
    wake_.notify_one();
  }
  if (worker_.joinable()) worker_.join();
}

void Notifier::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stopping and drained
    Item item = std::move(queue_.front());
    queue_.pop_front();
    // Taken off before it is sent: a change from now on queues it again.
    if (item.name.empty()) queued_inodes_.erase(item.node * 2 + (item.contents ? 1 : 0));
    fuse_session* session = session_;
    lock.unlock();
    int rc = item.name.empty()
                 ? fuse_lowlevel_notify_inval_inode(session, item.node, item.contents ? 0 : -1, 0)
                 : fuse_lowlevel_notify_inval_entry(session, item.node, item.name.c_str(), item.name.size());
    // ENOENT: the kernel had nothing cached, which is fine.
    if (rc != 0 && rc != -ENOENT) {
      spdlog::debug("kernel cache invalidation of node {} name {} failed: {}", item.node, item.name, std::strerror(-rc));
    }
    lock.lock();
  }
}

}  // namespace artifactfs::fs
