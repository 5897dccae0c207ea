// FUSE over io_uring underneath libfuse 3.14 (see uring_transport.hpp for
// the design and the concurrency model).
#include "fs/uring_transport.hpp"

#include <fcntl.h>
#include <liburing.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace artifactfs::fs {

namespace {

// The kernel's ABI for this transport (include/uapi/linux/fuse.h, protocol
// 7.42); Debian 12's kernel headers predate it.
constexpr std::uint64_t kFuseOverIoUring = 1ULL << 41;  // FUSE_INIT flag, in flags2
constexpr std::uint32_t kCmdRegister = 1;
constexpr std::uint32_t kCmdCommitAndFetch = 2;
constexpr std::size_t kInOutHeaderSize = 128;
constexpr std::size_t kOpInOutSize = 128;

struct RingEntryInOut {
  std::uint64_t flags;
  std::uint64_t commit_id;  // the request's unique; echoed in the commit
  std::uint32_t payload_sz;
  std::uint32_t padding;
  std::uint64_t reserved;
};

struct RingRequestHeader {
  char in_out[kInOutHeaderSize];  // fuse_in_header in, fuse_out_header out
  char op_in[kOpInOutSize];       // the operation's own header (fuse_open_in, ...)
  RingEntryInOut ring_ent_in_out;
};

struct RingCommand {  // the SQE's command area
  std::uint64_t flags;
  std::uint64_t commit_id;
  std::uint16_t qid;
  std::uint8_t padding[6];
};

constexpr char kEnableParameter[] = "/sys/module/fuse/parameters/enable_uring";
constexpr unsigned kQueueDepth = 4;  // entries per CPU: one served inline, the rest waiting for workers
// Room before the payload for the request's fuse_in_header and operation
// header, so the request is one contiguous buffer for libfuse. A whole page,
// so the payload is page-aligned: reads into it may be O_DIRECT.
constexpr std::size_t kPrefix = 4096;

// The kernel keeps a queue for every possible CPU (not only the present
// ones) and uses the rings only once every queue has an entry.
int possible_cpus() {
  std::ifstream in("/sys/devices/system/cpu/possible");  // e.g. "0-3" or "0"
  std::string text;
  if (!(in >> text)) return static_cast<int>(std::thread::hardware_concurrency());
  const auto dash = text.find_last_of("-,");
  return std::stoi(dash == std::string::npos ? text : text.substr(dash + 1)) + 1;
}

bool kernel_enabled() {
  std::ifstream in(kEnableParameter);
  char c = 0;
  return in >> c && (c == 'Y' || c == 'y' || c == '1');
}

// Requests served on the ring thread: they touch memory and the inode
// table, not the disk's slow paths. Opens and releases only when read-only
// (a writable release recharges the artifact; O_TRUNC truncates).
bool quick(const fuse_in_header& in, const char* op_in) {
  switch (in.opcode) {
    case FUSE_LOOKUP:
    case FUSE_GETATTR:
    case FUSE_STATFS:
    case FUSE_ACCESS:
    case FUSE_GETXATTR:
    case FUSE_LISTXATTR:
    case FUSE_READLINK:
    case FUSE_FLUSH:
    case FUSE_OPENDIR:
    case FUSE_RELEASEDIR:
      return true;
    case FUSE_OPEN: {
      fuse_open_in open_in;
      std::memcpy(&open_in, op_in, sizeof open_in);
      return (open_in.flags & O_ACCMODE) == O_RDONLY && !(open_in.flags & O_TRUNC);
    }
    case FUSE_RELEASE: {
      fuse_release_in release_in;
      std::memcpy(&release_in, op_in, sizeof release_in);
      return (release_in.flags & O_ACCMODE) == O_RDONLY;
    }
    default:
      return false;
  }
}

}  // namespace

struct UringTransport::Impl {
  struct Queue;

