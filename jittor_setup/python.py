"""Jittor on the Python at hand: the versions the project runs on and the build configuration Jittor
compiles against (`jittor_env` calls `check_version` and `configure`; `python jittor_setup/python.py`
checks the version alone, with nothing but the standard library, as the Makefile does first).

Jittor 1.3.11 compiles its core and kernels as extension modules of the running interpreter, with
the interpreter's headers, which it asks its `python3.X-config` script for. It looks for that
script next to `sys.executable` and in /usr/bin and /usr/local/bin only, so inside a virtual
environment made from a pyenv, uv, conda or python.org Python it finds none ("python3.12-config not
found"), or a different build's (Debian's /usr/bin/python3.11-config for pyenv's 3.11). Here
`python_config_path` is the script of the Python the environment was made from (`sys.base_prefix`);
where that Python has none but has its headers, a script written from `sysconfig` that answers
Jittor's three questions; where the headers are missing, one line says what to install.
"""
import os
import sys
import sysconfig

SUPPORTED = ((3, 10), (3, 13))  # the CPython versions the project is checked on (docs/pythons.md)


class PythonSetupError(SystemExit):
    """This Python cannot run Jittor as installed; the message is the one line the user sees."""

    def __init__(self, message):
        super().__init__(f"ccnet-jittor: {message}")


def check_version(version=sys.version_info):
    low, high = SUPPORTED
    if not low <= tuple(version[:2]) <= high:
        raise PythonSetupError(
            f"Python {version[0]}.{version[1]}.{version[2]} is not supported: use Python {low[0]}.{low[1]} to "
            f"{high[0]}.{high[1]}, on which the pinned requirements install and the project is checked (docs/pythons.md)")


def own_config_script():
    """This interpreter's python3.X-config, from the prefix it was built for; None if it has none."""
    name = f"python{sys.version_info[0]}.{sys.version_info[1]}-config"
    for folder in (os.path.join(sys.base_prefix, "bin"), sysconfig.get_config_var("BINDIR")):
        if folder and os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def write_config_script(cache):
    """A python3.X-config written from sysconfig, for a Python that has its headers but no script."""
    paths = sysconfig.get_paths()
    var = sysconfig.get_config_var
    answers = {"--includes": f"-I{paths['include']} -I{paths['platinclude']}",
               "--extension-suffix": var("EXT_SUFFIX") or ".so",
               "--ldflags": f"-L{var('LIBDIR')} {var('LIBS') or ''} {var('SYSLIBS') or ''}".strip()}
    cases = "".join(f'  {flag}) echo "{answer}" ;;\n' for flag, answer in answers.items())
    text = (f"#!/bin/sh\n# ccnet-jittor: the build configuration of {sys.base_prefix} (from its sysconfig), which "
            f"has no python3.X-config\ncase \"$1\" in\n{cases}  *) exit 1 ;;\nesac\n")
    os.makedirs(cache, exist_ok=True)
    path = os.path.join(cache, f"python{sys.version_info[0]}.{sys.version_info[1]}-config")
    if not os.path.isfile(path) or open(path).read() != text:
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    return path


def configure(environ, cache):
    """Point Jittor at this Python's build configuration (a value the user set wins)."""
    if "python_config_path" in environ:
        return
    include = sysconfig.get_paths()["include"]
    if not os.path.isfile(os.path.join(include, "Python.h")):
        minor = f"{sys.version_info[0]}.{sys.version_info[1]}"
        raise PythonSetupError(
            f"Python {minor}'s headers are missing (no Python.h in {include}), and Jittor compiles against them: "
            f"install python{minor}-dev (Debian, Ubuntu) or python3-devel (Fedora), or use a Python that has "
            f"them (pyenv, uv, conda)")
    environ["python_config_path"] = own_config_script() or write_config_script(cache)


if __name__ == "__main__":
    check_version()
