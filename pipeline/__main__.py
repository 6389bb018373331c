"""``python -m pipeline``: run the job, then end the process without tearing the interpreter down.

When :func:`pipeline.launch.main.main` returns, the job's work is done (or has failed, with its exit status).
Tearing the interpreter down then frees every module and object one by one, which costs a second or more once
transformers and torch are imported (a first run loads the tokenizer folder through transformers) and buys nothing.
So, as a normal exit does, non-daemon threads are joined, the exit handlers run (temporary folders, logging,
multiprocessing's children) and the standard streams are flushed; then the process ends with ``os._exit``. An
exception or ``SystemExit`` out of ``main`` takes the ordinary path.
"""
import atexit
import os
import sys
import threading

from pipeline.launch.main import main


def _end(status: int) -> None:
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


_end(main() or 0)
