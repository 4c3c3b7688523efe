"""Times every *.tflite given, interleaved, 1 thread. With argv[1]=='noamx', first installs a
seccomp filter that makes arch_prctl(ARCH_REQ_XCOMP_PERM) fail with EPERM, so that XNNPACK
cannot get AMX tile permission (no other effect). Prints JSON {file: median_ms}."""
import ctypes, json, os, struct, sys
mode = sys.argv[1]
if mode == "noamx":
    libc = ctypes.CDLL(None, use_errno=True)
    def ins(code, jt, jf, k):
        return struct.pack("HBBI", code, jt, jf, k)
    prog = b"".join([
        ins(0x20, 0, 0, 0),            # ld seccomp_data.nr
        ins(0x15, 0, 3, 158),          # jeq SYS_arch_prctl ? next : allow
        ins(0x20, 0, 0, 16),           # ld args[0] (low 32 bits)
        ins(0x15, 0, 1, 0x1023),       # jeq ARCH_REQ_XCOMP_PERM ? next : allow
        ins(0x06, 0, 0, 0x00050000 | 1),  # ret ERRNO(EPERM)
        ins(0x06, 0, 0, 0x7FFF0000),   # ret ALLOW
    ])
    buf = ctypes.create_string_buffer(prog)
    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
    fprog = SockFprog(len(prog) // 8, ctypes.addressof(buf))
    assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
    assert libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) == 0, ctypes.get_errno()  # SECCOMP
    r = libc.syscall(158, 0x1023, 18)
    print("arch_prctl(REQ_XCOMP_PERM) ->", r, ctypes.get_errno(), file=sys.stderr)
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
from ai_edge_litert.interpreter import Interpreter
sys.path.insert(0, os.path.dirname(__file__))
from common_light import interleaved_light
files = sys.argv[3:]
threads = int(sys.argv[2])
its = {}
for f in files:
    it = Interpreter(model_path=f, num_threads=threads)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    for _ in range(20):
        it.invoke()
    its[f] = it.invoke
res = interleaved_light(its, rounds=15, per_round=10)
print(json.dumps({"mode": mode, "res": res}))
