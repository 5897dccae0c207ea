// The in-memory side of the index's persistent dirty set ("changed set"):
// which keys have a committed row in the LMDB table `dirty`, which changes
// are in progress on them, and the hand-over between a change that needs a
// row and a flush that deletes rows. Private to the index library; see the
// CHANGED SET section of index.hpp for what the keys mean and index.cpp for
// the LMDB side.
//
// CONCURRENCY MODEL
// One mutex (`mutex_`) guards the whole map; it is a leaf lock (taken after
// flush_mutex, the LMDB writer lock and pending_mutex, and never held while
// waiting for LMDB). begin() may wait on `cv_` for another thread that is
// writing the same key, with no other lock of the index held.
//
// STATES OF A KEY
//   absent     no row, or a row a committed flush deleted
//   writing    a begin() claimed it and is committing its row
//   persisted  the row is committed
//   clearing   a flush took it at its batch swap (persisted, no change in
//              progress); its write transaction has not decided yet
//   deleting   that transaction decided to delete the row and may commit
// A begin() on a `clearing` key takes it back (persisted, no write: the row
// is still there and the flush will now leave it). A begin() on a `deleting`
// key writes the row again: its write transaction can only start after the
// flush's transaction ended (one LMDB writer), so its put lands after the
// delete. The flush confirms each deletion inside its own write transaction
// (confirm_deletions), so a begin() is either before the confirmation (the
// row stays) or after it (the row is written again): a mark is never lost.
#pragma once

#include <condition_variable>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace artifactfs::index {

class ChangeSet {
 public:
  // Counts a change in progress on every key. Returns the keys this caller
  // must now write and commit (it claimed them) before the change may touch
  // anything; then it calls written(). Waits while another thread writes
  // one of the keys. An empty result (the hot path) means every row is
  // committed already.
  std::vector<std::string> begin(const std::vector<std::string>& keys);
  // After the claimed rows were committed (ok) or the write failed.
  void written(const std::vector<std::string>& claimed, bool ok);
  // The change on these keys is over (its charges are in the pending batch).
  void end(const std::vector<std::string>& keys);
  // A row another transaction wrote (a tombstone), caller inside that
  // transaction. `by_flush`: the flush's own transaction, which may still
  // delete the row it clears (the tombstone's final value is in it).
  void persisted(const std::string& key, bool by_flush = false);

  // --- the flush --------------------------------------------------------------
  // At the batch swap: keys with a row and no change in progress move to
  // `clearing` and are returned.
  std::vector<std::string> take_clearable();
  bool has_clearable() const;
  // Inside the flush's write transaction: the keys still clearing (or
  // deleting, on a retry of the same flush) become `deleting`; the caller
  // deletes exactly these rows in that transaction.
  std::vector<std::string> confirm_deletions(const std::vector<std::string>& clearing);
  // After the commit: deleting -> absent. After a failure: back to persisted.
  void deletions_committed(const std::vector<std::string>& clearing);
  void deletions_aborted(const std::vector<std::string>& clearing);

  // The whole table was cleared (rebuild, recovery, clean close).
  void reset();
  // Keys with a committed row (tests and diagnostics).
  std::size_t persisted_count() const;

 private:
  enum class State { absent, writing, persisted, clearing, deleting };
  struct Key {
    int active = 0;
    State state = State::absent;
  };
  void forget_if_idle(std::unordered_map<std::string, Key>::iterator it);

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::unordered_map<std::string, Key> keys_;
};

}  // namespace artifactfs::index
