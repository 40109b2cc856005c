"""Collectives in buckets: gradient averaging correct across ranks and never a buffer of every
gradient; the start-up broadcast, owned by the world, sends each tensor once, coalesced, and a
rank that built its networks on the meta device ends up with rank 0's tensors."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from distar.runtime.distributed import average_gradients, broadcast_tensors, tensor_buckets

SIZES = [(300,), (50, 4), (1000,), (7,), (64, 64)]  # bytes: 1200, 800, 4000, 28, 16384


def params_with_grads(rank: int) -> list[torch.nn.Parameter]:
    torch.manual_seed(rank)
    params = [torch.nn.Parameter(torch.randn(*s)) for s in SIZES]
    for i, p in enumerate(params):
        p.grad = torch.full_like(p, float(rank + 1) * (i + 1))
    return params


def test_buckets_stay_under_the_bound_except_single_large_tensors():
    grads = [p.grad for p in params_with_grads(0)]
    buckets = list(tensor_buckets(grads, bucket_bytes=2048))
    assert [g for b in buckets for g in b] == grads  # every gradient once, in order
    for b in buckets:
        size = sum(g.numel() * g.element_size() for g in b)
        assert size <= 2048 or len(b) == 1
    assert len(buckets) == 4  # [300, 50x4] | [1000] | [7] | [64x64]


def _worker(rank: int, port: int, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    params = params_with_grads(rank)
    average_gradients(params, bucket_bytes=2048)
    broadcast_tensors(params)
    # numpy arrays travel by value: a torch tensor travels as a shared-memory handle that the
    # parent can only open while this process lives (it failed "No such file" once it exited)
    grads = [p.grad.numpy().copy() for p in params]
    weights = [p.detach().numpy().copy() for p in params]
    out.put((rank, grads, weights))
    dist.destroy_process_group()


def test_average_gradients_over_two_gloo_ranks():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, port, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = {
        r: ([torch.from_numpy(x) for x in g], [torch.from_numpy(x) for x in w])
        for r, g, w in (out.get(timeout=120) for _ in procs)
    }
    for p in procs:
        p.join(timeout=60)
    for i in range(len(SIZES)):
        for rank in (0, 1):
            assert torch.all(results[rank][0][i] == 1.5 * (i + 1))  # mean of (1, 2) x (i + 1)
        assert torch.equal(results[0][1][i], results[1][1][i])  # rank 0's weights everywhere


def _one_thread(target, *args) -> None:
    """``target(*args)`` on one intra-op thread, as torchrun starts each rank
    (OMP_NUM_THREADS=1): two ranks of torch's default 2 threads each oversubscribe 2 cores
    (measured: test_fsdp's sharded steps took 36 s that way, 24 s on one thread each)."""
    torch.set_num_threads(1)
    target(*args)


def spawn_two(target, *args, expect: int = 2, timeout: float = 300) -> dict:
    """``target(rank, port, out, *args)`` on two gloo ranks: the ``expect`` entries
    ``(key, *values)`` they put in ``out``, as ``{key: [values]}``; a rank's
    ``("error", message)`` fails at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_one_thread, args=(target, r, port, out, *args)) for r in range(2)]
    for p in procs:
        p.start()
    results: dict = {}
    try:
        while len(results) < expect:
            key, *values = out.get(timeout=timeout)
            assert key != "error", values[0]
            results[key] = values
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    return results


class Tied(torch.nn.Module):
    """Two layers sharing one weight, a buffer, and an fp64 parameter (a bucket of its own)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(40, 40)
        self.b = torch.nn.Linear(40, 40)
        self.b.weight = self.a.weight
        self.register_buffer("scale", torch.randn(40))
        self.c = torch.nn.Parameter(torch.randn(10, dtype=torch.float64))


def counted_broadcasts():
    """Wrap ``torch.distributed.broadcast``: the list of (elements) of every call."""
    calls: list[int] = []
    original = dist.broadcast

    def counting(tensor, *args, **kwargs):
        calls.append(tensor.numel())
        return original(tensor, *args, **kwargs)

    dist.broadcast = counting
    return calls


def _broadcast_rank(rank: int, port: int, out) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        from distar.runtime.distributed import broadcast_networks

        torch.manual_seed(0)
        if rank == 0:
            net = Tied()
        else:  # built on the meta device, then uninitialised storage: only the broadcast fills it
            with torch.device("meta"):
                net = Tied()
            net.to_empty(device="cpu")
            net.b.weight = net.a.weight  # to_empty unties them
        calls = counted_broadcasts()
        broadcast_networks([net, net.b])  # net.b's tensors are net's too: sent once
        state = {k: v.numpy().copy() for k, v in net.state_dict().items()}
        out.put((rank, (state, calls)))
    except BaseException as error:
        out.put(("error", f"rank {rank}: {error!r}"))
        raise
    finally:
        dist.destroy_process_group()


def test_a_rank_built_on_meta_receives_rank_0s_tensors_each_sent_once_in_buckets():
    results = spawn_two(_broadcast_rank)
    ((want, calls0),), ((got, calls1),) = results[0], results[1]
    for key, value in want.items():
        assert (value == got[key]).all(), key
    # c (fp64, the module's own parameter: first) alone; then one fp32 bucket: a.weight (1600,
    # b's too), a.bias, b.bias and the buffer scale (40 each)
    assert calls0 == calls1 == [10, 1600 + 3 * 40]


def _trainer_rank(rank: int, port: int, out, root: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        from distar.config.tree import Config
        from distar.loop.trainer import Trainer

        calls = counted_broadcasts()
        sets = {"train.out_dir": root, "train.batch_size": 8, "world.stage0_steps": 50}
        trainer = Trainer(Config().with_overrides(sets))
        world = trainer.world
        owned = {id(t): t.numel() for n in (world.generator, world.assistant)
                 for t in [*n.parameters(), *n.buffers()]}  # fmt: skip
        out.put((rank, (calls, sum(owned.values()))))
    except BaseException as error:
        out.put(("error", f"rank {rank}: {error!r}"))
        raise
    finally:
        dist.destroy_process_group()


def test_a_trainer_starts_with_one_broadcast_of_the_worlds_networks(world_cache, tmp_path):
    """The world owns the start-up broadcast: building a Trainer on two ranks sends every
    tensor of the embedded world's networks once (the loop used to send the trained ones
    again), in one bucket (they are small and all fp32)."""
    results = spawn_two(_trainer_rank, str(tmp_path))
    ((calls, elements),), ((calls1, _),) = results[0], results[1]
    assert calls == [elements] and calls1 == calls


def test_offload_gets_a_group_that_reaches_host_tensors():
    """CPU offload keeps gradients on the host, where the clip's norm is all-reduced: on GPUs
    the group needs gloo beside NCCL (an NCCL-only group failed at the first clip). Ray's
    TorchConfig, torchrun's launcher and the single-rank group all take ``backend``."""
    from distar.runtime.distributed import backend

    assert backend(cuda=True, offload=True) == "cuda:nccl,cpu:gloo"
    assert backend(cuda=True) == "nccl" and backend(cuda=False, offload=True) == "gloo"


def test_a_trial_asks_ray_for_that_group(tmp_path):
    from distar.config.tree import Config
    from distar.raytune.spec import SweepContext, TrialSpec
    from distar.raytune.trial import make_torch_trainer

    sets = {"resources.strategy": "fsdp", "resources.cpu_offload": True, "resources.use_gpu": True}
    config = Config.for_world("gmm", sets)
    spec = TrialSpec("t0", "row", 0, config.to_flat())
    sweep = SweepContext("s", f"file:{tmp_path}/mlruns", "e", str(tmp_path), "parent")
    trainer = make_torch_trainer(config, spec, sweep, "attempt-0")
    assert trainer.backend_config.backend == "cuda:nccl,cpu:gloo"


def test_offload_in_a_group_without_a_cpu_backend_is_refused_in_one_line():
    from distar.config.tree import ConfigError
    from distar.runtime.sharding import ensure_process_group

    dist.init_process_group("cuda:gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        refusal = "resources.cpu_offload: got true in a process group of cuda:gloo; allowed"
        with pytest.raises(ConfigError, match=refusal):
            ensure_process_group(torch.device("cpu"), offload=True)
        ensure_process_group(torch.device("cpu"), offload=False)  # without offload: fine
    finally:
        dist.destroy_process_group()
