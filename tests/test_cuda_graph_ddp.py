"""``cuda_graph=True`` under ``DistributedDataParallel`` (GPU only; the device machine).

Two ranks on one GPU (gloo carries CUDA tensors, so no second GPU is needed) train a graphed
and an eager copy of the same backbone, each wrapped in DDP, on different data per rank. The
graphed copy's gradients must be the all-reduced ones: its parameters equal the eager DDP
copy's after every step, and both ranks end with the same parameters (without the all-reduce
the updates would differ: each rank saw other data).
"""
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import free_port

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
WORLD = 2
SMALL_VMAMBA = dict(embed_dims=32, depths=(1, 1, 2, 1))


def _rank_main(rank, port, out_dir, amp):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=WORLD)
    try:
        from torch.nn.parallel import DistributedDataParallel as DDP

        from mmvision_ssm.models.backbones import VMamba
        torch.manual_seed(0)  # the same initial weights on every rank
        models = [VMamba(SMALL_VMAMBA, drop_path_rate=0.0, cuda_graph=g).cuda().train()
                  for g in (False, True)]
        models[1].load_state_dict(models[0].state_dict())
        wrapped = [DDP(m, device_ids=[0]) for m in models]
        opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m in models]
        start = torch.cat([p.detach().flatten() for p in models[0].parameters()])
        gen = torch.Generator(device='cuda').manual_seed(100 + rank)  # other data per rank
        errs = []
        for _ in range(3):
            x = torch.randn(2, 3, 64, 96, device='cuda', generator=gen)
            for m, opt in zip(wrapped, opts):
                with torch.autocast('cuda', dtype=torch.bfloat16, enabled=amp):
                    out = m(x)
                sum((o.float() ** 2).mean() for o in out).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
            # the updates so far (parameters minus the initial ones): a wrong gradient shows
            # in full there, where the parameters themselves would hide it
            eager, graphed = (torch.cat([p.detach().flatten() for p in m.parameters()]) - start
                              for m in models)
            errs.append(float((graphed - eager).norm() / eager.norm()))
        torch.save(dict(errs=errs, eager=eager.cpu(), graphed=graphed.cpu(),
                        graphs=len(models[1]._training_graphs.graphs)),
                   os.path.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()


@cuda
@pytest.mark.parametrize('amp', [False, True], ids=['fp32', 'bf16'])
def test_graphed_ddp_training_matches_eager_ddp(tmp_path, amp):
    mp.spawn(_rank_main, args=(free_port(), str(tmp_path), amp), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f'rank{r}.pt') for r in range(WORLD)]
    tol = 1e-2 if amp else 1e-3  # eager runs differ by the kernels' fp32 atomics alone
    for res in ranks:
        assert res['graphs'] == 1  # the steps ran graphed
        assert max(res['errs']) < tol, res['errs']
    # the all-reduce happened: the ranks' updates agree although their data differed
    for key in ('eager', 'graphed'):
        a, b = ranks[0][key], ranks[1][key]
        assert float((a - b).norm() / a.norm()) < tol, key
