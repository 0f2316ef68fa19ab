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
(:class:`autograde.kernel.GradingKernelManager`), the test suite's nbval and nbclient kernels, and
JupyterLab's and Notebook 7's own kernels, the ones a student works in: this module is also a Jupyter
server extension, enabled for every server of the environment by the kit's server settings
(``jupyter_server_config.d/course_utils.json``, installed with the Validate verdict), which gives the
server :class:`ServerSocketKernelManager`. That class is built on first use, so that the kernels above
do not import the Jupyter server. ``jupyter server extension disable course_utils.kernels`` turns it off.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import zmq
from jupyter_client import AsyncKernelManager, KernelManager
from jupyter_client.utils import run_sync

from . import leftovers

PREFIX = "coursekit-kernel-"  # + "p<pid>-" (leftovers.tag): leftovers.sweep removes a dead process's folders
MAX_SOCKET_PATH = 100  # bytes: a unix socket's path may have 107 on Linux and 103 on macOS; "-5" is appended


def sockets_work() -> bool:
    """Whether this machine's ZeroMQ has unix sockets (not on Windows)."""
    return os.name == "posix" and zmq.has("ipc")


class _SocketFolder:
    """The part the kit's kernel managers share: a socket folder made before the kernel starts, removed after."""

    socket_folder: Path | None = None  # the folder of this kernel's sockets, while it has one
    names_connection_file = True  # put the connection file in the socket folder too (the server names its own)

    def socket_parent(self) -> str:
        """The folder in which the socket folder is made: the temp folder."""
        return tempfile.gettempdir()

    def use_sockets(self) -> bool:
        """Make the socket folder and switch the kernel to unix sockets there (called before it starts);
        whether it talks over them. A restart keeps its folder; a caller that named a connection file
        chose its transport itself (but for the Jupyter server, which names every kernel's file)."""
        if self.socket_folder is not None:
            return True
        if (self.connection_file and self.names_connection_file) or not sockets_work():
            return False
        parent = self.socket_parent()
        longest = Path(parent, leftovers.tag(PREFIX) + "x" * 8, "kernel-99")
        if len(os.fsencode(longest)) > MAX_SOCKET_PATH:
            self.log.info("kernel sockets would need a path over %d bytes in %s: using TCP", MAX_SOCKET_PATH, parent)
            return False
        try:
            self.socket_folder = Path(tempfile.mkdtemp(prefix=leftovers.tag(PREFIX), dir=parent))
        except OSError as exc:  # a full or read-only temp folder
            self.log.warning("no folder for the kernel's sockets in %s (%s): using TCP", parent, exc)
            return False
        self.transport = "ipc"
        self.cache_ports = False  # jupyter_client's port cache is for TCP
        self.ip = str(self.socket_folder / "kernel")  # the sockets are kernel-1 ... kernel-5
        if self.names_connection_file:
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


def _server_socket_kernel_manager() -> type:
    """The Jupyter server's kernel manager (``ServerKernelManager``: activity, events) with the kernel's
    sockets in a private folder. The server keeps each kernel's connection file in its runtime folder."""
    from jupyter_server.services.kernels.kernelmanager import ServerKernelManager

    class ServerSocketKernelManager(_SocketFolder, ServerKernelManager):
        __doc__ = _server_socket_kernel_manager.__doc__
        __qualname__ = "ServerSocketKernelManager"
        names_connection_file = False
        cleanup_resources = _SocketFolder._async_cleanup_resources

    return ServerSocketKernelManager


SERVER_DEFAULT = "jupyter_server.services.kernels.kernelmanager.ServerKernelManager"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """Jupyter Server's entry point: this module is the extension."""
    return [{"module": __name__}]


def _load_jupyter_server_extension(serverapp) -> None:
    """Give the server's kernels unix sockets, unless its kernels are configured otherwise (another kernel
    manager class, a gateway) or this machine has none. Kernels start on request, after this runs.

    First it removes this user's socket folders that an earlier server, killed before it could shut its
    kernels down (SIGKILL, a hub's out-of-memory kill), left in the temp folder."""
    for path in leftovers.sweep(Path(tempfile.gettempdir()), (PREFIX,)):
        serverapp.log.info("course kit: removed %s, the kernel socket folder of a process that has ended", path)
    mapping = serverapp.kernel_manager
    if not sockets_work() or getattr(mapping, "kernel_manager_class", None) != SERVER_DEFAULT:
        serverapp.log.info("course kit: kernels keep %s", getattr(mapping, "kernel_manager_class", type(mapping)))
        return
    mapping.kernel_manager_class = f"{__name__}.ServerSocketKernelManager"  # traitlets rebuilds the factory
    serverapp.log.info("course kit: kernels talk over unix sockets in private folders (%s)", tempfile.gettempdir())


def __getattr__(name: str):  # ServerSocketKernelManager: made when first asked for (traitlets' import_item)
    if name == "ServerSocketKernelManager":
        globals()[name] = _server_socket_kernel_manager()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
