"""The netlink codec: framing, generic netlink, and every OVS attribute space (sans-I/O).

The schemas are declared with construct in :mod:`.schema`; :mod:`.codec` compiles them into
fast codecs; :mod:`.message` frames messages.  Nothing here imports trio or socket.
"""

from .codec import CODECS, FastSpace, space
from .errors import NetlinkError
from .message import (
    AnyMessage,
    DoneMessage,
    ErrorMessage,
    GenlFamily,
    GenlMessage,
    NoopMessage,
    decode_genl,
    decode_record,
    encode_done,
    encode_error,
    encode_genl,
    encode_noop,
    iter_frames,
)
from .nla import tuple_class

__all__ = [
    "CODECS",
    "AnyMessage",
    "DoneMessage",
    "ErrorMessage",
    "FastSpace",
    "GenlFamily",
    "GenlMessage",
    "NetlinkError",
    "NoopMessage",
    "decode_genl",
    "decode_record",
    "encode_done",
    "encode_error",
    "encode_genl",
    "encode_noop",
    "iter_frames",
    "space",
    "tuple_class",
]