  // One ring entry: the kernel writes a request into header and payload,
  // we write the reply back and commit it.
  struct Entry {
    Queue* queue = nullptr;
    RingRequestHeader* header = nullptr;
    char* buffer = nullptr;  // kPrefix bytes, then the payload
    std::size_t buffer_size = 0;
    iovec iov[2]{};
    std::atomic<std::uint64_t> unique{0};  // of the request being served; 0 when idle
    std::uint64_t commit_id = 0;
    fuse_buf request{};  // the request in /dev/fuse's layout, in front of the payload
    bool registered = false;
    char* payload() const { return buffer + kPrefix; }
  };

  struct Queue {
    unsigned qid = 0;
    io_uring ring{};
    int wake_fd = -1;         // eventfd: a worker has a commit for this ring
    std::mutex mutex;         // guards to_commit
    std::vector<Entry*> to_commit;  // replies made by workers, committed by the ring's thread
    std::vector<std::unique_ptr<Entry>> entries;
    std::thread thread;
    int live_entries = 0;
  };

  fuse_session* session;
  int fuse_fd;
  int worker_count;
  std::size_t payload_size;
  int stop_fd = -1;  // eventfd: every ring polls it; written once at stop
  std::atomic<bool> stopping{false};

  // FUSE_INIT, seen on /dev/fuse.
  std::uint64_t init_unique = 0;
  bool kernel_offers = false;
  std::atomic<bool> started{false};

  std::vector<std::unique_ptr<Queue>> queues;

  std::mutex pool_mutex;
  std::condition_variable pool_ready;
  std::deque<Entry*> pool_queue;
  std::vector<std::thread> workers;

  static thread_local Entry* serving;  // the entry whose request this thread serves
  static thread_local bool ring_thread;  // this thread owns a ring (it submits before it waits)
  // Set once the queues are built: replies made before look at no entry.
  std::atomic<bool> rings_built{false};

  Impl(fuse_session* s, int workers_, std::size_t max_write)
      : session(s), fuse_fd(fuse_session_fd(s)), worker_count(workers_) {
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    // The kernel asks for room for the largest request: max(8 KiB, max_write,
    // max_pages pages), and libfuse sets max_pages from max_write.
    std::size_t need = std::max<std::size_t>(8192, max_write);
    payload_size = (need + page - 1) / page * page;
  }

  // ---- /dev/fuse hooks -----------------------------------------------------

  ssize_t read_dev(int fd, void* buf, size_t len) {
    ssize_t n = ::read(fd, buf, len);
    if (n >= static_cast<ssize_t>(sizeof(fuse_in_header) + sizeof(fuse_init_in)) && init_unique == 0) {
      fuse_in_header in;
      std::memcpy(&in, buf, sizeof in);
      if (in.opcode == FUSE_INIT) {
        fuse_init_in init;
        std::memcpy(&init, static_cast<char*>(buf) + sizeof in, sizeof init);
        std::uint64_t flags = init.flags;
        if (flags & FUSE_INIT_EXT) flags |= static_cast<std::uint64_t>(init.flags2) << 32;
        kernel_offers = (flags & kFuseOverIoUring) != 0;
        init_unique = in.unique;
      }
    }
    return n;
  }

  ssize_t writev_dev(int fd, iovec* iov, int count) {
    fuse_out_header out;
    std::memcpy(&out, iov[0].iov_base, sizeof out);
    if (Entry* entry = entry_for(out.unique)) return commit(*entry, iov, count);
    const bool init_reply = out.unique != 0 && out.unique == init_unique && !started.load();
    if (init_reply && out.error == 0 && kernel_offers && count >= 2 && iov[1].iov_len >= sizeof(fuse_init_out)) {
      fuse_init_out init;
      std::memcpy(&init, iov[1].iov_base, sizeof init);
      init.flags |= FUSE_INIT_EXT;
      init.flags2 |= static_cast<std::uint32_t>(kFuseOverIoUring >> 32);
      std::memcpy(iov[1].iov_base, &init, sizeof init);
    }
    ssize_t n = ::writev(fd, iov, count);
    if (init_reply) {
      started = true;
      if (n < 0) return n;
      if (!kernel_offers) {
        spdlog::warn("io_uring: not offered by the kernel (its fuse module has enable_uring off); requests come "
                     "through /dev/fuse");
      } else {
        start_rings();
      }
    }
    return n;
  }

