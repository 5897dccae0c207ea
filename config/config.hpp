// Typed configuration of one artifactfs mount, loaded from YAML and
// overridden from the command line. Every bad value in a file is collected
// and reported together, each naming the file, line and key.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace artifactfs::config {

// A byte count given either absolutely ("100G") or as a percentage of the
// backing filesystem ("80%"); `unlimited` where the key allows it.
struct SizeLimit {
  enum class Kind { unlimited, bytes, percent };
  Kind kind = Kind::unlimited;
  std::uint64_t bytes = 0;  // Kind::bytes
  double percent = 0;       // Kind::percent, 0 < percent <= 100
  // Resolves against a filesystem of `capacity_bytes`; nullopt when unlimited.
  std::optional<std::uint64_t> resolve(std::uint64_t capacity_bytes) const;
  std::string to_string() const;  // "unlimited", "100G", "80%"
};

struct Layout {
  int depth = 1;                   // artifacts are entries exactly this deep (1..8)
  std::vector<std::string> keep;   // fnmatch globs on an entry's name: never an artifact
  // Entries at the artifact depth whose names differ only by one of these
  // suffixes are one artifact (fs/artifact_groups.hpp), e.g. Yocto's sstate
  // ".siginfo" and ".sig" beside "X.tar.zst".
  std::vector<std::string> group_suffixes;
};

struct IndexSettings {
  std::chrono::milliseconds flush_interval{1000};  // bound on lost access times after a crash
  // `stat` of an artifact root shows a new last access once the one the
  // kernel has is this much older (like relatime); 0: after every flush.
  // The index's own order is exact whatever this says.
  std::chrono::milliseconds atime_precision{std::chrono::seconds(60)};
};

// Whether requests come through io_uring rather than /dev/fuse
// (fs/uring_transport.hpp): auto when the kernel offers it.
enum class IoUring { off, automatic, on };

struct FuseSettings {
  int threads = 4;                          // 1: single-threaded loop; N > 1: multi-threaded, up to N workers
  std::chrono::milliseconds entry_timeout{std::chrono::hours(1)};
  std::chrono::milliseconds attr_timeout{std::chrono::hours(1)};
  bool allow_other = true;                  // every user (and NFS export) can read the cache
  int max_open_nodes = 16384;               // backing descriptors of inodes kept open (at most half the process limit)
  IoUring io_uring = IoUring::automatic;
};

struct QuotaSettings {
  SizeLimit max_size;                       // default: unlimited (min-free guards the disk)
  SizeLimit min_free{SizeLimit::Kind::percent, 0, 5.0};
  double low_watermark = 0.9;               // once over, evict down to this fraction of the limit
  std::chrono::milliseconds min_age{std::chrono::minutes(10)};
  std::chrono::milliseconds check_interval{std::chrono::seconds(10)};
  // When nothing more can be evicted: false lets writes go on over the limit
  // (reported), true refuses them with ENOSPC. min-free holds either way.
  bool hard_limit = false;
};

// Who may steer the cache (pin, unpin and the control operations): root,
// the store's owner, and members of this group.
struct ControlSettings {
  std::string group;                // a group name or numeric gid; empty: no group
  std::optional<unsigned> gid;      // `group` resolved when the configuration was loaded
};

// Where a mount serves, for `artifactfs mount -c FILE` without STORE and
// MOUNTPOINT on the command line (a systemd instance or an fstab line name
// only the file). Absolute paths; empty: not given.
struct MountSettings {
  std::string store;
  std::string point;
  // Run as root, the daemon moves into a private mount namespace once it has
  // mounted: read-only but for the store, no /tmp or home directories
  // (fs/confinement.hpp).
  bool confine = true;
};

struct LogSettings {
  std::string level = "info";  // trace, debug, info, warn, error
};

struct Config {
  Layout layout;
  IndexSettings index;
  FuseSettings fuse;
  QuotaSettings quota;
  ControlSettings control;
  MountSettings mount;
  LogSettings log;
};

// Every problem found in one load, one line each:
// "FILE:LINE: KEY: what is wrong (what is expected)".
class ConfigError : public std::runtime_error {
 public:
  explicit ConfigError(std::vector<std::string> problems);
  const std::vector<std::string>& problems() const { return problems_; }

 private:
  std::vector<std::string> problems_;
};

// Defaults, then `file` (if given; it must exist), then each "dotted.key=value"
// override in order (values parsed as YAML scalars or flow sequences, e.g.
// "quota.max-size=10G", "layout.keep=[stats, '*.lock']").
// Throws ConfigError listing every problem.
Config load(const std::optional<std::filesystem::path>& file, const std::vector<std::string>& overrides = {});

// The effective configuration as YAML, in the same form load() accepts.
std::string to_yaml(const Config&);

// Parsers shared with the command line; throw std::invalid_argument with a
// message saying what is accepted.
std::uint64_t parse_size(const std::string& text);                 // 4096, 10K, 1.5G, 2T (powers of 1024)
SizeLimit parse_size_limit(const std::string& text, bool allow_unlimited);
std::chrono::milliseconds parse_duration(const std::string& text); // 500ms, 30s, 10m, 2h, 7d

// Inverse of the parsers, for messages and to_yaml(): the largest unit that
// represents the value exactly ("10G", "1536M", "90s", "250ms").
std::string format_size(std::uint64_t bytes);
std::string format_duration(std::chrono::milliseconds duration);

}  // namespace artifactfs::config
