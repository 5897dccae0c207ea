// See inode.hpp for the concurrency model and the choice of node ids.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "fs/usage.hpp"
#include "fs/inode.hpp"

namespace artifactfs::fs {

namespace {
constexpr std::uint64_t kRootNodeId = 1;  // FUSE_ROOT_ID
}  // namespace

BackingHandle handle_of(int fd) {
  BackingHandle out;
  struct {
    file_handle header;
    unsigned char bytes[BackingHandle::kMaxBytes];
  } buf;
  buf.header.handle_bytes = BackingHandle::kMaxBytes;
  int mount_id = 0;
  if (name_to_handle_at(fd, "", &buf.header, &mount_id, AT_EMPTY_PATH) != 0) return out;
  out.size = buf.header.handle_bytes;
  out.type = buf.header.handle_type;
  std::memcpy(out.bytes, buf.header.f_handle, out.size);
  return out;
}

std::string encode_handle(const BackingHandle& handle) {
  if (handle.size == 0) return {};
  std::string out(4 + handle.size, '\0');
  for (int i = 0; i < 4; ++i) out[i] = static_cast<char>((static_cast<unsigned>(handle.type) >> (8 * i)) & 0xff);
  std::memcpy(out.data() + 4, handle.bytes, handle.size);
  return out;
}

std::uint64_t generation_of(const BackingHandle& handle) {
  constexpr int kInoGen = 1;  // FILEID_INO32_GEN: 32-bit inode, 32-bit generation
  if (handle.type == kInoGen && handle.size == 8) {
    std::uint32_t gen;
    std::memcpy(&gen, handle.bytes + 4, 4);
    return gen;
  }
  std::uint32_t hash = 2166136261u;  // FNV-1a; the kernel keeps 32 bits
  for (unsigned i = 0; i < handle.size; ++i) hash = (hash ^ handle.bytes[i]) * 16777619u;
  return hash;
}

int reopen_inode(int path_fd, int flags) {
  char path[32];
  std::snprintf(path, sizeof path, "/proc/self/fd/%d", path_fd);
  return ::open(path, flags | O_CLOEXEC);
}

namespace {

int open_by_backing_handle(int mount_fd, const BackingHandle& handle) {
  struct {
    file_handle header;
    unsigned char bytes[BackingHandle::kMaxBytes];
  } buf;
  buf.header.handle_bytes = handle.size;
  buf.header.handle_type = handle.type;
  std::memcpy(buf.header.f_handle, handle.bytes, handle.size);
  return open_by_handle_at(mount_fd, &buf.header, O_PATH | O_CLOEXEC);
}

}  // namespace

InodeTable::InodeTable(int root_fd, ino_t root_ino, std::size_t max_open, int mount_fd)
    : max_open_(std::max<std::size_t>(max_open, 16)), mount_fd_(mount_fd) {
  root_ = std::make_shared<Inode>(kRootNodeId, root_ino, S_IFDIR);
  root_->fd = root_fd;
  root_->fd_pins = 1;  // never closed by the cache
  root_->nlookup = 1;  // the kernel never forgets the root
  root_->role = Role::root;
  root_->handle = handle_of(root_fd);
  struct stat st;
  if (fstat(root_fd, &st) == 0) {
    root_->accounted = usage_of(st);
    root_->accounted.files = 0;
  }
  by_node_.emplace(kRootNodeId, root_);
  by_backing_.emplace(root_ino, root_);
  // Reopening by handle needs CAP_DAC_READ_SEARCH: try it once on the root.
  if (root_->handle.size > 0) {
    int fd = open_by_backing_handle(mount_fd_, root_->handle);
    if (fd >= 0) {
      by_handle_ = true;
      close(fd);
    }
  }
}

InodeTable::~InodeTable() {
  for (auto& [node, inode] : by_node_) {
    if (inode->fd >= 0) close(inode->fd);
    if (inode->read_fd >= 0) close(inode->read_fd);
  }
}

// --- the descriptor cache ------------------------------------------------------

NodeFd& NodeFd::operator=(NodeFd&& other) noexcept {
  if (this != &other) {
    release();
    table_ = std::exchange(other.table_, nullptr);
    inode_ = std::move(other.inode_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

void NodeFd::release() {
  if (inode_ && table_) table_->unpin(*inode_);
  inode_.reset();
  table_ = nullptr;
  fd_ = -1;
}

int InodeTable::pin_cached(Inode& inode) {
  std::lock_guard lock(inode.mutex);
  if (inode.fd < 0) return -1;
  ++inode.fd_pins;
  inode.fd_recent.store(true, std::memory_order_relaxed);
  return inode.fd;
}

void InodeTable::unpin(Inode& inode) {
  std::lock_guard lock(inode.mutex);
  --inode.fd_pins;
  if (inode.gone) close_unpinned_locked(inode);
}

void InodeTable::close_unpinned_locked(Inode& inode) {
  if (inode.fd < 0 || inode.fd_pins > 0 || &inode == root_.get()) return;
  close(inode.fd);
  inode.fd = -1;
  std::size_t closed = 1;
  if (inode.read_fd >= 0) {
    close(inode.read_fd);
    inode.read_fd = -1;
    ++closed;
  }
  open_count_.fetch_sub(closed, std::memory_order_relaxed);
}

int InodeTable::open_for_reading(const InodePtr& inode, const NodeFd& pinned) {
  {
    std::lock_guard lock(inode->mutex);
    if (inode->read_fd >= 0) return fcntl(inode->read_fd, F_DUPFD_CLOEXEC, 0);
  }
  int fresh = reopen_inode(pinned.get(), O_RDONLY);
  if (fresh < 0) return -1;
  int out;
  {
    std::lock_guard lock(inode->mutex);
    // `pinned` keeps inode->fd open, so read_fd may be cached beside it,
    // unless the inode went meanwhile (its space must be freed at once).
    if (inode->gone || inode->fd != pinned.get()) return fresh;
    if (inode->read_fd >= 0) {
      close(fresh);  // another thread cached one meanwhile
      return fcntl(inode->read_fd, F_DUPFD_CLOEXEC, 0);
    }
    out = fcntl(fresh, F_DUPFD_CLOEXEC, 0);
    if (out < 0) return fresh;  // no descriptor to spare: the handle keeps its own
    inode->read_fd = fresh;
    open_count_.fetch_add(1, std::memory_order_relaxed);
  }
  sweep_if_over_limit();
  return out;
}

void InodeTable::close_fd(Inode& inode) {
  std::lock_guard lock(inode.mutex);
  close_unpinned_locked(inode);
}

NodeFd InodeTable::open(const InodePtr& inode) {
  NodeFd out;
  {
    std::lock_guard lock(inode->mutex);
    if (inode->gone) {
      errno = ENOENT;
      return out;
    }
  }
  int fd = pin_cached(*inode);
  if (fd < 0) {
    int fresh = reopen(inode);
    if (fresh < 0) return out;
    fd = adopt_fd(inode, fresh);
    if (fd < 0) return out;
  }
  out.table_ = this;
  out.inode_ = inode;
  out.fd_ = fd;
  return out;
}

int InodeTable::adopt_fd(const InodePtr& inode, int fd) {
  bool listed;
  {
    std::lock_guard lock(inode->mutex);
    if (inode->gone) {
      close(fd);
      errno = ENOENT;
      return -1;
    }
    if (inode->fd >= 0) {
      close(fd);  // another thread opened it meanwhile
    } else {
      inode->fd = fd;
      open_count_.fetch_add(1, std::memory_order_relaxed);
    }
    ++inode->fd_pins;
    inode->fd_recent.store(true, std::memory_order_relaxed);
    listed = std::exchange(inode->in_ring, true);
    fd = inode->fd;
  }
  if (!listed || open_count_.load(std::memory_order_relaxed) > max_open_) {
    std::lock_guard lock(cache_mutex_);
    if (!listed) ring_.push_back(inode);
    if (open_count_.load(std::memory_order_relaxed) > max_open_) sweep_locked();
    if (ring_.size() > 2 * open_count_.load(std::memory_order_relaxed) + 1024) prune_ring_locked();
  }
  return fd;
}

void InodeTable::sweep_if_over_limit() {
  if (open_count_.load(std::memory_order_relaxed) <= max_open_) return;
  std::lock_guard lock(cache_mutex_);
  if (open_count_.load(std::memory_order_relaxed) > max_open_) sweep_locked();
}

void InodeTable::sweep_locked() {
  // CLOCK: a descriptor used since the hand last passed gets a second
  // chance; pinned ones are skipped; entries without a descriptor leave the
  // ring. Two turns at most: everything may be pinned.
  std::size_t steps = 2 * ring_.size() + 1;
  while (open_count_.load(std::memory_order_relaxed) > max_open_ && !ring_.empty() && steps-- > 0) {
    if (hand_ >= ring_.size()) hand_ = 0;
    Inode& inode = *ring_[hand_];
    bool drop;
    {
      std::lock_guard lock(inode.mutex);
      if (inode.fd >= 0 && inode.fd_pins == 0 && !inode.fd_recent.exchange(false, std::memory_order_relaxed)) {
        close_unpinned_locked(inode);
      }
      drop = inode.fd < 0;
      if (drop) inode.in_ring = false;
    }
    if (drop) {
      ring_[hand_] = std::move(ring_.back());
      ring_.pop_back();
    } else {
      ++hand_;
    }
  }
}

void InodeTable::prune_ring_locked() {
  // Entries whose descriptor was closed at forget or eviction (not by the
  // hand) would keep their inodes alive: drop them all once they are as many
  // as the live ones (amortised O(1) per insertion).
  std::erase_if(ring_, [](const InodePtr& inode) {
    std::lock_guard lock(inode->mutex);
    if (inode->fd >= 0) return false;
    inode->in_ring = false;
    return true;
  });
  hand_ = 0;
}

int InodeTable::reopen(const InodePtr& inode) {
  if (by_handle_) {
    BackingHandle handle;
    {
      std::lock_guard lock(inode->mutex);
      handle = inode->handle;
    }
    if (handle.size > 0) {
      int fd = open_by_backing_handle(mount_fd_, handle);
      if (fd >= 0) return fd;
      if (errno == ESTALE || errno == ENOENT) {
        errno = ESTALE;  // deleted: the handle names no inode now
        return -1;
      }
    }
  }
  return reopen_through_parents(inode);
}

int InodeTable::reopen_through_parents(const InodePtr& inode) {
  // The chain of names from the nearest ancestor with a cached descriptor
  // down to `inode`, then opened downwards one component at a time. No
  // recursion: a 30,000-level tree is a long chain, not a deep stack.
  std::vector<std::pair<InodePtr, std::string>> chain;  // (inode, its name), deepest first
  NodeFd top;
  {
    InodePtr at = inode;
    for (;;) {
      InodePtr parent;
      std::string name;
      {
        std::lock_guard lock(mutex_);
        if (at->name.empty()) break;
        auto it = by_backing_.find(at->parent);
        if (it == by_backing_.end()) break;
        parent = it->second;
        name = at->name;
      }
      chain.emplace_back(at, std::move(name));
      int fd = pin_cached(*parent);
      if (fd >= 0) {
        top.table_ = this;
        top.inode_ = parent;
        top.fd_ = fd;
        break;
      }
      if (chain.size() > (1u << 20)) break;
      at = parent;
    }
  }
  if (!top) {
    errno = ESTALE;  // no known place: removed, or never looked up by name
    return -1;
  }
  for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
    const auto& [node, name] = *it;
    int fd = openat(top.get(), name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      errno = ESTALE;
      return -1;
    }
    struct stat st;
    BackingHandle handle;
    {
      std::lock_guard lock(node->mutex);
      handle = node->handle;
    }
    // Not the inode we knew there (renamed away, deleted, number reused):
    // never hand out something else.
    bool same = fstat(fd, &st) == 0 && st.st_ino == node->ino && (st.st_mode & S_IFMT) == node->type &&
                (handle.size == 0 || handle_of(fd) == handle);
    if (!same) {
      close(fd);
      errno = ESTALE;
      return -1;
    }
    if (node == inode) return fd;
    int cached = adopt_fd(node, fd);  // directories on the way stay cached
    if (cached < 0) return -1;
    NodeFd next;
    next.table_ = this;
    next.inode_ = node;
    next.fd_ = cached;
    top = std::move(next);
  }
  errno = ESTALE;
  return -1;
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
                              const std::function<void(const InodePtr&, const Inode&)>& place,
                              bool count_lookup) {
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
  bool moved = fresh || inode->name.empty() || inode->parent != parent->ino || inode->name != name;
  if (moved || inode->nlookup == 0) {
    inode->parent = parent->ino;
    inode->name = name;
  }
  if (fresh || inode->nlookup == 0) place(inode, *parent);
  if (count_lookup) inode->nlookup++;
  else if (inode->nlookup == 0) dormant_.push_back(inode->node);
  lock.unlock();

  BackingHandle handle;
  if (fresh) {
    handle = handle_of(fd);
    std::lock_guard ilock(inode->mutex);
    inode->handle = handle;
    inode->accounted = usage_of(st);
  } else if (moved && nodes_) {
    std::lock_guard ilock(inode->mutex);
    handle = inode->handle;
  }
  if (moved && nodes_) nodes_->placed(st.st_ino, {parent->ino, name, encode_handle(handle)});
  // The lookup's descriptor goes into the cache (the inode is about to be
  // used), unpinned at once.
  if (adopt_fd(inode, fd) >= 0) unpin(*inode);
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
  // Forgotten by the kernel: its descriptor goes now (an unlinked file's
  // space is freed), not when the cache needs room.
  close_fd(*dormant);
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
  InodePtr inode;
  {
    std::lock_guard lock(mutex_);
    auto it = by_backing_.find(ino);
    if (it == by_backing_.end()) {
      // Not in memory: the stored place moves with the name.
      if (nodes_) {
        if (auto place = nodes_->find(ino)) nodes_->placed(ino, {new_parent, new_name, place->handle});
      }
      return;
    }
    inode = it->second;
    inode->parent = new_parent;
    inode->name = new_name;
  }
  if (nodes_) {
    BackingHandle handle;
    {
      std::lock_guard ilock(inode->mutex);
      handle = inode->handle;
    }
    nodes_->placed(ino, {new_parent, new_name, encode_handle(handle)});
  }
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
  InodePtr inode;
  {
    std::lock_guard lock(mutex_);
    auto it = by_node_.find(node);
    if (it == by_node_.end()) return nullptr;
    inode = it->second;
  }
  return open(inode) ? inode : nullptr;
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
