// The daemon's side of the control channel (control/channel.hpp): answers
// status, ls, du and log from the live index, and carries out pin, unpin,
// evict and cleanup through the quota manager, so that an eviction asked
// for by an operator is the same all-or-nothing step as any other and never
// takes an open artifact.
//
// WHO MAY ASK. `status` is open to every local user (the same facts as the
// mount root's user.artifactfs.* attributes); everything else is for
// operators only: root, the store's owner (the daemon's user) and members of
// control.group, as for pins set through xattrs.
//
// CONCURRENCY MODEL
// handle() runs on the control channel's thread, one request at a time. It
// holds no lock of its own; the index, the quota manager and the file system
// are thread-safe, and evictions serialise on the quota manager's cleanup
// lock like every other eviction.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "control/channel.hpp"
#include "control/queries.hpp"
#include "index/index.hpp"
#include "quota/quota_manager.hpp"

namespace artifactfs::fs {

class Filesystem;

class ControlService : public control::LiveFacts {
 public:
  ControlService(Filesystem& filesystem, index::Index& index, quota::QuotaManager& quota,
                 std::optional<unsigned> control_gid, std::filesystem::path store, std::filesystem::path mountpoint);

  void handle(const nlohmann::json& request, const control::Peer& peer, control::Responder& out);
  bool is_open(index::ArtifactId id) override;

  // What `artifactfs status` reports (also the daemon's STATUS= line).
  control::StatusReport status();

 private:
  void pin(const nlohmann::json& request, bool pinned, control::Responder& out);
  void evict(const nlohmann::json& request, control::Responder& out);
  void cleanup(const nlohmann::json& request, control::Responder& out);

  Filesystem& filesystem_;
  index::Index& index_;
  quota::QuotaManager& quota_;
  std::optional<unsigned> control_gid_;
  std::filesystem::path store_;
  std::filesystem::path mountpoint_;
};

}  // namespace artifactfs::fs
