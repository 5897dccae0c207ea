#include "fs/tree_walk.hpp"
#include "fs/usage.hpp"
#include "fs/reconcile.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace artifactfs::fs {

namespace {


class Walker {
 public:
  Walker(const config::Layout& layout, index::Index::Rebuild& rebuild) : layout_(layout), rebuild_(rebuild) {}

  void run(int data_fd) {
    struct stat root;
    fstat(data_fd, &root);
    count_outside(root);
    walk_namespace(dup(data_fd), "", 0);
    rebuild_.outside(outside_);
    rebuild_.total(total_);
    for (const auto& [ino, names] : links_) {
      std::uint32_t count = 0;
      for (const auto& [artifact, n] : names) count += n;
      if (count > 1) rebuild_.links(ino, names);
    }
  }

  ReconcileSummary summary;

 private:
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

  // Everything below `fd` is outside any artifact (a kept entry).
  void walk_outside(int fd) {
    for_each_child(fd, [&](int parent, const std::string& name, const struct stat& st) {
      count_outside(st);
      if (S_ISDIR(st.st_mode)) walk_outside(open_subdir(parent, name));
    });
  }

  void walk_namespace(int fd, const std::string& path, int depth) {
    for_each_child(fd, [&](int parent, const std::string& name, const struct stat& st) {
      std::string child = path.empty() ? name : path + "/" + name;
      if (kept(name)) {
        count_outside(st);
        if (S_ISDIR(st.st_mode)) walk_outside(open_subdir(parent, name));
      } else if (depth + 1 < layout_.depth) {
        count_outside(st);
        if (S_ISDIR(st.st_mode)) {
          walk_namespace(open_subdir(parent, name), child, depth + 1);
        }
      } else {
        index::Usage usage;
        std::set<ino_t> seen;
        auto add = [&](const struct stat& s) {
          count_total(s, child);
          if (!S_ISDIR(s.st_mode) && s.st_nlink > 1 && !seen.insert(s.st_ino).second) return;
          usage += usage_of(s);
        };
        add(st);
        if (S_ISDIR(st.st_mode)) {
          walk_artifact(open_subdir(parent, name), add);
        }
        rebuild_.artifact(child, usage, ctime_ns(st));
        summary.artifacts++;
      }
    });
  }

  template <typename Add>
  void walk_artifact(int fd, Add& add) {
    for_each_child(fd, [&](int parent, const std::string& name, const struct stat& st) {
      add(st);
      if (S_ISDIR(st.st_mode)) walk_artifact(open_subdir(parent, name), add);
    });
  }

  void progress() {
    ++summary.entries;
    if (summary.entries % 4096 != 0) return;
    auto now = std::chrono::steady_clock::now();
    if (now - last_report_ < std::chrono::seconds(1)) return;
    last_report_ = now;
    std::fprintf(stderr, "artifactfs: reconciling index with data tree: %llu entries, %llu artifacts so far\n",
                 static_cast<unsigned long long>(summary.entries), static_cast<unsigned long long>(summary.artifacts));
  }

  const config::Layout& layout_;
  index::Index::Rebuild& rebuild_;
  index::Usage total_;
  index::Usage outside_;
  std::set<ino_t> seen_total_;
  std::set<ino_t> seen_outside_;
  std::map<ino_t, std::map<std::string, std::uint32_t>> links_;
  std::chrono::steady_clock::time_point last_report_ = std::chrono::steady_clock::now();
};
}  // namespace

ReconcileSummary reconcile(int data_fd, const config::Layout& layout, index::Index& index, const std::string& reason) {
  auto start = std::chrono::steady_clock::now();
  std::fprintf(stderr, "artifactfs: reconciling index with data tree (%s)\n", reason.c_str());
  auto rebuild = index.begin_rebuild();
  Walker walker(layout, *rebuild);
  walker.run(data_fd);
  rebuild->commit();
  index.flush();
  ReconcileSummary summary = walker.summary;
  summary.total = index.totals().usage;
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "artifactfs: reconciled %llu entries, %llu artifacts, %lld bytes on disk in %.1f s\n",
               static_cast<unsigned long long>(summary.entries), static_cast<unsigned long long>(summary.artifacts),
               static_cast<long long>(summary.total.disk_bytes), summary.seconds);
  return summary;
}

}  // namespace artifactfs::fs
