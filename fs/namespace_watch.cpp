// See namespace_watch.hpp. All calls hold Filesystem::namespace_mutex_.
#include "fs/namespace_watch.hpp"

namespace artifactfs::fs {

NamespaceWatch::Ticket NamespaceWatch::open() {
  Ticket ticket = next_++;
  open_.emplace(ticket, Log{});
  return ticket;
}

void NamespaceWatch::record(ino_t ino) {
  for (auto& [ticket, log] : open_) {
    if (log.overflowed) continue;
    log.inodes.insert(ino);
    if (log.inodes.size() > kMaxRecorded) {
      log.overflowed = true;
      log.inodes = {};
    }
  }
}

bool NamespaceWatch::close(Ticket ticket, const std::vector<SubtreeEntry>& walked) {
  auto it = open_.find(ticket);
  if (it == open_.end()) return false;
  Log log = std::move(it->second);
  open_.erase(it);
  if (log.overflowed) return false;
  if (log.inodes.empty()) return true;
  for (const auto& entry : walked) {
    if (log.inodes.count(entry.st.st_ino)) return false;
  }
  return true;
}

void NamespaceWatch::abandon(Ticket ticket) { open_.erase(ticket); }

}  // namespace artifactfs::fs
