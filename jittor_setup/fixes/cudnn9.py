"""Jittor 1.3.11, compile_extern.py: cuDNN 9's library names, and its removed RNN API.

cuDNN 9 split its libraries under new names and removed the RNN API that Jittor's cudnn_rnn files
use (Jittor's cuDNN RNN is left out; convolutions keep cuDNN). Older cuDNN keeps the old names.

Verified: tests/test_jittor_cuda.py: applied once and only for cuDNN 9, on copies of Jittor's files;
the GPU check on an H100 with cuDNN 9.14 (docs/gpu.md).
"""
from ..patches import MARK, Patch

PATCHES = (
    Patch("compile_extern.py",
          'def setup_cuda_lib(lib_name, link=True, extra_flags=""):\n',
          f"# {MARK} the cuDNN 9 fixes below need the major version of the cuDNN found.\n"
          "def _cudnn_major(cudnn_h):\n"
          "    import re\n"
          "    text = ''\n"
          "    for name in ('cudnn_version.h', 'cudnn.h'):\n"
          "        path = os.path.join(os.path.dirname(cudnn_h), name)\n"
          "        if os.path.isfile(path):\n"
          "            text += open(path).read()\n"
          "    match = re.search(r'#define\\s+CUDNN_MAJOR\\s+(\\d+)', text)\n"
          "    return int(match.group(1)) if match else 0\n"
          "\n"
          'def setup_cuda_lib(lib_name, link=True, extra_flags=""):\n',
          "cudnn9"),
    Patch("compile_extern.py",
          '                libs = ["libcudnn_ops_infer.so", "libcudnn_ops_train.so", '
          '"libcudnn_cnn_infer.so", "libcudnn_cnn_train.so"]\n',
          '                libs = ["libcudnn_ops_infer.so", "libcudnn_ops_train.so", '
          '"libcudnn_cnn_infer.so", "libcudnn_cnn_train.so"]\n'
          f"                # {MARK} cuDNN 9 split its libraries under new names.\n"
          "                if _cudnn_major(cuda_include_name) >= 9:\n"
          '                    libs = ["libcudnn_graph.so", "libcudnn_engines_precompiled.so", '
          '"libcudnn_engines_runtime_compiled.so", "libcudnn_heuristic.so", "libcudnn_ops.so", '
          '"libcudnn_cnn.so", "libcudnn_adv.so"]\n'
          '                    prefer_version = ("9",)\n',
          "cudnn9"),
    Patch("compile_extern.py",
          "    for r, _, f in os.walk(culib_src_dir):\n"
          "        for fname in f:\n"
          "            culib_src_files.append(os.path.join(r, fname))\n",
          "    for r, _, f in os.walk(culib_src_dir):\n"
          "        for fname in f:\n"
          f"            # {MARK} cuDNN 9 removed the RNN API (cudnnSetRNNDescriptor_v6, ...) of these files.\n"
          '            if lib_name == "cudnn" and "rnn" in fname and _cudnn_major(cuda_include_name) >= 9:\n'
          "                continue\n"
          "            culib_src_files.append(os.path.join(r, fname))\n",
          "cudnn9"),
)
