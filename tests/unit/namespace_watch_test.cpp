// NamespaceWatch: a walk made without the namespace lock is used only if no
// change recorded since it began touched one of its entries.
#include <catch2/catch.hpp>

#include "fs/namespace_watch.hpp"

using artifactfs::fs::NamespaceWatch;
using artifactfs::fs::SubtreeEntry;

namespace {

std::vector<SubtreeEntry> walk_of(std::initializer_list<ino_t> inodes) {
  std::vector<SubtreeEntry> entries;
  for (ino_t ino : inodes) {
    SubtreeEntry entry{};
    entry.st.st_ino = ino;
    entries.push_back(entry);
  }
  return entries;
}

}  // namespace

TEST_CASE("a walk no change touched is still true", "[namespace_watch]") {
  NamespaceWatch watch;
  auto ticket = watch.open();
  watch.record(99);  // a change elsewhere
  CHECK(watch.close(ticket, walk_of({10, 11, 12})));
}

TEST_CASE("a change to a walked directory or inode voids the walk", "[namespace_watch]") {
  NamespaceWatch watch;
  auto ticket = watch.open();
  watch.record(11);
  CHECK_FALSE(watch.close(ticket, walk_of({10, 11, 12})));
}

TEST_CASE("changes before the watch opened do not count", "[namespace_watch]") {
  NamespaceWatch watch;
  watch.record(11);
  auto ticket = watch.open();
  CHECK(watch.close(ticket, walk_of({10, 11, 12})));
}

TEST_CASE("several watches record independently", "[namespace_watch]") {
  NamespaceWatch watch;
  auto first = watch.open();
  watch.record(11);
  auto second = watch.open();
  watch.record(21);
  CHECK_FALSE(watch.close(first, walk_of({10, 11})));
  CHECK(watch.close(second, walk_of({10, 11})));  // 11 changed before it opened
  auto third = watch.open();
  CHECK(watch.close(third, walk_of({21})));
}

TEST_CASE("a closed or abandoned ticket is no longer recorded into", "[namespace_watch]") {
  NamespaceWatch watch;
  auto ticket = watch.open();
  watch.abandon(ticket);
  watch.record(5);
  CHECK_FALSE(watch.close(ticket, walk_of({1})));  // unknown ticket: not trusted
}

TEST_CASE("a watch that records too much gives up, with bounded memory", "[namespace_watch]") {
  NamespaceWatch watch;
  auto ticket = watch.open();
  for (ino_t ino = 1000; ino < 1000 + NamespaceWatch::kMaxRecorded + 10; ++ino) watch.record(ino);
  CHECK_FALSE(watch.close(ticket, walk_of({1})));  // none of these is in the walk, yet it cannot tell
}
