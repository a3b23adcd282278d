"""Reed-Solomon erasure coding on ISA-L: encode, reconstruct, decode.

>>> codec = Codec(4, 2)
>>> shards = codec.encode_block(b"hello world")
>>> codec.decode_block([None, shards[1], None, shards[3], shards[4], shards[5]], 11)
b'hello world'
"""

from .codec import MAX_SHARDS, Codec, ErasureError, allocate

__all__ = ["Codec", "ErasureError", "allocate", "MAX_SHARDS"]
