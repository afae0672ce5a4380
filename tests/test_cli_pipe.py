"""`tlbench --help | head` ends quietly when the reader has gone (issue 13): no BrokenPipeError traceback."""

from __future__ import annotations

import os
import subprocess
import sys


def test_help_into_a_closed_pipe_ends_without_a_traceback() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader (head) has already left: every write fails with EPIPE
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "tlbench.cli", "--help"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.returncode == 141  # 128 + SIGPIPE, as a shell reports a command that lost its reader
