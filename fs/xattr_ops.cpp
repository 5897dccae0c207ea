// Extended attributes. Names under "user.artifactfs." are the index's facts,
// readable with getfattr: per artifact on its root, totals and statistics
// on the mount root. Setting user.artifactfs.pinned pins an artifact.
// Every other name is passed through to the backing file.
#include <spdlog/spdlog.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "control/channel.hpp"
#include "fs/credentials.hpp"
#include "fs/filesystem.hpp"

namespace artifactfs::fs {

namespace {

constexpr std::string_view kPrefix = "user.artifactfs.";

std::string seconds_text(index::TimeNs ns) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%lld.%09lld", static_cast<long long>(ns / 1'000'000'000),
                static_cast<long long>(ns % 1'000'000'000));
  return buf;
}

int reply_value(fuse_req_t req, const std::string& value, size_t size) {
  if (size == 0) {
    fuse_reply_xattr(req, value.size());
  } else if (value.size() > size) {
    return ERANGE;
  } else {
    fuse_reply_buf(req, value.data(), value.size());
  }
  return 0;
}

std::optional<bool> parse_flag(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\0')) text.remove_suffix(1);
  if (text == "1" || text == "true" || text == "yes") return true;
  if (text == "0" || text == "false" || text == "no") return false;
  return std::nullopt;
}

}  // namespace

std::vector<std::pair<std::string, std::string>> Filesystem::synthetic_xattrs(const Inode& inode) const {
  std::vector<std::pair<std::string, std::string>> out;
  auto add = [&](const char* name, std::string value) { out.emplace_back(std::string(kPrefix) + name, value); };
  if (inode.role == Role::root) {
    index::Totals totals = index_.totals();
    add("total.disk_bytes", std::to_string(totals.usage.disk_bytes));
    add("total.apparent_bytes", std::to_string(totals.usage.apparent_bytes));
    add("total.files", std::to_string(totals.usage.files));
    add("total.artifacts", std::to_string(totals.artifact_count));
    index::Stats stats = index_.stats();
    add("stats.hits", std::to_string(stats.hits));
    add("stats.misses", std::to_string(stats.misses));
    add("stats.evictions", std::to_string(stats.evictions));
    add("stats.bytes_evicted", std::to_string(stats.bytes_evicted));
    add("stats.cleanup_runs", std::to_string(stats.cleanup_runs));
    add("stats.cleanup_seconds", seconds_text(static_cast<index::TimeNs>(stats.cleanup_ns)));
    add("stats.protected_skips", std::to_string(stats.protected_skips));
    // Since the mount, not kept in the index: opens should cost none
    // (index.atime-precision).
    add("stats.getattr_requests", std::to_string(getattr_requests_.load(std::memory_order_relaxed)));
    if (status_provider_) {
      for (auto& [name, value] : status_provider_()) out.emplace_back(std::string(kPrefix) + name, value);
    }
    return out;
  }
  if (inode.role != Role::artifact) return out;
  std::shared_ptr<LiveArtifact> live;
  {
    std::lock_guard lock(inodes_.mutex());
    live = inode.artifact;
  }
  if (!live) return out;
  auto record = index_.get(live->id);
  if (!record) return out;
  add("key", record->name);
  add("disk_bytes", std::to_string(record->usage.disk_bytes));
  add("apparent_bytes", std::to_string(record->usage.apparent_bytes));
  add("files", std::to_string(record->usage.files));
  add("created", seconds_text(record->created));
  add("last_access", seconds_text(record->last_access));
  add("access_count", std::to_string(record->access_count));
  add("pinned", record->pinned ? "1" : "0");
  return out;
}

int Filesystem::getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  InodePtr inode = inode_of(ino);
  if (!inode) return ESTALE;
  if (std::string_view(name).starts_with(kPrefix)) {
    for (auto& [key, value] : synthetic_xattrs(*inode)) {
      if (key == name) return reply_value(req, value, size);
    }
    return ENODATA;
  }
  if (S_ISLNK(inode->type)) return ENODATA;
  NodeFd fd = node_fd(inode);
  if (!fd) return errno == ESTALE ? ESTALE : ENOENT;
  std::string path = proc_path(fd.get());
  std::vector<char> buf(size);
  ssize_t n = ::getxattr(path.c_str(), name, size ? buf.data() : nullptr, size);
  if (n < 0) return errno;
  if (size == 0) fuse_reply_xattr(req, static_cast<size_t>(n));
  else fuse_reply_buf(req, buf.data(), static_cast<size_t>(n));
  return 0;
}

