# Runs inside the sandbox: invokes each probe's syscall in a forked child and prints one JSON list of
# {name, ret, errno, signal}. A child per probe, so that a call that kills (SIGSYS), executes or
# creates a process only affects that probe.
import ctypes
import json
import os
import sys

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def convert(arg, keep):
    if isinstance(arg, int):
        return ctypes.c_ulong(arg & 0xFFFFFFFFFFFFFFFF)
    if "u64" in arg:
        return ctypes.c_ulong(int(arg["u64"]) & 0xFFFFFFFFFFFFFFFF)
    if "str" in arg:
        value = ctypes.c_char_p(arg["str"].encode())
    elif "buf" in arg:
        value = ctypes.create_string_buffer(arg["buf"])
    elif "fd" in arg:
        return ctypes.c_ulong(os.open(arg["fd"], os.O_RDONLY))
    elif "argv" in arg:
        items = [a.encode() for a in arg["argv"]] + [None]
        value = (ctypes.c_char_p * len(items))(*items)
    else:
        raise ValueError(arg)
    keep.append(value)
    return ctypes.cast(value, ctypes.c_void_p)


def child(probe, w):
    keep = []
    args = [convert(a, keep) for a in probe["args"]]
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(probe["nr"]), *args)
    err = ctypes.get_errno()
    if probe.get("kind") == "fork":
        if ret == 0:
            os._exit(0)
        if ret > 0:
            os.waitpid(ret, 0)
    os.write(w, json.dumps({"ret": ret, "errno": err if ret < 0 else 0}).encode())
    os._exit(0)


def run(probe):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            child(probe, w)
        finally:
            os._exit(99)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    result = {"name": probe["name"], "ret": None, "errno": 0, "signal": None}
    if os.WIFSIGNALED(status):
        result["signal"] = os.WTERMSIG(status)
    elif data:
        result.update(json.loads(data))
    elif os.WEXITSTATUS(status) == 0:
        result["ret"] = "exec"
    else:
        raise SystemExit("probe %s: child exited %d" % (probe["name"], os.WEXITSTATUS(status)))
    return result


print(json.dumps([run(p) for p in json.loads(sys.argv[1])]))
