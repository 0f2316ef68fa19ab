"""Kernels that talk over unix sockets, so that no kernel dies for a TCP port another process took.

jupyter_client gives a new kernel five TCP ports that it found free and closed again; the kernel binds
them a second or so later, once Python has started. On a busy machine (a hub where a class validates
before the deadline, a grading batch, the test suite) another process can take one of those ports in
between, and the kernel dies at its start with "Address already in use" (jupyter/jupyter_client#154):
nbgrader validate then reports a dead kernel, and grading an error for a hand-in that did nothing wrong.

A kernel started by :class:`SocketKernelManager` (or :class:`AsyncSocketKernelManager`) talks over unix
sockets in a private folder of its own (mode 700, removed when the kernel shuts down), so there is no
port to race for, and other users on the machine cannot reach the kernel at all. Where unix sockets
are missing (Windows), the folder's path would be too long for a socket or the folder cannot be made,
the kernel uses TCP, as jupyter_client does by default.

Users: the students' validation (:func:`course_utils.validation.configure`), the grader's kernels
(:class:`autograde.kernel.GradingKernelManager`), and the test suite's nbval and nbclient kernels.
JupyterLab's own kernels keep TCP: the Jupyter server restarts a kernel that dies at its start.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import zmq
from jupyter_client import AsyncKernelManager, KernelManager
from jupyter_client.utils import run_sync

PREFIX = "coursekit-kernel-"  # + "p<pid>-": autograde.leftovers removes a dead process's folders
MAX_SOCKET_PATH = 100  # bytes: a unix socket's path may have 107 on Linux and 103 on macOS; "-5" is appended


def sockets_work() -> bool:
    """Whether this machine's ZeroMQ has unix sockets (not on Windows)."""
    return os.name == "posix" and zmq.has("ipc")


class _SocketFolder:
    """The part both kernel managers share: a socket folder made before the kernel starts, removed after."""

    socket_folder: Path | None = None  # the folder of this kernel's sockets, while it has one

    def socket_parent(self) -> str:
        """The folder in which the socket folder is made: the temp folder."""
        return tempfile.gettempdir()

    def use_sockets(self) -> bool:
        """Make the socket folder and switch the kernel to unix sockets there (called before it starts);
        whether it talks over them. A restart keeps its folder; a caller that named a connection file
        chose its transport itself."""
        if self.socket_folder is not None:
            return True
        if self.connection_file or not sockets_work():
            return False
        parent = self.socket_parent()
        longest = Path(parent, PREFIX + f"p{os.getpid()}-" + "x" * 8, "kernel-99")
        if len(os.fsencode(longest)) > MAX_SOCKET_PATH:
            self.log.info("kernel sockets would need a path over %d bytes in %s: using TCP", MAX_SOCKET_PATH, parent)
            return False
        try:
            self.socket_folder = Path(tempfile.mkdtemp(prefix=PREFIX + f"p{os.getpid()}-", dir=parent))
        except OSError as exc:  # a full or read-only temp folder
            self.log.warning("no folder for the kernel's sockets in %s (%s): using TCP", parent, exc)
            return False
        self.transport = "ipc"
        self.cache_ports = False  # jupyter_client's port cache is for TCP
        self.ip = str(self.socket_folder / "kernel")  # the sockets are kernel-1 ... kernel-5
        self.connection_file = str(self.socket_folder / "kernel.json")
        return True

    async def _async_pre_start_kernel(self, **kw):
        self.use_sockets()
        return await super()._async_pre_start_kernel(**kw)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart and self.socket_folder is not None:
            shutil.rmtree(self.socket_folder, ignore_errors=True)
            self.socket_folder = None


# jupyter_client binds its public method names to its own coroutines; shutting down goes through the
# private one, but a caller may clean up through the public one.

class SocketKernelManager(_SocketFolder, KernelManager):
    """jupyter_client's kernel manager with the kernel's sockets in a private folder (see the module)."""

    cleanup_resources = run_sync(_SocketFolder._async_cleanup_resources)


class AsyncSocketKernelManager(_SocketFolder, AsyncKernelManager):
    """The asynchronous one (nbclient's, so nbgrader's): the kernel's sockets in a private folder."""

    cleanup_resources = _SocketFolder._async_cleanup_resources
