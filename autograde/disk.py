"""A hand-in's disk limit: the folders it may write to live on a tmpfs of capped size.

A hand-in writes to two folders of its own (:func:`autograde.kernel.work_folders`): its working copy
and its exported models. Root mounts a tmpfs of the limit's size (:data:`FS_NAME`) on the folder that
holds both (the hand-in's *box*) before its kernel starts, and detaches it when the hand-in is done,
so a submission cannot fill the grader's disk: a write past the limit fails in the student's cell
with ``OSError: [Errno 28] No space left on device``. The tmpfs is memory, charged to the cgroup of
the process that writes it: what a hand-in writes counts in its memory limit as well.

Every sandbox starts in a private mount namespace, which begins as a copy of the host's mounts, boxes
of other hand-ins included; :func:`detach_others` is the shell line that lets go of them there, so
each box's memory is freed when its own hand-in is done. A grading worker that dies cannot detach its
boxes: :func:`release_stale` does, for the next grading task (their paths carry the dead worker's
process id, :mod:`course_utils.leftovers`). Without root or ``mount`` the folders are plain ones on
the temp folder's disk, not capped, and :func:`problem` says why.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from course_utils import leftovers

FS_NAME = "coursekit-box"  # the tmpfs's source name in /proc/mounts: how the kit finds its own boxes
MAX_FILES = 65536          # files and folders a box may hold (each costs kernel memory)


class DiskError(OSError):
    """A box could not be mounted (the hand-in is not graded without its limit)."""


def problem() -> str:
    """Why this process cannot give hand-ins disk-limited folders, or "" when it can (a real mount is tried)."""
    if os.name != "posix" or os.geteuid() != 0:
        return "only root can mount the size-limited folders"
    if not (shutil.which("mount") and shutil.which("umount")):
        return "mount and umount (util-linux) are missing"
    probe = Path(tempfile.mkdtemp(prefix=leftovers.tag("coursekit-diskprobe-")))
    try:
        mount(probe, 1 << 20)
        unmount(probe)
    except OSError as exc:
        return str(exc)
    finally:
        shutil.rmtree(probe, ignore_errors=True)
    return ""


def mount(folder: Path, size: int) -> None:
    """A tmpfs of ``size`` bytes (and :data:`MAX_FILES` entries) on ``folder``, made if missing; DiskError if not."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size},nr_inodes={MAX_FILES},mode=0755,nosuid,nodev"
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, FS_NAME, str(folder)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise DiskError(f"cannot mount a size-limited folder on {folder}: {proc.stderr.strip() or proc.returncode}")


def unmount(folder: Path) -> None:
    """Detach the box on ``folder`` (lazily: its memory is freed when the last process using it has ended)."""
    subprocess.run(["umount", "--lazy", str(folder)], capture_output=True)


def full(folder: Path) -> bool:
    """Whether the box on ``folder`` ran out of room (less than 1 MiB or 1% left, or of its entries)."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    room = st.f_bavail * st.f_frsize < max(1 << 20, st.f_blocks * st.f_frsize // 100)
    return room or (st.f_files > 0 and st.f_favail < max(16, st.f_files // 100))


def _boxes() -> list[str]:
    """Mount points of the kit's boxes in this process's mount namespace."""
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    found = [line.split()[1] for line in lines if line.split()[:1] == [FS_NAME]]
    return [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), point) for point in found]  # /proc's escapes


def release_stale() -> list[str]:
    """Detach the boxes of grading workers that have ended; returns their mount points."""
    stale = [point for point in _boxes()
             if any(part.startswith(leftovers.KIT_PREFIX) and leftovers.owner_gone(part) for part in Path(point).parts)]
    for point in stale:
        unmount(Path(point))
    return stale


def detach_others(keep: Path) -> str:
    """A line of shell, for root in a sandbox's private mount namespace: detach every box there except mounts
    below ``keep`` (the sandbox's own binds of its box)."""
    return (f'printf "%s\\n" "$(cat /proc/self/mounts)" | while read -r src dst rest; do '
            f'case "$src:$dst" in {FS_NAME}:{shlex.quote(str(keep))}/*) ;; '
            f'{FS_NAME}:*) umount -l "$dst" 2>/dev/null ;; esac; done; ')
