"""The machinery behind the project's Jittor start-up, which `jittor_env` runs in this order:

    python.py   the Pythons the project runs on; Jittor pointed at this interpreter's headers
    onednn.py   oneDNN 2.2 from PyPI linked where Jittor looks for it (no download)
    cuda.py     on a GPU: the CUDA toolkit, cuDNN (also PyPI's) and NCCL found for Jittor
    patches.py  fixing Jittor 1.3.11's own files: applied once, their state, undone
    fixes/      one module per fix: the file it changes, why, and how it was verified
    process.py  the process around Jittor: freed memory kept, crashes and exits that end cleanly

Importing this package does nothing. `python -m jittor_setup status` shows what is installed and
found and where every fix stands, without starting Jittor; `python -m jittor_setup restore` puts
back Jittor's original files (checked by checksum).
"""


class SetupError(SystemExit):
    """Jittor cannot start as installed; the message is the one line the user sees."""

    def __init__(self, message):
        super().__init__(f"ccnet-jittor: {message}")
