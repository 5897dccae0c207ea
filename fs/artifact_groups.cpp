#include "fs/artifact_groups.hpp"

#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>

namespace artifactfs::fs {

namespace {
bool kept(const config::Layout& layout, const std::string& name) {
  for (const auto& glob : layout.keep) {
    if (fnmatch(glob.c_str(), name.c_str(), FNM_PERIOD) == 0) return true;
  }
  return false;
}
}  // namespace

std::string_view group_key(const config::Layout& layout, std::string_view name) {
  std::size_t longest = 0;
  for (const auto& suffix : layout.group_suffixes) {
    if (suffix.size() > longest && name.size() > suffix.size() &&
        name.substr(name.size() - suffix.size()) == suffix) {
      longest = suffix.size();
    }
  }
  return name.substr(0, name.size() - longest);
}

std::string group_key_path(const config::Layout& layout, std::string_view path) {
  const std::size_t slash = path.rfind('/');
  const std::size_t start = slash == std::string_view::npos ? 0 : slash + 1;
  std::string out(path.substr(0, start));
  out += group_key(layout, path.substr(start));
  return out;
}

std::vector<std::string> group_member_names(const config::Layout& layout, std::string_view key) {
  std::vector<std::string> names;
  auto add = [&](std::string name) {
    if (group_key(layout, name) == key && !kept(layout, name)) names.push_back(std::move(name));
  };
  add(std::string(key));
  for (const auto& suffix : layout.group_suffixes) add(std::string(key) + suffix);
  return names;
}

std::vector<std::string> existing_group_members(int dirfd, const config::Layout& layout, std::string_view key) {
  std::vector<std::string> found;
  for (auto& name : group_member_names(layout, key)) {
    struct stat st;
    if (fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) found.push_back(std::move(name));
  }
  return found;
}

}  // namespace artifactfs::fs
