"""int8, in one place: fake quantization on TFLite's grid (`fake_quant`), the quantization-aware
form of a model (`qat`), post-training activation ranges (`ranges`) and the full-int8 conversion
every export uses (`convert`). docs/int8_arithmetic.md measures the rules they follow.

    qat_model = quantize_model(float_model)   # train it, or `calibrate` it on images
    int8_ready = finalize(qat_model)          # ranges frozen, weights on their int8 grids
    is_quantized(int8_ready)                  # True: export it with --quantize int8
"""

from repghost_tf.quantization.convert import quantize_flatbuffer
from repghost_tf.quantization.fake_quant import PIXEL_RANGE, ActivationQuantizer
from repghost_tf.quantization.qat import (
    QUANTIZED_WEIGHT_LAYERS,
    UncalibratedModelError,
    UnsupportedModelError,
    calibrate,
    finalize,
    freeze_ranges,
    is_quantized,
    quantize_model,
    quantizers,
)
from repghost_tf.quantization.ranges import RANGES, set_ranges

__all__ = [
    "quantize_model",
    "calibrate",
    "finalize",
    "is_quantized",
    "freeze_ranges",
    "quantizers",
    "quantize_flatbuffer",
    "set_ranges",
    "RANGES",
    "PIXEL_RANGE",
    "ActivationQuantizer",
    "QUANTIZED_WEIGHT_LAYERS",
    "UncalibratedModelError",
    "UnsupportedModelError",
]
