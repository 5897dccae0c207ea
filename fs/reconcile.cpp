#include "fs/artifact_groups.hpp"
#include "fs/tree_walk.hpp"
#include "fs/usage.hpp"
#include "fs/reconcile.hpp"
#include "fs/store.hpp"

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
#include <string>
#include <vector>

namespace artifactfs::fs {

namespace {

class Walker {
 public:
  Walker(const config::Layout& layout, index::Index::Rebuild& rebuild, WalkProgress progress)
      : layout_(layout), rebuild_(rebuild), progress_(std::move(progress)) {}

  void run(int data_fd) {
    struct stat root;
    fstat(data_fd, &root);
    count_outside(root);
    bool complete = walk_below(data_fd, [&](const WalkEntry& e) {
      visit(e);
      return true;
    });
    // Committing a partial walk would drop the records of every artifact
    // not reached; the index stays unclean, so the next mount walks again.
    if (!complete) {
      throw UserError("the data tree changed while the index was being rebuilt from it; mount again, and do not "
                      "change the store's data directory while artifactfs uses it");
    }
    finish_artifact();
    finish_groups();
    rebuild_.outside(outside_);
    rebuild_.total(total_);
    for (const auto& [ino, names] : links_) {
      std::uint32_t count = 0;
      for (const auto& [artifact, n] : names) count += n;
      if (count > 1) rebuild_.links(ino, names);
    }
  }

  ReconcileSummary summary;
  // Outside tops (see recover_changed.hpp): namespace-level entries that
  // belong to no artifact, for the index's changed set.
  std::vector<std::string> tops;

 private:
  // The artifact whose entries are being visited.
  struct Artifact {
    std::string name;
    int depth;  // of its root: deeper entries belong to it
    index::TimeNs created;
    ino_t root_ino;
    index::Usage usage;
    std::set<ino_t> seen;  // multiply-linked inodes counted already
  };

  // Pre-order: an entry no deeper than the open artifact or kept entry is
  // past the end of it. An entry at a namespace depth (up to layout.depth)
  // is kept (outside, with all below it), a namespace (outside) or an
  // artifact root; everything deeper belongs to the artifact or kept entry
  // above it.
  void visit(const WalkEntry& e) {
    if (artifact_ && e.depth <= artifact_->depth) finish_artifact();
    if (e.depth < layout_.depth) finish_groups();  // past the directory holding them
    if (kept_depth_ >= 0 && e.depth <= kept_depth_) kept_depth_ = -1;
    if (artifact_) {
      add(e.st);
    } else if (kept_depth_ >= 0) {
      count_outside(e.st);
    } else if (kept(e.name)) {
      count_outside(e.st);
      kept_depth_ = e.depth;
      tops.push_back(e.rel);
    } else if (e.depth < layout_.depth) {
      count_outside(e.st);
      tops.push_back(e.rel);
    } else if (has_groups(layout_)) {
      // A member of a group: its siblings may come before or after it.
      std::string key = group_key_path(layout_, e.rel);
      auto it = groups_.find(key);
      if (it == groups_.end()) {
        artifact_.emplace(Artifact{key, e.depth, ctime_ns(e.st), 0, {}, {}});
      } else {
        artifact_.emplace(std::move(it->second));
        groups_.erase(it);
        artifact_->created = std::min(artifact_->created, ctime_ns(e.st));
      }
      add(e.st);
    } else {
      artifact_.emplace(Artifact{e.rel, e.depth, ctime_ns(e.st), e.st.st_ino, {}, {}});
      add(e.st);
    }
  }

  // Groups whose members were all seen: the walk has left their directory.
  void finish_groups() {
    for (auto& [key, group] : groups_) {
      rebuild_.artifact(group.name, group.usage, group.created, 0);
      summary.artifacts++;
    }
    groups_.clear();
  }

