"""Writing files: every file the project writes goes through ``write_atomically``.

A file is written under a temporary name, flushed to disk and renamed over the target, so a
kill or a full disk leaves either the previous file or the new one, never a torn one;
``write_together`` does the same for a set of files that belong together. Figures
are drawn with matplotlib's headless backend (``pyplot``), so no script needs a screen.
"""
import contextlib
import errno
import fcntl
import glob
import json
import os
import shutil

from scenes.cli import UserError


def write_atomically(path, write, shared=False):
    """Call ``write(binary_file)`` on a temporary file, flush it to disk, then rename it to ``path``.

    Any failure removes the temporary file and leaves the previous file as it was; a failure of the
    disk (an OSError, also when a library such as torch.save wraps it in its own error) becomes a
    UserError naming the file. ``shared``: other processes may write the same file at once (a
    cache), so the temporary name is this process's. Temporary files of ``path`` left by writers
    that were killed are removed first.
    """
    tmp = f"{path}.{os.getpid()}.tmp" if shared else f"{path}.tmp"
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        remove_stale_temporaries(path)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        with contextlib.suppress(OSError):  # the error that brought us here is the one to report
            if os.path.lexists(tmp):
                os.remove(tmp)
        cause = disk_error(error)
        if cause is None:
            raise
        raise UserError(f"could not save {path}: {reason_of(cause)}; the previous file there is untouched.") from None


def disk_error(error):
    """The OSError behind ``error`` (itself, or the one a library's own error was raised while handling), or None."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    return error


def reason_of(error):
    return "the disk is full" if error.errno == errno.ENOSPC else error.strerror or str(error)


def pid_alive(pid):
    """Whether a process of this id runs (in this PID namespace)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(path, pattern=None):
    """Remove the ``<path>.<pid>.tmp`` of processes that are gone: what a writer killed in a shared
    ``write_atomically`` leaves (``<path>.tmp`` is written over by the next save). ``pattern``, a
    glob, names several targets at once. One named by this process's id is a leftover of an earlier
    process (a restarted container), since this one writes none yet."""
    pattern = pattern or glob.escape(path)
    stale = []
    for name in glob.glob(pattern + ".*.tmp"):
        pid = name.rsplit(".", 2)[1]
        if pid.isdigit() and (int(pid) == os.getpid() or not pid_alive(int(pid))):
            stale.append(name)
    for name in stale:
        with contextlib.suppress(OSError):  # another process may have removed it first
            os.remove(name)


def sub_folders(path):
    """The paths of a folder's sub-folders that are not hidden, sorted by name; [] if it is no folder."""
    if not os.path.isdir(path):
        return []
    return sorted((e.path for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")),
                  key=os.path.basename)


def ensure_folder(path, setting, named="", create=True):
    """Create the folder a setting names (and its parents) if needed, or refuse in a sentence when
    that path is a file or the folder cannot be created or written. ``named``: how to call it;
    ``create=False`` only checks, so a script can refuse early and make the folder when it writes."""
    named = named or f"--{setting}={path}"
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{named} is a file, not a folder; name a folder (it is created if missing).")
    existing = path
    while not os.path.exists(existing) and os.path.dirname(os.path.abspath(existing)) != os.path.abspath(existing):
        existing = os.path.dirname(os.path.abspath(existing))
    if not os.path.isdir(existing):
        raise UserError(f"{named}: the folder cannot be created ({existing} is a file).")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{named}: {existing} cannot be written; choose another folder.")
    if create:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as error:
            raise UserError(f"{named}: the folder cannot be created ({error.strerror or error}).") from None
    return path


@contextlib.contextmanager
def work_folder(path, setting, named=""):
    """``ensure_folder`` for the work in the block; when that work fails before it wrote in the folder,
    a folder made here is removed again, so a refusal leaves no empty folder behind."""
    made = not os.path.isdir(path)
    ensure_folder(path, setting, named)
    try:
        yield path
    except BaseException:
        if made:
            with contextlib.suppress(OSError):  # not empty: the work wrote something worth keeping
                os.rmdir(path)
        raise


def ensure_file_folder(path, setting):
    """Check, before the work, that the file a setting names can be written there: refuse a folder,
    or a folder that cannot be made (``write_atomically`` makes it when the file is written)."""
    if os.path.isdir(path):
        raise UserError(f"--{setting}={path} is a folder; name the file to write.")
    folder = os.path.dirname(os.path.abspath(path))
    ensure_folder(folder, setting, f"the folder {folder} of --{setting}={path}", create=False)


def ensure_room(folder, needed, what):
    """Refuse, before anything is written, a file of ``needed`` bytes that the folder's disk cannot hold."""
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise UserError(f"{what} needs {needed / 1e9:.3g} GB but {folder} has {free / 1e9:.3g} GB free; "
                        "use a smaller image size, another folder or free some space.")


def write_text(path, text):
    write_atomically(path, lambda f: f.write(text.encode("utf-8")))


def write_json(path, value):
    write_text(path, json.dumps(value, indent=1) + "\n")


def write_table(path, frame, **to_csv):
    """A pandas DataFrame as CSV (``to_csv``'s keyword arguments pass through)."""
    write_atomically(path, lambda f: frame.to_csv(f, **to_csv))


def pyplot():
    """matplotlib's pyplot on the headless Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_figure(path, fig, dpi=100, **savefig):
    """Save a matplotlib figure as PNG and close it."""
    try:
        write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=dpi, **savefig))
    finally:
        pyplot().close(fig)


def write_image(path, array, **imsave):
    """A 2-D array as a PNG image (``plt.imsave``'s keyword arguments pass through)."""
    write_atomically(path, lambda f: pyplot().imsave(f, array, format="png", **imsave))


@contextlib.contextmanager
def folder_lock(folder):
    """Hold the kernel's exclusive lock on a folder (made if missing), waiting while another process
    holds it; where the file system has no locks, go on unlocked."""
    try:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
    except OSError as error:
        raise UserError(f"cannot write in {folder}: {error.strerror or error}.") from None
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_together(contents, marker):
    """Write ``{path: bytes}`` as one set: a failure leaves the previous files, a kill is detectable.

    Every file is staged beside its target (``<path>.new``, through ``write_atomically``) before any
    is renamed, so a failure until then (a full disk, a folder that cannot be written) leaves every
    previous file as it was. The renames, in the order of ``contents``, run while the file ``marker``
    exists: a kill among them leaves it behind, which tells a reader that the set is torn.
    """
    with folder_lock(os.path.dirname(os.path.abspath(marker))):  # two writers of one set take turns
        stage_and_rename(contents, marker)


def stage_and_rename(contents, marker):
    staged = {path: f"{path}.new" for path in contents}
    renamed = 0
    try:
        for path, data in contents.items():
            write_atomically(staged[path], lambda f, data=data: f.write(data))
        write_atomically(marker, lambda f: None)
        for path, new in staged.items():
            os.replace(new, path)
            renamed += 1
        os.remove(marker)
    except BaseException as error:
        for leftover in [*staged.values(), *([] if renamed else [marker])]:
            with contextlib.suppress(OSError):  # the error that brought us here is the one to report
                os.remove(leftover)
        if not isinstance(error, OSError):
            raise
        state = "a torn set now, so write them again" if renamed else "untouched"
        raise UserError(f"could not rename {error.filename}: {error.strerror or error}; the files beside it are "
                        f"{state}.") from None
