"""The kit's kernels talk over unix sockets in a folder of their own, not TCP ports (course_utils/kernels.py).

With TCP, jupyter_client picks five free ports, closes them and hands them to the kernel, which binds them
a second later; another process can take one in between and the kernel dies at its start. These tests
check what closes that gap: the kernel listens on no TCP port at all, and its socket folder is private
and goes when the kernel does.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path
from types import SimpleNamespace

import nbformat
import psutil
import pytest
from jupyter_client import BlockingKernelClient, KernelManager
from nbclient import NotebookClient
from traitlets.config import Config

from course_utils import kernels, validation


@pytest.fixture(autouse=True)
def unix_sockets():
    """Skip without unix-socket kernels (Windows, some ZeroMQ builds); fail instead with COURSE_SANDBOX_REQUIRED,
    since the grading sandbox talks to its kernels through them."""
    if not kernels.sockets_work():
        why = "no unix sockets in this ZeroMQ"
        if os.environ.get("COURSE_SANDBOX_REQUIRED"):
            pytest.fail(why, pytrace=False)
        pytest.skip(why)


def listening_ports(km) -> set[int]:
    """The TCP ports the kernel process of ``km`` listens on."""
    process = psutil.Process(km.provisioner.process.pid)
    return {c.laddr.port for c in process.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}


def run(km, code: str) -> str:
    """What ``code`` prints in the kernel of ``km``."""
    client = km.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        printed = []
        client.execute_interactive(code, timeout=120, output_hook=lambda msg: printed.append(
            msg["content"].get("text", "") if msg["msg_type"] == "stream" else ""))
        return "".join(printed)
    finally:
        client.stop_channels()


def test_a_kernel_listens_on_no_tcp_port_and_leaves_nothing_behind():
    default = KernelManager(kernel_name="python3")  # jupyter_client's own, to show that the check sees ports
    ours = kernels.SocketKernelManager(kernel_name="python3")
    for km in (default, ours):
        km.start_kernel()
    try:
        assert run(default, "print(6 * 7)") == "42\n" and run(ours, "print(6 * 7)") == "42\n"
        given = {default.shell_port, default.iopub_port, default.stdin_port, default.control_port, default.hb_port}
        assert given <= listening_ports(default), "the check misses the TCP ports of a default kernel"
        # A kernel also binds a port of its own choosing (ipykernel's IOPub pipe, in one atomic step: no race).
        own = listening_ports(default) - given
        assert ours.transport == "ipc" and len(listening_ports(ours)) == len(own), (listening_ports(ours), own)
        folder = ours.socket_folder
        assert folder.parent == Path(tempfile.gettempdir()) and folder.name.startswith(f"{kernels.PREFIX}p{os.getpid()}-")
        assert folder.stat().st_mode & 0o777 == 0o700, "other users could reach the kernel"  # (jupyter_client adds the sticky bit)
        sockets = sorted(p.name for p in folder.iterdir() if stat.S_ISSOCK(p.stat().st_mode))
        assert sockets == [f"kernel-{n}" for n in range(1, 6)], sockets
        assert Path(ours.connection_file).parent == folder
    finally:
        for km in (default, ours):
            km.shutdown_kernel(now=True)
    assert not folder.exists() and ours.socket_folder is None


def test_nbclient_runs_a_notebook_on_them(tmp_path):
    """What the students' validation and the test kit's runs use: nbclient with the asynchronous manager."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(6 * 7)")])
    seen = []
    client = NotebookClient(nb, kernel_name="python3", timeout=120, kernel_manager_class=kernels.AsyncSocketKernelManager,
                            on_cell_execute=lambda cell, cell_index: seen.append((client.km.transport, client.km.socket_folder)))
    client.execute(cwd=str(tmp_path))
    assert nb.cells[0].outputs[0]["text"] == "42\n"
    [(transport, folder)] = seen
    assert transport == "ipc" and folder is not None and not folder.exists()
    assert not any(tmp_path.iterdir()), "sockets were made in the notebook's folder"


def test_validation_kernels_talk_over_them(tmp_path):
    """The students' validation (Validate button, ``nbgrader validate``) with the kit's settings."""
    from nbgrader.validator import Validator

    code = "from ipykernel.kernelapp import IPKernelApp\nopen('transport.txt', 'w').write(IPKernelApp.instance().transport)"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)]), tmp_path / "lab.ipynb")
    c = Config()
    validation.configure(c, "smoke")
    Validator(config=c).validate(str(tmp_path / "lab.ipynb"))
    assert (tmp_path / "transport.txt").read_text() == "ipc"


def test_tcp_where_a_socket_cannot_be_made(tmp_path, monkeypatch):
    km = kernels.SocketKernelManager()
    long = tmp_path / ("x" * 100)  # a unix socket's path has at most 107 bytes
    long.mkdir()
    monkeypatch.setattr(km, "socket_parent", lambda: str(long))
    assert not km.use_sockets() and km.transport == "tcp" and not any(long.iterdir())

    missing = kernels.SocketKernelManager()  # a temp folder that cannot take a new folder
    monkeypatch.setattr(missing, "socket_parent", lambda: str(tmp_path / "gone"))
    assert not missing.use_sockets() and missing.transport == "tcp"

    named = kernels.SocketKernelManager(connection_file=str(tmp_path / "mine.json"))  # the caller chose
    assert not named.use_sockets() and named.transport == "tcp"

    monkeypatch.setattr(kernels, "sockets_work", lambda: False)  # Windows
    assert not kernels.SocketKernelManager().use_sockets()


