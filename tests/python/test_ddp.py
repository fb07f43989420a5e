"""DistributedDataParallel over a network containing Conv2dHardSwishReLU: two gloo processes on
the CPU must end with the parameters of one process trained on the same global batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import fusedconv

WORLD_SIZE = 2
STEPS = 3
GLOBAL_BATCH = 8


def _network():
    torch.manual_seed(0)
    return nn.Sequential(fusedconv.Conv2dHardSwishReLU(3, 6, 3, padding=1), nn.Flatten(),
                         nn.Linear(6 * 8 * 8, 4))


def _batches():
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(GLOBAL_BATCH, 3, 8, 8, generator=generator),
             torch.randint(0, 4, (GLOBAL_BATCH,), generator=generator)) for _ in range(STEPS)]


def _train(model, batches, rank=0, world_size=1):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    share = GLOBAL_BATCH // world_size
    for x, target in batches:
        optimizer.zero_grad()
        part = slice(rank * share, (rank + 1) * share)
        # DDP averages gradients over ranks: mean losses over equal shares add up to the mean
        # loss over the global batch.
        nn.functional.cross_entropy(model(x[part]), target[part]).backward()
        optimizer.step()


def _worker(rank, port, result_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        model = nn.parallel.DistributedDataParallel(_network())
        _train(model, _batches(), rank, WORLD_SIZE)
        if rank == 0:
            torch.save(model.module.state_dict(), result_path)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_ddp_gloo_two_processes_match_one_process(tmp_path):
    result_path = str(tmp_path / "ddp_state.pt")
    mp.spawn(_worker, args=(_free_port(), result_path), nprocs=WORLD_SIZE, join=True)
    distributed = torch.load(result_path)
    single = _network()
    _train(single, _batches())
    for name, value in single.state_dict().items():
        torch.testing.assert_close(distributed[name], value, rtol=1e-5, atol=1e-6)
    assert not torch.equal(single.state_dict()["0.weight"], _network().state_dict()["0.weight"])
