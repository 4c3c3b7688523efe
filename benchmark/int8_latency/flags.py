"""Q3: interpreter / converter options for the int8 RepGhostNet050, all interleaved, 1 thread.
Run as `python flags.py` (AMX allowed) or `python -c 'import noamx_guard; exec(open("flags.py").read())'`."""
from variants import *
from ai_edge_litert.interpreter import Interpreter, OpResolverType

def convert_per_tensor(model):
    from tensorflow.lite.python.convert import mlir_quantize
    with native_logs.silenced(), warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        conv = tf.lite.TFLiteConverter.from_keras_model(tflite.fixed_input_model(model, 224))
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.representative_dataset = lambda: ([im[None]] for im in CAL)
        conv._experimental_disable_per_channel = True
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
        return conv.convert()

m = deploy("050")
f32 = open("rg050_f32.tflite", "rb").read()
i8 = open("rg050_i8.tflite", "rb").read()
i8pt = convert_per_tensor(m)
its = {
    "f32 XNNPACK": interp(f32),
    "i8 XNNPACK (shipped)": interp(i8),
    "i8 per-tensor weights XNNPACK": interp(i8pt),
    "i8 latest_features=True": interp(i8, experimental_default_delegate_latest_features=True),
    "i8 no delegate (TFLite builtin kernels)": interp(
        i8, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES),
    "f32 no delegate (TFLite builtin kernels)": interp(
        f32, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES),
}
runners = {n: it.invoke for n, it in its.items()}
# LiteRT CompiledModel API (CPU), with and without YNNPACK
try:
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert import options as lopt, cpu_options, hardware_accelerator as ha
    for tag, yn in (("", False), (" ynnpack", True)):
        for name, fb in (("f32", f32), ("i8", i8)):
            o = lopt.Options(hardware_accelerators=ha.HardwareAccelerator.CPU,
                             cpu_options=cpu_options.CpuOptions(num_threads=1, enable_ynnpack=yn))
            cm = CompiledModel.from_buffer(fb, options=o)
            ib, ob = cm.create_input_buffers(0), cm.create_output_buffers(0)
            runners[f"{name} CompiledModel{tag}"] = (lambda cm=cm, ib=ib, ob=ob: cm.run_by_index(0, ib, ob))
            for _ in range(10):
                runners[f"{name} CompiledModel{tag}"]()
except Exception as e:
    print("CompiledModel unavailable:", type(e).__name__, str(e)[:300])
res = interleaved(runners, rounds=20, per_round=10)
print("RepGhostNet050 224, 1 thread, 200 runs each, interleaved")
print(fmt(res, "f32 XNNPACK"))
