from variants import *
for k in ["base", "avgpool", "nose", "samepad", "avgpool+samepad"]:
    fb = convert_variant(k, "f32")
    print(k, tflite.op_histogram(fb))
print("fused RepGhostNet050", tflite.op_histogram(convert_f32(deploy("050"))))
