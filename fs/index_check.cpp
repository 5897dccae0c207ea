#include "fs/index_check.hpp"

#include <map>
#include <set>

namespace artifactfs::fs {

namespace {

std::string usage_text(const index::Usage& u) {
  return std::to_string(u.disk_bytes) + " bytes on disk, " + std::to_string(u.apparent_bytes) + " apparent, " +
         std::to_string(u.files) + " files";
}

// Collects what the walk finds.
class Found : public index::Index::Rebuild {
 public:
  struct Artifact {
    index::Usage usage;
    index::InodeNumber root_ino = 0;
  };
  void artifact(std::string_view name, const index::Usage& usage, index::TimeNs, index::InodeNumber root_ino) override {
    artifacts[std::string(name)] = {usage, root_ino};
  }
  void outside(const index::Usage& usage) override { outside_usage = usage; }
  void total(const index::Usage& usage) override { total_usage = usage; }
  void links(index::InodeNumber, const std::map<std::string, std::uint32_t>&) override {}
  void commit() override {}

  std::map<std::string, Artifact> artifacts;
  index::Usage outside_usage;
  index::Usage total_usage;
};

}  // namespace

IndexCheck check_index(int data_fd, const config::Layout& layout, const index::Index& index,
                       const WalkProgress& progress) {
  Found found;
  ReconcileSummary walked = walk_data_tree(data_fd, layout, found, progress);
  IndexCheck check;
  check.entries = walked.entries;
  check.artifacts = found.artifacts.size();
  auto& diff = check.differences;
  for (const auto& [name, a] : found.artifacts) {
    auto id = index.find(name);
    auto record = id ? index.get(*id) : std::nullopt;
    if (!record) {
      diff.push_back("not in the index: " + name + " (" + usage_text(a.usage) + ")");
      continue;
    }
    if (record->usage != a.usage) {
      diff.push_back("usage differs: " + name + ": index " + usage_text(record->usage) + ", data tree " +
                     usage_text(a.usage));
    }
    if (record->root_ino != 0 && record->root_ino != a.root_ino) {
      diff.push_back("inode differs: " + name + ": index " + std::to_string(record->root_ino) + ", data tree " +
                     std::to_string(a.root_ino));
    }
  }
  index.for_each_with_prefix("", [&](const index::ArtifactRecord& r) {
    if (!found.artifacts.count(r.name)) diff.push_back("not in the data tree: " + r.name + " (a stale record)");
  });
  if (index.totals().usage != found.total_usage) {
    diff.push_back("store totals differ: index " + usage_text(index.totals().usage) + ", data tree " +
                   usage_text(found.total_usage));
  }
  if (index.outside_usage() != found.outside_usage) {
    diff.push_back("usage outside artifacts differs: index " + usage_text(index.outside_usage()) + ", data tree " +
                   usage_text(found.outside_usage));
  }
  return check;
}

}  // namespace artifactfs::fs
