// Byte layouts of everything the index stores. Keys are big-endian so that
// LMDB's bytewise order is numeric order; values are fixed-width
// little-endian, independent of the host. A value that does not decode
// throws IndexCorrupt: the file was written by something else.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "index/index.hpp"

namespace artifactfs::index::codec {

// --- keys (big-endian) ----------------------------------------------------------
std::string be64(std::uint64_t v);
std::uint64_t read_be64(std::string_view bytes);  // exactly 8 bytes

// Key of the lru table: the access time shifted to an unsigned offset (so
// that negative times sort first), then the id, both big-endian.
std::string lru_key(TimeNs last_access, ArtifactId id);
std::pair<TimeNs, ArtifactId> read_lru_key(std::string_view key);

// --- values (little-endian) --------------------------------------------------------
std::string u64_value(std::uint64_t v);
std::uint64_t read_u64_value(std::string_view bytes);

std::string usage_value(const Usage& u);
Usage read_usage_value(std::string_view bytes);

std::string stats_value(const Stats& s);
Stats read_stats_value(std::string_view bytes);

// The record's id is the key; the value carries everything else.
std::string record_value(const ArtifactRecord& r);
ArtifactRecord read_record_value(ArtifactId id, std::string_view bytes);

// An eviction log row; its time and id are the key.
std::string eviction_value(const EvictionEntry& e);
EvictionEntry read_eviction_value(TimeNs when, ArtifactId id, std::string_view bytes);

std::string links_value(const LinkSet& links);
LinkSet read_links_value(std::string_view bytes);

}  // namespace artifactfs::index::codec

namespace artifactfs::index {
struct NodePlace;
}
namespace artifactfs::index::codec {
// A node table value: parent inode, the handle, the name.
std::string node_value(const NodePlace& place);
NodePlace read_node_value(std::string_view bytes);
}  // namespace artifactfs::index::codec
