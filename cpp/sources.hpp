// Opens the AlephZero objects that feed a Stream.  Each function creates the
// stream, starts its source (which begins calling deliver_* on an AlephZero
// thread) and returns it.  AlephZero's own errors (a bad topic or path) are
// raised as AlephZeroError with AlephZero's text.
#pragma once

#include <a0.h>

#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "stream.hpp"
#include "topic_cache.hpp"

namespace a0gw {

// An error AlephZero reported for what a client asked (bad topic, bad path).
struct AlephZeroError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

std::shared_ptr<Stream> open_subscriber(std::shared_ptr<Hub> hub, uint64_t id,
                                        const std::string& topic, a0::Reader::Options reader_opts,
                                        StreamOptions opts);

std::shared_ptr<Stream> open_reader(std::shared_ptr<Hub> hub, uint64_t id, const std::string& path,
                                    a0::Reader::Options reader_opts, StreamOptions opts);

std::shared_ptr<Stream> open_log_listener(std::shared_ptr<Hub> hub, uint64_t id,
                                          const std::string& topic, a0::LogLevel level,
                                          a0::Reader::Options reader_opts, StreamOptions opts);

// Opens a progressive RPC with `request`; the prpc connection is cancelled
// when the stream closes, whether or not the server said done.
std::shared_ptr<Stream> open_prpc(std::shared_ptr<Hub> hub, uint64_t id, const std::string& topic,
                                  a0::Packet request, StreamOptions opts);

// Announces every file matching `topic_glob` under the protocol template
// `tmpl` (e.g. "{topic}.pubsub.a0"), now and when created later, as
// {"abspath", "relpath", "topic"}.
std::shared_ptr<Stream> open_discovery(std::shared_ptr<Hub> hub, uint64_t id,
                                       const std::string& root, const std::string& tmpl,
                                       const std::string& topic_glob, StreamOptions opts);

// RPC clients kept open per topic.  A call's reply arrives on its own
// one-shot Stream (opts.websocket false: the stream yields the JSON body).
class RpcClients {
 public:
  explicit RpcClients(size_t capacity)
      : clients_(capacity, [] { return a0::env::topic_tmpl_rpc(); }) {}

  // Sends `request`; the reply is delivered to the returned stream.
  std::shared_ptr<Stream> call(std::shared_ptr<Hub> hub, uint64_t id, const std::string& topic,
                               a0::Packet request, StreamOptions opts);
  // Gives up on the call whose request id is `request_id`.
  void cancel(const std::string& topic, const std::string& request_id);

 private:
  std::mutex mu_;
  TopicCache<a0::RpcClient> clients_;
};

}  // namespace a0gw
