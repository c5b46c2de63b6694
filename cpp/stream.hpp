// The streaming path from an AlephZero reader thread to the event loop.
//
// A Stream belongs to one WebSocket connection.  Its AlephZero source (a
// subscriber, reader, log listener, prpc client or discovery) calls deliver_*()
// on its own thread; the Stream turns each packet into a complete WebSocket
// text frame, queues it and applies the connection's scheduler, blocking that
// thread when the scheduler says so.  The event loop is woken through the Hub:
// one eventfd for all streams, written only when the list of streams with
// frames goes from empty to non-empty, so a burst of packets on many streams
// costs one wake-up.  The loop then calls take() on each ready stream and gets
// every queued frame as one buffer.
//
// A WebSocket stream can also own a duplicate of its connection's socket.
// When the loop finds the connection idle (nothing buffered in the transport),
// flush() sends the queued frames itself and, if the socket took them all,
// turns on direct mode: the source thread then sends each live frame (one
// published less than a millisecond ago) to the socket itself, with no
// hand-off to the loop.  Backlog, or a frame the socket does not take whole,
// ends direct mode and goes through the queue; the loop calls hold() before
// writing anything of its own, and writes first the rest of a frame the
// socket already has part of.
#pragma once

#include <a0.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace a0gw {

enum class Scheduler { kImmediate = 0, kOnAck = 1, kOnDrain = 2 };

// A packet's headers and payload as views, whichever API produced it.
struct PacketView {
  std::vector<std::pair<std::string_view, std::string_view>> headers;
  std::string_view payload;

  // Fills this view from a C packet; views into `pkt`'s buffers.
  void assign(const a0_packet_t& pkt);
  // Fills this view from a C++ packet; views into `pkt`.
  void assign(const a0::Packet& pkt);
};
enum class Encoding { kNone = 0, kBase64 = 1 };

// Close code sent when a packet cannot be encoded as the client asked.
constexpr int kCloseInternalError = 1011;

// Wakes the event loop when streams have frames to send.
class Hub {
 public:
  Hub();
  ~Hub();
  Hub(const Hub&) = delete;
  Hub& operator=(const Hub&) = delete;

  // The eventfd the event loop watches for readability.
  int fd() const { return efd_; }

  // Marks stream `id` ready; called by a stream at most once per take().
  void notify(uint64_t id);

  // Clears the eventfd and returns the ids of the streams marked ready.
  std::vector<uint64_t> take_ready();

 private:
  int efd_;
  std::mutex mu_;
  std::vector<uint64_t> ready_;
};

struct StreamOptions {
  Scheduler scheduler = Scheduler::kOnDrain;
  Encoding encoding = Encoding::kNone;
  // Deliver only packets whose a0_transport_seq is at least this.
  std::optional<uint64_t> seq_min;
  // ON_DRAIN: the reader waits while this many bytes are queued.
  size_t drain_bytes = 256 * 1024;
  // IMMEDIATE: packets arriving while this many bytes are queued are dropped.
  size_t immediate_bytes = 4 * 1024 * 1024;
  // Keep only the newest unsent frame, never waiting (prpc with ITER_NEWEST,
  // whose reader AlephZero iterates itself).
  bool newest_only = false;
  // Frame each message for a WebSocket; false gives bare JSON (REST bodies).
  bool websocket = true;
  // Count jumps in a0_transport_seq as dropped packets (readers that should
  // see every packet: ITER_NEXT on a pubsub topic or file).
  bool report_gaps = false;
};

// What take() hands to the event loop.
struct Batch {
  std::vector<std::string> frames;  // Each holds one frame from `offsets[i]`.
  std::vector<size_t> offsets;
  size_t total = 0;
  int close_code = 0;  // Non-zero: send these frames, then close with it.
  std::string close_reason;
};

class Stream {
 public:
  Stream(std::shared_ptr<Hub> hub, uint64_t id, StreamOptions opts);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Keeps `source` (the AlephZero object calling deliver_*) alive until close().
  void attach(std::shared_ptr<void> source);

  // Source side (AlephZero threads).
  void deliver_packet(const PacketView& pkt, std::optional<bool> done = std::nullopt);
  void deliver_packet(const a0::Packet& pkt, std::optional<bool> done = std::nullopt);
  void deliver_json(std::string_view json);

  // A C packet callback that delivers to the stream in `user_data`.
  static a0_packet_callback_t packet_callback(Stream* stream);

  // Event-loop side.
  Batch take();
  // Gives the stream a duplicate of its connection's socket (non-blocking),
  // closed by close(); direct mode stays off until the next flush().
  void attach_socket(int fd);
  // Like take(), but with `socket_idle` (the loop has nothing buffered for the
  // socket) first sends the queued frames to the socket, without holding the
  // stream's lock, and returns only what it did not take, followed by frames
  // queued meanwhile; when it took everything, direct mode starts.
  Batch flush(bool socket_idle);
  // Ends direct mode, waiting for a send in progress: the loop is about to
  // write to the socket itself.  Returns the rest of a frame the socket
  // already has part of, which the loop must write before anything else.
  Batch hold();
  void ack();
  // Stops the source and wakes a blocked reader; idempotent.  Blocks until the
  // source's thread has left its callback, so call it without the GIL.
  void close();

  uint64_t id() const { return id_; }
  uint64_t dropped() const;
  uint64_t delivered() const;

 private:
  // Appends a finished frame (or sends it, if `live` and in direct mode) and
  // waits as the scheduler requires.
  void enqueue(std::string frame, size_t offset, bool live);
  // Moves every queued frame into `batch`.
  void take_locked(Batch& batch);
  // Sends `len` bytes without blocking; returns how many the socket took.  A
  // socket error ends direct mode for good.
  size_t send_locked(const char* data, size_t len);
  void fail(std::string reason);
  bool accepting_locked() const { return !closed_ && !failed_; }

  std::shared_ptr<Hub> hub_;
  const uint64_t id_;
  const StreamOptions opts_;

  mutable std::mutex mu_;
  std::condition_variable cv_;  // Signalled by take(), ack() and close().
  std::deque<std::string> frames_;
  std::deque<size_t> offsets_;  // Where each queued frame starts in its string.
  size_t queued_bytes_ = 0;
  bool scheduled_ = false;  // Already in the hub's ready list.
  bool closed_ = false;
  bool failed_ = false;  // A packet could not be encoded; stream is ending.
  int close_code_ = 0;
  std::string close_reason_;
  int socket_ = -1;      // Our duplicate of the connection's socket, or -1.
  bool direct_ = false;  // Direct mode: frames_ is empty and enqueue() sends.
  bool partial_front_ = false;  // The socket already has part of frames_.front().
  int64_t ack_credit_ = 1;       // ON_ACK: frames that may be sent before the next ACK.
  uint64_t dropped_pending_ = 0;  // Drops not yet reported to the client.
  std::optional<uint64_t> last_seq_;  // a0_transport_seq of the last packet seen.
  uint64_t dropped_total_ = 0;
  uint64_t delivered_ = 0;

  std::shared_ptr<void> source_;
};

}  // namespace a0gw