def test_cleaning_up_by_the_public_name_removes_the_folder_too():
    """jupyter_client's public ``cleanup_resources`` is bound to its own coroutine; the kit's classes rebind it."""
    sync, aio, server = (kernels.SocketKernelManager(), kernels.AsyncSocketKernelManager(),
                         kernels.ServerSocketKernelManager())
    assert sync.use_sockets() and aio.use_sockets() and server.use_sockets()
    folders = sync.socket_folder, aio.socket_folder, server.socket_folder
    sync.cleanup_resources()
    asyncio.run(aio.cleanup_resources())
    asyncio.run(server.cleanup_resources())
    assert not any(folder.exists() for folder in folders)


def test_the_jupyter_servers_kernels_talk_over_them_and_survive_a_restart(tmp_path):
    """JupyterLab's kernels (jupyter_server's kernel manager, given the kit's class by the kit's server
    extension): sockets in a private folder, the connection file where the server keeps it; Kernel > Restart
    keeps the folder and the kernel answers again; shutting it down removes the folder. A server configured
    with another kernel manager class keeps it."""
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager, ServerKernelManager

    def ask(connection_file: str) -> str:  # a client as the server's websocket bridge makes one: from the file
        client = BlockingKernelClient(connection_file=connection_file)
        client.load_connection_file()
        # No heartbeat: a client without a kernel manager judges the kernel alive by it, and one reply later than
        # 1 s (a busy 2-core CI machine) made wait_for_ready say "Kernel died" of a kernel that was starting. The
        # kernel's answer within the timeout is the test; a dead kernel still fails it.
        client.start_channels(hb=False)
        try:
            client.wait_for_ready(timeout=120)
            printed = []
            client.execute_interactive("import os; print(os.getpid())", timeout=120,
                                       output_hook=lambda msg: printed.append(
                                           msg["content"].get("text", "") if msg["msg_type"] == "stream" else ""))
            return "".join(printed).strip()
        finally:
            client.stop_channels()

    async def walk() -> dict:
        seen = {}
        (tmp_path / "runtime").mkdir()  # the server makes its runtime folder at start
        mapping = AsyncMappingKernelManager(connection_dir=str(tmp_path / "runtime"), root_dir=str(tmp_path))
        kernels._load_jupyter_server_extension(SimpleNamespace(kernel_manager=mapping, log=logging.getLogger()))
        kernel_id = await mapping.start_kernel(kernel_name="python3")
        km = mapping.get_kernel(kernel_id)
        seen.update(is_server=isinstance(km, ServerKernelManager), transport=km.transport, folder=km.socket_folder,
                    connection_file=Path(km.connection_file), mode=km.socket_folder.stat().st_mode & 0o777,
                    written=json.loads(Path(km.connection_file).read_text()))
        seen["first"] = await asyncio.to_thread(ask, km.connection_file)
        await mapping.restart_kernel(kernel_id)
        seen.update(folder_after_restart=km.socket_folder)
        seen["second"] = await asyncio.to_thread(ask, km.connection_file)
        await mapping.shutdown_kernel(kernel_id)
        seen["left"] = seen["folder"].exists() or seen["connection_file"].exists()
        return seen

    seen = asyncio.run(walk())
    assert seen["is_server"] and seen["transport"] == "ipc" and seen["mode"] == 0o700, seen
    assert seen["connection_file"].parent == tmp_path / "runtime", "the server's connection file moved"
    assert seen["written"]["transport"] == "ipc" and seen["written"]["ip"] == str(seen["folder"] / "kernel"), seen
    assert seen["first"].isdigit() and seen["second"].isdigit() and seen["first"] != seen["second"], seen
    assert seen["folder_after_restart"] == seen["folder"] and not seen["left"], seen

    gateway = "jupyter_server.gateway.managers.GatewayKernelManager"
    chosen = AsyncMappingKernelManager(kernel_manager_class=gateway)
    kernels._load_jupyter_server_extension(SimpleNamespace(kernel_manager=chosen, log=logging.getLogger()))
    assert chosen.kernel_manager_class == gateway, "a configured class was replaced"


def test_a_killed_servers_socket_folders_go_when_the_next_server_starts(tmp_path, monkeypatch):
    """A student's server killed with its kernels (SIGKILL: a hub's out-of-memory kill) cannot remove their
    socket folders; the next Jupyter server of that user removes them at its start (the kit's extension)."""
    from kit.browser import start_server

    # The servers' own temp folder (short enough for socket paths), so that no grading task's sweep in
    # another test removes the dead server's folder first; tagged, so a sweep leaves it to this live test.
    private = Path(tempfile.mkdtemp(prefix=kernels.leftovers.tag("coursekit-test-tmp-")))
    monkeypatch.setenv("TMPDIR", str(private))
    try:
        first = start_server(tmp_path)
        try:
            status, kernel = first.call("api/kernels", "POST", {"name": "python3"})
            assert status == 201, (status, kernel)
            info = json.loads((tmp_path / ".jupyter" / "runtime" / f"kernel-{kernel['id']}.json").read_text())
            folder = Path(info["ip"]).parent
            server = psutil.Process(first.process.pid)
            for process in [server, *server.children(recursive=True)]:
                process.kill()
            psutil.wait_procs([server], timeout=10)
        finally:
            first.stop()
        assert folder.parent == private and folder.name.startswith(kernels.PREFIX), folder
        assert folder.is_dir(), "the killed server's socket folder is not there"
        kept = Path(tempfile.mkdtemp(prefix=kernels.leftovers.tag(kernels.PREFIX), dir=private))  # a live maker's
        second = start_server(tmp_path)
        try:
            assert not folder.exists(), f"the next server left the dead one's socket folder:\n{second.log_tail()}"
            assert kept.is_dir(), "the next server removed a live process's socket folder"
            assert f"removed {folder}" in second.log.read_text(), second.log_tail()
        finally:
            second.stop()
    finally:
        shutil.rmtree(private, ignore_errors=True)
