#include "stream.hpp"

#include <fcntl.h>
#include <limits.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>

#include <cerrno>
#include <cstdlib>
#include <stdexcept>
#include <system_error>

#include "encoding.hpp"

namespace a0gw {

namespace {

// Room left at the front of every frame for the largest WebSocket header, so
// the header can be written in place once the JSON length is known.
constexpr size_t kHeaderRoom = 10;

// Header the gateway adds to a packet that follows packets dropped by the
// IMMEDIATE scheduler; its value is how many were dropped just before it.
constexpr std::string_view kDroppedHeader = "a0gw_dropped";

std::optional<uint64_t> transport_seq(const PacketView& pkt) {
  for (const auto& [key, val] : pkt.headers) {
    if (key != "a0_transport_seq") continue;
    if (val.empty()) return std::nullopt;
    uint64_t seq = 0;
    for (char c : val) {
      if (c < '0' || c > '9') return std::nullopt;
      seq = seq * 10 + uint64_t(c - '0');
    }
    return seq;
  }
  return std::nullopt;
}

// A packet its reader gets later than this after it was published is backlog
// (a pre-filled topic, a reader catching up): direct mode leaves it to the
// event loop, which sends the queue in batches, instead of one send() each.
constexpr uint64_t kLiveAgeNs = 1'000'000;

// Whether `pkt` was published within kLiveAgeNs; true when it has no timestamp.
bool is_live(const PacketView& pkt) {
  for (const auto& [key, val] : pkt.headers) {
    if (key != A0_TIME_MONO) continue;
    if (val.empty() || val.size() > 19) return true;
    uint64_t published = 0;
    for (char c : val) {
      if (c < '0' || c > '9') return true;
      published = published * 10 + uint64_t(c - '0');
    }
    a0_time_mono_t now;
    if (a0_time_mono_now(&now) != A0_OK) return true;
    uint64_t now_ns = uint64_t(now.ts.tv_sec) * 1'000'000'000 + uint64_t(now.ts.tv_nsec);
    return now_ns < published + kLiveAgeNs;
  }
  return true;
}

std::string not_utf8_reason(std::string_view what, size_t offset) {
  // A close reason must fit in 123 bytes (RFC 6455 §5.5); this does.
  return std::string(what) + " is not UTF-8 at byte " + std::to_string(offset) +
         "; use response_encoding \"base64\"";
}

// Puts the WebSocket header in front of the JSON that follows kHeaderRoom and
// returns where the frame starts.
size_t finish_frame(std::string& buf, bool websocket) {
  if (!websocket) return kHeaderRoom;
  size_t json_len = buf.size() - kHeaderRoom;
  size_t offset = kHeaderRoom - ws_header_size(json_len);
  ws_write_text_header(json_len, buf.data() + offset);
  return offset;
}

// Sends the frames of `batch` to the socket `fd` without blocking and leaves
// in `batch` what the socket did not take; returns whether it took all.  Sets
// `broken` when the connection failed.
bool send_frames(int fd, Batch& batch, bool& broken) {
  // Small frames are joined first: the kernel takes one buffer faster than
  // many short pieces.  Large ones go as they are, without a copy.
  constexpr size_t kJoinBelow = 4096;
  size_t count = batch.frames.size();
  if (count > 1 && batch.total < count * kJoinBelow) {
    std::string joined;
    joined.reserve(batch.total);
    for (size_t i = 0; i < count; ++i) joined.append(batch.frames[i], batch.offsets[i]);
    batch.frames.assign(1, std::move(joined));
    batch.offsets.assign(1, 0);
  }

  size_t done = 0;  // Frames sent whole.
  while (done < batch.frames.size()) {
    iovec iov[IOV_MAX];
    size_t n_iov = std::min(batch.frames.size() - done, size_t(IOV_MAX));
    size_t want = 0;
    for (size_t i = 0; i < n_iov; ++i) {
      std::string& frame = batch.frames[done + i];
      size_t offset = batch.offsets[done + i];
      iov[i].iov_base = frame.data() + offset;
      iov[i].iov_len = frame.size() - offset;
      want += iov[i].iov_len;
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = n_iov;
    ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      broken = errno != EAGAIN && errno != EWOULDBLOCK;
      break;
    }

    // Drop what went out; the next frame may have gone in part.
    size_t left = size_t(n);
    batch.total -= left;
    while (left > 0) {
      size_t len = batch.frames[done].size() - batch.offsets[done];
      if (left < len) {
        batch.offsets[done] += left;
        break;
      }
      left -= len;
      std::string().swap(batch.frames[done]);
      ++done;
    }
    if (size_t(n) < want) break;  // The socket is full.
  }
  batch.frames.erase(batch.frames.begin(), batch.frames.begin() + done);
  batch.offsets.erase(batch.offsets.begin(), batch.offsets.begin() + done);
  return batch.frames.empty();
}

}  // namespace

// --- PacketView ----------------------------------------------------------------

void PacketView::assign(const a0_packet_t& pkt) {
  headers.clear();
  a0_packet_header_iterator_t it;
  a0_packet_header_iterator_init(&it, const_cast<a0_packet_t*>(&pkt));
  a0_packet_header_t hdr;
  while (a0_packet_header_iterator_next(&it, &hdr) == A0_OK) {
    headers.emplace_back(hdr.key, hdr.val);
  }
  payload = {reinterpret_cast<const char*>(pkt.payload.data), pkt.payload.size};
}

void PacketView::assign(const a0::Packet& pkt) {
  headers.clear();
  for (const auto& [key, val] : pkt.headers()) headers.emplace_back(key, val);
  payload = {pkt.payload().data(), pkt.payload().size()};
}

// --- Hub ---------------------------------------------------------------------

Hub::Hub() : efd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
  if (efd_ < 0) throw std::system_error(errno, std::generic_category(), "eventfd");
}

