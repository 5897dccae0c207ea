// Index under concurrency: hot-path calls from several threads while a
// FlushThread runs, exact reads during flushes, and FlushThread timing.
#include <catch2/catch.hpp>

#include <stdlib.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/unit/temp_dir.hpp"
#include "index/index.hpp"

namespace ix = artifactfs::index;
using ix::ArtifactId;
using ix::Index;
using ix::Usage;
using namespace std::chrono_literals;

using artifactfs::testing::TempDir;

namespace {

// Collects what after_flush reports, and lets a test wait for an id.
class FlushLog {
 public:
  void operator()(const std::vector<ArtifactId>& ids) {
    std::lock_guard lock(mutex_);
    ++calls_;
    seen_.insert(ids.begin(), ids.end());
    cv_.notify_all();
  }
  bool wait_for_id(ArtifactId id, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return seen_.count(id) > 0; });
  }
  bool saw(ArtifactId id) {
    std::lock_guard lock(mutex_);
    return seen_.count(id) > 0;
  }
  int calls() {
    std::lock_guard lock(mutex_);
    return calls_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::set<ArtifactId> seen_;
  int calls_ = 0;
};

}  // namespace

TEST_CASE("index: concurrent accesses with a flush thread are counted exactly", "[index][threads]") {
  TempDir tmp;
  auto index = Index::open(tmp.index_dir());
  constexpr int kArtifacts = 8;
  constexpr int kThreads = 4;
  constexpr int kPerThread = 20000;
  std::vector<ArtifactId> ids;
  for (int i = 0; i < kArtifacts; ++i) ids.push_back(index->add_artifact("a" + std::to_string(i), 0, {}));

  std::atomic<bool> done{false};
  std::atomic<int> regressions{0};
  std::atomic<long> reads{0};
  {
    ix::FlushThread flusher(*index, 1ms);
    // A reader that must never see a count go down: a flush in flight is
    // neither lost nor counted twice.
    std::thread reader([&] {
      std::vector<std::uint64_t> last(kArtifacts, 0);
      std::uint64_t last_sum = 0;
      while (!done) {
        std::uint64_t sum = 0;
        for (int i = 0; i < kArtifacts; ++i) {
          auto rec = index->get(ids[i]);
          if (!rec || rec->access_count < last[i]) ++regressions;
          if (rec) last[i] = rec->access_count;
          sum += last[i];
        }
        if (sum < last_sum) ++regressions;
        last_sum = sum;
        ++reads;
      }
    });
    std::vector<std::thread> workers;
    for (int t = 0; t < kThreads; ++t) {
      workers.emplace_back([&, t] {
        for (int n = 0; n < kPerThread; ++n) {
          index->record_access(ids[(n + t) % kArtifacts], 1000 + n);
          index->charge(ids[n % kArtifacts], {1, 1, 0});
          index->charge_total({1, 0, 0});
          index->count(ix::Stat::hits);
        }
      });
    }
    for (auto& w : workers) w.join();
    done = true;
    reader.join();
  }  // the FlushThread's final flush

  CHECK(regressions == 0);
  CHECK(reads > 0);
  CHECK(index->flush().empty());  // nothing left pending
  std::vector<ix::TimeNs> newest(kArtifacts, 0);
  for (int t = 0; t < kThreads; ++t) {
    for (int n = 0; n < kPerThread; ++n) newest[(n + t) % kArtifacts] = std::max<ix::TimeNs>(newest[(n + t) % kArtifacts], 1000 + n);
  }
  std::uint64_t accesses = 0;
  std::int64_t bytes = 0;
  for (int i = 0; i < kArtifacts; ++i) {
    auto rec = index->get(ids[i]);
    REQUIRE(rec);
    accesses += rec->access_count;
    bytes += rec->usage.disk_bytes;
    CHECK(rec->last_access == newest[i]);
  }
  CHECK(accesses == std::uint64_t{kThreads} * kPerThread);
  CHECK(bytes == std::int64_t{kThreads} * kPerThread);
  CHECK(index->totals().usage.disk_bytes == kThreads * kPerThread);
  CHECK(index->stats().hits == std::uint64_t{kThreads} * kPerThread);

  index.reset();
  index = Index::open(tmp.index_dir());
  accesses = 0;
  for (auto id : ids) accesses += index->get(id)->access_count;
  CHECK(accesses == std::uint64_t{kThreads} * kPerThread);
  CHECK(index->stats().hits == std::uint64_t{kThreads} * kPerThread);
}

TEST_CASE("index: structural changes race safely with accesses and flushes", "[index][threads]") {
  TempDir tmp;
  ix::IndexOptions options;
  options.initial_map_size = 64 << 10;  // growth happens while others read
  auto index = Index::open(tmp.index_dir(), options);
  std::atomic<bool> done{false};
  std::atomic<int> duplicates{0};  // Catch2 assertions are not thread-safe
  ix::FlushThread flusher(*index, 2ms);
  std::thread accessor([&] {
    for (ArtifactId id = 1; !done; id = id % 3000 + 1) index->record_access(id, static_cast<ix::TimeNs>(id));
  });
  std::thread lru_reader([&] {
    while (!done) {
      auto page = index->least_recently_used(50);
      std::set<ArtifactId> unique;
      for (const auto& rec : page) unique.insert(rec.id);
      if (unique.size() != page.size()) ++duplicates;
    }
  });
  std::size_t removed = 0;
  for (int i = 0; i < 3000; ++i) {
    auto id = index->add_artifact("n/" + std::to_string(i), i, {10, 10, 1});
    if (i % 3 == 0 && index->remove_artifact(id)) ++removed;
  }
  done = true;
  accessor.join();
  lru_reader.join();
  index->flush();
  CHECK(duplicates == 0);
  CHECK(index->totals().artifact_count == 3000 - removed);
  CHECK(index->least_recently_used(10000).size() == 3000 - removed);
}

TEST_CASE("FlushThread flushes within the interval and reports the ids", "[index][threads]") {
  TempDir tmp;
  auto index = Index::open(tmp.index_dir());
  auto a = index->add_artifact("a", 1, {});
  FlushLog log;
  ix::FlushThread flusher(*index, 50ms, std::ref(log));
  auto start = std::chrono::steady_clock::now();
  index->record_access(a, 5);
  REQUIRE(log.wait_for_id(a, 5s));
  CHECK(std::chrono::steady_clock::now() - start < 2s);
  CHECK(index->flush().empty());  // the thread already applied it
}

TEST_CASE("FlushThread wake() flushes without waiting for the interval", "[index][threads]") {
  TempDir tmp;
  auto index = Index::open(tmp.index_dir());
  auto a = index->add_artifact("a", 1, {});
  FlushLog log;
  ix::FlushThread flusher(*index, 1h, std::ref(log));
  index->record_access(a, 5);
  flusher.wake();
  CHECK(log.wait_for_id(a, 5s));
}

TEST_CASE("FlushThread flushes once more when destroyed", "[index][threads]") {
  TempDir tmp;
  auto index = Index::open(tmp.index_dir());
  auto a = index->add_artifact("a", 1, {});
  FlushLog log;
  {
    ix::FlushThread flusher(*index, 1h, std::ref(log));
    index->record_access(a, 5);
  }
  CHECK(log.saw(a));
  CHECK(log.calls() == 1);
  CHECK(index->flush().empty());
  CHECK(index->get(a)->last_access == 5);
}
