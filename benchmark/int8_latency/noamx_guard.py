"""Import first: seccomp filter making arch_prctl(ARCH_REQ_XCOMP_PERM) fail (EPERM), so XNNPACK
cannot use AMX in this process. Same filter as amx_time.py."""
import ctypes, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
def _ins(code, jt, jf, k):
    return struct.pack("HBBI", code, jt, jf, k)
_prog = b"".join([_ins(0x20, 0, 0, 0), _ins(0x15, 0, 3, 158), _ins(0x20, 0, 0, 16),
                  _ins(0x15, 0, 1, 0x1023), _ins(0x06, 0, 0, 0x00050001), _ins(0x06, 0, 0, 0x7FFF0000)])
_buf = ctypes.create_string_buffer(_prog)
class _F(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
_f = _F(len(_prog) // 8, ctypes.addressof(_buf))
assert libc.prctl(38, 1, 0, 0, 0) == 0
assert libc.prctl(22, 2, ctypes.byref(_f), 0, 0) == 0
print("noamx_guard: arch_prctl(REQ_XCOMP_PERM) ->", libc.syscall(158, 0x1023, 18), file=sys.stderr)