  // The ring entry a reply belongs to: usually the one this thread serves.
  Entry* entry_for(std::uint64_t unique) {
    if (unique == 0) return nullptr;  // a notification: /dev/fuse only
    if (serving && serving->unique.load(std::memory_order_relaxed) == unique) return serving;
    if (!rings_built.load(std::memory_order_acquire)) return nullptr;
    for (auto& queue : queues) {
      for (auto& entry : queue->entries) {
        if (entry->unique.load(std::memory_order_acquire) == unique) return entry.get();
      }
    }
    return nullptr;
  }

  // ---- rings ---------------------------------------------------------------

  void start_rings() {
    stop_fd = eventfd(0, EFD_CLOEXEC);
    const int cpus = possible_cpus();
    queues.reserve(static_cast<std::size_t>(cpus));
    for (int q = 0; q < cpus; ++q) {
      auto queue = std::make_unique<Queue>();
      queue->qid = static_cast<unsigned>(q);
      for (unsigned i = 0; i < kQueueDepth; ++i) {
        auto entry = std::make_unique<Entry>();
        entry->queue = queue.get();
        entry->buffer_size = kPrefix + payload_size;
        void* header = mmap(nullptr, sizeof(RingRequestHeader), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                            -1, 0);
        void* buffer =
            mmap(nullptr, entry->buffer_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (header == MAP_FAILED || buffer == MAP_FAILED) {
          spdlog::error("io_uring: no memory for the rings; requests come through /dev/fuse");
          return;
        }
        entry->header = static_cast<RingRequestHeader*>(header);
        entry->buffer = static_cast<char*>(buffer);
        entry->iov[0] = {entry->header, sizeof(RingRequestHeader)};
        entry->iov[1] = {entry->payload(), payload_size};
        queue->entries.push_back(std::move(entry));
      }
      queues.push_back(std::move(queue));
    }
    rings_built.store(true, std::memory_order_release);
    for (int i = 0; i < worker_count; ++i) workers.emplace_back([this] { work(); });
    for (auto& queue : queues) {
      Queue* q = queue.get();
      q->thread = std::thread([this, q] { serve(*q); });
    }
    spdlog::info("io_uring: in use: {} queue(s) of {} entries, one thread per CPU, {} worker(s) for blocking requests",
                 queues.size(), kQueueDepth, worker_count);
  }

  static void prepare(io_uring_sqe* sqe, int fd, std::uint32_t cmd, Entry& entry, std::uint64_t commit_id) {
    std::memset(sqe, 0, 128);  // SQE128: the command area is the second half
    sqe->opcode = IORING_OP_URING_CMD;
    sqe->fd = fd;
    sqe->cmd_op = cmd;
    if (cmd == kCmdRegister) {
      sqe->addr = reinterpret_cast<std::uint64_t>(entry.iov);
      sqe->len = 2;
    }
    io_uring_sqe_set_data(sqe, &entry);
    RingCommand command{};
    command.commit_id = commit_id;
    command.qid = static_cast<std::uint16_t>(entry.queue->qid);
    std::memcpy(sqe->cmd, &command, sizeof command);
  }

  // Queues a command on the entry's ring; the ring's thread only (it
  // submits before it waits). The kernel runs the next request's delivery
  // in the submitter's context, so a worker submitting would be interrupted
  // for it: workers hand their commits to the ring's thread instead.
  bool queue_command(Entry& entry, std::uint32_t cmd, std::uint64_t commit_id) {
    Queue& q = *entry.queue;
    io_uring_sqe* sqe = io_uring_get_sqe(&q.ring);
    if (!sqe) {
      io_uring_submit(&q.ring);
      sqe = io_uring_get_sqe(&q.ring);
      if (!sqe) return false;
    }
    prepare(sqe, fuse_fd, cmd, entry, commit_id);
    return true;
  }

  // (ring thread) Wait for the wake eventfd again.
  void arm_wake(Queue& q) {
    io_uring_sqe* sqe = io_uring_get_sqe(&q.ring);
    if (!sqe) {
      io_uring_submit(&q.ring);
      sqe = io_uring_get_sqe(&q.ring);
    }
    io_uring_prep_poll_add(sqe, q.wake_fd, POLLIN);
    io_uring_sqe_set_data(sqe, &q);
  }

  ssize_t commit(Entry& entry, const iovec* iov, int count) {
    ssize_t total = 0;
    std::size_t payload = 0;
    std::memcpy(entry.header->in_out, iov[0].iov_base, sizeof(fuse_out_header));
    total += static_cast<ssize_t>(iov[0].iov_len);
    for (int i = 1; i < count; ++i) {
      if (payload + iov[i].iov_len > payload_size) {
        fuse_out_header out;
        std::memcpy(&out, entry.header->in_out, sizeof out);
        out.error = -EIO;
        std::memcpy(entry.header->in_out, &out, sizeof out);
        payload = 0;
        spdlog::error("io_uring: a reply of more than {} bytes does not fit its ring entry", payload_size);
        break;
      }
      // (a reply made in reply_space() is in place already)
      if (iov[i].iov_base != entry.payload() + payload) {
        std::memcpy(entry.payload() + payload, iov[i].iov_base, iov[i].iov_len);
      }
      payload += iov[i].iov_len;
      total += static_cast<ssize_t>(iov[i].iov_len);
    }
    entry.header->ring_ent_in_out.payload_sz = static_cast<std::uint32_t>(payload);
    entry.unique.store(0, std::memory_order_release);
    Queue& q = *entry.queue;
    if (ring_thread && serving == &entry) {
      if (!queue_command(entry, kCmdCommitAndFetch, entry.commit_id)) {
        errno = EIO;
        return -1;
      }
    } else {
      {
        std::lock_guard lock(q.mutex);
        q.to_commit.push_back(&entry);
      }
      std::uint64_t one = 1;
      (void)!::write(q.wake_fd, &one, sizeof one);
    }
    return total;
  }

  void serve(Queue& q) {
    ring_thread = true;
    pthread_setname_np(pthread_self(), ("afs-ring-" + std::to_string(q.qid)).c_str());
    cpu_set_t cpu;
    CPU_ZERO(&cpu);
    CPU_SET(q.qid, &cpu);
    // A CPU outside the daemon's allowed set (or offline): the queue is
    // still served, from wherever the scheduler puts this thread.
    (void)sched_setaffinity(0, sizeof cpu, &cpu);

    io_uring_params params{};
    params.flags = IORING_SETUP_SQE128 | IORING_SETUP_CQSIZE;
    params.cq_entries = 2 * (kQueueDepth + 2);
    q.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (int rc = q.wake_fd < 0 ? -errno : io_uring_queue_init_params(kQueueDepth + 2, &q.ring, &params); rc != 0) {
      spdlog::error("io_uring: queue {} cannot be set up: {}; its CPU's requests wait for /dev/fuse", q.qid,
                    std::strerror(-rc));
      return;
    }
    io_uring_sqe* stop_sqe = io_uring_get_sqe(&q.ring);
    io_uring_prep_poll_add(stop_sqe, stop_fd, POLLIN);
    io_uring_sqe_set_data(stop_sqe, nullptr);
    arm_wake(q);
    for (auto& entry : q.entries) queue_command(*entry, kCmdRegister, 0);
    q.live_entries = static_cast<int>(q.entries.size());

    bool stop = false;
    while (!stop && q.live_entries > 0) {
      int rc = io_uring_submit_and_wait(&q.ring, 1);
      if (rc == -EINTR) continue;
      if (rc < 0) {
        spdlog::error("io_uring: queue {} failed: {}", q.qid, std::strerror(-rc));
        break;
      }
      io_uring_cqe* cqe = nullptr;
      unsigned head;
      unsigned seen = 0;
      io_uring_for_each_cqe(&q.ring, head, cqe) {
        ++seen;
        void* data = io_uring_cqe_get_data(cqe);
        if (!data) {  // the stop eventfd
          stop = true;
          continue;
        }
        if (data == &q) {  // workers' replies
          std::uint64_t count;
          (void)!::read(q.wake_fd, &count, sizeof count);
          std::vector<Entry*> ready;
          {
            std::lock_guard lock(q.mutex);
            ready.swap(q.to_commit);
          }
          for (Entry* entry : ready) queue_command(*entry, kCmdCommitAndFetch, entry->commit_id);
          arm_wake(q);
          continue;
        }
        auto* entry = static_cast<Entry*>(data);
        if (cqe->res == 0) {
          entry->registered = true;
          receive(*entry);
        } else if (cqe->res == -EAGAIN || cqe->res == -EINTR) {
          // Registered before the kernel finished FUSE_INIT: again.
          queue_command(*entry, entry->registered ? kCmdCommitAndFetch : kCmdRegister, entry->commit_id);
        } else {
          if (cqe->res != -ENOTCONN && !stopping) {
            spdlog::warn("io_uring: queue {} entry ended: {}", q.qid, std::strerror(-cqe->res));
          }
          --q.live_entries;
        }
      }
      io_uring_cq_advance(&q.ring, seen);
    }
    // Tear the ring down here: its commands were submitted by this thread.
    io_uring_queue_exit(&q.ring);
  }

  // A request arrived in `entry`: rebuild /dev/fuse's layout in front of
  // the payload and serve it here or on a worker.
  void receive(Entry& entry) {
    fuse_in_header in;
    std::memcpy(&in, entry.header->in_out, sizeof in);
    const RingEntryInOut& ring_in_out = entry.header->ring_ent_in_out;
    const std::size_t payload = ring_in_out.payload_sz;
    const std::size_t op_size = in.len - sizeof in - payload;
    entry.commit_id = ring_in_out.commit_id;
    if (in.len < sizeof in + payload || op_size > kOpInOutSize || payload > payload_size) {
      spdlog::error("io_uring: malformed request (opcode {}, length {}, payload {}); answered EIO", in.opcode, in.len,
                    payload);
      fuse_out_header out{sizeof(fuse_out_header), -EIO, in.unique};
      iovec reply{&out, sizeof out};
      serving = &entry;
      commit(entry, &reply, 1);
      serving = nullptr;
      return;
    }
    char* start = entry.payload() - op_size - sizeof in;
    std::memcpy(start, &in, sizeof in);
    std::memcpy(start + sizeof in, entry.header->op_in, op_size);
    entry.request.mem = start;
    entry.request.size = in.len;
    entry.unique.store(in.unique, std::memory_order_release);
    if (quick(in, entry.header->op_in)) {
      process(entry);
    } else {
      {
        std::lock_guard lock(pool_mutex);
        pool_queue.push_back(&entry);
      }
      pool_ready.notify_one();
    }
  }

  void process(Entry& entry) {
    serving = &entry;
    fuse_session_process_buf(session, &entry.request);
    serving = nullptr;
  }

  void work() {
    pthread_setname_np(pthread_self(), "afs-ring-work");
    for (;;) {
      Entry* entry;
      {
        std::unique_lock lock(pool_mutex);
        pool_ready.wait(lock, [&] { return stopping || !pool_queue.empty(); });
        if (pool_queue.empty()) return;
        entry = pool_queue.front();
        pool_queue.pop_front();
      }
      process(*entry);
    }
  }

  void stop() {
    if (stopping.exchange(true)) return;
    if (stop_fd >= 0) {
      std::uint64_t one = 1;
      (void)!::write(stop_fd, &one, sizeof one);
    }
    pool_ready.notify_all();
    for (auto& worker : workers) worker.join();
    for (auto& queue : queues) {
      if (queue->thread.joinable()) queue->thread.join();
    }
    for (auto& queue : queues) {
      for (auto& entry : queue->entries) {
        if (entry->header) munmap(entry->header, sizeof(RingRequestHeader));
        if (entry->buffer) munmap(entry->buffer, entry->buffer_size);
      }
    }
    for (auto& queue : queues) {
      if (queue->wake_fd >= 0) close(queue->wake_fd);
    }
    if (stop_fd >= 0) close(stop_fd);
    stop_fd = -1;
  }
};

thread_local UringTransport::Impl::Entry* UringTransport::Impl::serving = nullptr;
thread_local bool UringTransport::Impl::ring_thread = false;

namespace {

// libfuse's hooks carry the session's userdata (the Filesystem), so the
// transport of the process's one session is found here.
std::atomic<UringTransport::Impl*> active_transport{nullptr};

ssize_t hook_read(int fd, void* buf, size_t len, void*) { return active_transport.load()->read_dev(fd, buf, len); }

ssize_t hook_writev(int fd, iovec* iov, int count, void*) {
  return active_transport.load()->writev_dev(fd, iov, count);
}

}  // namespace

// Whether this process may make a ring of the kind the transport needs: a
// seccomp filter (systemd's SystemCallFilter=) or kernel.io_uring_disabled
// can forbid it.
std::string ring_refused() {
  io_uring ring{};
  io_uring_params params{};
  params.flags = IORING_SETUP_SQE128;
  if (int rc = io_uring_queue_init_params(2, &ring, &params); rc != 0) return std::strerror(-rc);
  io_uring_queue_exit(&ring);
  return {};
}

bool UringTransport::wanted(config::IoUring mode) {
  if (mode == config::IoUring::off) return false;
  if (!kernel_enabled()) {
    if (mode == config::IoUring::on) {
      throw std::runtime_error(
          std::string("fuse.io-uring is on, but the kernel's FUSE over io_uring is ") +
          (access(kEnableParameter, F_OK) == 0 ? "disabled" : "missing (it needs Linux 6.14 or later)") +
          ": enable it with `echo Y > " + kEnableParameter +
          "` (or boot with fuse.enable_uring=1), or set fuse.io-uring: auto");
    }
    return false;
  }
  if (std::string why = ring_refused(); !why.empty()) {
    const std::string what = "this process cannot create an io_uring (" + why +
                             "; a seccomp filter such as systemd's SystemCallFilter= must allow io_uring_setup, "
                             "io_uring_enter and io_uring_register, and sysctl kernel.io_uring_disabled must be 0)";
    if (mode == config::IoUring::on) throw std::runtime_error("fuse.io-uring is on, but " + what);
    spdlog::warn("requests come through /dev/fuse: {}", what);
    return false;
  }
  return true;
}

UringTransport::UringTransport(fuse_session* session, int workers, std::size_t max_write)
    : impl_(std::make_unique<Impl>(session, workers, max_write)) {
  active_transport = impl_.get();
  fuse_custom_io io{};
  io.read = hook_read;
  io.writev = hook_writev;
  if (int rc = fuse_session_custom_io(session, &io, fuse_session_fd(session)); rc != 0) {
    active_transport = nullptr;
    throw std::runtime_error(std::string("cannot install the io_uring transport: ") + std::strerror(-rc));
  }
}

UringTransport::~UringTransport() { stop(); }

void UringTransport::stop() { impl_->stop(); }


char* UringTransport::reply_space(std::size_t size) {
  Impl::Entry* entry = Impl::serving;
  if (!entry || size > entry->buffer_size - kPrefix) return nullptr;
  return entry->payload();
}

}  // namespace artifactfs::fs
