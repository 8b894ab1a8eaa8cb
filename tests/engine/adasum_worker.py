"""allreduce(op=Adasum) under mpirun through dist_sync (numpy) and dist_sync.torch, against the
numpy float64 combination tree of tests/collectives/test_adasum_local.py; on a process set too;
DistributedOptimizer(op=Adasum)."""
import numpy as np

import dist_sync as ds
from tests.collectives.test_adasum_local import adasum_tree
from tests.support.worker import Registry

check = Registry()

RTOL = {np.float16: 1e-2, np.float32: 1e-5, np.float64: 1e-12}


def gradient(rank, count, salt):
    rng = np.random.default_rng([salt, rank, count])
    return rng.uniform(-1.0, 1.0, count)


@check
def numpy_and_torch():
    import torch

    import dist_sync.torch as hvd

    me, size = ds.rank(), ds.size()
    for dtype in (np.float16, np.float32, np.float64):
        for count in (1, 5, 64, 1001):
            mine = gradient(me, count, 1).astype(dtype)
            expected = adasum_tree([gradient(r, count, 1).astype(dtype).astype(np.float64)
                                    for r in range(size)])
            got = ds.allreduce(mine, op=ds.Adasum, name=f"a.{np.dtype(dtype).name}.{count}")
            np.testing.assert_allclose(got.astype(np.float64), expected, rtol=RTOL[dtype],
                                       atol=RTOL[dtype])
    # torch, bfloat16 and a grouped allreduce (each tensor combined on its own)
    tensors = [torch.tensor(gradient(me, 33, 2), dtype=torch.float32),
               torch.tensor(gradient(me, 7, 3), dtype=torch.bfloat16)]
    results = hvd.grouped_allreduce(tensors, op=hvd.Adasum)
    for salt, count, result, tol in ((2, 33, results[0], 1e-5), (3, 7, results[1], 5e-2)):
        inputs = [torch.tensor(gradient(r, count, salt), dtype=result.dtype).double().numpy()
                  for r in range(size)]
        np.testing.assert_allclose(result.double().numpy(), adasum_tree(inputs), rtol=tol,
                                   atol=tol)
    # a process set of the first half (Adasum over its ranks)
    half = ds.add_process_set(list(range(max(1, size // 2))))
    if half.included():
        got = ds.allreduce(gradient(me, 50, 4), op=ds.Adasum, process_set=half)
        np.testing.assert_allclose(got, adasum_tree([gradient(r, 50, 4) for r in half.ranks]),
                                   rtol=1e-12)
    ds.remove_process_set(half)
    # DistributedOptimizer(op=Adasum): SGD applies the Adasum of the gradients
    model = torch.nn.Linear(6, 1, bias=False)
    with torch.no_grad():
        model.weight.zero_()
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=1.0),
                                         named_parameters=model.named_parameters(),
                                         op=hvd.Adasum)
    inputs = torch.tensor(gradient(me, 6, 5), dtype=torch.float32).reshape(1, 6)
    model(inputs).sum().backward()  # gradient = inputs
    optimizer.step()
    expected = -adasum_tree([gradient(r, 6, 5).astype(np.float32).astype(np.float64)
                             for r in range(size)])
    np.testing.assert_allclose(model.weight.detach().double().numpy()[0], expected, rtol=1e-5)
    return {"size": size}


if __name__ == "__main__":
    check.main()
