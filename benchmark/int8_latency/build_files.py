"""Writes the .tflite files the AMX test times: RepGhostNet050/100 float32 + shipped int8
(uint8 io), plus single-op models."""
from common import *
from micro_lib import conv_fb, dw
from keras import layers
for w in ("050", "100"):
    m = deploy(w)
    open(f"rg{w}_f32.tflite", "wb").write(convert_f32(m))
    open(f"rg{w}_i8.tflite", "wb").write(convert_int8(m, "uint8", "uint8"))
micro = {
    "conv1x1_112_8to12": (lambda x: layers.Conv2D(12, 1)(x), [(112, 112, 8)]),
    "conv1x1_112_8to64": (lambda x: layers.Conv2D(64, 1)(x), [(112, 112, 8)]),
    "conv1x1_112_64to64": (lambda x: layers.Conv2D(64, 1)(x), [(112, 112, 64)]),
    "conv1x1_56_12to20": (lambda x: layers.Conv2D(20, 1)(x), [(56, 56, 12)]),
    "stem_conv3x3s2_224_3to8": (lambda x: layers.Conv2D(8, 3, 2, padding="same")(x), [(224, 224, 3)]),
    "dw3x3_112x12": (dw(), [(112, 112, 12)]),
}
for n, (b, s) in micro.items():
    for p in ("f32", "i8"):
        open(f"micro_{n}_{p}.tflite", "wb").write(conv_fb(b, s, p))
print("ok")
