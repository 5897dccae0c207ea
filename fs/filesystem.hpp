// The file system: FUSE low-level operations over the backing data tree,
// with every open recorded in the index and every change of usage charged
// to the artifact it belongs to.
//
// CONCURRENCY MODEL
// Operations run on libfuse's worker threads (one, or several with
// fuse.threads > 1) and may run concurrently, also with the index flush
// thread and the quota thread (which calls evict()). Shared state and its
// locks: InodeTable (inode.hpp), ArtifactRegistry and LiveArtifact
// (live_artifact.hpp), the Index (thread-safe, index.hpp), and
// `namespace_mutex_`, which serialises namespace changes that move usage
// between artifacts or create and remove artifact records (mkdir, create,
// unlink, rmdir, rename, link, symlink, eviction) so that accounting of a
// name change is one atomic step. Reads, writes, opens and stats never take
// it; the subtree walk of a rename between artifacts runs before it is
// taken and is checked under it (namespace_watch.hpp), so that a large move
// does not stop every other name change for the length of a walk.
// LongHeldHandles has a leaf lock of its own (long_held.hpp).
// `ownership_mutex_` is held shared by recharge() (after writes) and
// exclusively by unlink, link and the renames that move entries between
// artifacts, which change an inode's owners or link counts. Lock
// order: namespace_mutex_, ownership_mutex_, then the locks in inode.hpp and
// live_artifact.hpp; the Index's locks are leaves. No lock is held across a
// fuse_reply_* call.
//
// Each operation replies exactly once: it returns 0 after replying, or a
// positive errno that the dispatch layer (fuse_ops.cpp) replies with.
#pragma once

#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "config/config.hpp"
#include "fs/inode.hpp"
#include "fs/live_artifact.hpp"
#include "fs/namespace_watch.hpp"
#include "fs/long_held.hpp"
#include "fs/tree_walk.hpp"
#include "index/index.hpp"
#include "quota/quota_manager.hpp"

namespace artifactfs::fs {

class Trash;
class Notifier;

// SubtreeEntry and walk_subtree() are in fs/tree_walk.hpp.

class Filesystem final : public quota::Evictor {
 public:
  // Keeps at most `max_open_nodes` backing descriptors of inodes.
  Filesystem(int data_fd, Trash& trash, Notifier& notifier, index::Index& index, const config::Config& config,
             std::size_t max_open_nodes);
  ~Filesystem();

  void set_quota(quota::QuotaManager* quota) { quota_ = quota; }
  // Extra "name=value" facts for the mount root's user.artifactfs.* xattrs
  // (the quota manager's state).
  using StatusProvider = std::function<std::vector<std::pair<std::string, std::string>>()>;
  void set_status_provider(StatusProvider provider) { status_provider_ = std::move(provider); }
  index::Index& index() { return index_; }
  InodeTable& inodes() { return inodes_; }

  // quota::Evictor. Removes an artifact from the mount in one step unless it
  // is in use: rename into the trash, index record removed, kernel caches
  // invalidated. Its data is deleted by the Trash afterwards.
  quota::EvictOutcome evict(index::ArtifactId id, index::Usage& freed, Need need,
                            index::EvictionReason reason) override;
  bool in_use(index::ArtifactId id) override;
  // Marks the candidates of an eviction walk's page in the changed set in
  // one write, so that evict() finds its mark made (artifacts.cpp).
  std::shared_ptr<void> prepare(const std::vector<index::ArtifactId>& candidates) override;
  quota::SpaceInfo backing_space() override;
  void wait_for_deletions() override;
  std::uint64_t pending_deletion_bytes() override;
  std::uint64_t protections_ended() override;
  index::TimeNs write_grace_ends(index::ArtifactId id) override;
  // Called by the flush thread after access times were committed, so that
  // `ls -lut` shows them despite long attribute timeouts.
  void access_times_changed(const std::vector<index::ArtifactId>& ids);

