// A bounded map from topic to an open AlephZero object (publisher, RPC client)
// that notices when the topic's file was removed or replaced (the root wiped
// and re-created) and reopens the object, so nothing is sent to an unlinked
// file.
#pragma once

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <a0.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>

namespace a0gw {

// Device and inode of a file; zeros when it does not exist.
struct FileIdentity {
  uint64_t dev = 0;
  uint64_t ino = 0;
  uint64_t size = 0;  // Bytes, when it was looked at; not part of the identity.
  bool sparse = false;  // Some of it not yet backed by storage, when looked at.
  bool operator==(const FileIdentity& o) const { return dev == o.dev && ino == o.ino; }
};

// Path of the file a topic of protocol template `tmpl` lives in.
inline std::string topic_file_path(const char* tmpl, const std::string& topic) {
  return std::string(a0::env::root()) + "/" + a0::topic_path(tmpl, topic);
}

// Identity of the file at `path`; zeros when it does not exist.
inline FileIdentity file_identity(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return {};
  return {static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino),
          static_cast<uint64_t>(st.st_size),
          static_cast<uint64_t>(st.st_blocks) * 512 < static_cast<uint64_t>(st.st_size)};
}

// Identity of the file a topic of protocol template `tmpl` lives in.
inline FileIdentity topic_file_identity(const char* tmpl, const std::string& topic) {
  return file_identity(topic_file_path(tmpl, topic));
}

// A write refused before it reaches AlephZero, with a reason for the client;
// what AlephZero itself throws is wrapped as AlephZeroError instead.
struct WriteRefused : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Raised when the file system of the AlephZero root cannot back the pages a
// write may touch.  AlephZero creates its files sparse and writes them
// through a mapping: on a full file system (a full /dev/shm) that write kills
// the process with SIGBUS, so it is refused before it happens.
struct NoSpace : WriteRefused {
  using WriteRefused::WriteRefused;
};

// Free bytes kept in hand beyond a packet's own size: the frame and index
// may touch a page or two more, and other processes write too.
constexpr uint64_t kSpaceMargin = 64 * 1024;

// What statvfs last said about one file system, so that most writes need no
// statvfs of their own: while there is plenty of room, a budget of half of
// it (the other half is left for other processes) is spent for a short while.
struct SpaceBudget {
  std::mutex mu;
  uint64_t dev = 0;
  uint64_t bytes = 0;
  std::chrono::steady_clock::time_point until;
};

inline SpaceBudget& space_budget() {
  static SpaceBudget budget;
  return budget;
}

// Throws NoSpace unless a write of about `need` bytes to the file at `path`
// (on device `dev`) is safe: the file is fully backed already, or its file
// system has room.
inline void check_space(const std::string& path, uint64_t dev, bool sparse, uint64_t need,
                        const std::string& what) {
  if (!sparse) return;
  SpaceBudget& budget = space_budget();
  auto now = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lk(budget.mu);
  if (budget.dev == dev && now < budget.until && budget.bytes >= need) {
    budget.bytes -= need;
    return;
  }
  struct statvfs vfs;
  if (::statvfs(path.c_str(), &vfs) != 0) return;
  uint64_t avail = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
  if (avail >= need + kSpaceMargin) {
    budget.dev = dev;
    budget.bytes = (avail - need - kSpaceMargin) / 2;
    budget.until = now + std::chrono::milliseconds(50);
    return;
  }
  budget.bytes = 0;
  throw NoSpace("No space left to write to " + what + ": its file system has " +
                std::to_string(avail) + " bytes free and the packet needs about " +
                std::to_string(need) + " (the file is not fully allocated yet).");
}

// The same for the file at `path` as `id` describes it.
inline void check_space(const std::string& path, const FileIdentity& id, uint64_t need,
                        const std::string& what) {
  check_space(path, id.dev, id.sparse, need, what);
}

// Whether `path` (which may not exist yet) resolves, through any symbolic
// links in its existing part, to somewhere under `root`.
inline bool resolves_under(const std::string& root, std::string path) {
  char buf[PATH_MAX];
  if (!::realpath(root.c_str(), buf)) return false;
  std::string real_root = buf;
  std::string rest;
  // Find the deepest part of the path that exists, and resolve it.  A name
  // that exists but does not resolve is a dangling symbolic link: where it
  // points cannot be checked, so it is refused.
  while (!::realpath(path.c_str(), buf)) {
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0) return false;
    size_t slash = path.find_last_of('/');
    if (slash == std::string::npos || slash == 0) return false;
    rest = path.substr(slash) + rest;
    path.resize(slash);
  }
  std::string real = std::string(buf) + rest;
  if (rest.find("/..") != std::string::npos) return false;
  return real == real_root || real.compare(0, real_root.size() + 1, real_root + "/") == 0;
}

