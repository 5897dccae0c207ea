// The daemon's life: prepare the store and mountpoint, open (and if needed
// reconcile) the index, mount, serve, and shut down cleanly.
//
// CONCURRENCY MODEL
// Without -f the process forks first of all (daemonize.hpp): no thread and
// no LMDB environment may exist before that. Threads: the FUSE loop (one, or a pool), the index FlushThread, the Trash
// deleter, the Notifier, the quota thread, the control channel's thread
// (control/channel.hpp), and a signal thread that owns SIGHUP (blocked in
// every other thread, so configuration reloads never run inside a signal
// handler) and sends the service manager a STATUS= line now and then; with
// io_uring, a ring thread per CPU and its workers (uring_transport.hpp),
// started once the kernel has accepted FUSE_INIT and ended after unmount.
// Shutdown order is the reverse of start-up: the loop ends (unmount or
// SIGTERM/SIGINT), then the control channel, the quota thread, the
// notifier, the flush thread (one last flush), the trash deleter, and
// finally the index is marked clean.
#include "fs/mount.hpp"

#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <signal.h>
#include <sys/resource.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <limits>
#include <thread>

#include "control/channel.hpp"
#include "fs/confinement.hpp"
#include "fs/control_service.hpp"
#include "fs/credentials.hpp"
#include "fs/daemonize.hpp"
#include "fs/filesystem.hpp"
#include "fs/fuse_ops.hpp"
#include "fs/group_eviction.hpp"
#include "fs/notifier.hpp"
#include "fs/reconcile.hpp"
#include "fs/service_notify.hpp"
#include "fs/recover_changed.hpp"
#include "fs/store.hpp"
#include "fs/trash.hpp"
#include "fs/uring_transport.hpp"
#include "index/index.hpp"
#include "index/node_table.hpp"
#include "quota/quota_manager.hpp"

namespace artifactfs::fs {

namespace {

void set_log_level(const std::string& level) { spdlog::set_level(spdlog::level::from_str(level)); }

void log_to_stderr(const std::string& level) {
  auto logger = spdlog::stderr_logger_mt("artifactfs");
  logger->set_pattern("artifactfs: %l: %v");
  spdlog::set_default_logger(logger);
  set_log_level(level);
}

void log_to_syslog() {
  auto logger = spdlog::syslog_logger_mt("artifactfs-syslog", "artifactfs", LOG_PID, LOG_DAEMON);
  logger->set_pattern("%l: %v");
  auto level = spdlog::default_logger()->level();
  spdlog::set_default_logger(logger);
  spdlog::set_level(level);
}

// Descriptors of open files and directories come on top of the bounded
// cache of inode descriptors (inode.hpp): take as many as the system allows.
rlim_t raise_descriptor_limit() {
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return 0;
  rlim_t wanted = 1 << 20;
  if (std::FILE* f = std::fopen("/proc/sys/fs/nr_open", "r")) {
    unsigned long long nr_open = 0;
    if (std::fscanf(f, "%llu", &nr_open) == 1 && nr_open > 0) wanted = static_cast<rlim_t>(nr_open);
    std::fclose(f);
  }
  struct rlimit raised = {wanted, wanted};
  if (limit.rlim_max < wanted && setrlimit(RLIMIT_NOFILE, &raised) == 0) return wanted;  // CAP_SYS_RESOURCE
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  getrlimit(RLIMIT_NOFILE, &limit);
  return limit.rlim_cur;
}

int open_dir(const std::filesystem::path& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw UserError("cannot open " + dir.string() + ": " + std::strerror(errno));
  return fd;
}

std::string fuse_option_string(const MountRequest& request) {
  std::string opts = "fsname=artifactfs:" + request.store.string() + ",subtype=artifactfs,default_permissions";
  if (request.config.fuse.allow_other) opts += ",allow_other";
  for (const auto& opt : request.fuse_options) opts += "," + opt;
  return opts;
}

// Reloads the configuration on SIGHUP until stopped; calls `on_tick` every
// kTickInterval.
class SignalThread {
 public:
  static constexpr std::chrono::seconds kTickInterval{10};
  SignalThread(std::function<void()> on_hangup, std::function<void()> on_tick)
      : on_hangup_(std::move(on_hangup)), on_tick_(std::move(on_tick)) {
    thread_ = std::thread([this] { run(); });
  }
  ~SignalThread() {
    stop_ = true;
    thread_.join();
  }