Hub::~Hub() { ::close(efd_); }

void Hub::notify(uint64_t id) {
  bool wake;
  {
    std::lock_guard<std::mutex> lk(mu_);
    wake = ready_.empty();
    ready_.push_back(id);
  }
  if (wake) {
    uint64_t one = 1;
    // Can only fail with EAGAIN when the counter is saturated: already readable.
    [[maybe_unused]] ssize_t n = ::write(efd_, &one, sizeof(one));
  }
}

std::vector<uint64_t> Hub::take_ready() {
  // Clear the eventfd before taking the list: a notify() racing with this call
  // then either lands in this list or writes the eventfd again.
  uint64_t count;
  [[maybe_unused]] ssize_t n = ::read(efd_, &count, sizeof(count));
  std::vector<uint64_t> out;
  std::lock_guard<std::mutex> lk(mu_);
  out.swap(ready_);
  return out;
}

// --- Stream: source side -----------------------------------------------------

Stream::Stream(std::shared_ptr<Hub> hub, uint64_t id, StreamOptions opts)
    : hub_(std::move(hub)), id_(id), opts_(opts) {}

Stream::~Stream() { close(); }

void Stream::attach(std::shared_ptr<void> source) {
  std::lock_guard<std::mutex> lk(mu_);
  source_ = std::move(source);
}

a0_packet_callback_t Stream::packet_callback(Stream* stream) {
  return {stream, [](void* user_data, a0_packet_t pkt) {
            // One view per AlephZero thread, reused so a packet costs no allocation.
            thread_local PacketView view;
            view.assign(pkt);
            static_cast<Stream*>(user_data)->deliver_packet(view);
          }};
}

void Stream::deliver_packet(const a0::Packet& pkt, std::optional<bool> done) {
  PacketView view;
  view.assign(pkt);
  deliver_packet(view, done);
}

