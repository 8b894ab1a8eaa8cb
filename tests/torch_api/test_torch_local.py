"""dist_sync.torch pieces that need no running engine: the sampler against torch's, the
compressors, dtype codes and the public names (device checks: test_staging_local.py)."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data.distributed import DistributedSampler as TorchSampler

import dist_sync
import dist_sync.torch as hvd
from dist_sync.torch import _adapter


@pytest.mark.parametrize("length", [1, 2, 7, 10, 33])
@pytest.mark.parametrize("replicas", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_matches_torch(length, replicas, shuffle, drop_last):
    dataset = list(range(length))
    shards = []
    for rank in range(replicas):
        ours = hvd.DistributedSampler(dataset, num_replicas=replicas, rank=rank,
                                      shuffle=shuffle, seed=11, drop_last=drop_last)
        theirs = TorchSampler(dataset, num_replicas=replicas, rank=rank, shuffle=shuffle,
                              seed=11, drop_last=drop_last)
        for epoch in (0, 1, 5):
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)
            assert list(ours) == list(theirs)
            assert len(ours) == len(theirs)
        shards.append(list(ours))
    flat = [i for shard in shards for i in shard]
    assert len({len(s) for s in shards}) == 1
    if drop_last:
        assert len(set(flat)) == len(flat) == (length // replicas) * replicas
    else:
        assert set(flat) == set(dataset) and len(flat) - length < replicas


@pytest.mark.parametrize("length", [0, 1, 5, 12, 13])
@pytest.mark.parametrize("replicas", [1, 3, 4])
def test_sampler_uneven_partition_is_exact(length, replicas):
    dataset = list(range(length))
    for epoch in (0, 3):
        shards = []
        for rank in range(replicas):
            sampler = hvd.DistributedSampler(dataset, num_replicas=replicas, rank=rank, seed=2,
                                             even=False)
            sampler.set_epoch(epoch)
            shard = list(sampler)
            assert len(shard) == len(sampler)
            shards.append(shard)
        assert sorted(i for s in shards for i in s) == dataset
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_sampler_reshuffles_per_epoch_with_shared_seed():
    dataset = list(range(50))
    a = hvd.DistributedSampler(dataset, num_replicas=2, rank=0, seed=4)
    b = hvd.DistributedSampler(dataset, num_replicas=2, rank=0, seed=4)
    first = list(a)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b) != first


def test_sampler_errors():
    with pytest.raises(ValueError, match=r"Invalid rank 2, rank should be in the interval \[0, 1\]"):
        hvd.DistributedSampler(range(4), num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="num_replicas must be a positive integer, got 0"):
        hvd.DistributedSampler(range(4), num_replicas=0, rank=0)
    with pytest.raises(ValueError, match="drop_last=True and even=False contradict"):
        hvd.DistributedSampler(range(4), num_replicas=2, rank=0, drop_last=True, even=False)


def test_sampler_needs_init_for_defaults():
    assert not dist_sync.is_initialized()
    with pytest.raises(dist_sync.DistSyncError, match="dist_sync is not initialized"):
        hvd.DistributedSampler(range(4))


@pytest.mark.parametrize("compression,wire", [(hvd.Compression.fp16, torch.float16),
                                              (hvd.Compression.bf16, torch.bfloat16)])
def test_cast_compressors(compression, wire):
    x = torch.linspace(-3, 3, 11, dtype=torch.float32)
    sent, context = compression.compress(x)
    assert sent.dtype == wire and context == torch.float32
    back = compression.decompress(sent, context)
    assert back.dtype == torch.float32
    assert torch.equal(back, x.to(wire).float())
    ints = torch.arange(4)
    sent, context = compression.compress(ints)
    assert sent is ints and compression.decompress(sent, context) is ints
    already = torch.ones(2, dtype=wire)
    assert compression.compress(already)[0] is already


def test_none_compressor_is_identity():
    x = torch.ones(3)
    sent, context = hvd.Compression.none.compress(x)
    assert sent is x and hvd.Compression.none.decompress(sent, context) is x


def test_dtype_codes_cover_the_engine():
    from dist_sync import _dtypes
    assert _adapter.TORCH_TO_CODE[torch.bfloat16] == _dtypes.BFLOAT16
    assert len(set(_adapter.TORCH_TO_CODE.values())) == 9


def test_public_names():
    for name in hvd.__all__:
        assert getattr(hvd, name) is not None, name
    assert repr(hvd.Adasum) == "dist_sync.Adasum" and hvd.Adasum == dist_sync.Adasum
    assert hvd.Sum == dist_sync.Sum and hvd.Average == dist_sync.Average
