"""Q5: where does XNNPACK first differ from the fake-quant Keras model? XNNPACK hides
intermediate tensors, so we export truncated models (input -> the k-th FakeQuant) and compare
their outputs (int8 codes) on 20 test images. Same model/ranges/weights as exp5_e2e.py."""
import os
import sys
src = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "exp5_e2e.py")).read().split("tfl = T.convert")[0]
exec(src)
ks = [int(a) for a in sys.argv[1:] if a.isdigit()] or [1, 6, 14, 19, 33, 44, 52, 67, 91, 105, 121, 137, 141]
imgs = test[:20]
print(f"{'k':>4s} {'FakeQuant':34s} {'xnn !=':>8s} {'max':>4s} {'builtin !=':>10s} {'max':>4s}")
for k in ks:
    l = net.fqrs[k]
    sub = keras.Model(model.inputs, l.output)
    t = T.convert(sub, "int8", image_size=S, io_type="uint8", representative_data=calib,
                  ranges="minmax")
    a = sub.predict(imgs, verbose=0)
    cells = []
    for kind in ("xnnpack", "builtin"):
        it = interp(t, kind=kind, preserve=False)
        od = it.get_output_details()[0]
        so, zo = od["quantization"]
        got = np.stack([run_raw(it, im[None])[0] for im in imgs]).astype(np.int32)
        d = np.abs(got - (np.round(a / so) + zo))
        cells += [f"{np.mean(d > 0):8.4f}", f"{int(d.max()):4d}"]
    print(f"{k:4d} {l.name:34s} {cells[0]} {cells[1]} {cells[2]:>10s} {cells[3]}", flush=True)
