"""Jittor on the Python at hand: the supported range enforced in one line, Jittor pointed at this
interpreter's own build configuration (or one written from sysconfig), and the fix Python 3.13 needs
applied once to copies of Jittor's files."""
import os
import subprocess
import sys
import sysconfig

import pytest

from jittor_setup import fixes, patches
from jittor_setup import python as jittor_python


@pytest.mark.parametrize("version,supported", [((3, 9, 18), False), ((3, 10, 0), True), ((3, 13, 0), True),
                                               ((3, 14, 0), False), ((2, 7, 18), False)])
def test_the_supported_range_is_enforced_in_one_line(version, supported):
    if supported:
        jittor_python.check_version(version)
        return
    with pytest.raises(SystemExit) as stop:
        jittor_python.check_version(version)
    message = str(stop.value.code)
    assert message.startswith(f"ccnet-jittor: Python {'.'.join(map(str, version))} is not supported: use Python "
                              "3.10 to 3.13") and "\n" not in message


def config_answers(script):
    return {flag: subprocess.run([script, flag], capture_output=True, text=True, check=True).stdout.split()
            for flag in ("--includes", "--extension-suffix")}


def test_jittor_is_pointed_at_this_pythons_own_configuration(tmp_path):
    environ = {}
    jittor_python.configure(environ, str(tmp_path))
    script = environ["python_config_path"]
    assert os.path.realpath(script).startswith(os.path.realpath(sys.base_prefix)) or script.startswith(str(tmp_path))
    answers = config_answers(script)
    assert f"-I{sysconfig.get_paths()['include']}" in answers["--includes"]
    assert answers["--extension-suffix"] == [sysconfig.get_config_var("EXT_SUFFIX")]


def test_a_value_the_user_set_wins(tmp_path):
    environ = {"python_config_path": "/opt/mine/python3-config"}
    jittor_python.configure(environ, str(tmp_path))
    assert environ == {"python_config_path": "/opt/mine/python3-config"}


def test_a_python_without_a_config_script_gets_one_from_sysconfig(tmp_path, monkeypatch):
    """The written script answers Jittor's questions as this Python's own script does."""
    own = jittor_python.own_config_script()
    monkeypatch.setattr(jittor_python, "own_config_script", lambda: None)
    environ = {}
    jittor_python.configure(environ, str(tmp_path))
    written = environ["python_config_path"]
    assert written.startswith(str(tmp_path)) and os.access(written, os.X_OK)
    if own is None:
        pytest.skip("this Python has no python3.X-config to compare the written one with")
    answers, expected = config_answers(written), config_answers(own)
    assert set(answers["--includes"]) == set(expected["--includes"])
    assert answers["--extension-suffix"] == expected["--extension-suffix"]


def test_missing_headers_are_one_line_saying_what_to_install(tmp_path, monkeypatch):
    paths = {**sysconfig.get_paths(), "include": str(tmp_path)}
    monkeypatch.setattr(jittor_python.sysconfig, "get_paths", lambda: paths)
    with pytest.raises(SystemExit) as stop:
        jittor_python.configure({}, str(tmp_path / "cache"))
    minor = f"{sys.version_info[0]}.{sys.version_info[1]}"
    message = str(stop.value.code)
    assert f"no Python.h in {tmp_path}" in message and f"install python{minor}-dev" in message
    assert "\n" not in message


def test_the_python_3_13_fix_applies_once_to_copies_of_jittors_files(tmp_path):
    """Jittor's two exec-then-locals() imports, undone on copies (the installed files were fixed when
    jittor_env was imported): the fix gives the installed text back, and a second application
    changes nothing."""
    import jittor_env  # noqa: F401  (it fixed the installed files)
    source, version = patches.jittor_package()
    exec_namespace = fixes.exec_namespace.PATCHES
    root = tmp_path / "jittor"
    for fix in exec_namespace:
        installed = open(os.path.join(source, fix.path)).read()
        assert installed.count(fix.new) == 1 and "locals()[" not in fix.new
        copy = root / fix.path
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(installed.replace(fix.new, fix.old))
    assert sorted(patches.apply_patches(str(root), exec_namespace, version)) == sorted(fix.path for fix in exec_namespace)
    for fix in exec_namespace:
        assert (root / fix.path).read_text() == open(os.path.join(source, fix.path)).read()
    assert patches.apply_patches(str(root), exec_namespace, version) == []