  void add(const struct stat& st) {
    count_total(st, artifact_->name);
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1 && !artifact_->seen.insert(st.st_ino).second) return;
    artifact_->usage += usage_of(st);
  }

  void finish_artifact() {
    if (!artifact_) return;
    if (has_groups(layout_)) {
      std::string key = artifact_->name;
      groups_.emplace(std::move(key), std::move(*artifact_));
      artifact_.reset();
      return;
    }
    rebuild_.artifact(artifact_->name, artifact_->usage, artifact_->created, artifact_->root_ino);
    summary.artifacts++;
    artifact_.reset();
  }

  bool kept(const std::string& name) const {
    for (const auto& glob : layout_.keep) {
      if (fnmatch(glob.c_str(), name.c_str(), FNM_PERIOD) == 0) return true;
    }
    return false;
  }

  // Counts an inode once in the totals, and records each name of a
  // multiply-linked one under the artifact it is in.
  bool count_total(const struct stat& st, const std::string& artifact) {
    progress();
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1) {
      links_[st.st_ino][artifact]++;
      if (!seen_total_.insert(st.st_ino).second) return false;
    }
    total_ += usage_of(st);
    return true;
  }

  void count_outside(const struct stat& st) {
    count_total(st, "");
    if (!S_ISDIR(st.st_mode) && st.st_nlink > 1 && !seen_outside_.insert(st.st_ino).second) return;
    outside_ += usage_of(st);
  }

  void progress() {
    ++summary.entries;
    if (summary.entries % 4096 != 0) return;
    auto now = std::chrono::steady_clock::now();
    if (now - last_report_ < std::chrono::seconds(1)) return;
    last_report_ = now;
    if (progress_) progress_(summary.entries, summary.artifacts);
  }

  const config::Layout& layout_;
  index::Index::Rebuild& rebuild_;
  WalkProgress progress_;
  index::Usage total_;
  index::Usage outside_;
  std::set<ino_t> seen_total_;
  std::set<ino_t> seen_outside_;
  std::map<ino_t, std::map<std::string, std::uint32_t>> links_;
  std::chrono::steady_clock::time_point last_report_ = std::chrono::steady_clock::now();
  std::optional<Artifact> artifact_;
  std::map<std::string, Artifact> groups_;  // by key: groups of the directory being walked
  int kept_depth_ = -1;  // depth of the kept entry being visited, or -1
};
}  // namespace

ReconcileSummary reconcile(int data_fd, const config::Layout& layout, index::Index& index, const std::string& reason) {
  auto start = std::chrono::steady_clock::now();
  std::fprintf(stderr, "artifactfs: reconciling index with data tree (%s)\n", reason.c_str());
  auto rebuild = index.begin_rebuild();
  Walker walker(layout, *rebuild, [](std::uint64_t entries, std::uint64_t artifacts) {
    std::fprintf(stderr, "artifactfs: reconciling index with data tree: %llu entries, %llu artifacts so far\n",
                 static_cast<unsigned long long>(entries), static_cast<unsigned long long>(artifacts));
  });
  walker.run(data_fd);
  rebuild->commit();
  index.flush();
  // The changed set starts empty again, and the outside tops are known.
  index.full_walk_done(walker.tops);
  ReconcileSummary summary = walker.summary;
  summary.total = index.totals().usage;
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "artifactfs: reconciled %llu entries, %llu artifacts, %lld bytes on disk in %.1f s\n",
               static_cast<unsigned long long>(summary.entries), static_cast<unsigned long long>(summary.artifacts),
               static_cast<long long>(summary.total.disk_bytes), summary.seconds);
  return summary;
}

}  // namespace artifactfs::fs

namespace artifactfs::fs {

ReconcileSummary walk_data_tree(int data_fd, const config::Layout& layout, index::Index::Rebuild& sink,
                                const WalkProgress& progress) {
  Walker walker(layout, sink, progress);
  walker.run(data_fd);
  return walker.summary;
}

}  // namespace artifactfs::fs