int Filesystem::listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  InodePtr inode = inode_of(ino);
  if (!inode) return ESTALE;
  NodeFd fd = node_fd(inode);
  if (!fd) return errno == ESTALE ? ESTALE : ENOENT;
  std::string names;
  if (!S_ISLNK(inode->type)) {
    std::string path = proc_path(fd.get());
    ssize_t n = ::listxattr(path.c_str(), nullptr, 0);
    if (n < 0 && errno != ENOTSUP) return errno;
    if (n > 0) {
      std::vector<char> buf(static_cast<size_t>(n) + 256);
      n = ::listxattr(path.c_str(), buf.data(), buf.size());
      if (n < 0) return errno;
      names.assign(buf.data(), static_cast<size_t>(n));
    }
  }
  // Only the mount root lists its facts. An artifact's facts are read by
  // name (getfattr -n user.artifactfs.last_access KEY): listed, they would
  // be copied by every tool that preserves xattrs (cp -a, rsync -X, tar
  // --xattrs) into places where they mean nothing.
  if (inode->role == Role::root) {
    for (auto& [key, value] : synthetic_xattrs(*inode)) {
      names += key;
      names.push_back('\0');
    }
  }
  return reply_value(req, names, size);
}

int Filesystem::setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                         int flags) {
  InodePtr inode = inode_of(ino);
  if (!inode) return ESTALE;
  std::string_view key(name);
  if (key.starts_with(kPrefix)) {
    if (key.substr(kPrefix.size()) != "pinned" || inode->role != Role::artifact) return EPERM;
    auto pinned = parse_flag(std::string_view(value, size));
    if (!pinned) return EINVAL;
    return set_pinned(req, *inode, *pinned);
  }
  Held held;
  if (int err = hold(ino, held)) return err;
  const int fd = held.fd;
  if (S_ISLNK(inode->type)) return EPERM;  // Linux allows no user.* attributes on symlinks
  index::Index::Change change = mark_inode(*inode);  // changed set: a large attribute may take a block
  {
    AsCaller as(req);  // the backing filesystem checks the caller's write access
    if (as.error()) return as.error();
    if (::setxattr(proc_path(fd).c_str(), name, value, size, flags) != 0) return errno;
  }
  recharge(inode);  // a large attribute may take a block
  fuse_reply_err(req, 0);
  return 0;
}

int Filesystem::removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  InodePtr inode = inode_of(ino);
  if (!inode) return ESTALE;
  std::string_view key(name);
  if (key.starts_with(kPrefix)) {
    if (key.substr(kPrefix.size()) != "pinned" || inode->role != Role::artifact) return EPERM;
    return set_pinned(req, *inode, false);
  }
  Held held;
  if (int err = hold(ino, held)) return err;
  const int fd = held.fd;
  if (S_ISLNK(inode->type)) return ENODATA;
  index::Index::Change change = mark_inode(*inode);  // changed set: may free a block
  {
    AsCaller as(req);
    if (as.error()) return as.error();
    if (::removexattr(proc_path(fd).c_str(), name) != 0) return errno;
  }
  recharge(inode);
  fuse_reply_err(req, 0);
  return 0;
}

bool Filesystem::is_operator(fuse_req_t req) const {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  if (ctx->uid == 0 || ctx->uid == geteuid()) return true;  // no need to read the groups from /proc
  return control::is_operator(ctx->uid, ctx->gid, caller_groups(req), geteuid(), config_.control.gid);
}

int Filesystem::set_pinned(fuse_req_t req, const Inode& inode, bool pinned) {
  // Pins steer what the quota may take from everyone: the operator's call,
  // whatever the artifact's mode says.
  if (!is_operator(req)) return EPERM;
  std::shared_ptr<LiveArtifact> live;
  {
    std::lock_guard lock(inodes_.mutex());
    live = inode.artifact;
  }
  if (!live) return ENOENT;
  auto record = index_.get(live->id);
  if (!record) return ENOENT;
  index_.set_pinned(live->id, pinned);
  if (!pinned && record->pinned) LiveArtifact::protections_ended.fetch_add(1);  // writers over the limit may evict it
  spdlog::debug("{} {} (uid {})", pinned ? "pinned" : "unpinned", record->name, fuse_req_ctx(req)->uid);
  fuse_reply_err(req, 0);
  return 0;
}

}  // namespace artifactfs::fs
