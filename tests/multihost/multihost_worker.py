"""Where every rank thinks it runs: dist_sync's topology and the host's own name, plus one
allreduce and one allgather_object across the hosts."""
import os
import socket

import numpy as np

import dist_sync as ds
from tests.support.worker import main


def interface_address() -> str:
    """This host's eth0 address (the virtual cluster's link), read from the kernel."""
    import fcntl
    import struct
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        packed = fcntl.ioctl(probe.fileno(), 0x8915,  # SIOCGIFADDR
                             struct.pack("256s", b"eth0"))
    return socket.inet_ntoa(packed[20:24])


def run(args):
    ds.init()
    hostname = socket.gethostname()
    info = {
        "rank": ds.rank(), "size": ds.size(),
        "local_rank": ds.local_rank(), "local_size": ds.local_size(),
        "cross_rank": ds.cross_rank(), "cross_size": ds.cross_size(),
        "homogeneous": ds.is_homogeneous(),
        "hostname": hostname,
        "address": interface_address(),
        "resolved": socket.gethostbyname(hostname),
        "pid": os.getpid(),
    }
    info["all_hostnames"] = ds.allgather_object(hostname)
    info["rank_sum"] = int(ds.allreduce(np.array([ds.rank()], dtype=np.int64), op=ds.Sum)[0])
    ds.shutdown()
    return info


if __name__ == "__main__":
    main(run)