void Stream::deliver_packet(const PacketView& pkt, std::optional<bool> done) {
  std::optional<uint64_t> seq;
  if (opts_.seq_min || opts_.report_gaps) seq = transport_seq(pkt);
  if (opts_.seq_min && seq && *seq < *opts_.seq_min) return;

  uint64_t dropped_before;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!accepting_locked()) return;

    // Packets the topic's ring overwrote before this reader got to them:
    // since the last one delivered, or since the seq the client asked to
    // start at.
    if (opts_.report_gaps && seq) {
      std::optional<uint64_t> before = last_seq_;
      if (!before && opts_.seq_min && *opts_.seq_min > 0) before = *opts_.seq_min - 1;
      if (before && *seq > *before + 1) {
        dropped_pending_ += *seq - *before - 1;
        dropped_total_ += *seq - *before - 1;
      }
      last_seq_ = seq;
    }

    // IMMEDIATE never waits: what does not fit is counted and dropped.
    if (opts_.scheduler == Scheduler::kImmediate && !frames_.empty() &&
        queued_bytes_ >= opts_.immediate_bytes) {
      ++dropped_pending_;
      ++dropped_total_;
      return;
    }
    dropped_before = dropped_pending_;
  }

  // Build {"headers": [[k, v], ...], "payload": "..."(, "done": b)} in place.
  std::string buf;
  std::string_view payload = pkt.payload;
  size_t payload_room = opts_.encoding == Encoding::kBase64 ? (payload.size() + 2) / 3 * 4
                                                            : payload.size() + payload.size() / 8;
  buf.reserve(kHeaderRoom + payload_room + 64 * (pkt.headers.size() + 1));
  buf.resize(kHeaderRoom);
  buf.append("{\"headers\":[");
  bool first = true;
  for (const auto& [key, val] : pkt.headers) {
    buf.append(first ? "[\"" : ",[\"");
    first = false;
    if (auto bad = json_escape(key, buf)) return fail(not_utf8_reason("A header key", *bad));
    buf.append("\",\"");
    if (auto bad = json_escape(val, buf)) return fail(not_utf8_reason("A header value", *bad));
    buf.append("\"]");
  }
  if (dropped_before) {
    buf.append(first ? "[\"" : ",[\"");
    buf.append(kDroppedHeader);
    buf.append("\",\"");
    buf.append(std::to_string(dropped_before));
    buf.append("\"]");
  }
  buf.append("],\"payload\":\"");
  if (opts_.encoding == Encoding::kBase64) {
    base64_encode(payload, buf);
  } else if (auto bad = json_escape(payload, buf)) {
    return fail(not_utf8_reason("The payload", *bad));
  }
  buf.push_back('"');
  if (done) buf.append(*done ? ",\"done\":true" : ",\"done\":false");
  buf.push_back('}');

  if (dropped_before) {
    std::lock_guard<std::mutex> lk(mu_);
    dropped_pending_ -= dropped_before;
  }
  size_t offset = finish_frame(buf, opts_.websocket);
  enqueue(std::move(buf), offset, opts_.websocket && is_live(pkt));
}

void Stream::deliver_json(std::string_view json) {
  std::string buf;
  buf.reserve(kHeaderRoom + json.size());
  buf.resize(kHeaderRoom);
  buf.append(json);
  size_t offset = finish_frame(buf, opts_.websocket);
  enqueue(std::move(buf), offset, true);
}

void Stream::enqueue(std::string frame, size_t offset, bool live) {
  bool wake = false;
  std::unique_lock<std::mutex> lk(mu_);
  if (!accepting_locked()) return;
  ++delivered_;

  // Direct mode: the queue is empty and the loop has nothing buffered, so a
  // live frame goes to the socket now; what the socket does not take is
  // queued.  Backlog is queued whole, ending direct mode.
  bool partly_sent = false;
  if (direct_ && !live) direct_ = false;
  if (direct_) {
    size_t len = frame.size() - offset;
    size_t sent = send_locked(frame.data() + offset, len);
    offset += sent;
    if (sent < len) direct_ = false;
    partly_sent = sent > 0 && sent < len;
  }

  if (offset < frame.size()) {
    if (opts_.newest_only) {
      // Older unsent frames go, except one the socket already has a part of.
      size_t keep = partial_front_ ? 1 : 0;
      frames_.erase(frames_.begin() + keep, frames_.end());
      offsets_.erase(offsets_.begin() + keep, offsets_.end());
      queued_bytes_ = keep ? frames_.front().size() - offsets_.front() : 0;
    }
    queued_bytes_ += frame.size() - offset;
    frames_.push_back(std::move(frame));
    offsets_.push_back(offset);
    // In direct mode the queue was empty, so this frame is now the front.
    if (partly_sent) partial_front_ = true;
    if (!scheduled_) {
      scheduled_ = true;
      wake = true;
    }
  }
  if (wake) {
    lk.unlock();
    hub_->notify(id_);
    lk.lock();
  }

  // Hold the AlephZero thread as the scheduler requires.  It then reads the
  // next packet only when released, which is what makes ITER_NEWEST skip.
  if (opts_.newest_only) return;
  switch (opts_.scheduler) {
    case Scheduler::kImmediate:
      break;
    case Scheduler::kOnAck:
      --ack_credit_;
      cv_.wait(lk, [this] { return closed_ || ack_credit_ > 0; });
      break;
    case Scheduler::kOnDrain:
      cv_.wait(lk, [this] { return closed_ || queued_bytes_ < opts_.drain_bytes; });
      break;
  }
}

