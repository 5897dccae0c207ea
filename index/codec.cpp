#include "index/codec.hpp"

#include <cstring>

namespace artifactfs::index::codec {

namespace {

// Bumped when the record layout changes; the schema version in meta guards
// the whole file, this byte lets a single bad record be told apart.
// Format 1 had no root inode; it reads as 0 ("unknown").
constexpr std::uint8_t kRecordFormat = 2;

[[noreturn]] void malformed(std::string_view what, std::size_t size) {
  throw IndexCorrupt("malformed " + std::string(what) + " value (" + std::to_string(size) + " bytes)");
}

class Writer {
 public:
  void u8(std::uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u32(std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void u64(std::uint64_t v) {
    for (int i = 0; i < 8; ++i) out_.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
  void i64(std::int64_t v) { u64(static_cast<std::uint64_t>(v)); }
  void bytes(std::string_view s) { out_.append(s); }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  Reader(std::string_view in, std::string_view what) : in_(in), what_(what) {}
  std::uint8_t u8() { return static_cast<std::uint8_t>(take(1)[0]); }
  std::uint32_t u32() {
    auto b = take(4);
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i) v |= std::uint32_t(static_cast<unsigned char>(b[i])) << (8 * i);
    return v;
  }
  std::uint64_t u64() {
    auto b = take(8);
    std::uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= std::uint64_t(static_cast<unsigned char>(b[i])) << (8 * i);
    return v;
  }
  std::int64_t i64() { return static_cast<std::int64_t>(u64()); }
  std::string_view take(std::size_t n) {
    if (in_.size() - pos_ < n) malformed(what_, in_.size());
    auto s = in_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  // Trailing bytes mean the layout is not the one we wrote.
  void finish() const {
    if (pos_ != in_.size()) malformed(what_, in_.size());
  }

 private:
  std::string_view in_;
  std::string_view what_;
  std::size_t pos_ = 0;
};

void write_usage(Writer& w, const Usage& u) {
  w.i64(u.disk_bytes);
  w.i64(u.apparent_bytes);
  w.i64(u.files);
}

Usage read_usage(Reader& r) {
  Usage u;
  u.disk_bytes = r.i64();
  u.apparent_bytes = r.i64();
  u.files = r.i64();
  return u;
}

}  // namespace

std::string be64(std::uint64_t v) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[7 - i] = static_cast<char>((v >> (8 * i)) & 0xff);
  return out;
}

std::uint64_t read_be64(std::string_view bytes) {
  if (bytes.size() != 8) malformed("big-endian key", bytes.size());
  std::uint64_t v = 0;
  for (unsigned char c : bytes) v = (v << 8) | c;
  return v;
}

namespace {
constexpr std::uint64_t kSignFlip = std::uint64_t{1} << 63;
}

std::string lru_key(TimeNs last_access, ArtifactId id) {
  return be64(static_cast<std::uint64_t>(last_access) ^ kSignFlip) + be64(id);
}

std::pair<TimeNs, ArtifactId> read_lru_key(std::string_view key) {
  if (key.size() != 16) malformed("lru key", key.size());
  auto t = static_cast<TimeNs>(read_be64(key.substr(0, 8)) ^ kSignFlip);
  return {t, read_be64(key.substr(8))};
}

std::string u64_value(std::uint64_t v) {
  Writer w;
  w.u64(v);
  return w.take();
}

std::uint64_t read_u64_value(std::string_view bytes) {
  Reader r(bytes, "integer");
  auto v = r.u64();
  r.finish();
  return v;
}

std::string usage_value(const Usage& u) {
  Writer w;
  write_usage(w, u);
  return w.take();
}

Usage read_usage_value(std::string_view bytes) {
  Reader r(bytes, "usage");
  auto u = read_usage(r);
  r.finish();
  return u;
}

std::string stats_value(const Stats& s) {
  Writer w;
  for (auto v : {s.hits, s.misses, s.evictions, s.bytes_evicted, s.cleanup_runs, s.cleanup_ns, s.protected_skips}) {
    w.u64(v);
  }
  return w.take();
}

Stats read_stats_value(std::string_view bytes) {
  Reader r(bytes, "stats");
  Stats s;
  for (auto* v : {&s.hits, &s.misses, &s.evictions, &s.bytes_evicted, &s.cleanup_runs, &s.cleanup_ns,
                  &s.protected_skips}) {
    *v = r.u64();
  }
  r.finish();
  return s;
}

std::string record_value(const ArtifactRecord& rec) {
  Writer w;
  w.u8(kRecordFormat);
  write_usage(w, rec.usage);
  w.i64(rec.created);
  w.i64(rec.last_access);
  w.u64(rec.access_count);
  w.u8(rec.pinned ? 1 : 0);
  w.u32(static_cast<std::uint32_t>(rec.name.size()));
  w.bytes(rec.name);
  w.u64(rec.root_ino);
  return w.take();
}

std::string eviction_value(const EvictionEntry& e) {
  Writer w;
  w.u8(static_cast<std::uint8_t>(e.reason));
  write_usage(w, e.usage);
  w.i64(e.created);
  w.i64(e.last_access);
  w.u64(e.access_count);
  w.u32(static_cast<std::uint32_t>(e.name.size()));
  w.bytes(e.name);
  return w.take();
}

EvictionEntry read_eviction_value(TimeNs when, ArtifactId id, std::string_view bytes) {
  Reader r(bytes, "eviction log");
  EvictionEntry e;
  e.when = when;
  e.id = id;
  e.reason = static_cast<EvictionReason>(r.u8());
  e.usage = read_usage(r);
  e.created = r.i64();
  e.last_access = r.i64();
  e.access_count = r.u64();
  e.name = std::string(r.take(r.u32()));
  r.finish();
  return e;
}

ArtifactRecord read_record_value(ArtifactId id, std::string_view bytes) {
  Reader r(bytes, "artifact record");
  const std::uint8_t format = r.u8();
  if (format != 1 && format != kRecordFormat) malformed("artifact record (unknown format)", bytes.size());
  ArtifactRecord rec;
  rec.id = id;
  rec.usage = read_usage(r);
  rec.created = r.i64();
  rec.last_access = r.i64();
  rec.access_count = r.u64();
  rec.pinned = (r.u8() & 1) != 0;
  rec.name = std::string(r.take(r.u32()));
  if (format >= 2) rec.root_ino = r.u64();
  r.finish();
  return rec;
}

std::string links_value(const LinkSet& links) {
  Writer w;
  w.u32(static_cast<std::uint32_t>(links.size()));
  for (const auto& [id, n] : links) {
    w.u64(id);
    w.u32(n);
  }
  return w.take();
}

LinkSet read_links_value(std::string_view bytes) {
  Reader r(bytes, "link set");
  LinkSet links;
  std::uint32_t n = r.u32();
  for (std::uint32_t i = 0; i < n; ++i) {
    auto id = r.u64();
    links[id] = r.u32();
  }
  r.finish();
  return links;
}

}  // namespace artifactfs::index::codec

#include "index/node_table.hpp"

namespace artifactfs::index::codec {

std::string node_value(const NodePlace& place) {
  Writer w;
  w.u64(place.parent);
  w.u32(static_cast<std::uint32_t>(place.handle.size()));
  w.bytes(place.handle);
  w.u32(static_cast<std::uint32_t>(place.name.size()));
  w.bytes(place.name);
  return w.take();
}

NodePlace read_node_value(std::string_view bytes) {
  Reader r(bytes, "node place");
  NodePlace place;
  place.parent = r.u64();
  place.handle = std::string(r.take(r.u32()));
  place.name = std::string(r.take(r.u32()));
  r.finish();
  return place;
}

}  // namespace artifactfs::index::codec
