// Index records, accounting, LRU order, pending merge, renames, pins, links
// and rebuild, all on a real LMDB environment in a temporary directory.
#include <catch2/catch.hpp>

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "tests/unit/temp_dir.hpp"
#include "index/index.hpp"

namespace ix = artifactfs::index;
using ix::ArtifactId;
using ix::ArtifactRecord;
using ix::Index;
using ix::Usage;

using artifactfs::testing::TempDir;

namespace {

std::vector<ArtifactId> lru_ids(const Index& index, std::size_t limit = 1000) {
  std::vector<ArtifactId> ids;
  for (const auto& r : index.least_recently_used(limit)) ids.push_back(r.id);
  return ids;
}

}  // namespace

TEST_CASE("index: records and accounting survive close and reopen", "[index]") {
  TempDir tmp;
  ArtifactId a = 0, b = 0;
  {
    auto index = Index::open(tmp.index_dir());
    CHECK(index->previous_shutdown_clean());
    a = index->add_artifact("ac/00/aaaa", 100, {4096, 1000, 2});
    b = index->add_artifact("ac/01/bbbb", 200, {8192, 5000, 1});
    CHECK(a != b);
    CHECK(a != ix::kOutside);
    index->charge(a, {4096, 24, 1});
    index->charge(ix::kOutside, {512, 10, 1});
    index->charge_total({16384, 6034, 4});
    index->count(ix::Stat::hits, 3);
    index->count(ix::Stat::misses);
    index->count(ix::Stat::cleanup_ns, 12345);
    index->record_access(a, 1'000);
    index->close_clean();
  }
  auto index = Index::open(tmp.index_dir());
  CHECK(index->previous_shutdown_clean());
  auto ra = index->get(a);
  REQUIRE(ra);
  CHECK(ra->name == "ac/00/aaaa");
  CHECK(ra->usage == Usage{8192, 1024, 3});
  CHECK(ra->created == 100);
  CHECK(ra->last_access == 1'000);
  CHECK(ra->access_count == 1);
  CHECK_FALSE(ra->pinned);
  auto rb = index->get(b);
  REQUIRE(rb);
  CHECK(rb->usage == Usage{8192, 5000, 1});
  CHECK(rb->last_access == 200);
  CHECK(index->find("ac/01/bbbb") == b);
  CHECK_FALSE(index->find("ac/02/cccc"));
  CHECK(index->totals().usage == Usage{16384, 6034, 4});
  CHECK(index->totals().artifact_count == 2);
  CHECK(index->outside_usage() == Usage{512, 10, 1});
  CHECK(index->stats().hits == 3);
  CHECK(index->stats().misses == 1);
  CHECK(index->stats().cleanup_ns == 12345);
  CHECK(index->stats().evictions == 0);
}

TEST_CASE("index: a taken name is refused and ids are never reused", "[index]") {
  TempDir tmp;
  auto index = Index::open(tmp.index_dir());
  auto a = index->add_artifact("x", 1, {});
  CHECK_THROWS_AS(index->add_artifact("x", 2, {}), ix::IndexError);
  CHECK_THROWS_AS(index->add_artifact("", 2, {}), ix::IndexError);
  CHECK_THROWS_AS(index->add_artifact(std::string(5000, 'n'), 2, {}), ix::IndexError);
  CHECK(index->totals().artifact_count == 1);
  REQUIRE(index->remove_artifact(a));
  auto again = index->add_artifact("x", 3, {});
  CHECK(again != a);
  CHECK(index->find("x") == again);
}

TEST_CASE("index: LRU order follows accesses, never backwards", "[index]") {
  TempDir tmp;
  auto index = Index::open(tmp.index_dir());
  auto a = index->add_artifact("a", 100, {});
  auto b = index->add_artifact("b", 200, {});
  auto c = index->add_artifact("c", 300, {});
  CHECK(lru_ids(*index) == std::vector{a, b, c});

  index->record_access(a, 400);
  CHECK(index->flush() == std::vector{a});
  CHECK(lru_ids(*index) == std::vector{b, c, a});

  // An access stamped earlier than the stored one (clock skew, a late
  // batch) counts but does not move the artifact back.
  index->record_access(c, 50);
  CHECK(index->flush().empty());
  CHECK(lru_ids(*index) == std::vector{b, c, a});
  CHECK(index->get(c)->last_access == 300);
  CHECK(index->get(c)->access_count == 1);

  // Survives reopen: the lru table itself was updated, not just memory.
  index.reset();
  index = Index::open(tmp.index_dir());
  CHECK(lru_ids(*index) == std::vector{b, c, a});
  CHECK(lru_ids(*index, 2) == std::vector{b, c});
}

TEST_CASE("index: least_recently_used pages strictly after the cursor", "[index]") {
  TempDir tmp;
  auto index = Index::open(tmp.index_dir());
  std::vector<ArtifactId> expected;
  for (int i = 0; i < 10; ++i) expected.push_back(index->add_artifact("n" + std::to_string(i), 1000 - i * 10, {}));
  // Equal times are ordered by id.
  auto t1 = index->add_artifact("tie1", 5, {});
  auto t2 = index->add_artifact("tie2", 5, {});
  // Negative times (before 1970) sort first.
  auto old = index->add_artifact("old", -7, {});
  std::reverse(expected.begin(), expected.end());
  expected.insert(expected.begin(), {old, t1, t2});

  std::vector<ArtifactId> paged;
  std::optional<std::pair<ix::TimeNs, ArtifactId>> after;
  for (;;) {
    auto page = index->least_recently_used(3, after);
    if (page.empty()) break;
    CHECK(page.size() <= 3);
    for (const auto& r : page) paged.push_back(r.id);
    after = std::pair{page.back().last_access, page.back().id};
  }
  CHECK(paged == expected);
  CHECK(index->least_recently_used(0).empty());
}

TEST_CASE("index: reads merge the pending batch", "[index]") {
  TempDir tmp;
  auto index = Index::open(tmp.index_dir());
  auto a = index->add_artifact("p/a", 10, {100, 100, 1});
  index->record_access(a, 50);
  index->record_access(a, 40);
  index->charge(a, {5, 6, 7});

  auto r = index->get(a);
  REQUIRE(r);
  CHECK(r->last_access == 50);
  CHECK(r->access_count == 2);
  CHECK(r->usage == Usage{105, 106, 8});

  auto lru = index->least_recently_used(10);
  REQUIRE(lru.size() == 1);
  CHECK(lru[0].access_count == 2);
  CHECK(lru[0].usage == Usage{105, 106, 8});

  int visited = 0;
  index->for_each_with_prefix("p/", [&](const ArtifactRecord& rec) {
    ++visited;
    CHECK(rec.access_count == 2);
    CHECK(rec.last_access == 50);
  });
  CHECK(visited == 1);

  // The same values after the flush: nothing counted twice.
  index->flush();
  r = index->get(a);
  CHECK(r->access_count == 2);
  CHECK(r->usage == Usage{105, 106, 8});
}

TEST_CASE("index: flush returns exactly the ids whose last access changed", "[index]") {
  TempDir tmp;
  auto index = Index::open(tmp.index_dir());
  auto a = index->add_artifact("a", 10, {});
  auto b = index->add_artifact("b", 10, {});
  auto c = index->add_artifact("c", 10, {});
  index->record_access(c, 20);
  index->record_access(a, 30);
  index->charge(b, {1, 1, 0});  // usage only: last access unchanged
  CHECK(index->flush() == std::vector{a, c});
  CHECK(index->flush().empty());
  index->record_access(a, 30);  // same time as stored
  CHECK(index->flush().empty());
  CHECK(index->get(a)->access_count == 2);
  CHECK(index->get(b)->usage == Usage{1, 1, 0});
}

TEST_CASE("index: remove returns the merged record and drops pending changes", "[index]") {
  TempDir tmp;
  auto index = Index::open(tmp.index_dir());
  auto a = index->add_artifact("gone", 10, {100, 10, 1});
  auto keep = index->add_artifact("keep", 5, {});
  index->charge_total({100, 10, 1});
  index->record_access(a, 99);
  index->charge(a, {50, 5, 0});

  auto removed = index->remove_artifact(a);
  REQUIRE(removed);
  CHECK(removed->name == "gone");
  CHECK(removed->usage == Usage{150, 15, 1});
  CHECK(removed->last_access == 99);
  CHECK(removed->access_count == 1);
  CHECK(index->totals().artifact_count == 1);
  CHECK(index->totals().usage == Usage{100, 10, 1});  // the caller charges what was freed
  CHECK_FALSE(index->get(a));
  CHECK_FALSE(index->find("gone"));
  CHECK_FALSE(index->remove_artifact(a));

  index->record_access(a, 200);  // a late access to a removed artifact
  CHECK(index->flush().empty());
  CHECK(lru_ids(*index) == std::vector{keep});
  CHECK_FALSE(index->get(a));
}

TEST_CASE("index: rename moves the name and keeps the record", "[index]") {
  TempDir tmp;
  ArtifactId a = 0;
  {
    auto index = Index::open(tmp.index_dir());
    a = index->add_artifact("old/name", 10, {1, 2, 3});
    index->add_artifact("taken", 10, {});
    index->rename_artifact(a, "new/name");
    CHECK_FALSE(index->find("old/name"));
    CHECK(index->find("new/name") == a);
    CHECK(index->get(a)->name == "new/name");
    CHECK(index->get(a)->usage == Usage{1, 2, 3});
    CHECK_THROWS_AS(index->rename_artifact(a, "taken"), ix::IndexError);
    CHECK(index->find("new/name") == a);
    CHECK_THROWS_AS(index->rename_artifact(12345, "whatever"), ix::IndexError);
    index->rename_artifact(a, "new/name");  // to itself: nothing to do
  }
  auto index = Index::open(tmp.index_dir());
  CHECK(index->find("new/name") == a);
  CHECK(index->get(a)->name == "new/name");
  CHECK_FALSE(index->find("old/name"));
}

TEST_CASE("index: pins persist across reopen", "[index]") {
  TempDir tmp;
  ArtifactId a = 0, b = 0;
  {
    auto index = Index::open(tmp.index_dir());
    a = index->add_artifact("a", 1, {});
    b = index->add_artifact("b", 1, {});
    index->set_pinned(a, true);
    index->set_pinned(b, true);
    index->set_pinned(b, false);
    CHECK_THROWS_AS(index->set_pinned(999, true), ix::IndexError);
  }
  auto index = Index::open(tmp.index_dir());
  CHECK(index->get(a)->pinned);
  CHECK_FALSE(index->get(b)->pinned);
}

TEST_CASE("index: link sets are stored, replaced and erased", "[index]") {
  TempDir tmp;
  ix::LinkSet set{{ix::kOutside, 1}, {7, 2}, {1ull << 40, 3}};
  {
    auto index = Index::open(tmp.index_dir());
    CHECK_FALSE(index->links(42));
    index->set_links(42, set);
    index->set_links(43, {{1, 1}});
    CHECK(index->links(42) == set);
  }
  auto index = Index::open(tmp.index_dir());
  CHECK(index->links(42) == set);
  index->set_links(42, {});
  CHECK_FALSE(index->links(42));
  CHECK(index->links(43) == ix::LinkSet{{1, 1}});
}

TEST_CASE("index: for_each_with_prefix visits by name order, in chunks", "[index]") {
  TempDir tmp;
  auto index = Index::open(tmp.index_dir());
  index->add_artifact("a", 1, {});
  index->add_artifact("p", 1, {});
  index->add_artifact("q/1", 1, {});
  std::set<std::string> expected;
  for (int i = 0; i < 2500; ++i) {
    auto name = "p/" + std::to_string(i);
    index->add_artifact(name, i, {});
    expected.insert(name);
  }
  std::vector<std::string> seen;
  index->for_each_with_prefix("p/", [&](const ArtifactRecord& rec) {
    seen.push_back(rec.name);
    // Callbacks run with no transaction open, so they may use the index.
    CHECK(index->find(rec.name) == rec.id);
  });
  CHECK(seen == std::vector<std::string>(expected.begin(), expected.end()));

  std::size_t all = 0;
  index->for_each_with_prefix("", [&](const ArtifactRecord&) { ++all; });
  CHECK(all == 2503);
}

TEST_CASE("index: rebuild keeps history, adds new and removes vanished artifacts", "[index]") {
  TempDir tmp;
  ArtifactId a = 0, b = 0, c = 0, d = 0;
  {
    auto index = Index::open(tmp.index_dir());
    a = index->add_artifact("a", 1, {10, 10, 1});
    b = index->add_artifact("b", 2, {20, 20, 1});
    c = index->add_artifact("c", 3, {30, 30, 1});
    index->record_access(a, 500);
    index->record_access(a, 600);
    index->flush();
    index->set_pinned(b, true);
    index->set_links(7, {{a, 1}, {c, 1}});
    index->charge_total({1, 1, 1});
    index->charge(a, {1000, 1000, 0});  // pending usage is superseded by the walk

    auto rebuild = index->begin_rebuild();
    rebuild->artifact("a", {11, 11, 2}, 999);
    rebuild->artifact("b", {22, 22, 2}, 999);
    rebuild->artifact("d", {44, 44, 4}, 777);
    rebuild->links(9, {{"a", 1}, {"d", 2}, {"", 1}});
    rebuild->outside({5, 5, 5});
    rebuild->total({82, 82, 13});
    rebuild->commit();
    d = *index->find("d");

    CHECK(index->totals().artifact_count == 3);
    CHECK(index->totals().usage == Usage{82, 82, 13});
    CHECK(index->outside_usage() == Usage{5, 5, 5});
    CHECK(index->get(a)->usage == Usage{11, 11, 2});
  }
  auto index = Index::open(tmp.index_dir());
  auto ra = index->get(a);
  REQUIRE(ra);
  CHECK(ra->created == 1);
  CHECK(ra->last_access == 600);
  CHECK(ra->access_count == 2);
  CHECK(ra->usage == Usage{11, 11, 2});
  CHECK(index->get(b)->pinned);
  CHECK(index->get(b)->usage == Usage{22, 22, 2});
  CHECK_FALSE(index->get(c));
  CHECK_FALSE(index->find("c"));
  auto rd = index->get(d);
  REQUIRE(rd);
  CHECK(d != c);
  CHECK(rd->created == 777);
  CHECK(rd->last_access == 777);
  CHECK(rd->access_count == 0);
  CHECK_FALSE(index->links(7));
  CHECK(index->links(9) == ix::LinkSet{{ix::kOutside, 1}, {a, 1}, {d, 2}});
  CHECK(index->totals().usage == Usage{82, 82, 13});
  CHECK(index->totals().artifact_count == 3);
  CHECK(index->outside_usage() == Usage{5, 5, 5});
  CHECK(lru_ids(*index) == std::vector{b, a, d});  // 2, 600, 777
}

TEST_CASE("index: rebuild larger than one chunk", "[index]") {
  TempDir tmp;
  auto index = Index::open(tmp.index_dir());
  constexpr int kOld = 12000;
  for (int i = 0; i < kOld; ++i) index->add_artifact("old/" + std::to_string(i), i, {1, 1, 1});
  auto rebuild = index->begin_rebuild();
  // Keep the odd ones, add 500 new.
  for (int i = 1; i < kOld; i += 2) rebuild->artifact("old/" + std::to_string(i), {2, 2, 1}, 0);
  for (int i = 0; i < 500; ++i) rebuild->artifact("new/" + std::to_string(i), {3, 3, 1}, 50);
  rebuild->total({}); rebuild->outside({});
  rebuild->commit();
  CHECK(index->totals().artifact_count == kOld / 2 + 500);
  CHECK_FALSE(index->find("old/0"));
  CHECK_FALSE(index->find("old/11998"));
  auto kept = index->find("old/11999");
  REQUIRE(kept);
  CHECK(index->get(*kept)->created == 11999);
  CHECK(index->get(*kept)->usage == Usage{2, 2, 1});
  std::size_t n = 0;
  index->for_each_with_prefix("", [&](const ArtifactRecord&) { ++n; });
  CHECK(n == kOld / 2 + 500);
  CHECK(index->least_recently_used(100000).size() == kOld / 2 + 500);
}

TEST_CASE("index: paging with an unflushed access on the cursor record skips nothing", "[index]") {
  TempDir tmp;
  auto index = Index::open(tmp.index_dir());
  std::vector<ArtifactId> ids;
  for (int i = 0; i < 6; ++i) ids.push_back(index->add_artifact("n" + std::to_string(i), 10 * (i + 1), {}));
  auto first = index->least_recently_used(2);
  REQUIRE(first.size() == 2);
  // The record that ends the page is read again, merged, with a newer time.
  index->record_access(first.back().id, 1000);
  auto cursor_rec = index->get(first.back().id);
  REQUIRE(cursor_rec->last_access == 1000);
  auto rest = index->least_recently_used(10, std::pair{cursor_rec->last_access, cursor_rec->id});
  std::vector<ArtifactId> got;
  for (const auto& r : rest) got.push_back(r.id);
  CHECK(got == std::vector<ArtifactId>(ids.begin() + 2, ids.end()));
}
