#include "control/channel.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <thread>
#include <typeinfo>

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59
#endif

namespace artifactfs::control {

namespace {

constexpr std::size_t kMaxRequest = 1 << 20;
constexpr int kTimeoutSeconds = 10;

std::string errno_text(int err) { return std::strerror(err); }

socklen_t abstract_address(const std::string& name, sockaddr_un& addr) {
  std::memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  const std::size_t n = std::min(name.size(), sizeof addr.sun_path - 1);
  std::memcpy(addr.sun_path + 1, name.data(), n);
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + n);
}

void set_timeouts(int fd) {
  timeval tv{kTimeoutSeconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

std::optional<Peer> peer_of(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return std::nullopt;
  Peer peer{cred.pid, cred.uid, cred.gid, {}};
  std::vector<gid_t> groups(64);
  for (;;) {
    socklen_t size = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &size) == 0) {
      groups.resize(size / sizeof(gid_t));
      break;
    }
    if (errno != ERANGE) return std::nullopt;  // never guess someone's groups
    groups.resize(size / sizeof(gid_t) + 1);
  }
  peer.groups = std::move(groups);
  return peer;
}

// Reads up to the first newline. False on timeout, EOF or an oversized line.
bool read_line(int fd, std::string& line) {
  char buf[4096];
  for (;;) {
    if (auto nl = line.find('\n'); nl != std::string::npos) {
      line.resize(nl);
      return true;
    }
    if (line.size() > kMaxRequest) return false;
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    line.append(buf, static_cast<std::size_t>(n));
  }
}

bool send_all(int fd, const std::string& text) {
  std::size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::send(fd, text.data() + done, text.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

bool is_operator(uid_t uid, gid_t gid, const std::vector<gid_t>& groups, uid_t owner,
                 std::optional<unsigned> control_gid) {
  if (uid == 0 || uid == owner) return true;
  if (!control_gid) return false;
  const gid_t group = static_cast<gid_t>(*control_gid);
  return gid == group || std::find(groups.begin(), groups.end(), group) != groups.end();
}

std::string socket_name(const std::filesystem::path& store) {
  struct stat st;
  if (::stat(store.c_str(), &st) != 0) {
    throw ChannelError("cannot find store " + store.string() + ": " + errno_text(errno));
  }
  char name[64];
  std::snprintf(name, sizeof name, "artifactfs/%llx:%llu", static_cast<unsigned long long>(st.st_dev),
                static_cast<unsigned long long>(st.st_ino));
  return name;
}

// --- Responder -------------------------------------------------------------------

void Responder::send(const nlohmann::json& line) {
  if (broken_) return;
  // Invalid UTF-8 in a key (names are bytes) is replaced, never fatal.
  std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  text.push_back('\n');
  if (!send_all(fd_, text)) broken_ = true;
}

void Responder::item(const nlohmann::json& item) { send({{"item", item}}); }

void Responder::result(const nlohmann::json& result) {
  answered_ = true;
  send({{"ok", true}, {"result", result}});
}

void Responder::error(const std::string& message, const std::string& code) {
  answered_ = true;
  send({{"ok", false}, {"error", message}, {"code", code}});
}

// --- Server ------------------------------------------------------------------------

struct Server::Impl {
  int listen_fd = -1;
  int stop_fd = -1;
  Handler handler;
  std::thread thread;

  void serve(int fd) {
    set_timeouts(fd);
    Responder out(fd);
    std::string line;
    auto peer = peer_of(fd);
    if (!peer) {
      out.error("cannot tell who is asking (SO_PEERCRED failed)", "permission");
      return;
    }
    if (!read_line(fd, line)) return;  // gone, too slow, or too long: nothing to answer
    nlohmann::json request;
    try {
      request = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      out.error("the request is not JSON", "usage");
      return;
    }
    try {
      handler(request, *peer, out);
      if (!out.answered()) out.error("the daemon did not answer this request", "failed");
    } catch (const std::exception& e) {
      spdlog::warn("control: request from uid {} failed: {} ({})", peer->uid, e.what(), typeid(e).name());
      if (!out.answered()) out.error(e.what(), "failed");
    }
  }

  void run() {
    pollfd fds[2] = {{listen_fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    for (;;) {
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        spdlog::error("control channel: poll failed: {}", errno_text(errno));
        return;
      }
      if (fds[1].revents) return;
      if (!(fds[0].revents & POLLIN)) continue;
      int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      serve(fd);
      ::close(fd);
    }
  }
};

Server::Server(const std::filesystem::path& store, Handler handler) : impl_(std::make_unique<Impl>()) {
  impl_->handler = std::move(handler);
  const std::string name = socket_name(store);
  impl_->listen_fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (impl_->listen_fd < 0) throw ChannelError("cannot create the control socket: " + errno_text(errno));
  sockaddr_un addr;
  socklen_t len = abstract_address(name, addr);
  if (::bind(impl_->listen_fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(impl_->listen_fd, 16) != 0) {
    const int err = errno;
    ::close(impl_->listen_fd);
    throw ChannelError("cannot listen on the control socket @" + name + ": " + errno_text(err) +
                       (err == EADDRINUSE ? " (another process holds the name: find it with `ss -xlp | grep " + name +
                                                "`)"
                                          : ""));
  }
  impl_->stop_fd = ::eventfd(0, EFD_CLOEXEC);
  if (impl_->stop_fd < 0) {
    ::close(impl_->listen_fd);
    throw ChannelError("cannot create an eventfd: " + errno_text(errno));
  }
  impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
  pthread_setname_np(impl_->thread.native_handle(), "afs-control");
}

Server::~Server() {
  std::uint64_t one = 1;
  if (::write(impl_->stop_fd, &one, sizeof one) < 0) { /* the thread then ends with the process */ }
  if (impl_->thread.joinable()) impl_->thread.join();
  ::close(impl_->listen_fd);
  ::close(impl_->stop_fd);
}

// --- client --------------------------------------------------------------------------

std::optional<Reply> call(const std::filesystem::path& store, const nlohmann::json& request,
                          const std::function<void(const nlohmann::json&)>& on_item) {
  const std::string name = socket_name(store);
  struct stat store_st;
  if (::stat(store.c_str(), &store_st) != 0) throw ChannelError("cannot stat " + store.string());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw ChannelError("cannot create a socket: " + errno_text(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  sockaddr_un addr;
  socklen_t len = abstract_address(name, addr);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    if (errno == ECONNREFUSED || errno == ENOENT) return std::nullopt;
    throw ChannelError("cannot connect to the daemon of " + store.string() + ": " + errno_text(errno));
  }
  set_timeouts(fd);
  ucred server{};
  socklen_t cred_len = sizeof server;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &server, &cred_len) != 0) {
    throw ChannelError("cannot tell who serves the control socket: " + errno_text(errno));
  }
  if (server.uid != 0 && server.uid != store_st.st_uid) {
    throw ChannelError("the control socket of " + store.string() + " is held by pid " + std::to_string(server.pid) +
                       " of uid " + std::to_string(server.uid) + ", neither root nor the store's owner (uid " +
                       std::to_string(store_st.st_uid) + "); not talking to it");
  }
  // The answer to a cleanup comes when it is done: no receive timeout.
  timeval none{0, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof none);
  if (!send_all(fd, request.dump() + "\n")) throw ChannelError("the daemon closed the control socket");
  std::string pending;
  char buf[65536];
  for (;;) {
    std::size_t nl;
    while ((nl = pending.find('\n')) != std::string::npos) {
      nlohmann::json line = nlohmann::json::parse(pending.substr(0, nl), nullptr, false);
      pending.erase(0, nl + 1);
      if (line.is_discarded()) throw ChannelError("the daemon sent something that is not JSON");
      if (line.contains("item")) {
        if (on_item) on_item(line["item"]);
        continue;
      }
      Reply reply;
      reply.ok = line.value("ok", false);
      if (reply.ok) {
        reply.result = line.value("result", nlohmann::json());
      } else {
        reply.error = line.value("error", std::string("unknown error"));
        reply.code = line.value("code", std::string("failed"));
      }
      return reply;
    }
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw ChannelError("the daemon closed the control socket before answering");
    pending.append(buf, static_cast<std::size_t>(n));
  }
}

}  // namespace artifactfs::control
