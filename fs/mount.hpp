// Entry point of the daemon: prepares the store, opens the index, reconciles
// after a crash, mounts, and serves until unmounted or signalled.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"

namespace artifactfs::fs {

struct MountRequest {
  std::filesystem::path store;       // created on first mount
  std::filesystem::path mountpoint;  // must be an existing directory
  config::Config config;
  std::vector<std::string> fuse_options;  // from -o, comma-split
  bool foreground = false;                // -f: do not daemonize
  bool rebuild_index = false;             // move the index aside and rebuild it from the data tree
  // Re-reads the configuration (SIGHUP). Throws config::ConfigError on a bad file.
  std::function<config::Config()> reload;
  std::filesystem::path config_file;  // the file `reload` reads, if any (kept visible when confined)
};

// Returns the process exit status. Problems the user can fix are reported
// on stderr with what was wrong and how to fix it.
int run_mount(const MountRequest& request);

}  // namespace artifactfs::fs
