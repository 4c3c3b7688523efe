"""Does the project's convert() (calibrate-only -> set_ranges -> mlir_quantize) honour FakeQuant
ranges like the plain converter does? Model: x -> FQ(-1.3, 2.7) -> conv1x1 -> FQ(-0.7, 5.1) ->
relu -> FQ(0, 4)  (ranges deliberately narrower/wider than the data)."""
from common import *  # noqa
from repghost_tf.export import tflite as T

rng = np.random.default_rng(0)
inp = keras.Input((8, 8, 4))
conv = layers.Conv2D(4, 1)
x = FQ(-1.3, 2.7)(inp)
x = FQ(-0.7, 5.1)(conv(x))
m = keras.Model(inp, FQ(0, 4)(layers.ReLU()(x)))
rep = rng.uniform(-3, 3, (8, 8, 8, 4)).astype(np.float32)
a = convert_int8(m, rep, io_type="int8", input_shape=(8, 8, 4))
b = T.convert(m, "int8", image_size=8, io_type="int8", representative_data=rep,
              ranges="minmax", pixel_range=None)
c = T.convert(m, "int8", image_size=8, io_type="int8", representative_data=rep, ranges="mse",
              pixel_range=None)
for name, t in (("plain converter", a), ("project minmax", b), ("project mse", c)):
    it = interp(t)
    print(name, T.op_histogram(t))
    for d in it.get_tensor_details():
        if d["dtype"] == np.int8 and len(d["shape"]) == 4 and d["shape"][-1] == 4 and d["shape"][1] == 8:
            print("   ", d["name"][:60], d["quantization"])
