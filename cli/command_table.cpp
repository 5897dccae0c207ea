// Every command's grammar and help text, in one table: the parser, --help and
// the man pages (help.cpp) are all made from it.
#include "cli/commands.hpp"

namespace artifactfs::cli {

namespace {

const OptionSpec kStore{"store", 0, "STORE", "the cache's store directory, instead of its mountpoint\n(needed when it is not mounted and not in /etc/fstab)"};
const OptionSpec kMount{"mount", 'm', "MOUNT", "the cache's mountpoint (default: the mount a KEY path lies in,\nor the only artifactfs mount)"};
const OptionSpec kJson{"json", 0, "", "print JSON: exact values (bytes, nanoseconds since the epoch)"};
const OptionSpec kBytes{"bytes", 0, "", "print sizes in exact bytes instead of human units"};
const OptionSpec kConfig{"config", 'c', "CONFIG", "YAML configuration file; without it, built-in defaults"};
const OptionSpec kSet{"set", 0, "KEY=VALUE", "override one setting after the file, e.g.\n--set quota.max-size=100G --set layout.keep='[stats, \"*.lock\"]'", true};

const std::string kFinding =
    "The cache is named by its MOUNT (or --store STORE); with neither, the only artifactfs\n"
    "mount on the system is used.";

const std::string kReadOnly =
    "While the daemon runs the answer comes from it over the control channel; when no\n"
    "daemon serves the store, the index is read directly (read-only; root or the store's\n"
    "owner).";

const std::string kOperatorOnly =
    "Acts through the running daemon, so an eviction is the same all-or-nothing step the quota\n"
    "takes and never takes an open artifact. Allowed only to the cache's operators: root, the\n"
    "store's owner and members of control.group.";

const std::string kInspectExit =
    "  0  success\n"
    "  1  the index or the daemon could not be read\n"
    "  2  bad command line, or MOUNT is not an artifactfs mount\n"
    "  3  not allowed (ls, du and log through a daemon are for operators; reading the\n"
    "     index directly needs root or the store's owner)\n";

const std::string kSteerExit =
    "  0  every key was acted on\n"
    "  1  some key was not (not found, in use, pinned), or an error\n"
    "  2  bad command line\n"
    "  3  not allowed: the caller is not an operator\n"
    "  4  no daemon serves the store\n";

std::vector<CommandSpec> make_table() {
  std::vector<CommandSpec> t;
  t.push_back({"mount", {}, "[STORE MOUNTPOINT] [-c CONFIG] [-o OPT[,OPT...]]... [--set KEY=VALUE]... [-f] [--rebuild-index]",
               "serve the cache kept in STORE at MOUNTPOINT, with a quota and least-recently-used expiry",
               "STORE holds the data, the index and the trash; it is created on first mount, mode 0700,\n"
               "and must stay private to the daemon. Without STORE and MOUNTPOINT, mount.store and\n"
               "mount.point of CONFIG name them. Without -f the daemon goes to the background once\n"
               "the mount is live and logs to syslog.\n"
               "\n"
               "SIGHUP makes a mounted daemon re-read CONFIG with the same --set overrides (check the\n"
               "file first with `artifactfs config -c CONFIG`); SIGTERM unmounts cleanly. Started by\n"
               "systemd as Type=notify it reports READY=1 once the mount is live, STATUS= with the\n"
               "usage, RELOADING=1 around a SIGHUP and STOPPING=1 when it stops.",
               {kConfig, {"options", 'o', "OPT[,OPT...]", "FUSE mount options, e.g. -o default_permissions", true},
                kSet, {"foreground", 'f', "", "stay in the foreground (do not daemonize)"},
                {"rebuild-index", 0, "", "set the index aside and rebuild it from the data tree"}},
               0, 2,
               "  0  mounted and later unmounted cleanly\n"
               "  1  the mount failed or the daemon stopped on an error (see the message)\n"
               "  2  bad command line or configuration\n",
               "  artifactfs mount /var/cache/artifactfs /mnt/cache -c /etc/artifactfs/cache.yaml\n",
               run_mount_command});
  t.push_back({"unmount", {"umount"}, "MOUNTPOINT", "unmount MOUNTPOINT (runs fusermount3 -u)",
               "The daemon then flushes its index, marks it clean and exits.", {}, 1, 1,
               "  0  unmounted\n  1  fusermount3 failed or is missing\n  2  bad command line\n",
               "  artifactfs unmount /mnt/cache\n", run_unmount_command});
  t.push_back({"config", {}, "[-c CONFIG] [--set KEY=VALUE]...",
               "check a configuration and print the effective settings as YAML",
               "Every unknown key, wrong type and bad value is reported, each with file, line and key.",
               {kConfig, kSet}, 0, 0, "  0  the configuration is valid\n  2  it is not (every problem listed)\n",
               "  artifactfs config -c /etc/artifactfs/cache.yaml\n", run_config_command});
  t.push_back({"status", {}, "[MOUNT | --store STORE] [--json | --prometheus] [--bytes] [-c CONFIG]",
               "how full the cache is, what the quota is doing, and what cannot be evicted",
               "Shows usage against the effective limit and the free space, the artifact count, the\n"
               "hit rate, evictions and bytes evicted (in total and in the last 24 h), the last access\n"
               "of the least recently used artifact, the bytes no cleanup could take now (pinned,\n"
               "open, opened within quota.min-age), and whether a cleanup is running or the quota is\n"
               "blocked.\n"
               "\n" + kFinding + "\n" + kReadOnly + "\n"
               "Without a daemon the limit is known only from a configuration given with -c/--set.\n"
               "`status` through a daemon is open to every local user.\n"
               "\n"
               "--prometheus prints the same as metrics in the Prometheus text format, for the node\n"
               "exporter's textfile collector (write to a temporary file, then rename it into place).",
               {kStore, kJson, {"prometheus", 0, "", "print Prometheus metrics (text format 0.0.4)"}, kBytes,
                {"config", 'c', "CONFIG", "without a daemon: the configuration whose limit to show"}, kSet},
               0, 1, kInspectExit,
               "  artifactfs status /mnt/cache\n"
               "  artifactfs status --prometheus >/var/lib/node_exporter/artifactfs.prom.$$ &&\n"
               "    mv /var/lib/node_exporter/artifactfs.prom.$$ /var/lib/node_exporter/artifactfs.prom\n",
               run_status_command});
  t.push_back({"ls", {}, "[MOUNT | --store STORE] [--sort lru|size|name|hits] [--limit N] [PREFIX]",
               "one line per artifact: key, size, files, last access, access count, pinned, open",
               "--sort lru (the default) lists the least recently used first: the order in which the\n"
               "quota evicts. size lists the largest first, hits the most used first, name by key.\n"
               "PREFIX keeps the artifacts whose key starts with it (a path under the mountpoint\n"
               "works too).\n"
               "\n" + kFinding + "\n" + kReadOnly + " Without a daemon OPEN shows \"?\".",
               {kStore, {"sort", 0, "ORDER", "lru (default), size, name or hits"},
                {"limit", 0, "N", "at most N artifacts"}, kJson, kBytes},
               0, 2, kInspectExit,
               "  artifactfs ls --sort lru --limit 20       # what goes next\n"
               "  artifactfs ls /mnt/cache --sort size project-a/\n",
               run_ls_command});
  t.push_back({"du", {}, "[MOUNT | --store STORE] [--depth N]",
               "usage, artifacts and hits per namespace at a depth of the key",
               "Groups the artifacts by the first N components of their keys (per project or per tool\n"
               "when several share a cache) and adds up their bytes on disk, artifacts and hits.\n"
               "\n" + kFinding + "\n" + kReadOnly,
               {kStore, {"depth", 0, "N", "components of the key that name a namespace (default 1)"}, kJson, kBytes},
               0, 1, kInspectExit, "  artifactfs du /mnt/cache --depth 1\n", run_du_command});
  t.push_back({"log", {}, "[MOUNT | --store STORE] [--since TIME] [--limit N]",
               "the eviction log: when, key, bytes, last access, age at eviction, and why",
               "The index keeps the last 100,000 evictions (the oldest are dropped). REASON is quota\n"
               "(a cleanup over the limit), make-room (a write ran out of space), evict (artifactfs\n"
               "evict) or cleanup (artifactfs cleanup). AGE is how long the artifact had not been used.\n"
               "\n" + kFinding + "\n" + kReadOnly,
               {kStore,
                {"since", 0, "TIME", "only evictions since TIME: a duration ago (30m, 2h, 7d),\na local time (2026-11-21 or \"2026-11-21 13:00\") or @SECONDS"},
                {"limit", 0, "N", "only the newest N"}, kJson, kBytes},
               0, 1, kInspectExit, "  artifactfs log --since 1d\n", run_log_command});
  t.push_back({"pin", {}, "[-m MOUNT | --store STORE] KEY...", "never evict these artifacts (kept across restarts)",
               "KEY is an artifact's key (its path below the mount root) or its path under the\n"
               "mountpoint. The same as `setfattr -n user.artifactfs.pinned -v 1 MOUNT/KEY`.\n\n" + kOperatorOnly,
               {kMount, kStore, kJson, kBytes}, 1, SIZE_MAX, kSteerExit, "  artifactfs pin base-runtime-2026.10\n",
               run_pin_command});
  t.push_back({"unpin", {}, "[-m MOUNT | --store STORE] KEY...", "let the quota evict these artifacts again",
               "KEY is an artifact's key or its path under the mountpoint.\n\n" + kOperatorOnly,
               {kMount, kStore, kJson, kBytes}, 1, SIZE_MAX, kSteerExit, "  artifactfs unpin base-runtime-2026.10\n",
               run_unpin_command});
  t.push_back({"evict", {}, "[-m MOUNT | --store STORE] KEY...", "evict these artifacts now",
               "Each artifact goes whole, or not at all: one that is open or being written is reported\n"
               "\"in use\" and stays; a pinned one is refused (unpin it first). quota.min-age does not\n"
               "apply: the operator asked for it. Logged with reason \"evict\".\n\n" + kOperatorOnly,
               {kMount, kStore, kJson, kBytes}, 1, SIZE_MAX, kSteerExit, "  artifactfs evict 3f2a9c 77b01e\n",
               run_evict_command});
  t.push_back({"cleanup", {}, "[MOUNT | --store STORE] --to SIZE [--dry-run]",
               "evict least recently used artifacts until the usage is at most SIZE",
               "Evicts in the quota's order with its protections (pinned, open, being written, opened\n"
               "within quota.min-age), logged with reason \"cleanup\". --dry-run lists what would go, in\n"
               "order, with sizes, and evicts nothing.\n\n" + kOperatorOnly,
               {kStore, {"to", 0, "SIZE", "target usage: 4096, 500M, 20G (powers of 1024)"},
                {"dry-run", 'n', "", "list what would be evicted, evict nothing"}, kJson, kBytes},
               0, 1,
               "  0  done (the target may still be out of reach: see the message)\n"
               "  1  an error\n  2  bad command line\n  3  not allowed: the caller is not an operator\n"
               "  4  no daemon serves the store\n",
               "  artifactfs cleanup --to 50G --dry-run\n  artifactfs cleanup /mnt/cache --to 50G\n",
               run_cleanup_command});
  t.push_back({"fsck", {}, "STORE [--repair]", "check a store's index against its data tree, offline",
               "Walks the data tree as a rebuild would and reports every difference: artifacts missing\n"
               "from the index, stale records, usage or inode that differ, store totals. Progress goes\n"
               "to stderr, as a bar on a terminal. The store must not be mounted. --repair rebuilds the\n"
               "index from the data tree when they differ (access history and pins are kept).",
               {{"repair", 0, "", "rebuild the index from the data tree if they differ"}, kJson}, 1, 1,
               "  0  the index agrees with the data tree\n"
               "  1  the check could not run (store in use, unreadable index, ...)\n"
               "  2  bad command line\n  3  not allowed: root or the store's owner only\n"
               "  5  differences found (not repaired)\n  6  differences found and repaired\n",
               "  artifactfs fsck /var/cache/artifactfs\n  artifactfs fsck /var/cache/artifactfs --repair\n",
               run_fsck_command});
  t.push_back({"man", {}, "[COMMAND]", "print a man page (roff) made from the help text",
               "Used by the build to install artifactfs(1) and artifactfs-COMMAND(1).", {}, 0, 1,
               "  0  printed\n  2  no such command\n", "  artifactfs man status | man -l -\n",
               run_man_command});
  return t;
}

}  // namespace

const std::vector<CommandSpec>& command_table() {
  static const std::vector<CommandSpec> table = make_table();
  return table;
}

}  // namespace artifactfs::cli
