import contextlib
import os

# Quiet TensorFlow's C++ start-up logging; must be set before TensorFlow is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# timm imports triton, whose native library crashes the process when it loads after
# TensorFlow's; the PyTorch reference stack, where installed, must therefore load first.
with contextlib.suppress(ImportError):
    import timm  # noqa: F401
