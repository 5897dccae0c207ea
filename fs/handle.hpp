// Per-open state, carried in fuse_file_info::fh.
#pragma once

#include <dirent.h>
#include <fuse_lowlevel.h>

#include <cstdint>
#include <mutex>

#include "fs/inode.hpp"
#include "fs/live_artifact.hpp"
#include "fs/long_held.hpp"

namespace artifactfs::fs {

struct Handle {
  int fd = -1;
  bool writable = false;
  InodePtr inode;
  Lease lease;  // keeps the artifact from being evicted while open
  HandleUse use;  // listed in LongHeldHandles while open inside an artifact

  static Handle* of(const fuse_file_info* fi) { return reinterpret_cast<Handle*>(fi->fh); }
};

struct DirHandle {
  std::mutex mutex;  // readdir calls on one handle may come from several threads
  DIR* dir = nullptr;
  off_t offset = 0;
  dirent* entry = nullptr;  // read but not yet returned (did not fit)
  InodePtr inode;
  Lease lease;
  HandleUse use;  // listed in LongHeldHandles while open inside an artifact

  static DirHandle* of(const fuse_file_info* fi) { return reinterpret_cast<DirHandle*>(fi->fh); }
};

}  // namespace artifactfs::fs
