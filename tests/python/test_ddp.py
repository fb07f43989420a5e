"""DistributedDataParallel over a network containing Conv2dHardSwishReLU: two gloo processes on
the CPU, and NCCL on the GPUs there are (two processes on two GPUs, world size 1 on one), must end
with the parameters of one process trained on the same global batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import fusedconv

STEPS = 3
GLOBAL_BATCH = 8


# NVLink multicast stays off (the device machines' rule: it can take shared GPUs out of service).
NCCL_SAFETY = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
               "NVSHMEM_DISABLE_NVLS": "1"}


def _network(device="cpu"):
    torch.manual_seed(0)
    return nn.Sequential(fusedconv.Conv2dHardSwishReLU(3, 6, 3, padding=1), nn.Flatten(),
                         nn.Linear(6 * 8 * 8, 4)).to(device)


def _batches(device="cpu"):
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(GLOBAL_BATCH, 3, 8, 8, generator=generator).to(device),
             torch.randint(0, 4, (GLOBAL_BATCH,), generator=generator).to(device))
            for _ in range(STEPS)]


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


def _worker(rank, port, result_path, backend, world_size):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **NCCL_SAFETY)
    device = "cpu"
    if backend == "nccl":
        torch.cuda.set_device(rank)
        device = "cuda:%d" % rank
    dist.init_process_group(backend, rank=rank, world_size=world_size)
    try:
        model = nn.parallel.DistributedDataParallel(
            _network(device), device_ids=[rank] if backend == "nccl" else None)
        _train(model, _batches(device), rank, world_size)
        if rank == 0:
            torch.save({k: v.cpu() for k, v in model.module.state_dict().items()}, result_path)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _check_against_one_process(result_path, device):
    distributed = torch.load(result_path)
    single = _network(device)
    _train(single, _batches(device))
    for name, value in single.state_dict().items():
        torch.testing.assert_close(distributed[name], value.cpu(), rtol=1e-5, atol=1e-6)
    assert not torch.equal(single.state_dict()["0.weight"].cpu(),
                           _network().state_dict()["0.weight"])


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                    reason="needs torch.distributed with gloo")
def test_ddp_gloo_two_processes_match_one_process(tmp_path):
    result_path = str(tmp_path / "ddp_state.pt")
    mp.spawn(_worker, args=(_free_port(), result_path, "gloo", 2), nprocs=2, join=True)
    _check_against_one_process(result_path, "cpu")


@pytest.mark.cuda
@pytest.mark.skipif(not dist.is_available() or not dist.is_nccl_available(),
                    reason="needs torch.distributed with NCCL")
def test_ddp_nccl_matches_one_process(tmp_path):
    # Two processes on two GPUs where the machine has them, world size 1 on one GPU otherwise.
    world_size = min(2, torch.cuda.device_count())
    result_path = str(tmp_path / "ddp_state.pt")
    os.environ.update(NCCL_SAFETY)
    mp.spawn(_worker, args=(_free_port(), result_path, "nccl", world_size), nprocs=world_size,
             join=True)
    _check_against_one_process(result_path, "cuda:0")
