"""What must happen before Paddle is imported; every entry script imports this module first.

1. Paddle 2.6 and zlib users coexist. Paddle 2.6's `paddle/base/libpaddle.so` carries its own static zlib 1.2.8 and
exports its symbols (`deflate`, `deflateReset`, `inflateReset2`, ... unversioned; Paddle 3.x exports none) while also
linking the system `libz.so.1`. When `libz.so.1` is first loaded as a dependency of libpaddle.so (plain
`import paddle` before anything else that uses zlib), the dynamic linker gives libz the lookup scope
[libpaddle.so, ..., libz.so.1], so libz's calls to its own functions (`deflateInit2_` -> `deflateReset`,
`inflateInit2_` -> `inflateReset2`) bind to Paddle's older copy, whose stream state has another layout: writing a
PNG (Pillow, matplotlib's PR plot), Python's `zlib.compress` and `np.savez_compressed` segfault and PNG decoding
fails with "codec configuration error". (`LD_DEBUG=scopes python -c "import paddle"` shows that scope;
`LD_DEBUG=bindings` shows libz binding `deflateReset` to libpaddle.so.) Whether a script crashed depended on whether
numpy or Pillow happened to load zlib first. Loading `libz.so.1` on its own first gives it its own scope
[libz.so.1, libc], so its calls stay inside it, for every later user (Pillow, matplotlib, the zlib module) and for
the DataLoader's forked workers, which inherit it. Paddle keeps binding its own calls to its own copy, as before.
Harmless where there is nothing to fix (Paddle 3.x, other systems).

2. A quiet start: Paddle's import-time `UserWarning: No ccache found ...` (about compiling C++ extensions, which
this project never does) is silenced, and nothing else; every other warning still shows.

3. The OMP_NUM_THREADS the user set is recorded (USER_OMP_NUM_THREADS, None when unset), for
utils/runtime/dist.cpu_threads:
Paddle's import writes OMP_NUM_THREADS=1 into the environment when it is unset, so afterwards a user's 1 and Paddle's
cannot be told apart. A process started by `paddle.distributed.launch` inherits the launcher's environment after the
launcher's own Paddle import wrote that 1; what the user gave is the launcher's environment as it was started
(/proc/<parent>/environ, which later changes do not touch). When Paddle was imported before this module, the current
value is taken as the user's (at worst one thread, as before).

It imports nothing from this project or from Paddle.
"""
import ctypes
import os
import sys
import warnings

warnings.filterwarnings("ignore", message=r"No ccache found", category=UserWarning)

if sys.platform.startswith("linux") and "paddle" not in sys.modules:
    try:
        ctypes.CDLL("libz.so.1")  # RTLD_LOCAL: only fixes libz's own scope, exports nothing to Paddle
    except OSError:
        pass  # no system zlib: libpaddle.so, which needs it, reports that itself when it loads


# utils/runtime/dist.launched_by_paddle reads these too
LAUNCHER_VARIABLES = ("PADDLE_TRAINER_ID", "PADDLE_CURRENT_ENDPOINT")


def _started_environment(pid):
    """The environment process `pid` was started with, or None where /proc cannot tell (not Linux, gone)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as file:
            raw = file.read()
    except OSError:
        return None
    return dict(item.decode(errors="replace").partition("=")[::2] for item in raw.split(b"\0") if b"=" in item)


def _user_omp_num_threads():
    value = os.environ.get("OMP_NUM_THREADS")
    if "paddle" not in sys.modules and value == "1" and all(name in os.environ for name in LAUNCHER_VARIABLES):
        started = _started_environment(os.getppid())
        if started is not None:
            return started.get("OMP_NUM_THREADS")
    return value


USER_OMP_NUM_THREADS = _user_omp_num_threads()
