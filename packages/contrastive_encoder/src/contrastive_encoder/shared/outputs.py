"""The suite's output-folder policy, shared by every command that writes: nothing the program did not write is
ever deleted, and nothing it wrote is overwritten without being asked.

Two kinds of output:

- **Saved folders** (``save_pretrained``, exports, checkpoint steps) are built in a temporary sibling and put in
  place at once (an atomic exchange where the OS has one), so a reader sees the old folder or the new one, never
  a mix. Each holds a manifest, ``.written.json``, listing the files the program wrote. A folder whose files are
  all in its manifest is a previous save and is replaced; a non-empty folder with other files is refused
  unless ``overwrite=True``, and then only the program's files are replaced (the others are kept).
- **Run folders** (training runs, evaluation runs) carry ``run.json`` naming the command that made them. A rerun
  of the same command into it must say ``--resume`` (continue) or ``--overwrite`` (delete the previous run's
  outputs, only those); another command's run is refused; a non-empty folder that is not a run is refused
  unless ``--overwrite`` (then the program writes beside what is there). A run that stopped before writing
  anything (only ``run.json``) can be started again as it is.

Temporaries carry the writer's pid (``.NAME.tmp-PID-XXXX``): those of dead processes, left by a kill, are
removed at the next start (``clean_stale``), those of live ones are left alone.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "MANIFEST",
    "RUN_MARKER",
    "OutputError",
    "atomic_save_dir",
    "atomic_write_text",
    "check_save_target",
    "check_writable_dir",
    "claim_run_dir",
    "clean_stale",
    "prepare_run_dir",
]

MANIFEST = ".written.json"
RUN_MARKER = "run.json"
_STALE_RE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-[\w]+$")


class OutputError(ValueError):
    """An output location that cannot or must not be written; the message names it and says what to do."""


# ---------------------------------------------------------------- temporaries


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale(folder: str | Path) -> int:
    """Remove the temporaries that killed writers left in ``folder``; put back a folder a kill left aside.

    Returns the number of entries removed or restored.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    n = 0
    for entry in folder.iterdir():
        m = _STALE_RE.match(entry.name)
        if m is None or _pid_alive(int(m["pid"])):
            continue
        original = folder / m["name"]
        if m["kind"] == "old" and not original.exists():  # killed between the two renames of a swap
            os.replace(entry, original)
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        n += 1
    return n


def _tmp_name(target: Path, kind: str) -> str:
    return f".{target.name}.{kind}-{os.getpid()}-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------- checks


def check_writable_dir(folder: str | Path, flag: str = "--out") -> Path:
    """Create ``folder`` (and parents) if needed and prove a file can be written in it (one-line OutputError)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{flag} {folder}: is a file, expected a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=_tmp_name(folder / "probe", "tmp"), dir=folder)
        os.close(fd)
        os.unlink(probe)
    except NotADirectoryError as e:
        raise OutputError(f"{flag} {folder}: a parent of it is a file, expected folders") from e
    except OSError as e:
        raise OutputError(f"{flag} {folder}: cannot write there ({e.strerror or e})") from e
    return folder


def _manifest_files(folder: Path) -> set[str] | None:
    try:
        data = json.loads((folder / MANIFEST).read_text())
        return set(data["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir()}


def _is_previous_save(folder: Path) -> bool:
    listed = _manifest_files(folder)
    return listed is not None and _files(folder) <= listed | {MANIFEST}


def check_save_target(target: str | Path, overwrite: bool = False, flag: str = "--out") -> Path:
    """Refuse, before any work, a save folder that ``atomic_save_dir`` would refuse; check it is writable.

    Args:
        target: the folder a model or export will be saved to.
        overwrite: allow a non-empty folder that is not a previous save (its other files are kept).
        flag: how the command line names the folder, for the message.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise OutputError(f"{flag} {target}: is a file, expected a folder")
    if target.is_dir() and any(target.iterdir()) and not overwrite and not _is_previous_save(target):
        raise OutputError(
            f"{flag} {target}: folder is not empty and is not a model this suite saved; choose an empty or new "
            f"folder, or give --overwrite to write into it (files the program did not write are kept)")
    check_writable_dir(target.parent if not target.exists() else target, flag)
    return target


