// See inode.hpp for the concurrency model and the choice of node ids.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "fs/usage.hpp"
#include "fs/inode.hpp"

namespace artifactfs::fs {

namespace {
constexpr std::uint64_t kRootNodeId = 1;  // FUSE_ROOT_ID
}  // namespace

InodeTable::InodeTable(int root_fd, ino_t root_ino) {
  root_ = std::make_shared<Inode>(kRootNodeId, root_ino, S_IFDIR);
  root_->fd = root_fd;
  root_->nlookup = 1;  // the kernel never forgets the root
  root_->role = Role::root;
  struct stat st;
  if (fstat(root_fd, &st) == 0) {
    root_->accounted = usage_of(st);
    root_->accounted.files = 0;
  }
  by_node_.emplace(kRootNodeId, root_);
  by_backing_.emplace(root_ino, root_);
}

InodeTable::~InodeTable() {
  for (auto& [node, inode] : by_node_) {
    if (inode->fd >= 0) close(inode->fd);
  }
}

std::uint64_t InodeTable::new_node_id_locked(ino_t backing) {
  if (backing != kRootNodeId && !by_node_.contains(backing)) return backing;
  while (by_node_.contains(next_private_id_)) ++next_private_id_;
  return next_private_id_++;
}

void InodeTable::erase_locked(const InodePtr& inode) {
  by_node_.erase(inode->node);
  auto it = by_backing_.find(inode->ino);
  if (it != by_backing_.end() && it->second == inode) by_backing_.erase(it);
}

InodePtr InodeTable::find(std::uint64_t node) const {
  std::lock_guard lock(mutex_);
  auto it = by_node_.find(node);
  if (it == by_node_.end() || it->second->nlookup == 0) return nullptr;
  return it->second;
}

InodePtr InodeTable::find_backing(ino_t ino) const {
  std::lock_guard lock(mutex_);
  auto it = by_backing_.find(ino);
  return it == by_backing_.end() ? nullptr : it->second;
}

InodePtr InodeTable::remember(const InodePtr& parent, const std::string& name, const struct stat& st, int fd,
                              const std::function<void(const InodePtr&, const Inode&)>& place) {
  std::unique_lock lock(mutex_);
  auto& slot = by_backing_[st.st_ino];
  bool reused = slot && (slot->type != (st.st_mode & S_IFMT) || [&] {
                  std::lock_guard ilock(slot->mutex);
                  return slot->gone;
                }());
  bool fresh = !slot || reused;
  if (fresh) {
    // The backing inode number was freed and given to a new file (after an
    // eviction closed our descriptor on the old one): a new inode.
    slot = std::make_shared<Inode>(new_node_id_locked(st.st_ino), st.st_ino, st.st_mode & S_IFMT);
    by_node_[slot->node] = slot;
  }
  InodePtr inode = slot;
  // A lookup tells us where the inode lives now; hard links may move it.
  if (fresh || inode->nlookup == 0 || inode->name.empty() || inode->parent != parent->ino || inode->name != name) {
    inode->parent = parent->ino;
    inode->name = name;
  }
  if (fresh || inode->nlookup == 0) place(inode, *parent);
  inode->nlookup++;
  lock.unlock();

  std::lock_guard ilock(inode->mutex);
  if (inode->fd < 0 && !inode->gone) {
    inode->fd = fd;
    fd = -1;
    inode->accounted = usage_of(st);
  }
  if (fd >= 0) close(fd);
  return inode;
}

void InodeTable::forget(std::uint64_t node, std::uint64_t n) {
  InodePtr dormant;
  {
    std::lock_guard lock(mutex_);
    auto it = by_node_.find(node);
    if (it == by_node_.end()) return;
    InodePtr inode = it->second;
    if (inode->role == Role::root) return;
    inode->nlookup = n >= inode->nlookup ? 0 : inode->nlookup - n;
    if (inode->nlookup > 0) return;
    dormant = inode;
    // An inode with no known name cannot be found again: drop it whole.
    if (inode->name.empty()) {
      erase_locked(inode);
    } else {
      dormant_.push_back(inode->node);
      while (dormant_.size() > kMaxDormant) {
        auto oldest = by_node_.find(dormant_.front());
        dormant_.pop_front();
        if (oldest != by_node_.end() && oldest->second->nlookup == 0 && oldest->second != dormant) {
          erase_locked(oldest->second);
        }
      }
    }
  }
  std::lock_guard ilock(dormant->mutex);
  if (dormant->fd >= 0) {
    close(dormant->fd);
    dormant->fd = -1;
  }
}

std::pair<InodePtr, std::string> InodeTable::place_of(const Inode& inode) const {
  std::lock_guard lock(mutex_);
  auto it = by_backing_.find(inode.parent);
  return {it == by_backing_.end() ? nullptr : it->second, inode.name};
}

std::optional<std::string> InodeTable::path_of(const Inode& inode) const {
  std::lock_guard lock(mutex_);
  return path_of_locked(inode);
}

std::optional<std::string> InodeTable::path_of_locked(const Inode& inode) const {
  std::vector<const std::string*> parts;
  const Inode* at = &inode;
  for (int guard = 0; at->role != Role::root; ++guard) {
    if (at->name.empty() || guard > 4096) return std::nullopt;
    parts.push_back(&at->name);
    auto it = by_backing_.find(at->parent);
    if (it == by_backing_.end()) return std::nullopt;
    at = it->second.get();
  }
  std::string path;
  for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
    if (!path.empty()) path += '/';
    path += **it;
  }
  return path;
}

