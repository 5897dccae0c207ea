// What an inode adds to the usage the index keeps, from its lstat.
#pragma once

#include <sys/stat.h>

#include "index/index.hpp"

namespace artifactfs::fs {

// Bytes on disk as du counts them, apparent bytes as du -b counts them, and
// one file unless it is a directory.
inline index::Usage usage_of(const struct stat& st) {
  return {static_cast<std::int64_t>(st.st_blocks) * 512, static_cast<std::int64_t>(st.st_size),
          S_ISDIR(st.st_mode) ? 0 : 1};
}

inline index::TimeNs ctime_ns(const struct stat& st) {
  return static_cast<index::TimeNs>(st.st_ctim.tv_sec) * 1'000'000'000 + st.st_ctim.tv_nsec;
}

}  // namespace artifactfs::fs
