// See inode.hpp for the concurrency model.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "fs/inode.hpp"

namespace artifactfs::fs {

namespace {
constexpr std::uint64_t kRootNodeId = 1;  // FUSE_ROOT_ID
}

InodeTable::InodeTable(int root_fd, ino_t root_ino) : root_ino_(root_ino) {
  root_ = std::make_shared<Inode>(root_ino, S_IFDIR);
  root_->fd = root_fd;
  root_->nlookup = 1;  // the kernel never forgets the root
  root_->role = Role::root;
  struct stat st;
  if (fstat(root_fd, &st) == 0) {
    root_->accounted = {static_cast<std::int64_t>(st.st_blocks) * 512, st.st_size, 0};
  }
  inodes_.emplace(root_ino, root_);
}

InodeTable::~InodeTable() {
  for (auto& [ino, inode] : inodes_) {
    if (inode->fd >= 0) close(inode->fd);
  }
}

// The root's backing inode takes node id 1; whatever backing inode is
// numbered 1 takes the root's number, so the mapping stays a bijection.
std::uint64_t InodeTable::node_id(ino_t backing) const {
  if (backing == root_ino_) return kRootNodeId;
  if (backing == kRootNodeId) return root_ino_;
  return backing;
}

ino_t InodeTable::backing_ino(std::uint64_t node) const {
  if (node == kRootNodeId) return root_ino_;
  if (node == root_ino_) return kRootNodeId;
  return node;
}

InodePtr InodeTable::find(std::uint64_t node) const {
  std::lock_guard lock(mutex_);
  auto it = inodes_.find(backing_ino(node));
  if (it == inodes_.end() || it->second->nlookup == 0) return nullptr;
  return it->second;
}

InodePtr InodeTable::find_backing(ino_t ino) const {
  std::lock_guard lock(mutex_);
  auto it = inodes_.find(ino);
  return it == inodes_.end() ? nullptr : it->second;
}

InodePtr InodeTable::remember(const InodePtr& parent, const std::string& name, const struct stat& st, int fd,
                              const std::function<void(const InodePtr&, const Inode&)>& place) {
  std::unique_lock lock(mutex_);
  auto& slot = inodes_[st.st_ino];
  if (slot && (slot->type != (st.st_mode & S_IFMT))) {
    // The backing inode number was reused for a different kind of file
    // while we held no descriptor on it: the old entry is obsolete.
    slot.reset();
  }
  bool fresh = !slot;
  if (fresh) slot = std::make_shared<Inode>(st.st_ino, st.st_mode & S_IFMT);
  InodePtr inode = slot;
  // A lookup tells us where the inode lives now; hard links may move it.
  bool replaced_place = fresh || inode->nlookup == 0 || inode->name.empty() || inode->parent != parent->ino ||
                        inode->name != name;
  if (replaced_place) {
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
    inode->accounted = index::Usage{static_cast<std::int64_t>(st.st_blocks) * 512, st.st_size,
                                    S_ISDIR(st.st_mode) ? 0 : 1};
  }
  if (fd >= 0) close(fd);
  return inode;
}

void InodeTable::forget(std::uint64_t node, std::uint64_t n) {
  InodePtr dormant;
  {
    std::lock_guard lock(mutex_);
    auto it = inodes_.find(backing_ino(node));
    if (it == inodes_.end()) return;
    Inode& inode = *it->second;
    if (inode.role == Role::root) return;
    inode.nlookup = n >= inode.nlookup ? 0 : inode.nlookup - n;
    if (inode.nlookup > 0) return;
    dormant = it->second;
    // An inode with no known name cannot be found again: drop it whole.
    if (inode.name.empty()) inodes_.erase(it);
  }
  std::lock_guard ilock(dormant->mutex);
  if (dormant->fd >= 0) {
    close(dormant->fd);
    dormant->fd = -1;
  }
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
    auto it = inodes_.find(at->parent);
    if (it == inodes_.end()) return std::nullopt;
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
  auto it = inodes_.find(ino);
  if (it == inodes_.end()) return;
  it->second->parent = new_parent;
  it->second->name = new_name;
}

void InodeTable::unlinked(ino_t parent, const std::string& name, ino_t child) {
  std::lock_guard lock(mutex_);
  auto it = inodes_.find(child);
  if (it == inodes_.end()) return;
  Inode& inode = *it->second;
  // Only the recorded name loses its place; another hard link is found again
  // by the next lookup through it.
  if (inode.parent != parent || inode.name != name) return;
  inode.name.clear();
  if (inode.nlookup == 0) inodes_.erase(it);
}

InodePtr InodeTable::revive(std::uint64_t node) {
  std::lock_guard lock(mutex_);
  return revive_locked(backing_ino(node), 0);
}

InodePtr InodeTable::revive_locked(ino_t ino, int depth_guard) {
  auto it = inodes_.find(ino);
  if (it == inodes_.end() || depth_guard > 4096) return nullptr;
  InodePtr inode = it->second;
  {
    std::lock_guard ilock(inode->mutex);
    if (inode->gone) return nullptr;
    if (inode->fd >= 0) return inode;
  }
  if (inode->name.empty()) return nullptr;
  InodePtr parent = revive_locked(inode->parent, depth_guard + 1);
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
  if (fstat(fd, &st) != 0 || st.st_ino != ino) {
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
  for (const auto& [ino, inode] : inodes_) {
    const Inode* at = inode.get();
    for (int guard = 0; guard < 4096; ++guard) {
      if (at->ino == dir) {
        found.push_back(inode);
        break;
      }
      if (at->role == Role::root || at->name.empty()) break;
      auto it = inodes_.find(at->parent);
      if (it == inodes_.end()) break;
      at = it->second.get();
    }
  }
  return found;
}

void InodeTable::for_each(const std::function<void(Inode&)>& fn) {
  std::lock_guard lock(mutex_);
  for (auto& [ino, inode] : inodes_) fn(*inode);
}

}  // namespace artifactfs::fs
