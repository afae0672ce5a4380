"""The CLI destroys a DDP process group once its jobs are over: left to the interpreter's exit, gloo's
threads were destroyed still joinable and a rank aborted ("terminate called without an active
exception") after the run had succeeded (the CI failure of test_ddp_finetuning_on_two_ranks).
Run in a subprocess: the group must not leak into the test process."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_main_destroys_the_group_a_job_opened_and_a_new_one_can_start():
    code = textwrap.dedent(
        """
        import socket, sys
        import torch.distributed as dist
        import tlbench.cli as cli

        def free_port():
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                return s.getsockname()[1]

        jobs = []

        def job():  # what a Trainer with strategy=ddp leaves behind: an initialized gloo group
            if not dist.is_initialized():  # the jobs of a multirun share it, as Lightning does
                dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
            jobs.append(dist.get_world_size())

        cli._main = lambda: (job(), job())  # two jobs in one process
        sys.argv = ["tlbench"]
        cli.main()
        assert jobs == [1, 1], jobs
        assert not dist.is_initialized(), "main() left the process group up"
        job()  # a later group starts cleanly in the same process
        cli._leave_process_group()
        assert not dist.is_initialized()
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")


def test_without_torch_distributed_loaded_nothing_is_imported():
    code = textwrap.dedent(
        """
        import sys
        import tlbench.cli as cli
        cli._leave_process_group()
        assert "torch.distributed" not in sys.modules and "torch" not in sys.modules
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