void InodeTable::renamed(ino_t ino, ino_t new_parent, const std::string& new_name) {
  std::lock_guard lock(mutex_);
  auto it = by_backing_.find(ino);
  if (it == by_backing_.end()) return;
  it->second->parent = new_parent;
  it->second->name = new_name;
}

void InodeTable::unlinked(ino_t parent, const std::string& name, ino_t child) {
  std::lock_guard lock(mutex_);
  auto it = by_backing_.find(child);
  if (it == by_backing_.end()) return;
  InodePtr inode = it->second;
  // Only the recorded name loses its place; another hard link is found again
  // by the next lookup through it.
  if (inode->parent != parent || inode->name != name) return;
  inode->name.clear();
  if (inode->nlookup == 0) erase_locked(inode);
}

InodePtr InodeTable::revive(std::uint64_t node) {
  std::lock_guard lock(mutex_);
  auto it = by_node_.find(node);
  if (it == by_node_.end()) return nullptr;
  return revive_locked(it->second, 0);
}

InodePtr InodeTable::revive_locked(const InodePtr& inode, int depth_guard) {
  if (depth_guard > 4096) return nullptr;
  {
    std::lock_guard ilock(inode->mutex);
    if (inode->gone) return nullptr;
    if (inode->fd >= 0) return inode;
  }
  if (inode->name.empty()) return nullptr;
  auto pit = by_backing_.find(inode->parent);
  if (pit == by_backing_.end()) return nullptr;
  InodePtr parent = revive_locked(pit->second, depth_guard + 1);
  if (!parent) return nullptr;
  int parent_fd;
  {
    std::lock_guard plock(parent->mutex);
    parent_fd = parent->fd;
  }
  if (parent_fd < 0) return nullptr;
  int fd = openat(parent_fd, inode->name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return nullptr;
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_ino != inode->ino) {
    close(fd);
    return nullptr;
  }
  std::lock_guard ilock(inode->mutex);
  if (inode->fd >= 0) {
    close(fd);
  } else {
    inode->fd = fd;
  }
  return inode;
}

std::vector<InodePtr> InodeTable::subtree(ino_t dir) const {
  std::lock_guard lock(mutex_);
  std::vector<InodePtr> found;
  for (const auto& [node, inode] : by_node_) {
    const Inode* at = inode.get();
    for (int guard = 0; guard < 4096; ++guard) {
      if (at->ino == dir) {
        found.push_back(inode);
        break;
      }
      if (at->role == Role::root || at->name.empty()) break;
      auto it = by_backing_.find(at->parent);
      if (it == by_backing_.end()) break;
      at = it->second.get();
    }
  }
  return found;
}

void InodeTable::for_each(const std::function<void(Inode&)>& fn) {
  std::lock_guard lock(mutex_);
  for (auto& [node, inode] : by_node_) fn(*inode);
}

}  // namespace artifactfs::fs
