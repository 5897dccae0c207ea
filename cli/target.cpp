#include "cli/target.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "cli/exit_codes.hpp"

namespace artifactfs::cli {

namespace fsys = std::filesystem;

namespace {

struct KnownMount {
  std::string mountpoint;
  std::string store;
};

std::string unescape_octal(const std::string& field) {
  std::string out;
  for (std::size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size() && std::isdigit(static_cast<unsigned char>(field[i + 1]))) {
      out += static_cast<char>(std::stoi(field.substr(i + 1, 3), nullptr, 8));
      i += 3;
    } else {
      out += field[i];
    }
  }
  return out;
}

// Live mounts of type fuse.artifactfs, from /proc/self/mountinfo.
std::vector<KnownMount> live_mounts() {
  std::vector<KnownMount> out;
  std::ifstream in("/proc/self/mountinfo");
  for (std::string line; std::getline(in, line);) {
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream left(line.substr(0, dash)), right(line.substr(dash + 3));
    std::string id, parent, dev, root, mountpoint, fstype, source;
    left >> id >> parent >> dev >> root >> mountpoint;
    right >> fstype >> source;
    if (fstype != "fuse.artifactfs") continue;
    source = unescape_octal(source);
    if (source.rfind("artifactfs:", 0) != 0) continue;
    out.push_back({unescape_octal(mountpoint), source.substr(std::strlen("artifactfs:"))});
  }
  return out;
}

// fstab lines "STORE MOUNTPOINT fuse.artifactfs OPTIONS ..." (or type
// "artifactfs" with the mount helper).
std::optional<std::string> fstab_store(const std::string& mountpoint) {
  std::ifstream in("/etc/fstab");
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string source, target, type;
    if (!(fields >> source >> target >> type) || source.empty() || source[0] == '#') continue;
    if ((type == "fuse.artifactfs" || type == "artifactfs") && unescape_octal(target) == mountpoint) {
      return unescape_octal(source);
    }
  }
  return std::nullopt;
}

std::string canonical_text(const std::string& path) {
  std::error_code ec;
  auto c = fsys::weakly_canonical(path, ec);
  return ec ? path : c.string();
}

}  // namespace

std::string mount_containing(const std::string& path) {
  const std::string c = fsys::path(path).lexically_normal().string();
  std::string best;
  for (const auto& m : live_mounts()) {
    if ((c == m.mountpoint || c.rfind(m.mountpoint + "/", 0) == 0) && m.mountpoint.size() > best.size()) {
      best = m.mountpoint;
    }
  }
  return best;
}

bool is_artifactfs_mount(const std::string& path) {
  const std::string c = canonical_text(path);
  for (const auto& m : live_mounts()) {
    if (m.mountpoint == c) return true;
  }
  return false;
}

Target resolve_target(const ParsedArgs& args, const std::string& mount_argument) {
  const auto mounts = live_mounts();
  if (auto store = args.value("store")) {
    Target t{fsys::absolute(*store), ""};
    const std::string c = canonical_text(*store);
    for (const auto& m : mounts) {
      if (canonical_text(m.store) == c) t.mountpoint = m.mountpoint;
    }
    return t;
  }
  if (!mount_argument.empty()) {
    const std::string c = canonical_text(mount_argument);
    for (const auto& m : mounts) {
      if (m.mountpoint == c) return {m.store, m.mountpoint};
    }
    if (auto store = fstab_store(c)) return {*store, ""};
    throw CommandError(mount_argument + " is not an artifactfs mount (not in /proc/self/mountinfo or /etc/fstab); "
                       "name the cache's store instead: --store STORE",
                       exit_code::usage);
  }
  if (mounts.size() == 1) return {mounts[0].store, mounts[0].mountpoint};
  if (mounts.empty()) {
    throw CommandError("no artifactfs mount on this system; name one (MOUNT) or a store (--store STORE)",
                       exit_code::usage);
  }
  std::string list;
  for (const auto& m : mounts) list += "\n  " + m.mountpoint + " (store " + m.store + ")";
  throw CommandError("several artifactfs mounts; name one:" + list, exit_code::usage);
}

std::optional<nlohmann::json> ask_daemon(const Target& target, const nlohmann::json& request,
                                         const std::function<void(const nlohmann::json&)>& on_item) {
  std::optional<control::Reply> reply;
  try {
    reply = control::call(target.store, request, on_item);
  } catch (const control::ChannelError& e) {
    throw CommandError(e.what(), exit_code::failure);
  }
  if (!reply) return std::nullopt;
  if (!reply->ok) {
    const int status = reply->code == "permission" ? exit_code::not_allowed
                       : reply->code == "usage"    ? exit_code::usage
                                                   : exit_code::failure;
    throw CommandError(reply->error, status);
  }
  return reply->result;
}

OfflineIndex::OfflineIndex(OfflineIndex&& o) noexcept : index(std::move(o.index)), lock_fd(std::exchange(o.lock_fd, -1)) {}

OfflineIndex::~OfflineIndex() {
  index.reset();
  if (lock_fd >= 0) ::close(lock_fd);
}

OfflineIndex open_offline(const Target& target) {
  OfflineIndex out;
  const fsys::path lock = target.store / "lock";
  out.lock_fd = ::open(lock.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (out.lock_fd < 0) {
    const int err = errno;
    if (err == EACCES) {
      throw CommandError("no daemon serves " + target.store.string() +
                             ", and reading its index directly needs root or the store's owner: " +
                             std::strerror(err),
                         exit_code::not_allowed);
    }
    throw CommandError("cannot read store " + target.store.string() + ": " + std::strerror(err) +
                           (err == ENOENT ? " (is it a store? it is made by the first `artifactfs mount`)" : ""),
                       exit_code::failure);
  }
  if (flock(out.lock_fd, LOCK_SH | LOCK_NB) != 0) {
    std::ifstream in(lock);
    std::string pid;
    in >> pid;
    throw CommandError("store " + target.store.string() + " is held by artifactfs pid " + (pid.empty() ? "?" : pid) +
                           ", which did not answer on the control channel (see its log)",
                       exit_code::failure);
  }
  try {
    index::IndexOptions options;
    options.read_only = true;
    out.index = index::Index::open(target.store / "index", options);
  } catch (const index::IndexError& e) {
    throw CommandError(std::string("cannot read the index: ") + e.what(), exit_code::failure);
  }
  return out;
}

std::string key_of(const Target& target, const std::string& argument) {
  if (!target.mountpoint.empty() && !argument.empty() && argument[0] == '/') {
    const std::string prefix = target.mountpoint + "/";
    const std::string c = fsys::path(argument).lexically_normal().string();
    if (c.rfind(prefix, 0) == 0) return c.substr(prefix.size());
  }
  std::string key = argument;
  while (!key.empty() && key.back() == '/') key.pop_back();
  return key;
}

}  // namespace artifactfs::cli
