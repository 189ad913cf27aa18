"""The NCCL unique id crosses from rank 0 to every rank whole: 128 bytes with zeros inside (an id holds a
socket address after its 8-byte magic), through the rendezvous store the ranks use (worker.store_share) and a
wire message, rebuilt into the struct ncclCommInitRank takes. No NCCL or GPU needed: the id is made here."""

from __future__ import annotations

import numpy as np
import pytest

from mixtral_trt.common.errors import MixtralTrtError
from mixtral_trt.runtime.distributed import wire
from mixtral_trt.runtime.distributed.nccl import UNIQUE_ID_BYTES, UniqueId, id_bytes, id_struct
from mixtral_trt.runtime.distributed.worker import store_share


def fake_id() -> bytes:
    """An ncclUniqueId's shape: magic, then a sockaddr (family, port, IPv4) and zero padding, then noise."""
    rng = np.random.default_rng(0)
    head = bytes([0x4E, 0x43, 0x43, 0x4C, 0, 0, 0, 1, 2, 0, 0x1F, 0x90, 10, 0, 0, 7])
    tail = rng.integers(0, 256, UNIQUE_ID_BYTES - len(head) - 16, dtype=np.uint8).tobytes()
    return head + bytes(8) + tail + bytes(8)


def test_an_id_with_zero_bytes_survives_store_and_wire_byte_for_byte():
    import torch.distributed as dist

    original = UniqueId.from_buffer_copy(fake_id())  # as ncclGetUniqueId fills it on rank 0
    sent = id_bytes(original)
    assert len(sent) == UNIQUE_ID_BYTES and sent == fake_id()
    received = store_share(dist.HashStore())(sent)  # rank 0 sets, every rank gets
    header, arrays = wire.decode(wire.encode({"op": "nccl_id"}, {"id": np.frombuffer(received, np.uint8)}))
    rebuilt = id_struct(arrays["id"].tobytes())
    assert id_bytes(rebuilt) == fake_id()
    assert bytes(rebuilt.internal) == fake_id(), "the struct's field must read all 128 bytes, zeros included"
    first_zero = fake_id().index(0)
    assert first_zero < 8 and len(bytes(rebuilt.internal)) == UNIQUE_ID_BYTES > first_zero


@pytest.mark.parametrize("size", [0, 9, 127, 129])
def test_an_id_of_the_wrong_length_is_refused_in_one_line(size):
    with pytest.raises(MixtralTrtError, match=f"NCCL unique id: {size} bytes .* 128 expected") as e:
        id_struct(bytes(size))
    assert "\n" not in str(e.value)
