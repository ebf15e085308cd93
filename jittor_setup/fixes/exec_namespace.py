"""Jittor 1.3.11, compiler.py and ../jittor_utils/__init__.py: the modules Jittor compiles are read
back from an explicit namespace, not locals() (Python 3.13).

Jittor 1.3.11 imports the modules it has just compiled with exec("import NAME") and then reads
NAME from locals(). From Python 3.13 on (PEP 667) locals() in a function is a snapshot that exec
does not write into: the lookup fails (KeyError 'gen_ops_mkl_...') on the first custom op. An
explicit namespace works on every version.

Verified: tests/test_jittor_python.py: applied once to copies of Jittor's files; the CPU test suite
on Python 3.13 (docs/pythons.md).
"""
from ..patches import MARK, Patch

PATCHES = (
    Patch("compiler.py",
          '            exec(f"import {gen_name}")\n'
          "    mod = locals()[gen_name]\n",
          f"            # {MARK} exec writes into this namespace; into locals() it does not (3.13)\n"
          "            namespace = {}\n"
          '            exec(f"import {gen_name}", namespace)\n'
          "    mod = namespace[gen_name]\n",
          "any"),
    Patch("../jittor_utils/__init__.py",
          "    with lock.unlock_scope():\n"
          "        try:\n"
          "            with import_scope(os.RTLD_GLOBAL | os.RTLD_NOW):\n"
          '                exec(f"import {hash}")\n'
          "        except Exception as e:\n"
          "            with import_scope(os.RTLD_GLOBAL | os.RTLD_LAZY):\n"
          '                exec(f"import {hash}")\n'
          "\n"
          "    mod = locals()[hash]\n",
          f"    # {MARK} exec writes into this namespace; into locals() it does not (3.13)\n"
          "    namespace = {}\n"
          "    with lock.unlock_scope():\n"
          "        try:\n"
          "            with import_scope(os.RTLD_GLOBAL | os.RTLD_NOW):\n"
          '                exec(f"import {hash}", namespace)\n'
          "        except Exception as e:\n"
          "            with import_scope(os.RTLD_GLOBAL | os.RTLD_LAZY):\n"
          '                exec(f"import {hash}", namespace)\n'
          "\n"
          "    mod = namespace[hash]\n",
          "any"),
)
