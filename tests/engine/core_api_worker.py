"""The binding's own contract, under mpirun: the enums it exports, the settings init() needs,
the settings every rank must share (rank 1 asks for others and gets rank 0's), and a reduce op
it reserves."""
import os

import numpy as np

import dist_sync as ds
from dist_sync import _core, config
from tests.support import c_api
from tests.support.worker import Registry, world_rank

check = Registry()


def error_of(call):
    try:
        call()
    except Exception as error:  # noqa: BLE001 - the message is what the test checks
        return f"{type(error).__name__}: {error}"
    return "no error raised"


@check.scenario
def contract():
    out = {"enums": {enum.__name__: {m.name: int(m) for m in enum}
                     for enum in (_core.OpType, _core.DataType, _core.DeviceKind, _core.ReduceOp)}}
    incomplete = config.load()
    del incomplete["cache_capacity"], incomplete["timeline"]
    out["init_incomplete"] = error_of(lambda: _core.init(incomplete, {}))
    out["init_wrong_type"] = error_of(lambda: _core.init({**config.load(), "cycle_time_ms": "5"}, {}))
    out["init_unknown_shared"] = error_of(lambda: _core.init(config.load(), {"no_such": "DIST_SYNC_NO_SUCH"}))
    if world_rank() == 1:
        # Settings every rank must share: this rank's differ, so it warns and uses rank 0's. A
        # cache of another size would misread every cycle's bit vector, so cached repeats prove it.
        os.environ["DIST_SYNC_CACHE_CAPACITY"] = "0"
        os.environ["DIST_SYNC_FUSION_THRESHOLD"] = "1M"
    ds.init()
    size = ds.size()
    for _ in range(5):
        np.testing.assert_array_equal(ds.allreduce(np.ones(4), op=ds.Sum, name="repeat"), np.full(4, size))
    out["cache_hits"] = _core._engine_stats()["cache_hits"]
    spec = [("x", np.ones(2), np.empty(2), _core.DataType.FLOAT64, (2,))]
    out["size"] = size
    out["adasum"] = error_of(lambda: _core.wait(
        _core.submit(_core.OpType.ALLREDUCE, "x", spec, _core.ReduceOp.ADASUM)))
    ints = [("x", np.ones(2, dtype=np.int32), np.empty(2, dtype=np.int32), _core.DataType.INT32,
             (2,))]
    out["adasum_int"] = error_of(lambda: _core.submit(_core.OpType.ALLREDUCE, "x", ints,
                                                      _core.ReduceOp.ADASUM))
    np.testing.assert_array_equal(ds.allreduce(np.ones(2), op=ds.Sum, name="after"), np.full(2, size))
    out["c_api"] = c_api.check_table(ds.rank(), size)
    ds.shutdown()
    after = c_api.submit(0, "capi.after", [np.zeros(1)], [np.zeros(1)])
    out["c_api"]["after_shutdown"] = (after["status"], after["message"])
    return out


if __name__ == "__main__":
    check.main()
