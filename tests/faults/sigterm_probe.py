"""One process (no mpirun) that receives SIGTERM in a given situation, for the SIGTERM report
tests (Note [Saying why mpirun ended a rank]). Prints "ready" once set up, then waits.

argv[1]: "running" (dist_sync initialised), "user_handler" (the script installed its own SIGTERM
handler first), "forked_child" (a child forked after init() gets the signal; the parent reports
how it ended), "after_shutdown" (dist_sync was shut down before).
"""
import os
import signal
import sys
import time

import dist_sync as ds

mode = sys.argv[1]
if mode == "user_handler":
    signal.signal(signal.SIGTERM, lambda *_: (print("user handler ran", flush=True), os._exit(7)))
ds.init()
if mode == "after_shutdown":
    ds.shutdown()
if mode == "forked_child":
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    time.sleep(0.2)
    os.kill(child, signal.SIGTERM)
    _, status = os.waitpid(child, 0)
    print(f"child ended by signal {os.WTERMSIG(status) if os.WIFSIGNALED(status) else None}",
          flush=True)
    ds.shutdown()
    sys.exit(0)
print("ready", flush=True)
time.sleep(60)
