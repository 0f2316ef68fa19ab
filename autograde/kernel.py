"""The kernel manager nbgrader uses when grading: the grading mode, the sandbox, model export.

nbgrader's Execute preprocessor starts kernels with this class (see
``nbgrader_config.py``). Without ``COURSE_SANDBOX`` in the environment it only
sets ``COURSE_MODE`` to the grading mode. With it (``python -m autograde
autograde`` sets it per submission) the kernel runs under bubblewrap and in the
submission's cgroups, as the grading user, with a clean environment (see
:mod:`autograde.sandbox`), talks to nbgrader over unix sockets (it has no
network), works in a private copy of its folder, and may write only there and
to the folder where :func:`course_utils.grading.check_accuracy` exports models (both in a
size-limited box, :mod:`autograde.disk`).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from traitlets import Unicode

from course_utils.kernels import AsyncSocketKernelManager
from course_utils.modes import EXPORT_VAR, MODE_VAR

from . import sandbox
from .sandbox import SANDBOX_VAR, Mount


def work_box(work: Path) -> Path:
    """The folder that holds everything a submission may write: a size-limited tmpfs where the grader can
    mount one (:mod:`autograde.disk`)."""
    return work / "box"


def work_folders(work: Path) -> dict[str, Path]:
    """The per-submission folders the kernel may write to, in its box: its working copy and the exported models."""
    return {"cwd": work_box(work) / "cwd", "models": work_box(work) / "models"}


class GradingKernelManager(AsyncSocketKernelManager):
    """A kernel in the grading mode, sandboxed when the grader asks for it."""

    mode = Unicode("", config=True, help="run mode for the kernel (COURSE_MODE)")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._plan = sandbox.read_plan(os.environ.get(SANDBOX_VAR))
        self._kernel_cwd: str | None = None
        self._stage: Path | None = None

    @property
    def sandboxed(self) -> bool:
        return bool(self._plan and self._plan.get("sandbox"))

    def socket_parent(self) -> str:
        """A sandboxed kernel's sockets go in the hand-in's scratch folder, which the sandbox can see (it has
        no network) and the worker removes whatever becomes of this process; others' in the temp folder."""
        return self._plan["scratch"] if self.sandboxed else super().socket_parent()

    async def _async_pre_start_kernel(self, **kw):
        env = dict(kw.get("env") or os.environ)
        env.pop(SANDBOX_VAR, None)
        if self.mode:
            env[MODE_VAR] = self.mode
        if self._plan:
            folders = work_folders(Path(self._plan["work"]))
            env[EXPORT_VAR] = str(folders["models"])
            if self.sandboxed:
                env = sandbox.clean_env(env)
                self._kernel_cwd = str(Path(kw.get("cwd") or os.getcwd()).resolve())
                _copy_plain_files(Path(self._kernel_cwd), folders["cwd"])
                # Its outputs reach nbgrader as messages; its own stdout and stderr would be the grader's log file,
                # which a hand-in could fill without limit or forge lines in.
                kw["stdout"] = kw["stderr"] = subprocess.DEVNULL
        kw["env"] = env
        return await super()._async_pre_start_kernel(**kw)  # makes the socket folder

    def format_kernel_cmd(self, extra_arguments=None):
        cmd = super().format_kernel_cmd(extra_arguments)
        if not self._plan:
            return cmd
        if not self.sandboxed:
            return sandbox.join_cgroup(self._plan.get("cgroup") or [], cmd)
        if self.socket_folder is None:  # (made before the kernel starts, or TCP was left: no network inside)
            raise RuntimeError(f"a sandboxed kernel needs unix sockets, and none can be made in {self.socket_parent()}")
        folders = work_folders(Path(self._plan["work"]))
        mounts = [*(Mount(*m) for m in self._plan["mounts"]), Mount.same(self.socket_folder, writable=True),
                  Mount.same(folders["models"], writable=True), Mount(str(folders["cwd"]), self._kernel_cwd, True)]
        if self._stage is None:
            self._stage = sandbox.new_stage(Path(self._plan["scratch"]))
        # its parent's pid means nothing in its own pid namespace; bwrap ends it with its parent
        return [*sandbox.prefix(mounts, stage=self._stage, cgroup_procs=self._plan.get("cgroup") or [],
                                chdir=self._kernel_cwd)[:-1], "--unsetenv", "JPY_PARENT_PID", "--", *cmd]

    async def _async_interrupt_kernel(self) -> None:
        if not self.sandboxed or not self.has_kernel:
            return await super()._async_interrupt_kernel()
        # A signal would reach bwrap, not the kernel: ask the kernel itself (ipykernel's control channel).
        msg = self.session.msg("interrupt_request", content={})
        self._connect_control_socket()
        self.session.send(self._control_socket, msg)

    interrupt_kernel = _async_interrupt_kernel  # nbclient calls the public name


def _copy_plain_files(src: Path, dest: Path) -> None:
    """Regular files and folders of ``src`` into ``dest``; links are left out (never followed)."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_symlink():
            continue
        if item.is_dir():
            _copy_plain_files(item, dest / item.name)
        elif item.is_file():
            shutil.copyfile(item, dest / item.name)