// Raised when a topic's file would be outside the AlephZero root.
struct OutsideRoot : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Raised for a file AlephZero would misread: it trusts the header of any
// file it maps, and a truncated or foreign one can crash it.
struct NotAlephZeroFile : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Bytes of the transport header AlephZero writes at the start of a file.
constexpr size_t kTransportHeaderSize = 144;

// Where AlephZero 0.3's transport header keeps the frame offsets of its two
// state copies (head, tail, high-water mark), as laid out in files it writes.
// Every offset must lie inside the file, or reading a frame faults.
constexpr size_t kStateOffsets[] = {0x40, 0x48, 0x50, 0x68, 0x70, 0x78};

// Checks that an existing file at `path` looks like an AlephZero file: long
// enough for the transport header, which is either still all zeros (a new
// file AlephZero will initialize) or starts with AlephZero's magic and points
// only inside the file (a truncated file would send readers past its end).
// A FIFO, socket or device is refused before anything opens it: opening a
// FIFO waits for a writer, and that would stall whoever asked.
inline void check_alephzero_file(const std::string& path) {
  static constexpr char kMagic[] = "ALEPHZERO";  // With its NUL: 10 bytes.
  auto bad = [&](const char* why) {
    throw NotAlephZeroFile(std::string("Not an AlephZero file (") + why + "): " + path);
  };
  struct stat st;
  if (::stat(path.c_str(), &st) != 0 || S_ISDIR(st.st_mode)) return;  // AlephZero reports these.
  if (!S_ISREG(st.st_mode)) bad("not a regular file");
  // Non-blocking, in case the file was replaced by a FIFO since the stat.
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return;  // Gone again: AlephZero creates it.
  unsigned char head[kTransportHeaderSize] = {};
  bool ok = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  ssize_t n = ok ? ::pread(fd, head, sizeof(head), 0) : -1;
  ::close(fd);
  if (!ok) bad("not a regular file");
  if (size_t(st.st_size) < kTransportHeaderSize || n != ssize_t(sizeof(head))) bad("truncated");
  if (std::all_of(head, head + sizeof(head), [](unsigned char c) { return c == 0; })) return;
  if (std::memcmp(head, kMagic, sizeof(kMagic)) != 0) bad("bad header");
  for (size_t at : kStateOffsets) {
    uint64_t offset;
    std::memcpy(&offset, head + at, sizeof(offset));
    if (offset > uint64_t(st.st_size)) bad("truncated");
  }
}

// Not thread-safe: callers hold their own lock.
template <typename T>
class TopicCache {
 public:
  // `tmpl` gives the protocol's file-name template, e.g. a0::env::topic_tmpl_rpc.
  TopicCache(size_t capacity, const char* (*tmpl)()) : capacity_(capacity), tmpl_(tmpl) {}

  // The object for `topic`, opened with make(topic) when missing or stale.
  template <typename Make>
  T& get(const std::string& topic, Make&& make) {
    const char* tmpl = tmpl_();
    auto it = entries_.find(topic);
    if (it != entries_.end()) {
      FileIdentity now = topic_file_identity(tmpl, topic);
      if (now == it->second.identity) {
        it->second.identity = now;  // Same file: its size and allocation as of now.
        return it->second.object;
      }
      entries_.erase(it);
    }
    if (entries_.size() >= capacity_) entries_.erase(entries_.begin());
    // Checked before the object creates the file, so nothing appears outside.
    std::string root = a0::env::root();
    std::string path = topic_file_path(tmpl, topic);
    if (!resolves_under(root, path)) {
      throw OutsideRoot("Topic '" + topic + "' is outside the AlephZero root.");
    }
    check_alephzero_file(path);
    T object = make(topic);
    Entry entry{std::move(object), file_identity(path), path};
    return entries_.emplace(topic, std::move(entry)).first->second.object;
  }

  // check_space() for the file of the object open for `topic`, as of get().
  void check_space(const std::string& topic, uint64_t need, const std::string& what) const {
    auto it = entries_.find(topic);
    if (it == entries_.end()) return;
    a0gw::check_space(it->second.path, it->second.identity, need, what);
  }

  // Size of the file behind the object open for `topic` (0: unknown).
  uint64_t file_size(const std::string& topic) const {
    auto it = entries_.find(topic);
    return it == entries_.end() ? 0 : it->second.identity.size;
  }

  // The object for `topic` if one is open, else nullptr.
  T* find(const std::string& topic) {
    auto it = entries_.find(topic);
    return it == entries_.end() ? nullptr : &it->second.object;
  }

 private:
  struct Entry {
    T object;
    FileIdentity identity;
    std::string path;
  };

  size_t capacity_;
  const char* (*tmpl_)();
  std::unordered_map<std::string, Entry> entries_;
};

}  // namespace a0gw