 private:
  void run() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    timespec poll{0, 200'000'000};
    auto next_tick = std::chrono::steady_clock::now() + kTickInterval;
    while (!stop_) {
      if (sigtimedwait(&set, nullptr, &poll) == SIGHUP) on_hangup_();
      if (std::chrono::steady_clock::now() >= next_tick) {
        next_tick += kTickInterval;
        on_tick_();
      }
    }
  }
  std::function<void()> on_hangup_;
  std::function<void()> on_tick_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace

// The one-line state for the service manager (systemctl status).
std::string service_status(index::Index& index, quota::QuotaManager& quota) {
  const quota::QuotaManager::State q = quota.state();
  const index::Totals totals = index.totals();
  std::string text = "serving " + std::to_string(totals.artifact_count) + " artifacts, " +
                     config::format_size(static_cast<std::uint64_t>(std::max<std::int64_t>(0, totals.usage.disk_bytes))) +
                     "B used";
  if (q.limit != std::numeric_limits<std::uint64_t>::max()) text += " of " + config::format_size(q.limit) + "B";
  if (q.blocked) text += "; quota blocked (everything left is pinned, open or too young)";
  if (q.cleanup_running) text += "; cleaning up";
  return text;
}

// Confines the daemon once it has mounted (confinement.hpp). Only root can
// and needs to; a failure leaves the daemon unconfined, with a warning that
// says why and how to silence it.
std::optional<Confinement> confine(const MountRequest& request) {
  if (!request.config.mount.confine || geteuid() != 0) return std::nullopt;
  ConfinementPlan plan{request.store, request.mountpoint, {}};
  if (!request.config_file.empty()) plan.keep_visible.push_back(request.config_file);
  try {
    Confinement confinement = Confinement::enter(plan);
    spdlog::info("confined: a private mount namespace, read-only but for {}; hidden: {}", request.store.string(),
                 confinement.hidden());
    return confinement;
  } catch (const ConfinementError& e) {
    spdlog::warn("running unconfined: {} (mount.confine: false turns confinement off)", e.what());
    return std::nullopt;
  }
}

int run_mount(const MountRequest& request) {
  const config::Config& config = request.config;
  log_to_stderr(config.log.level);
  // Every thread started from here on inherits a blocked SIGHUP.
  sigset_t hup;
  sigemptyset(&hup);
  sigaddset(&hup, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &hup, nullptr);

  const rlim_t descriptors = raise_descriptor_limit();
  std::optional<Background> background;
  if (!request.foreground) background.emplace(Background::fork_and_wait());
  try {
    prepare_mountpoint(request.mountpoint, request.store);
    Store store(request.store);

    bool rebuild = request.rebuild_index;
    if (rebuild) {
      auto aside = store.set_index_aside();
      spdlog::warn("set the old index aside as {}; rebuilding it from the data tree", aside.string());
    }
    std::unique_ptr<index::Index> index;
    try {
      index = index::Index::open(store.index_dir());
    } catch (const index::IndexCorrupt& e) {
      throw UserError("the index in " + store.index_dir().string() + " cannot be used: " + e.what() +
                      ". The data tree is intact; mount again with --rebuild-index to set the index aside and "
                      "rebuild it from the data tree.");
    } catch (const index::IndexError& e) {
      throw UserError(std::string("cannot open the index: ") + e.what());
    }

    int data_fd = open_dir(store.data_dir());
    {
      // Evictions of artifacts of several entries that a killed daemon left
      // half-made are finished first: the recovery then finds none of their
      // entries (group_eviction.hpp).
      int staging_fd = open_dir(store.evicting_dir());
      int trash_fd = open_dir(store.trash_dir());
      finish_group_evictions(staging_fd, data_fd, trash_fd);
      close(trash_fd);
      close(staging_fd);
    }
    // A new index has no usage at all, not even the data root's: count the
    // tree once (instant when it is empty, and needed if it is not).
    bool fresh = index->totals().usage == index::Usage{};
    const bool layout_changed = store.layout_changed(config.layout);
    std::string unclean = "the last shutdown was not clean";
    const char* reason = rebuild                                 ? "--rebuild-index"
                         : layout_changed                        ? "the layout changed"
                         : fresh                                 ? "new index"
                         : !index->previous_shutdown_clean()     ? unclean.c_str()
                                                                 : nullptr;
    // After a crash of the daemon alone (kill -9, OOM) the index says what
    // changed since its last flush: re-walk only that (recover_changed.hpp).
    // Everything else (a power loss, an index that does not keep the changed
    // set, a layout change, --rebuild-index) walks the whole tree.
    if (reason == unclean.c_str()) {
      RecoverySummary recovered;
      try {
        recovered = recover_changed(data_fd, config.layout, *index);
      } catch (const index::IndexError& e) {
        // Nothing was committed (one write transaction): walk everything.
        recovered.why_not = std::string("the recovery of what changed failed: ") + e.what();
      }
      if (recovered.done) {
        reason = nullptr;
      } else {
        unclean += "; " + recovered.why_not;
        reason = unclean.c_str();
      }
    }
    if (reason) reconcile(data_fd, config.layout, *index, reason);
    store.record_layout(config.layout);

    Trash trash(open_dir(store.trash_dir()), *index);
    Notifier notifier;
    // The inode cache may use half the descriptors: open files, directory
    // handles, the index and libfuse need the rest.
    std::size_t max_open_nodes = static_cast<std::size_t>(config.fuse.max_open_nodes);
    if (descriptors > 0 && max_open_nodes > descriptors / 2) {
      spdlog::warn("fuse.max-open-nodes {} is more than half the descriptor limit {}; using {}", max_open_nodes,
                   descriptors, descriptors / 2);
      max_open_nodes = descriptors / 2;
    }
    std::unique_ptr<index::NodeTable> nodes;
    try {
      nodes = index::NodeTable::open(store.index_dir() / "nodes");
    } catch (const index::IndexError& e) {
      throw UserError(std::string("cannot open the node table: ") + e.what() +
                      " (it only serves NFS file handles across restarts: move " +
                      (store.index_dir() / "nodes").string() + " aside and mount again)");
    }
    Filesystem filesystem(data_fd, trash, notifier, *index, config, max_open_nodes);
    filesystem.inodes().set_node_table(nodes.get());
    trash.set_node_table(nodes.get());
    quota::QuotaManager quota(*index, filesystem, config.quota);
    filesystem.set_quota(&quota);
    filesystem.set_status_provider([&quota] { return quota.status(); });

    // From here on the daemon creates nothing with its own umask: every new
    // entry is made with the caller's credentials and mode (credentials.hpp).
    init_credentials();
    bool use_uring;
    try {
      use_uring = UringTransport::wanted(config.fuse.io_uring);
    } catch (const std::runtime_error& e) {
      throw UserError(e.what());
    }
    std::string opts = fuse_option_string(request);
    const char* argv[] = {"artifactfs", "-o", opts.c_str()};
    fuse_args args = FUSE_ARGS_INIT(3, const_cast<char**>(argv));
    fuse_session* session = fuse_session_new(&args, &operations(), sizeof(fuse_lowlevel_ops), &filesystem);
    if (!session) throw UserError("FUSE rejected the mount options: " + opts + " (check the -o options)");
    std::unique_ptr<fuse_session, void (*)(fuse_session*)> session_guard(session, fuse_session_destroy);
    if (fuse_set_signal_handlers(session) != 0) throw UserError("cannot install signal handlers");
    if (fuse_session_mount(session, request.mountpoint.c_str()) != 0) {
      fuse_remove_signal_handlers(session);
      throw UserError("mounting on " + request.mountpoint.string() +
                      " failed (see the fuse message above; is /dev/fuse available, and for allow_other as "
                      "non-root, is user_allow_other set in /etc/fuse.conf?)");
    }
    store.record_owner(request.mountpoint);
    // Hooks only: its threads start once the kernel has accepted FUSE_INIT.
    std::optional<UringTransport> uring;
    if (use_uring) uring.emplace(session, config.fuse.threads, kMaxWrite);
    // Still one thread: the notifier's starts with its session.
    std::optional<Confinement> confinement = confine(request);
    notifier.set_session(session);
    if (background) {
      log_to_syslog();
      background->ready();
    }

    trash.start();
    quota.start();
    ControlService control_service(filesystem, *index, quota, config.control.gid, store.root(), request.mountpoint);
    std::optional<control::Server> control_server;
    try {
      control_server.emplace(store.root(), [&](const nlohmann::json& req, const control::Peer& peer,
                                               control::Responder& out) { control_service.handle(req, peer, out); });
    } catch (const control::ChannelError& e) {
      // The cache works without it; only `artifactfs pin/evict/...` do not.
      spdlog::error("{}; the control commands will not reach this daemon", e.what());
    }
    index::Totals totals = index->totals();
    spdlog::info("mounted {} on {}: {} artifacts, {} bytes on disk; layout depth {}, {} thread(s), quota {}",
                 store.root().string(), request.mountpoint.string(), totals.artifact_count, totals.usage.disk_bytes,
                 config.layout.depth, config.fuse.threads, quota.describe());
    spdlog::info("keeping at most {} inode descriptors (limit {}); inodes without one are reopened {}",
                 filesystem.inodes().max_open_descriptors(), descriptors,
                 filesystem.inodes().reopens_by_handle()
                     ? "by file handle"
                     : "through their parent directories (no CAP_DAC_READ_SEARCH for file handles)");
    int rc;
    {
      index::FlushThread flusher(*index, config.index.flush_interval,
                                 [&](const std::vector<index::ArtifactId>& ids) {
                                   filesystem.access_times_changed(ids);
                                   try {
                                     nodes->flush();  // same interval, its own environment
                                   } catch (const std::exception& e) {
                                     spdlog::error("node table: flush failed, retrying next interval: {}", e.what());
                                   }
                                 });
      service::ready(service_status(*index, quota));
      SignalThread signals(
          [&] {
            if (!request.reload) return;
            service::reloading();
            try {
              config::Config fresh = request.reload();
              set_log_level(fresh.log.level);
              quota.update(fresh.quota);
              spdlog::info("configuration reloaded: quota {}", quota.describe());
            } catch (const std::exception& e) {
              spdlog::error("configuration not reloaded, keeping the current settings: {}", e.what());
            }
            service::ready(service_status(*index, quota));
          },
          [&] { service::status(service_status(*index, quota)); });
      if (config.fuse.threads <= 1) {
        rc = fuse_session_loop(session);
      } else {
        fuse_loop_config* loop = fuse_loop_cfg_create();
        fuse_loop_cfg_set_max_threads(loop, static_cast<unsigned>(config.fuse.threads));
        fuse_loop_cfg_set_idle_threads(loop, static_cast<unsigned>(config.fuse.threads));
        rc = fuse_session_loop_mt(session, loop);
        fuse_loop_cfg_destroy(loop);
      }
      service::stopping();
      control_server.reset();
      quota.stop();
      notifier.stop();
      // Stopped by a signal: the host's mount goes too. Unmounted from
      // outside (rc 0): it is gone already, and the mountpoint may already
      // hold a new mount that must not be touched.
      const bool signalled = rc == SIGTERM || rc == SIGINT;
      std::string why;
      if (confinement && signalled && !confinement->unmount_host(why)) {
        spdlog::warn("could not unmount {}: {}; `fusermount3 -u {}` does", request.mountpoint.string(), why,
                     request.mountpoint.string());
      }
      fuse_session_unmount(session);
      if (uring) uring->stop();  // its rings end with the mount
    }
    trash.stop();
    fuse_remove_signal_handlers(session);
    index->close_clean();
    spdlog::info("unmounted {}; index closed cleanly", request.mountpoint.string());
    // The loop reports the signal that ended it; SIGTERM and SIGINT are a
    // normal stop.
    return (rc == 0 || rc == SIGTERM || rc == SIGINT) ? 0 : 1;
  } catch (const UserError& e) {
    spdlog::error("{}", e.what());
    return 1;
  } catch (const std::exception& e) {
    spdlog::critical("{}", e.what());
    return 1;
  }
}

}  // namespace artifactfs::fs
