"""Q3 combined: builds full models with the normalisation done as RESHAPE -> 672-channel 1x1
depthwise -> RESHAPE ('widenorm'), plus int8 io variants. Writes comb_*.tflite."""
from widenorm_lib import *  # noqa: F403 (wide_call; variants, ImageNormalization)

for width in ("050", "100"):
    out = {"f32 base": convert_variant("base", "f32", width),
           "i8 base io=uint8": convert_variant("base", "i8", width, io="uint8"),
           "i8 base io=int8": convert_variant("base", "i8", width, io="int8")}
    orig = ImageNormalization.call
    ImageNormalization.call = wide_call
    try:
        out["f32 widenorm"] = convert_variant("base", "f32", width)
        out["i8 widenorm io=uint8"] = convert_variant("base", "i8", width, io="uint8")
        out["i8 widenorm io=int8"] = convert_variant("base", "i8", width, io="int8")
    finally:
        ImageNormalization.call = orig
    for n, fb in out.items():
        fn = f"comb_{width}_{n.replace(' ', '_').replace('=', '')}.tflite"
        open(fn, "wb").write(fb)
        print(fn, tflite.op_histogram(fb))
