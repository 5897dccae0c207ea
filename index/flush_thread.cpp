// FlushThread: calls Index::flush() every interval, or at once after wake().
//
// CONCURRENCY MODEL
// One worker thread. `mutex` guards `stop` and `woken`; the worker waits on
// `cv` with it and releases it before flushing, so wake() and the
// destructor never wait for a flush to finish (except for the final join).
// after_flush runs on the worker thread with no lock of ours held; it may
// call into the index. Lock order: mutex, then nothing (never held while
// calling the index). Every Index::kReleaseInterval the worker also calls
// Index::release_memory() (without the mutex).
#include <pthread.h>
#include <spdlog/spdlog.h>

#include <condition_variable>
#include <mutex>
#include <thread>

#include "index/index.hpp"

namespace artifactfs::index {

struct FlushThread::Impl {
  Impl(Index& i, std::chrono::milliseconds every, std::function<void(const std::vector<ArtifactId>&)> after)
      : index(i), interval(every), after_flush(std::move(after)) {}

  Index& index;
  std::chrono::milliseconds interval;
  std::function<void(const std::vector<ArtifactId>&)> after_flush;

  std::mutex mutex;
  std::condition_variable cv;
  bool stop = false;
  bool woken = false;
  std::thread worker;

  void flush_once() {
    try {
      auto changed = index.flush();
      if (after_flush) after_flush(changed);
    } catch (const std::exception& e) {
      // The batch stays pending (flush gives it back), so retrying on the
      // next round loses nothing; stopping the thread would.
      spdlog::error("index flush failed: {}", e.what());
    }
  }

  void run() {
    std::unique_lock lock(mutex);
    // The first round releases at once: a mount that rebuilt the index has
    // read all of it (Index::release_memory).
    auto released = std::chrono::steady_clock::now() - Index::kReleaseInterval;
    while (!stop) {
      cv.wait_for(lock, interval, [&] { return stop || woken; });
      woken = false;
      if (stop) break;
      lock.unlock();
      flush_once();
      if (auto now = std::chrono::steady_clock::now(); now - released >= Index::kReleaseInterval) {
        index.release_memory();
        released = now;
      }
      lock.lock();
    }
    lock.unlock();
    flush_once();  // the final flush: nothing recorded before ~FlushThread is lost
  }
};

FlushThread::FlushThread(Index& index, std::chrono::milliseconds interval,
                         std::function<void(const std::vector<ArtifactId>&)> after_flush)
    : impl_(std::make_unique<Impl>(index, interval, std::move(after_flush))) {
  impl_->worker = std::thread([impl = impl_.get()] { impl->run(); });
  pthread_setname_np(impl_->worker.native_handle(), "afs-flush");
}

FlushThread::~FlushThread() {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stop = true;
  }
  impl_->cv.notify_one();
  impl_->worker.join();
}

void FlushThread::wake() {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->woken = true;
  }
  impl_->cv.notify_one();
}

}  // namespace artifactfs::index