# ---------------------------------------------------------------- saved folders


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the OS cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _finish_tree(folder: Path) -> None:
    """Flush every file before the rename makes it visible; give the usual permissions (mkdtemp makes the folder
    0700 and safetensors writes 0600, but a saved model is as readable as any file the user writes)."""
    mask = _umask()
    for f in folder.rglob("*"):
        if f.is_symlink():
            continue
        if f.is_file():
            with open(f, "rb+") as fh:
                os.fsync(fh.fileno())
            os.chmod(f, 0o666 & ~mask)
        elif f.is_dir():
            os.chmod(f, 0o777 & ~mask)
    os.chmod(folder, 0o777 & ~mask)


def _merge_into(tmp: Path, target: Path) -> None:
    """Move the new files into a folder holding files the program did not write: each file is replaced at once,
    the program's previous files that the new save does not have are removed, the others are kept."""
    old = _manifest_files(target) or set()
    new = _files(tmp)
    for rel in sorted(new):
        dest = target / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, dest)
    for rel in sorted(old - new - {MANIFEST}):
        (target / rel).unlink(missing_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_save_dir(target: str | Path, overwrite: bool = False, by: str = "flamingo-suite") -> Iterator[Path]:
    """Yield a temporary folder; on success it takes the place of ``target``, on error it is removed.

    ``target`` may be missing, empty, or a previous save (replaced as a whole, atomically). A non-empty folder
    with files the program did not write is refused (``OutputError``) unless ``overwrite``; then only the
    program's files in it are replaced.

    Example:
        with atomic_save_dir(checkpoint_dir(run, step)) as tmp:
            save_file(weights, tmp / "model.safetensors")
    """
    target = Path(target)
    check_save_target(target, overwrite, flag="saving to")
    clean_stale(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_name(target, "tmp"), dir=target.parent))
    try:
        yield tmp
        files = sorted(_files(tmp))
        (tmp / MANIFEST).write_text(json.dumps({"by": by, "files": files}, indent=1) + "\n")
        _finish_tree(tmp)
        if not target.exists() or (target.is_dir() and not any(target.iterdir())):
            os.replace(tmp, target)  # rename(2) replaces an empty folder
        elif _is_previous_save(target):
            if _exchange(tmp, target):
                shutil.rmtree(tmp, ignore_errors=True)  # now holds the previous save
            else:
                aside = Path(tempfile.mkdtemp(prefix=_tmp_name(target, "old"), dir=target.parent))
                os.replace(target, aside)  # a kill here is undone by clean_stale (the old one is put back)
                os.replace(tmp, target)
                shutil.rmtree(aside, ignore_errors=True)
        else:
            _merge_into(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a small text file so readers see the old or the new content, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_name(path, "tmp"), dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- run folders


def _marker(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / RUN_MARKER).read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def _matches(folder: Path, patterns: Iterable[str]) -> list[Path]:
    return sorted({p for pat in patterns for p in folder.glob(pat)}, key=lambda p: (-len(p.parts), str(p)))


def _delete_owned(folder: Path, patterns: Iterable[str]) -> None:
    """Delete what a previous run of the command wrote, and only that: the files and folders its ``owned``
    patterns match, but of a matched folder holding a manifest only the files listed there; then the folders
    left empty. Anything else a user put there (beside or inside) stays."""
    touched = set()
    for path in _matches(folder, patterns):
        touched.add(path.parent)
        if path.is_dir() and not path.is_symlink():
            listed = _manifest_files(path)
            if listed is None:
                shutil.rmtree(path)  # a run-made folder (``checkpoints/step_N``) from before manifests
                continue
            for rel in sorted(listed | {MANIFEST}):
                (path / rel).unlink(missing_ok=True)
                touched.update((path / rel).parents)
        else:
            path.unlink(missing_ok=True)
    for d in sorted(touched, key=lambda p: -len(p.parts)):  # deepest first
        if d != folder and folder in d.parents and d.is_dir() and not any(d.iterdir()):
            d.rmdir()


def prepare_run_dir(folder: str | Path, command: str, owned: Iterable[str], resume: bool = False,
                    overwrite: bool = False, flag: str = "--out", legacy: Iterable[str] = ()) -> Path:
    """Check and claim a run folder before a run writes into it (call on the main process only).

    Args:
        folder: the run folder.
        command: the command that owns it, e.g. ``"flamingo train"``; written to ``run.json``.
        owned: glob patterns (relative to the folder) of what the command writes, e.g. ``"checkpoints/step_*"``,
            ``"metrics.jsonl"``, ``"model"`` (a saved folder: only the files its manifest lists). ``overwrite``
            deletes these in a previous run of the same command, and nothing else.
        resume: the run continues the one in the folder.
        overwrite: replace a previous run (what ``owned`` matches), or write into a foreign non-empty folder
            (beside its files).
        flag: how the command line names the folder.
        legacy: glob patterns whose match marks a run made before ``run.json`` existed (e.g.
            ``"checkpoints/step_*/state.json"``).

    Raises:
        OutputError: the folder is a file, unwritable, another command's run, or holds something the run must
            not touch.
    """
    folder = Path(folder)
    check_writable_dir(folder, flag)
    clean_stale(folder)
    if (folder / "checkpoints").is_dir():
        clean_stale(folder / "checkpoints")
    owned = list(owned)
    entries = {p.name for p in folder.iterdir()} - {RUN_MARKER}
    marker = _marker(folder)
    other = marker.get("command") if marker else None
    if other and other != command:  # its checkpoints would be pruned or mixed with this command's
        raise OutputError(f"{flag} {folder}: is a `{other}` run, not a `{command}` one; choose another {flag}")
    ours = other == command
    previous = bool(_matches(folder, owned)) if ours else bool(_matches(folder, legacy))
    if previous and not resume:
        if not overwrite:
            raise OutputError(
                f"{flag} {folder}: holds a previous `{command}` run; give --resume latest to continue it, or "
                f"--overwrite to delete its outputs and start again (or choose another {flag})")
        _delete_owned(folder, owned)
    elif not previous and not ours and entries and not overwrite:
        raise OutputError(
            f"{flag} {folder}: folder is not empty and is not a `{command}` run; choose an empty or new folder, "
            f"or give --overwrite to write into it (files the program did not write are kept)")
    foreign_marker = marker is None and (folder / RUN_MARKER).exists()  # a file of the same name, not ours
    if not foreign_marker and not (ours and resume):
        atomic_write_text(folder / RUN_MARKER, json.dumps(
            {"command": command, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=1) + "\n")
    return folder


def claim_run_dir(accelerator, folder: str | Path, command: str, owned: Iterable[str], resume: bool = False,
                  overwrite: bool = False, legacy: Iterable[str] = ()) -> Path:
    """``prepare_run_dir`` on the main process of a (possibly multi-process) run; every process raises its error.

    Only the main process touches the folder (the others would race its writes); the outcome is broadcast so
    no process waits at a barrier for one that has already stopped.
    """
    error = None
    if accelerator is None or accelerator.is_main_process:
        try:
            prepare_run_dir(folder, command, owned, resume=resume, overwrite=overwrite, legacy=legacy)
        except OutputError as e:
            error = str(e)
    if accelerator is not None and accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        box = [error]
        broadcast_object_list(box, from_process=0)  # between this run's own processes: nothing untrusted
        error = box[0]
    if error:
        raise OutputError(error)
    return Path(folder)
