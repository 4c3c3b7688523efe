"""The RESHAPE->672-channel DW normalisation gives the same float32 outputs as the project's
3-channel form (same model instance, so same weights)."""
from widenorm_lib import *
m = build("base", "050")
a = convert_f32(m)
orig = ImageNormalization.call
ImageNormalization.call = wide_call
b = convert_f32(m)
ImageNormalization.call = orig
x = np.random.default_rng(3).uniform(0, 255, (4, 224, 224, 3)).astype(np.float32)
ya = litert.run_interpreter(interp(a), x)
yb = litert.run_interpreter(interp(b), x)
print("max |diff| of logits:", np.abs(ya - yb).max(), " max |logit|:", np.abs(ya).max())
