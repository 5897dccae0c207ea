// The control channel between the command line and a running daemon.
//
// A Unix stream socket in the abstract namespace, named after the store's
// device and inode ("artifactfs/DEV:INO"): a command finds it from the store
// alone (which it finds from the mount's source in /proc/self/mountinfo), it
// needs no runtime directory, and it vanishes with the daemon, so a killed
// daemon leaves nothing stale behind. Anyone may connect; the daemon takes
// the caller's identity from the kernel (SO_PEERCRED and SO_PEERGROUPS) and
// decides per request (is_operator). The command line checks the other way
// that the listener runs as the store's owner or root, so that a local user
// who took the name first cannot pose as the daemon.
//
// PROTOCOL. One request per connection: one line of JSON, {"command": ...}.
// The answer is lines of JSON: any number of {"item": ...} (rows, streamed),
// then one {"ok": true, "result": ...} or {"ok": false, "error": "what went
// wrong and how to fix it", "code": "permission" | "usage" | "failed"}.
//
// CONCURRENCY MODEL
// The Server owns one thread that accepts and serves connections one at a
// time (a request is rare and short; a cleanup request holds the channel
// until it is done). Each connection has a 10 s timeout for reading the
// request and for each write, so a stalled client delays others by that at
// most. The handler runs on that thread and takes whatever locks its work
// needs; the Server holds none while it runs.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace artifactfs::control {

// The channel cannot be used; what() says why and what to do.
class ChannelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Peer {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary
};

// Root, the store's owner (the daemon's user), or a member of the control
// group (primary or supplementary) may steer the cache.
bool is_operator(uid_t uid, gid_t gid, const std::vector<gid_t>& groups, uid_t owner,
                 std::optional<unsigned> control_gid);

// The abstract socket name of a store (without the leading NUL).
std::string socket_name(const std::filesystem::path& store);

// The rest of an answer, written by a request's handler.
class Responder {
 public:
  explicit Responder(int fd) : fd_(fd) {}
  void item(const nlohmann::json& item);
  void result(const nlohmann::json& result);
  void error(const std::string& message, const std::string& code = "failed");
  bool answered() const { return answered_; }

 private:
  void send(const nlohmann::json& line);
  int fd_;
  bool answered_ = false;
  bool broken_ = false;
};

class Server {
 public:
  using Handler = std::function<void(const nlohmann::json& request, const Peer& peer, Responder& out)>;
  // Listens on the store's name and starts the thread. Throws ChannelError
  // if the name is taken.
  Server(const std::filesystem::path& store, Handler handler);
  ~Server();  // stops the thread
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct Reply {
  bool ok = false;
  nlohmann::json result;
  std::string error;
  std::string code;
};

// Sends one request to the daemon serving `store`. nullopt if no daemon
// listens there. Calls `on_item` for every streamed row. Throws
// ChannelError if the listener is not the store's owner or root, or the
// answer is cut short.
std::optional<Reply> call(const std::filesystem::path& store, const nlohmann::json& request,
                          const std::function<void(const nlohmann::json&)>& on_item = {});

}  // namespace artifactfs::control
