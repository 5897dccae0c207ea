// The libfuse low-level operations table for a Filesystem (the session's
// userdata).
#pragma once

#include <fuse_lowlevel.h>

namespace artifactfs::fs {

const fuse_lowlevel_ops& operations();

// The largest WRITE the connection asks for (Filesystem::init).
inline constexpr unsigned kMaxWrite = 1u << 20;

}  // namespace artifactfs::fs
