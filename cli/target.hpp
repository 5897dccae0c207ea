// Which cache a command is about, and how to ask it: through the running
// daemon's control channel, or, when no daemon serves the store, by opening
// its index read-only.
//
// A cache is named by its mountpoint (found in /proc/self/mountinfo, whose
// source field is "artifactfs:STORE", or in /etc/fstab when not mounted) or
// by --store STORE; with neither, the only artifactfs mount there is.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "cli/args.hpp"
#include "control/channel.hpp"
#include "index/index.hpp"

namespace artifactfs::cli {

// A problem a command reports and exits with `status`.
class CommandError : public std::runtime_error {
 public:
  CommandError(const std::string& what, int status) : std::runtime_error(what), status(status) {}
  int status;
};

struct Target {
  std::filesystem::path store;
  std::string mountpoint;  // empty if not mounted
};

// From --store, or a MOUNT argument (`mount_argument`, may be empty), or the
// only mount there is. Throws CommandError.
Target resolve_target(const ParsedArgs& args, const std::string& mount_argument);

// The artifactfs mountpoint `path` lies in ("" if none).
std::string mount_containing(const std::string& path);

// Whether `path` is the mountpoint of an artifactfs mount.
bool is_artifactfs_mount(const std::string& path);

// Asks the daemon; nullopt if none listens. An error answer becomes a
// CommandError with the matching exit status.
std::optional<nlohmann::json> ask_daemon(const Target& target, const nlohmann::json& request,
                                         const std::function<void(const nlohmann::json&)>& on_item = {});

// The store's index opened read-only while holding the store's lock shared
// (so no daemon starts meanwhile). Throws CommandError if a daemon holds
// the store (then it should have answered) or the index cannot be read.
struct OfflineIndex {
  std::unique_ptr<index::Index> index;
  int lock_fd = -1;
  OfflineIndex() = default;
  OfflineIndex(OfflineIndex&& o) noexcept;
  OfflineIndex& operator=(OfflineIndex&&) = delete;
  ~OfflineIndex();
};
OfflineIndex open_offline(const Target& target);

// Keys as the index names them: a path under the mountpoint loses it.
std::string key_of(const Target& target, const std::string& argument);

}  // namespace artifactfs::cli
