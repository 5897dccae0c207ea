// Partial recovery after a kill -9: see recover_changed.hpp, and CHANGED SET
// in index/index.hpp for why the changed set covers every change the
// committed index may not count.
//
// WHAT IS RE-WALKED
// - artifact(id) keys: the record's artifact, by its name.
// - path(p) keys (namespace-level entries made, removed or renamed): an
//   artifact root is looked at by name (new, gone, replaced); a namespace is
//   listed down to the artifact depth (its artifact roots are compared with
//   the records below it by name and root inode; only new or replaced ones,
//   or ones also marked, are walked); a kept entry is re-measured.
// - the outside usage (outside key, or any namespace-level path key): every
//   outside top (index's outside_tops table: namespace directories, kept
//   entries and other non-artifact entries at namespace level) and the data
//   root are re-measured: no listing of namespaces full of artifacts.
// - records whose entry is gone and new roots with the same root inode are
//   one artifact renamed (it keeps its identity, as it would have had the
//   rename's index write committed).
//
// HOW THE TOTALS STAY EXACT
// The committed totals equal the committed records, outside usage and
// tombstones (the index commits totals as they were at the batch swap, and
// the charges of one change as one step). So the new totals are the
// committed ones, minus the tombstones, plus (walked - recorded) for every
// re-walked or removed artifact, plus (outside now - outside recorded).
// That holds inode by inode for an inode whose names all lie in one artifact
// (or all outside): its usage leaves and enters the same unit once. It does
// not hold for an inode with names in two units, one of them re-walked:
// then the link table and the usage of the other unit may be stale and the
// totals cannot be told apart, so the recovery gives up and the whole tree
// is walked. It finds every such inode: a re-walked unit that holds one of
// its names sees it (st_nlink > 1, names elsewhere), and a link record that
// names a re-walked or removed unit and another unit is found by a scan of
// the link table. Local hard links (all names in one artifact, or all
// outside) get their link record rewritten from what the walk saw.
#include "fs/recover_changed.hpp"

#include <fcntl.h>
#include <fnmatch.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>

#include "fs/artifact_groups.hpp"
#include "fs/beneath.hpp"
#include "fs/tree_walk.hpp"
#include "fs/usage.hpp"

