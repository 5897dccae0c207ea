// artifactfs fsck STORE [--repair]: an offline check of the index against
// the data tree, with a progress bar on a terminal (plain progress lines
// otherwise) and every difference reported; --repair rebuilds the index
// from the tree as `mount --rebuild-index` would, keeping access history
// and pins.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>

#include "cli/commands.hpp"
#include "cli/exit_codes.hpp"
#include "cli/output.hpp"
#include "cli/target.hpp"
#include "fs/index_check.hpp"
#include "fs/reconcile.hpp"
#include "fs/store.hpp"

namespace artifactfs::cli {

namespace {

// Progress on stderr: a bar redrawn in place on a terminal, else a line now
// and then (the walk calls about once a second).
class Progress {
 public:
  explicit Progress(std::uint64_t expected_artifacts)
      : expected_(expected_artifacts), terminal_(isatty(STDERR_FILENO)) {}
  void update(std::uint64_t entries, std::uint64_t artifacts) {
    if (terminal_) {
      const double fraction =
          expected_ ? std::min(1.0, static_cast<double>(artifacts) / static_cast<double>(expected_)) : 0.0;
      const int filled = static_cast<int>(fraction * 30);
      std::fprintf(stderr, "\rchecking [%s%s] %3.0f%%  %s artifacts, %s entries", std::string(filled, '#').c_str(),
                   std::string(30 - filled, ' ').c_str(), fraction * 100, count_text(artifacts).c_str(),
                   count_text(entries).c_str());
      drawn_ = true;
    } else {
      std::fprintf(stderr, "artifactfs: fsck: checked %s entries, %s artifacts of about %s\n",
                   count_text(entries).c_str(), count_text(artifacts).c_str(), count_text(expected_).c_str());
    }
  }
  void done() {
    if (drawn_) std::fprintf(stderr, "\r\033[K");
  }

 private:
  std::uint64_t expected_;
  bool terminal_;
  bool drawn_ = false;
};

}  // namespace

int run_fsck_command(const ParsedArgs& args) {
  const std::filesystem::path store = std::filesystem::absolute(args.arguments.at(0));
  // The store's lock, held for the whole check: no daemon may change the
  // tree or the index meanwhile.
  const std::filesystem::path lock = store / "lock";
  int lock_fd = ::open(lock.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  if (lock_fd < 0) {
    throw CommandError("cannot open " + lock.string() + ": " + std::strerror(errno) +
                           " (is " + store.string() + " a store, and are you root or its owner?)",
                       errno == EACCES ? exit_code::not_allowed : exit_code::failure);
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{lock_fd};
  if (flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
    std::ifstream in(lock);
    std::string pid, mountpoint;
    in >> pid >> mountpoint;
    throw CommandError("store " + store.string() + " is in use by artifactfs pid " + (pid.empty() ? "?" : pid) +
                           (mountpoint.empty() ? "" : " mounted at " + mountpoint) +
                           "; fsck checks a store no daemon serves: unmount it first",
                       exit_code::failure);
  }
  auto layout = fs::recorded_layout(store);
  if (!layout) {
    throw CommandError("store " + store.string() + " has no readable layout file (was it ever mounted?)",
                       exit_code::failure);
  }
  int data_fd = ::open((store / "data").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (data_fd < 0) throw CommandError("cannot open " + (store / "data").string() + ": " + std::strerror(errno), exit_code::failure);
  Closer data_closer{data_fd};

  fs::IndexCheck check;
  bool was_clean = true;
  {
    index::IndexOptions options;
    options.read_only = true;
    std::unique_ptr<index::Index> index;
    try {
      index = index::Index::open(store / "index", options);
    } catch (const index::IndexError& e) {
      throw CommandError(std::string("cannot read the index: ") + e.what() +
                             " (`artifactfs mount --rebuild-index STORE MOUNTPOINT` sets it aside and rebuilds it)",
                         exit_code::failure);
    }
    was_clean = index->previous_shutdown_clean();
    Progress progress(index->totals().artifact_count);
    try {
      check = fs::check_index(data_fd, *layout, *index,
                              [&](std::uint64_t e, std::uint64_t a) { progress.update(e, a); });
    } catch (const std::exception& e) {
      progress.done();
      throw CommandError(e.what(), exit_code::failure);
    }
    progress.done();
  }
  const bool json = args.has("json");
  nlohmann::json report = {{"store", store.string()},
                           {"entries", check.entries},
                           {"artifacts", check.artifacts},
                           {"closed_cleanly", was_clean},
                           {"differences", check.differences},
                           {"repaired", false}};
  if (!json) {
    std::cout << "checked " << count_text(check.entries) << " entries, " << count_text(check.artifacts)
              << " artifacts in " << store.string() << "\n";
    if (!was_clean) {
      std::cout << "the index was not closed cleanly (the daemon was killed or the system stopped): the next mount "
                   "recovers it\n";
    }
    for (const auto& d : check.differences) std::cout << "  " << d << "\n";
    std::cout << (check.differences.empty() ? "the index agrees with the data tree\n"
                                            : count_text(check.differences.size()) + " difference(s)\n");
  }
  int status = check.differences.empty() ? exit_code::ok : exit_code::differences;
  if (!check.differences.empty() && args.has("repair")) {
    try {
      auto index = index::Index::open(store / "index");
      fs::reconcile(data_fd, *layout, *index, "artifactfs fsck --repair");
      index->close_clean();
    } catch (const std::exception& e) {
      throw CommandError(std::string("repair failed: ") + e.what(), exit_code::failure);
    }
    report["repaired"] = true;
    status = exit_code::repaired;
    if (!json) std::cout << "repaired: the index was rebuilt from the data tree (access history and pins kept)\n";
  }
  if (json) print_json(std::cout, report);
  return status;
}

}  // namespace artifactfs::cli
