#!/usr/bin/env python3
"""Writes a tiny checkpoint in PyTorch's legacy (non-zip) format without PyTorch: the same five
pickles-and-data layout `torch.save(..., _use_new_zipfile_serialization=False)` writes, with
stand-in classes registered under torch's names. `scripts/fuzz` writes it as a run-time seed for
the legacy reader (no checkpoint is committed: model files are fetched or supplied, not carried)."""
import collections, io, pickle, struct, sys, types

torch = types.ModuleType("torch"); utils = types.ModuleType("torch._utils")
sys.modules["torch"] = torch; sys.modules["torch._utils"] = utils
class FloatStorage: pass
class LongStorage: pass
def _rebuild_tensor_v2(*a): pass
FloatStorage.__module__ = LongStorage.__module__ = "torch"
_rebuild_tensor_v2.__module__ = "torch._utils"
torch.FloatStorage, torch.LongStorage, utils._rebuild_tensor_v2 = FloatStorage, LongStorage, _rebuild_tensor_v2

class Storage:
    def __init__(self, key, cls, values): self.key, self.cls, self.values = key, cls, values
class Tensor:
    def __init__(self, storage, shape):
        self.storage, self.shape = storage, shape
    def __reduce__(self):
        stride, acc = [], 1
        for d in reversed(self.shape): stride.insert(0, acc); acc *= d
        return (_rebuild_tensor_v2, (self.storage, 0, tuple(self.shape), tuple(stride), False, collections.OrderedDict()))

class P(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            return ("storage", obj.cls, obj.key, "cpu", len(obj.values), None)
        return None

w = Storage("1001", FloatStorage, [0.5 * i for i in range(12)])
b = Storage("1002", FloatStorage, [1.0, -2.0, 3.0])
n = Storage("1003", LongStorage, [7])
sd = collections.OrderedDict([
    ("module.conv.weight", Tensor(w, [3, 1, 2, 2])),
    ("module.bn.weight", Tensor(b, [3])),
    ("module.bn.num_batches_tracked", Tensor(n, [])),
])
out = io.BytesIO()
for obj in (0x1950a86a20f9469cfc6c, 1001, {"protocol_version": 1001, "little_endian": True,
            "type_sizes": {"short": 2, "int": 4, "long": 4}}):
    pickle.dump(obj, out, protocol=2)
P(out, protocol=2).dump(sd)
pickle.dump([s.key for s in (w, b, n)], out, protocol=2)
for s in (w, b, n):
    out.write(struct.pack("<q", len(s.values)))
    fmt = "<%d%s" % (len(s.values), "f" if s.cls is FloatStorage else "q")
    out.write(struct.pack(fmt, *s.values))
open(sys.argv[1], "wb").write(out.getvalue())
