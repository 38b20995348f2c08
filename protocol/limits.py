"""Size limits every socket and decoder enforces.

Two layers: ZMQ_MAXMSGSIZE is the hard safety net (libzmq drops the peer's connection
for a larger frame), and the decoder's limits reject oversized or hostile content with a
clear error while keeping the connection, so valid input after it still flows.
"""

PROTOCOL_VERSION = 1

#: A msgpack header frame never needs more than this; anything larger is rejected.
MAX_HEADER_BYTES = 64 * 1024
#: One raw payload frame (PCM block or RGB frame). 1080p RGB is ~6 MiB.
MAX_PAYLOAD_BYTES = 16 * 1024 * 1024
#: Frames in one message: header + at most this many payloads.
MAX_PAYLOAD_FRAMES = 3
#: Hard cap handed to ZMQ_MAXMSGSIZE on internal sockets.
SOCKET_MAX_BYTES = MAX_PAYLOAD_BYTES + MAX_HEADER_BYTES

#: Ingress (tokens from the outside world): application-level cap per message.
INGRESS_MAX_BYTES = 64 * 1024
#: Ingress hard cap (ZMQ_MAXMSGSIZE): above this libzmq disconnects the sender.
INGRESS_SOCKET_MAX_BYTES = 1024 * 1024
#: What may wait for a parser that stopped reading (it is full): messages in ZeroMQ's queue,
#: and bytes in the kernel's buffer per connection. Past that a sender's PUSH blocks,
#: instead of megabytes of text queueing where a barge-in or a close cannot reach them.
INGRESS_QUEUE_MESSAGES = 100
INGRESS_KERNEL_BUFFER_BYTES = 64 * 1024

#: Deepest nesting of maps and arrays in a header (ours need 4): a deeper one is refused
#: before anything walks it.
MAX_NESTING = 12

#: msgpack unpack limits for header frames.
MSGPACK_LIMITS = dict(
    max_str_len=MAX_HEADER_BYTES,
    max_bin_len=MAX_HEADER_BYTES,
    max_array_len=16 * 1024,
    max_map_len=256,
    max_ext_len=0,
)
