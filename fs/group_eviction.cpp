// See group_eviction.hpp.
#include "fs/group_eviction.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "fs/beneath.hpp"

namespace artifactfs::fs {

namespace {

constexpr const char* kMembersFile = ".members";

bool write_all(int fd, const std::string& text) {
  std::size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// Parent path, then member names; the file ends with an empty field so that
// a file cut short is told from a complete one.
std::string members_text(const std::string& parent_path, const std::vector<std::string>& members) {
  std::string text = parent_path;
  text.push_back('\0');
  for (const auto& m : members) {
    text += m;
    text.push_back('\0');
  }
  text.push_back('\0');
  return text;
}

bool read_members(int dir_fd, std::string& parent_path, std::vector<std::string>& members) {
  int fd = openat(dir_fd, kMembersFile, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return false;
  std::string text;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  close(fd);
  if (text.size() < 2 || text[text.size() - 1] != '\0' || text[text.size() - 2] != '\0') return false;
  std::vector<std::string> fields;
  std::size_t start = 0;
  for (std::size_t i = 0; i < text.size() - 1; ++i) {
    if (text[i] == '\0') {
      fields.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  if (fields.empty()) return false;
  parent_path = fields.front();
  members.assign(fields.begin() + 1, fields.end());
  return true;
}

void remove_empty_staging(int staging_fd, const std::string& name) {
  if (int fd = openat(staging_fd, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC); fd >= 0) {
    unlinkat(fd, kMembersFile, 0);
    close(fd);
  }
  if (unlinkat(staging_fd, name.c_str(), AT_REMOVEDIR) != 0) {
    spdlog::warn("could not remove the eviction staging directory {}: {}", name, std::strerror(errno));
  }
}

std::atomic<std::uint64_t> sequence{0};

}  // namespace

int stage_group(int staging_fd, int parent_fd, const std::string& parent_path, const std::vector<std::string>& members,
                index::ArtifactId id, std::string& staged) {
  staged = std::to_string(id) + "." + std::to_string(++sequence) + "." + std::to_string(getpid()) + ".group";
  if (mkdirat(staging_fd, staged.c_str(), 0700) != 0) return errno;
  int dir_fd = openat(staging_fd, staged.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  int err = dir_fd < 0 ? errno : 0;
  if (!err) {
    int fd = openat(dir_fd, kMembersFile, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
      err = errno;
    } else {
      if (!write_all(fd, members_text(parent_path, members))) err = errno ? errno : EIO;
      close(fd);
    }
  }
  std::size_t moved = 0;
  for (; !err && moved < members.size(); ++moved) {
    if (renameat(parent_fd, members[moved].c_str(), dir_fd, members[moved].c_str()) != 0) err = errno;
  }
  if (err) {
    // Not all of them: put back what was taken, so that nothing is evicted.
    if (moved > 0) --moved;  // the failed rename moved nothing
    for (std::size_t i = 0; i < moved; ++i) {
      if (renameat(dir_fd, members[i].c_str(), parent_fd, members[i].c_str()) != 0) {
        spdlog::error("could not put {} back into {} after a failed eviction: {}; it waits in the eviction staging "
                      "directory {} and the next mount finishes evicting it",
                      members[i], parent_path.empty() ? "the data root" : parent_path, std::strerror(errno), staged);
        if (dir_fd >= 0) close(dir_fd);
        return err;
      }
    }
    if (dir_fd >= 0) close(dir_fd);
    remove_empty_staging(staging_fd, staged);
    return err;
  }
  close(dir_fd);
  return 0;
}

std::size_t finish_group_evictions(int staging_fd, int data_fd, int trash_fd) {
  std::vector<std::string> names;
  {
    int fd = openat(staging_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR* dir = fd >= 0 ? fdopendir(fd) : nullptr;
    if (!dir) {
      if (fd >= 0) close(fd);
      return 0;
    }
    while (dirent* de = readdir(dir)) {
      std::string name = de->d_name;
      if (name != "." && name != "..") names.push_back(std::move(name));
    }
    closedir(dir);
  }
  std::size_t finished = 0;
  for (const auto& name : names) {
    int dir_fd = openat(staging_fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dir_fd < 0) continue;
    std::string parent_path;
    std::vector<std::string> members;
    if (!read_members(dir_fd, parent_path, members)) {
      // Killed before the list was complete: no member had moved yet.
      close(dir_fd);
      remove_empty_staging(staging_fd, name);
      continue;
    }
    int parent_fd = open_beneath(data_fd, parent_path, O_PATH | O_DIRECTORY);
    std::size_t moved = 0;
    for (const auto& member : members) {
      struct stat st;
      if (member.empty() || member.find('/') != std::string::npos) continue;
      if (fstatat(dir_fd, member.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) continue;  // staged already
      if (parent_fd >= 0 && renameat(parent_fd, member.c_str(), dir_fd, member.c_str()) == 0) ++moved;
    }
    if (parent_fd >= 0) close(parent_fd);
    close(dir_fd);
    // Into the trash under the same name (it starts with the artifact id).
    if (renameat(staging_fd, name.c_str(), trash_fd, name.c_str()) != 0) {
      spdlog::error("could not move the staged eviction {} into the trash: {}", name, std::strerror(errno));
      continue;
    }
    ++finished;
    spdlog::warn("finished the eviction of {}{}{} that the daemon was making when it stopped ({} of {} entries were "
                 "still in place)",
                 parent_path, parent_path.empty() ? "" : "/", members.empty() ? std::string("?") : members.front(),
                 moved, members.size());
  }
  return finished;
}

}  // namespace artifactfs::fs
