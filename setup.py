"""repghost-tf: RepGhostNet for TensorFlow / Keras 3, from training to int8 TFLite on phones."""

from pathlib import Path

from setuptools import find_packages, setup

TENSORFLOW = "2.21.*"

setup(
    name="repghost-tf",
    version="0.1.0",
    description=__doc__,
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["repghost_tf", "repghost_tf.*"]),
    install_requires=[
        "keras>=3.10",
        "numpy",
        "absl-py",
        "tensorflow-datasets>=4.9",
        "importlib_resources",
        # tensorflow-cpu does not bring it; train.py writes TensorBoard logs.
        "tensorboard",
        "ai-edge-litert",
    ],
    extras_require={
        # Pick one TensorFlow build: the CPU wheel, or the full one with CUDA libraries.
        "cpu": [f"tensorflow-cpu=={TENSORFLOW}"],
        "gpu": [f"tensorflow[and-cuda]=={TENSORFLOW}"],
        # The PyTorch checkpoint importer.
        "torch": ["torch>=2.5", "safetensors"],
        # keras-hub backbones and the detector (repghost_tf.hub): what keras-hub 0.32 needs for
        # backbones, presets and image tasks, and pycocotools for mAP. keras-hub itself goes in
        # with `pip install --no-deps keras-hub==0.32.0`: its tensorflow-text requirement would
        # add the full tensorflow wheel next to ours.
        "hub": ["regex", "rich", "tokenizers", "pycocotools"],
        # Latency benchmarks, with timm's models in ONNX Runtime as the peer, and their plots.
        "bench": ["onnx", "onnxruntime", "matplotlib", "torch", "torchvision", "timm"],
        # The reference tests compare against timm's PyTorch models.
        "test": [
            # pytest 9.2 ignores xdist's group marks (pytest-dev/pytest-xdist#1386): every worker
            # would train its own copy of the shared short run.
            "pytest>=8,<9.2",
            "pytest-xdist",
            "torch==2.14.1",
            "torchvision==0.29.1",
            "timm",
            "safetensors",
            "onnx",
            "onnxruntime",
            "matplotlib",
            "regex",
            "rich",
            "tokenizers",
            "pycocotools",
            # keras-hub's own test harness (keras_hub/src/tests/test_case.py, in its wheel)
            # imports it; tests/test_keras_hub_harness.py runs that harness on our classes.
            # 0.2.18 brings only cloudpickle and portpicker next to tensorflow-cpu 2.21.
            "grain",
            # MediaPipe Tasks, what Android and iOS apps load models with, as a real client of
            # the exported files (tests/test_metadata.py). 1.2 installs beside TensorFlow 2.21.
            "mediapipe>=1.2.3,<1.3",
        ],
    },
)