  // --- FUSE operations (fuse_ops.cpp dispatches here) ------------------------
  void init(fuse_conn_info* conn);
  int lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  void forget(fuse_ino_t ino, std::uint64_t nlookup);
  int getattr(fuse_req_t req, fuse_ino_t ino);
  int setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi);
  int readlink(fuse_req_t req, fuse_ino_t ino);
  int mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev);
  int mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode);
  int symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name);
  int link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t new_parent, const char* new_name);
  int unlink(fuse_req_t req, fuse_ino_t parent, const char* name);
  int rmdir(fuse_req_t req, fuse_ino_t parent, const char* name);
  int rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t new_parent, const char* new_name,
             unsigned int flags);
  int open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  int create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi);
  int read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
  int write_buf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in, off_t off, fuse_file_info* fi);
  int flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  int release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  int fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);
  int fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, fuse_file_info* fi);
  int lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi);
  int opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  int readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi, bool plus);
  int releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  int fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);
  int statfs(fuse_req_t req, fuse_ino_t ino);
  int setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int flags);
  int getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
  int listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
  int removexattr(fuse_req_t req, fuse_ino_t ino, const char* name);

 private:
  // An inode an operation uses, with a lease that keeps its artifact from
  // being evicted until the operation is over, and its O_PATH descriptor.
  struct Held {
    InodePtr inode;
    Lease lease;
    NodeFd pinned;  // keeps `fd` open until the operation is over
    int fd = -1;
  };
  int hold(fuse_ino_t ino, Held& out);  // errno, or 0
  // An open, opendir or touch inside an artifact: its last access and a hit.
  void record_use(const Lease& lease);
  // After an open or opendir inside an artifact (fs/long_held.hpp).
  void track_handle(HandleUse& use, const InodePtr& inode, const Lease& lease);
  // A read or readdir the daemon serves: the inode's pages are cached
  // again, and through a handle held for longer than a flush interval it
  // is a use.
  void note_read(HandleUse& use, const Lease& lease);
  // Each flush interval: drops the cached pages of inodes held open without
  // a use seen for a flush interval, so that their next read is seen.
  void drop_idle_pages();
  // After an unlink or a replacing rename: drops the node table's entry of
  // an inode whose last name `removed` (its lstat before) was.
  void forget_place(const struct stat& removed);
  // unlink and rmdir (flags 0 or AT_REMOVEDIR).
  int remove_name(fuse_req_t req, fuse_ino_t parent, const char* name, int flags);
  // mkdir, symlink and mknod: `make(dirfd)` creates `name` in the parent
  // (returns 0 or -1 with errno); retried once after making room on ENOSPC.
  int make_node(fuse_req_t req, fuse_ino_t parent, const char* name, const std::function<int(int)>& make);

  // --- inode helpers (inode_ops.cpp) -------------------------------------------
  InodePtr inode_of(fuse_ino_t ino) const;  // nullptr: ESTALE
  // The inode's backing descriptor, pinned (see DESCRIPTORS in inode.hpp);
  // empty with errno ENOENT or ESTALE if it cannot be had.
  NodeFd node_fd(const InodePtr& inode) { return inodes_.open(inode); }
  // Looks `name` up in `parent` on the backing tree and registers it.
  // Returns an errno, or 0 with `e` filled in.
  // count_lookup == false: the kernel is not told (see InodeTable::remember).
  int do_lookup(const InodePtr& parent, const std::string& name, fuse_entry_param& e, InodePtr* out = nullptr,
                bool count_lookup = true);
  // The inode of a node id handed out earlier: in memory, or found again
  // through the node table after the kernel forgot it or the daemon
  // restarted. nullptr: ESTALE.
  InodePtr resolve_node(std::uint64_t node);
  void place(Inode& child, const Inode& parent);
  bool is_kept_name(const std::string& name) const;
  struct stat stat_of(const Inode& inode, int fd, int* err) const;
  void fill_attr(const Inode& inode, struct stat& st) const;  // node ids, artifact atime
  Lease lease_for(const Inode& inode) const;
  std::string proc_path(int fd) const;

  // The subtree walk of a rename between artifacts, made before the rename
  // takes namespace_mutex_ (name_ops.cpp, namespace_watch.hpp).
  class PreWalk {
   public:
    // Without namespace_mutex_: walks `entry` of `dirfd` if it is a
    // directory the rename moves between artifacts.
    void start(Filesystem& fs, int dirfd, const char* entry, const Inode& parent, const char* name,
               const Inode& new_parent, const char* new_name, unsigned int flags);
    // With namespace_mutex_, at once after taking it: ends the watch.
    void check(NamespaceWatch& watch);
    // The walk, if no change touched it and its top is `top`; else null.
    const std::vector<SubtreeEntry>* walked(const struct stat& top) const;

   private:
    NamespaceWatch::Ticket ticket_ = 0;
    bool valid_ = false;
    std::vector<SubtreeEntry> entries_;
  };

  // --- accounting (accounting.cpp) -------------------------------------------
  // Re-stats `inode` and charges the difference from what the index counts
  // to every artifact that contains it, and to the totals.
  // `open_fd`: a descriptor of the inode the caller has open, if any.
  void recharge(const InodePtr& inode, int open_fd = -1);
  // The usage the index counts for the inode `st` describes: what was last
  // charged for it if it is in the table, else its lstat.
  index::Usage indexed_usage(const struct stat& st) const;
  // Before an entry is created: makes the artifact record if the new entry
  // will be an artifact root.
  void ensure_record(const Inode& parent, const std::string& name, ino_t root_ino);
  void charge_new(const Inode& parent, const Inode& child, const struct stat& st);
  void charge_unlinked(const Inode& parent, const std::string& name, const struct stat& before);
  void charge_linked(const Inode& inode, const struct stat& before, const Inode& new_parent,
                     const std::string& new_name);
  // After rename(2): moves usage between artifacts where the move changed
  // which artifact entries belong to, and renames, removes or adds records.
  // `walked`: the moved subtree as walked before namespace_mutex_ was taken
  // and found still true under it (namespace_watch.hpp), or null: then the
  // subtree is walked here, if the move needs it.
  void charge_renamed(const InodePtr& old_parent, const std::string& old_name, const InodePtr& new_parent,
                      const std::string& new_name, const struct stat& moved,
                      const std::vector<SubtreeEntry>* walked = nullptr);
  void charge_exchanged(const InodePtr& parent, const std::string& name, const struct stat& first,
                        const InodePtr& new_parent, const std::string& new_name, const struct stat& second,
                        const std::vector<SubtreeEntry>* walked_first = nullptr,
                        const std::vector<SubtreeEntry>* walked_second = nullptr);
  // Whether a rename (or an exchange) changes which artifact some entries of
  // the moved subtree belong to, so that its accounting walks the subtree.
  // The other renames (a publish, a move inside one artifact, a namespace
  // renamed at its own depth) keep every artifact's identity.
  bool rename_moves_between_artifacts(const Inode& old_parent, const std::string& old_name,
                                      const Inode& new_parent, const std::string& new_name, mode_t mode) const;
  bool exchange_moves_between_artifacts(const Inode& parent, const std::string& name, const Inode& new_parent,
                                        const std::string& new_name) const;
  std::vector<index::ArtifactId> owners_in(const Inode& parent, const std::string& name,
                                           const std::vector<SubtreeEntry>& entries, bool create,
                                           std::vector<index::ArtifactId>& roots);
  void move_usage(const std::vector<SubtreeEntry>& entries, const std::vector<index::ArtifactId>& from,
                  const std::vector<index::ArtifactId>& to);
  // index_.charge, also marking the artifact as being written.
  void charge(index::ArtifactId owner, const index::Usage& delta);
  void mark_written(index::ArtifactId owner);
  // Makes `owner` the artifact charged for the inode's usage (its last name
  // is there now).
  void move_owner(ino_t ino, index::ArtifactId owner);
  index::ArtifactId owner_id(const Inode& inode) const;
  index::ArtifactId owner_of_child(const Inode& parent, const std::string& name) const;

  // --- changed set (changes.cpp; see CHANGED SET in index/index.hpp) ----------
  // Taken BEFORE a backing change, held until its charges are made (the
  // returned Change ends when destroyed): marks what the change may make
  // disagree with the committed index, so that recovery after a kill -9
  // re-walks it. Throw index::IndexError (the caller then makes no change).
  // An inode's content (write, truncate, fallocate, xattrs): its artifact,
  // or the outside usage.
  index::Index::Change mark_inode(const Inode& inode);
  // A name made, removed or replaced in `parent`: the parent directory's
  // owner, the entry's owner, and the entry's path if it is at namespace
  // level (an artifact root, namespace or kept entry).
  index::Index::Change mark_entry(const Inode& parent, const std::string& name);
  // rename: both names.
  index::Index::Change mark_entries(const Inode& parent, const std::string& name, const Inode& new_parent,
                                    const std::string& new_name);
  void add_inode_keys(std::vector<index::Index::ChangeKey>& keys, const Inode& inode) const;
  void add_entry_keys(std::vector<index::Index::ChangeKey>& keys, const Inode& parent, const std::string& name) const;
  // After a namespace-level entry was made, removed or renamed (under
  // namespace_mutex_): the index's outside tops at and below it. Never
  // throws (marks the index for a full walk instead).
  void refresh_outside_tops(const Inode& parent, const std::string& name);
  // Marks taken after the fact where a change came without one (a write's
  // owner changed under it, st_blocks settling at release): never throws.
  std::optional<index::Index::Change> mark_late(const std::vector<index::ArtifactId>& owners);

  // --- names and artifacts (artifacts.cpp) ---------------------------------
  std::optional<std::string> child_path(const Inode& parent, const std::string& name) const;
  // The index name of the artifact whose top entry `name` in `parent` is
  // (an artifact-depth name): its path, or with layout.group-suffixes its
  // group's key (fs/artifact_groups.hpp).
  std::optional<std::string> artifact_key(const Inode& parent, const std::string& name) const;
  // Whether the artifact `name` in `parent` has an entry now: with groups,
  // any member of its group; else `name` itself.
  bool artifact_present(const Inode& parent, const std::string& name);
  // Removes the records of artifacts whose top entries a change took away,
  // except, with groups, those that still have a member.
  void drop_records(const std::vector<index::ArtifactId>& ids);
  // With groups (group_renames.cpp): a rename or exchange between
  // artifact-depth names, by the rules in artifact_groups.hpp.
  void charge_group_renamed(const InodePtr& old_parent, const std::string& old_name, const InodePtr& new_parent,
                            const std::string& new_name, const struct stat& moved);
  void charge_group_exchanged(const InodePtr& parent, const std::string& name, const struct stat& first,
                              const InodePtr& new_parent, const std::string& new_name, const struct stat& second);
  // Moves every member of a group into the trash at once (group_eviction.hpp);
  // 0 or an errno, with nothing moved.
  int take_group(int parent_fd, const std::string& parent_path, const std::string& key, index::ArtifactId id,
                 std::vector<std::string>& members, std::uint64_t trash_bytes);
  Role role_of_child(const Inode& parent, const std::string& name) const;
  // ENAMETOOLONG if `name` is over NAME_MAX, or would make an artifact whose
  // path the index cannot key; else 0. Checked before any backing change.
  int check_new_name(const Inode& parent, const char* name) const;
  // A record for an artifact root the index does not know; nullopt if the
  // entry is no longer `ino` at that name.
  std::optional<index::ArtifactId> adopt(const std::string& path, int parent_fd, const std::string& name, ino_t ino);
  // Recomputes depth, role and artifact of the inodes below `top` after a
  // rename moved them between artifacts.
  void replace_subtree(ino_t top);
  void notify_usage_grew();
  // Files placed in the artifact being evicted that have names in another
  // artifact too: inode -> one of those artifacts (eviction moves them there).
  std::unordered_map<ino_t, index::ArtifactId> linked_elsewhere(LiveArtifact& live, index::ArtifactId id) const;
  // Creation epilogue shared by create, mkdir, symlink and mknod: record,
  // lookup, charge. If the new entry cannot be registered it is removed
  // again before the error goes back, so the tree and the kernel's view
  // never disagree.
  int finish_create(const InodePtr& parent, int parent_fd, const char* name, fuse_entry_param& e, InodePtr* out);
  // Removes the entry `name` (if it is still inode `ino`) that this
  // operation made, and the record made for it.
  void undo_new_entry(const Inode& parent, int parent_fd, const std::string& name, ino_t ino);
  // Runs the bookkeeping of a backing change that has happened. If it
  // throws, the change stands (the kernel is told it succeeded, which is
  // what the tree says) and the index is marked for a re-walk at the next
  // mount; the failure is logged.
  void after_change(const char* what, const std::function<void()>& bookkeeping);
  // ENAMETOOLONG if a rename would give artifacts keys the index cannot
  // store (a namespace renamed to a longer name); checked before the rename.
  int check_renamed_keys(const InodePtr& parent, const std::string& name, const InodePtr& new_parent,
                         const std::string& new_name, const struct stat& moved) const;
  // Whether the caller may steer the cache (pins): root, the store's owner
  // (the daemon's user) or a member of control.group.
  bool is_operator(fuse_req_t req) const;

  // --- extended attributes (xattr_ops.cpp) -----------------------------------
  std::vector<std::pair<std::string, std::string>> synthetic_xattrs(const Inode& inode) const;
  int set_pinned(fuse_req_t req, const Inode& inode, bool pinned);

  int data_fd_;
  Trash& trash_;
  Notifier& notifier_;
  index::Index& index_;
  config::Config config_;  // layout and fuse settings are fixed for the mount's life
  InodeTable inodes_;
  ArtifactRegistry artifacts_;
  int staging_fd_ = -1;  // STORE/evicting, with groups only (group_eviction.hpp)
  // See CONCURRENCY MODEL. Recursive: a lookup made while a namespace change
  // holds it may need it again to adopt an unknown artifact.
  std::recursive_mutex namespace_mutex_;
  // Guarded by namespace_mutex_: what namespace changes touched while a
  // rename walked its subtree without the mutex (namespace_watch.hpp).
  NamespaceWatch watch_;
  // Shared by recharge(), exclusive for unlink, link and renames that move
  // entries between artifacts: owners and link counts of an inode cannot
  // change under a charge.
  std::shared_mutex ownership_mutex_;
  LongHeldHandles long_held_;
  const std::int64_t flush_interval_ns_;
  const std::int64_t atime_precision_ns_;
  std::atomic<std::uint64_t> getattr_requests_{0};  // since the mount (stats.getattr_requests)
  quota::QuotaManager* quota_ = nullptr;
  StatusProvider status_provider_;
  double entry_timeout_;
  double attr_timeout_;
};

index::TimeNs now_ns();

}  // namespace artifactfs::fs