namespace artifactfs::fs {

namespace {

bool kept_name(const config::Layout& layout, std::string_view name) {
  const std::string n(name);
  for (const auto& glob : layout.keep) {
    if (fnmatch(glob.c_str(), n.c_str(), FNM_PERIOD) == 0) return true;
  }
  return false;
}

int components(std::string_view path) {
  if (path.empty()) return 0;
  int n = 1;
  for (char c : path) n += c == '/';
  return n;
}

bool under(std::string_view path, std::string_view top) {
  if (top.empty()) return true;
  return path == top || (path.size() > top.size() && path.substr(0, top.size()) == top && path[top.size()] == '/');
}

// An O_PATH descriptor of the parent directory of `path` beneath the data
// root (no symlink followed), closed on scope exit; and the entry's name.
class Parent {
 public:
  Parent(int data_fd, std::string_view path) {
    auto [dir, name] = split_parent(path);
    name_ = std::move(name);
    fd_ = open_beneath(data_fd, dir, O_PATH | O_DIRECTORY);
  }
  ~Parent() {
    if (fd_ >= 0) close(fd_);
  }
  Parent(const Parent&) = delete;
  Parent& operator=(const Parent&) = delete;
  int fd() const { return fd_; }
  const std::string& name() const { return name_; }
  bool lstat(struct stat& st) const {
    return fd_ >= 0 && fstatat(fd_, name_.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
  }

 private:
  int fd_ = -1;
  std::string name_;
};

// Names of a multiply-linked inode, by unit: artifact name, "" for outside.
struct Shared {
  std::map<std::string, std::uint32_t> names;
  nlink_t nlink = 0;
};
using SharedInodes = std::map<ino_t, Shared>;

struct Walked {
  index::Usage usage;
  ino_t root_ino = 0;
  index::TimeNs created = 0;
};

// Walks one top entry of an artifact as reconcile's Walker does: every
// inode once per artifact (`seen` is shared by the members of a group).
// False if the tree changed under the walk.
bool walk_entry(int parent_fd, const std::string& name, const std::string& unit, SharedInodes& shared,
                std::uint64_t& entries, std::set<ino_t>& seen, Walked& out) {
  return walk_tree(parent_fd, name, [&](const WalkEntry& e) {
    ++entries;
    if (e.depth == 0) {
      out.created = out.created == 0 ? ctime_ns(e.st) : std::min(out.created, ctime_ns(e.st));
      out.root_ino = e.st.st_ino;
    }
    if (!S_ISDIR(e.st.st_mode) && e.st.st_nlink > 1) {
      Shared& s = shared[e.st.st_ino];
      s.names[unit]++;
      s.nlink = e.st.st_nlink;
      if (!seen.insert(e.st.st_ino).second) return true;
    }
    out.usage += usage_of(e.st);
    return true;
  });
}

// Walks an artifact: the entry its record names, or with group suffixes
// every member of the group its record's name is the key of (root_ino 0).
// `present` says whether any entry was there.
bool walk_artifact(const config::Layout& layout, const Parent& parent, const std::string& unit, SharedInodes& shared,
                   std::uint64_t& entries, Walked& out, bool& present) {
  std::set<ino_t> seen;
  if (!has_groups(layout)) {
    struct stat st;
    present = parent.lstat(st);
    return !present || walk_entry(parent.fd(), parent.name(), unit, shared, entries, seen, out);
  }
  const auto members = parent.fd() >= 0 ? existing_group_members(parent.fd(), layout, parent.name())
                                        : std::vector<std::string>{};
  present = !members.empty();
  for (const auto& member : members) {
    if (!walk_entry(parent.fd(), member, unit, shared, entries, seen, out)) return false;
  }
  out.root_ino = 0;
  return true;
}

// The outside usage: the data root and every outside top (kept entries with
// everything below them; namespace-level directories and other entries by
// themselves, their children being tops of their own), each inode once.
index::Usage measure_outside(int data_fd, const config::Layout& layout, const std::set<std::string>& tops,
                             SharedInodes& shared, std::uint64_t& entries) {
  index::Usage usage;
  std::set<ino_t> seen;
  auto count = [&](const struct stat& st) {
    ++entries;
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
      Shared& s = shared[st.st_ino];
      s.names[""]++;
      s.nlink = st.st_nlink;
      if (!seen.insert(st.st_ino).second) return;
    }
    usage += usage_of(st);
  };
  struct stat root;
  if (fstat(data_fd, &root) == 0) count(root);
  for (const auto& top : tops) {
    Parent parent(data_fd, top);
    if (classify_path(layout, top).kind == PathKind::kept) {
      walk_tree(parent.fd(), parent.name(), [&](const WalkEntry& e) {
        count(e.st);
        return true;
      });
    } else if (struct stat st; parent.lstat(st)) {
      count(st);
    }
  }
  return usage;
}

}  // namespace

PathClass classify_path(const config::Layout& layout, std::string_view path) {
  if (path.empty()) return {PathKind::namespace_, ""};
  std::size_t pos = 0;
  for (int depth = 1;; ++depth) {
    const std::size_t slash = path.find('/', pos);
    const bool last = slash == std::string_view::npos;
    const std::string_view component = path.substr(pos, last ? std::string_view::npos : slash - pos);
    const std::string top(path.substr(0, last ? path.size() : slash));
    // As reconcile's Walker: a kept name at namespace level (up to the
    // artifact depth) wins; below an artifact root everything is its.
    if (kept_name(layout, component)) return {last ? PathKind::kept : PathKind::in_kept, top};
    if (depth >= layout.depth) return {last ? PathKind::artifact_root : PathKind::in_artifact, top};
    if (last) return {PathKind::namespace_, ""};
    pos = slash + 1;
  }
}

std::vector<std::string> outside_tops_at(int data_fd, const config::Layout& layout, const std::string& path,
                                         std::vector<FoundRoot>* roots, std::uint64_t* entries) {
  std::vector<std::string> tops;
  const PathClass cls = classify_path(layout, path);
  if (cls.kind != PathKind::namespace_ && cls.kind != PathKind::kept) return tops;
  const int base = components(path);
  std::uint64_t seen = 0;
  // Below a namespace: kept entries and namespace-level entries are tops
  // (walked into only if namespace directories), artifact roots are not.
  auto visit_below = [&](const WalkEntry& e) {
    ++seen;
    const std::string rel = path.empty() ? e.rel : path + "/" + e.rel;
    if (kept_name(layout, e.name)) {
      tops.push_back(rel);
      return false;
    }
    if (base + e.depth < layout.depth) {
      tops.push_back(rel);
      return true;
    }
    if (roots) roots->push_back({rel, e.st.st_ino, ctime_ns(e.st)});
    return false;
  };
  bool complete = true;
  if (path.empty()) {
    complete = walk_below(data_fd, visit_below);
  } else {
    Parent parent(data_fd, path);
    if (cls.kind == PathKind::kept) {
      if (struct stat st; parent.lstat(st)) tops.push_back(path);
    } else if (parent.fd() >= 0) {
      complete = walk_tree(parent.fd(), parent.name(), [&](const WalkEntry& e) {
        if (e.depth > 0) return visit_below(e);
        ++seen;
        tops.push_back(path);
        return true;
      });
    }
  }
  if (!complete) spdlog::warn("listing {} stopped: the tree changed under it", path.empty() ? "the data root" : path);
  if (entries) *entries += seen;
  return tops;
}

RecoverySummary recover_changed(int data_fd, const config::Layout& layout, index::Index& index) {
  const auto start = std::chrono::steady_clock::now();
  RecoverySummary sum;
  const index::Index::ChangedSet changed = index.changed_set();
  if (!changed.usable) {
    sum.why_not = changed.why_not;
    return sum;
  }
  if (changed.links) {
    sum.why_not = "hard links shared with an evicted artifact were being changed";
    return sum;
  }
  auto give_up = [&](std::string why) {
    sum.done = false;
    sum.why_not = std::move(why);
    return sum;
  };

  // --- what to look at: artifacts by name ----------------------------------
  struct Check {
    std::optional<index::ArtifactRecord> record;
    bool marked = false;  // must be re-walked (else: only if its root changed)
  };
  std::map<std::string, Check> checks;
  auto note = [&](const index::ArtifactRecord& rec, bool marked) {
    Check& c = checks[rec.name];
    if (!c.record) c.record = rec;
    c.marked = c.marked || marked;
  };
  for (index::ArtifactId id : changed.artifacts) {
    if (auto rec = index.get(id)) note(*rec, true);
  }
  index::Usage tombstones;
  std::vector<index::ArtifactId> units;  // artifacts re-measured or removed (and kOutside): for the link scan
  for (const auto& [id, usage] : changed.tombstones) {
    if (auto rec = index.get(id)) {
      note(*rec, true);
    } else {
      tombstones += usage;
      units.push_back(id);
    }
  }
  bool outside = changed.outside;
  std::set<std::string> tops_replaced;
  std::set<std::string> new_tops;
  for (const auto& path : changed.paths) {
    const PathClass cls = classify_path(layout, path);
    switch (cls.kind) {
      case PathKind::artifact_root:
      case PathKind::in_artifact:
        checks[has_groups(layout) ? group_key_path(layout, cls.top) : cls.top].marked = true;
        break;
      case PathKind::kept:
      case PathKind::in_kept:
        outside = true;
        if (tops_replaced.insert(cls.top).second) {
          for (auto& top : outside_tops_at(data_fd, layout, cls.top, nullptr, &sum.entries)) new_tops.insert(top);
        }
        break;
      case PathKind::namespace_: {
        outside = true;
        if (!tops_replaced.insert(path).second) break;
        ++sum.namespaces;
        std::vector<FoundRoot> roots;
        for (auto& top : outside_tops_at(data_fd, layout, path, &roots, &sum.entries)) new_tops.insert(top);
        for (const auto& root : roots) checks[has_groups(layout) ? group_key_path(layout, root.path) : root.path];
        index.for_each_with_prefix(path + "/", [&](const index::ArtifactRecord& rec) { note(rec, false); });
        break;
      }
    }
  }
  for (auto& [name, c] : checks) {
    if (c.record) continue;
    if (auto id = index.find(name)) c.record = index.get(*id);
  }

  // --- walk them --------------------------------------------------------------
  index::Index::Recovery plan;
  index::Usage artifacts_delta;
  SharedInodes shared;
  std::vector<index::ArtifactRecord> gone;                 // records whose entry is gone
  std::vector<std::pair<std::string, Walked>> new_roots;  // entries with no record
  for (const auto& [name, c] : checks) {
    Parent parent(data_fd, name);
    struct stat st;
    // Found by listing a namespace, same inode as recorded, not itself
    // changed: its usage is what the index says.
    if (c.record && !c.marked && c.record->root_ino != 0 && parent.lstat(st) && c.record->root_ino == st.st_ino) {
      continue;
    }
    Walked walked;
    bool present = false;
    if (!walk_artifact(layout, parent, name, shared, sum.entries, walked, present)) {
      return give_up("the data tree changed while " + name + " was being walked");
    }
    if (!present) {
      if (c.record) gone.push_back(*c.record);
      continue;
    }
    ++sum.artifacts;
    if (c.record) {
      plan.updated.push_back({c.record->id, {name, walked.usage, c.record->created, walked.root_ino}});
      artifacts_delta += walked.usage;
      artifacts_delta += -c.record->usage;
      units.push_back(c.record->id);
    } else {
      new_roots.emplace_back(name, walked);
    }
  }
  // A record whose entry is gone and a new entry with its root inode: one
  // artifact renamed before the index heard of it.
  std::unordered_map<ino_t, std::size_t> gone_by_ino;
  for (std::size_t i = 0; i < gone.size(); ++i) {
    if (gone[i].root_ino != 0) gone_by_ino.emplace(gone[i].root_ino, i);
  }
  std::vector<bool> renamed(gone.size(), false);
  for (const auto& [name, walked] : new_roots) {
    auto it = gone_by_ino.find(walked.root_ino);
    if (it != gone_by_ino.end() && !renamed[it->second]) {
      const index::ArtifactRecord& rec = gone[it->second];
      renamed[it->second] = true;
      plan.updated.push_back({rec.id, {name, walked.usage, rec.created, walked.root_ino}});
      artifacts_delta += walked.usage;
      artifacts_delta += -rec.usage;
      units.push_back(rec.id);
    } else {
      plan.added.push_back({name, walked.usage, walked.created, walked.root_ino});
      artifacts_delta += walked.usage;
    }
  }
  for (std::size_t i = 0; i < gone.size(); ++i) {
    if (renamed[i]) continue;
    plan.removed.push_back(gone[i].id);
    artifacts_delta += -gone[i].usage;
    units.push_back(gone[i].id);
  }

  // --- outside usage -----------------------------------------------------------
  const index::Usage outside_before = index.outside_usage();
  index::Usage outside_now = outside_before;
  if (outside) {
    std::set<std::string> tops;
    for (auto& top : index.outside_tops()) {
      bool replaced = false;
      for (const auto& r : tops_replaced) replaced = replaced || under(top, r);
      if (!replaced) tops.insert(std::move(top));
    }
    tops.insert(new_tops.begin(), new_tops.end());
    outside_now = measure_outside(data_fd, layout, tops, shared, sum.entries);
    sum.outside_tops = tops.size() + 1;
    plan.tops_replaced.assign(tops_replaced.begin(), tops_replaced.end());
    plan.tops.assign(new_tops.begin(), new_tops.end());
    units.push_back(index::kOutside);
  }

  // --- hard links ----------------------------------------------------------------
  std::set<index::ArtifactId> measured(units.begin(), units.end());
  for (const auto& [ino, set] : index.links_naming(units)) {
    if (set.size() > 1) {
      return give_up("inode " + std::to_string(ino) +
                     " has names in more than one artifact (or in an artifact and outside), and one of them changed");
    }
    if (!shared.count(ino)) plan.links.push_back({ino, {}});  // gone, or down to one name
  }
  for (const auto& [ino, s] : shared) {
    if (s.names.size() > 1) {
      return give_up("inode " + std::to_string(ino) + " has names in " + s.names.begin()->first + " and " +
                     std::next(s.names.begin())->first);
    }
    std::uint64_t names = 0;
    for (const auto& [unit, n] : s.names) names += n;
    if (names != s.nlink) {
      return give_up("inode " + std::to_string(ino) + " in " + s.names.begin()->first +
                     " has names in artifacts that were not re-walked");
    }
    if (auto old = index.links(ino)) {
      for (const auto& [id, n] : *old) {
        if (!measured.count(id)) {
          return give_up("inode " + std::to_string(ino) + " was recorded with names in an artifact that did not change");
        }
      }
    }
    plan.links.push_back({ino, s.names});
  }

  // --- totals and commit ------------------------------------------------------------
  plan.total = index.totals().usage;
  plan.total += -tombstones;
  plan.total += artifacts_delta;
  plan.total += outside_now;
  plan.total += -outside_before;
  plan.outside = outside_now;
  index.commit_recovery(plan);

  sum.done = true;
  sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr,
               "artifactfs: recovered the index from what changed since its last flush: re-walked %llu artifacts "
               "(%zu new, %zu removed), %llu namespaces and %llu outside entries, %llu entries in all, in %.3f s\n",
               static_cast<unsigned long long>(sum.artifacts), plan.added.size(),
               plan.removed.size() + changed.tombstones.size(),
               static_cast<unsigned long long>(sum.namespaces), static_cast<unsigned long long>(sum.outside_tops),
               static_cast<unsigned long long>(sum.entries), sum.seconds);
  return sum;
}

}  // namespace artifactfs::fs
