"""Op list (type, input/output shapes) of the shipped int8 RepGhostNet050 and which ops XNNPACK took."""
from common import *
m = deploy("050")
i8 = convert_int8(m, "uint8", "uint8")
open("rg050_i8.tflite", "wb").write(i8)
open("rg050_f32.tflite", "wb").write(convert_f32(m))
from ai_edge_litert.interpreter import Interpreter, OpResolverType
it = Interpreter(model_content=i8, num_threads=1,
                 experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
it.allocate_tensors()
T = {t["index"]: t for t in it.get_tensor_details()}
for op in it._get_ops_details():
    ins = [tuple(T[i]["shape"]) for i in op["inputs"] if i >= 0][:2]
    outs = [tuple(T[i]["shape"]) for i in op["outputs"]]
    print(op["index"], op["op_name"], ins, "->", outs)
it2 = interp(i8, 1)
print("delegation with XNNPACK:", delegation(it2))
print([ (o["index"], o["op_name"]) for o in it2._get_ops_details() if o["op_name"] in ("DELEGATE",) or o["index"] > 1e9])