void Stream::fail(std::string reason) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (!accepting_locked()) return;
    failed_ = true;
    direct_ = false;
    close_code_ = kCloseInternalError;
    close_reason_ = std::move(reason);
    if (scheduled_) return;
    scheduled_ = true;
  }
  hub_->notify(id_);
}

// --- Stream: event-loop side -------------------------------------------------

Batch Stream::take() {
  Batch batch;
  std::lock_guard<std::mutex> lk(mu_);
  direct_ = false;
  take_locked(batch);
  return batch;
}

Batch Stream::flush(bool socket_idle) {
  Batch batch;
  int fd;
  {
    std::lock_guard<std::mutex> lk(mu_);
    direct_ = false;
    take_locked(batch);
    if (!socket_idle || socket_ < 0 || !accepting_locked()) return batch;
    fd = socket_;
  }

  // Send without the lock, so the source thread goes on building frames; with
  // direct mode off it only queues them, and only close() on this same thread
  // closes the socket.
  bool broken = false;
  bool all_sent = send_frames(fd, batch, broken);

  std::lock_guard<std::mutex> lk(mu_);
  if (broken && socket_ == fd) {
    ::close(socket_);
    socket_ = -1;
  }
  if (all_sent && frames_.empty()) {
    direct_ = socket_ >= 0 && accepting_locked();
  } else {
    take_locked(batch);  // Frames queued meanwhile go after the rest.
  }
  return batch;
}

void Stream::take_locked(Batch& batch) {
  batch.frames.reserve(frames_.size());
  batch.offsets.reserve(frames_.size());
  for (size_t i = 0; i < frames_.size(); ++i) {
    batch.total += frames_[i].size() - offsets_[i];
    batch.frames.push_back(std::move(frames_[i]));
    batch.offsets.push_back(offsets_[i]);
  }
  frames_.clear();
  offsets_.clear();
  queued_bytes_ = 0;
  partial_front_ = false;
  scheduled_ = false;
  if (failed_) {
    batch.close_code = close_code_;
    batch.close_reason = close_reason_;
  }
  cv_.notify_all();
}

void Stream::attach_socket(int fd) {
  int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) throw std::system_error(errno, std::generic_category(), "dup");
  std::lock_guard<std::mutex> lk(mu_);
  if (closed_ || socket_ >= 0) {
    ::close(dup);
    return;
  }
  socket_ = dup;
}

Batch Stream::hold() {
  Batch batch;
  std::lock_guard<std::mutex> lk(mu_);
  direct_ = false;
  if (partial_front_) {
    size_t len = frames_.front().size() - offsets_.front();
    batch.total = len;
    batch.frames.push_back(std::move(frames_.front()));
    batch.offsets.push_back(offsets_.front());
    frames_.pop_front();
    offsets_.pop_front();
    queued_bytes_ -= len;
    partial_front_ = false;
    cv_.notify_all();
  }
  return batch;
}

size_t Stream::send_locked(const char* data, size_t len) {
  size_t sent = 0;
  while (sent < len && socket_ >= 0) {
    ssize_t n = ::send(socket_, data + sent, len - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      sent += size_t(n);
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      break;
    } else if (errno != EINTR) {
      // The connection failed; the loop's transport finds out on its own.
      ::close(socket_);
      socket_ = -1;
    }
  }
  return sent;
}

void Stream::ack() {
  std::lock_guard<std::mutex> lk(mu_);
  ++ack_credit_;
  cv_.notify_all();
}

void Stream::close() {
  std::shared_ptr<void> source;
  {
    std::lock_guard<std::mutex> lk(mu_);
    closed_ = true;
    direct_ = false;
    if (socket_ >= 0) {
      ::close(socket_);
      socket_ = -1;
    }
    frames_.clear();
    offsets_.clear();
    partial_front_ = false;
    queued_bytes_ = 0;
    source.swap(source_);
    cv_.notify_all();
  }
  // Destroying the source joins its thread, which may be inside deliver_*()
  // waiting on cv_; closed_ lets it return first.
  source.reset();
}

uint64_t Stream::dropped() const {
  std::lock_guard<std::mutex> lk(mu_);
  return dropped_total_;
}

uint64_t Stream::delivered() const {
  std::lock_guard<std::mutex> lk(mu_);
  return delivered_;
}

}  // namespace a0gw
