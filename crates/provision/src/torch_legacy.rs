//! A reader for PyTorch's *legacy* (pre-1.6, non-zip) `torch.save` format, enough to load a
//! state dict of float tensors — what the MiniFASNet liveness weights are stored in.
//!
//! The file is five things back to back: a pickled magic number, a pickled protocol version
//! (1001), a pickled dict of system facts (endianness, type sizes), the pickled object itself
//! (here an `OrderedDict` of name → tensor, each tensor built by `torch._utils._rebuild_tensor_v2`
//! from a storage that the pickle refers to by a *persistent id* `('storage', torch.FloatStorage,
//! key, location, numel, None)`), a pickled list of storage keys, and then each storage's raw
//! little-endian data, prefixed by its element count (u64), in that list's order.
//!
//! The pickle machine below understands only the opcodes such files use (protocol 2) and builds
//! plain values: no Python class is ever "called" — `OrderedDict` and `_rebuild_tensor_v2` are
//! recognised by name and turned into a map and a tensor description, every other global is
//! refused. It is written for hostile files: every read is bounds-checked, the stack, memo and
//! total work are bounded by the input's size, and errors say where the file went wrong.

use std::collections::BTreeMap;
use std::rc::Rc;
use thiserror::Error;

/// The magic number `torch.save` writes first (legacy format).
const MAGIC: u128 = 0x1950a86a20f9469cfc6c;
const PROTOCOL_VERSION: i64 = 1001;
/// Larger checkpoints than this are not what this reader is for (MiniFASNet's are 1.9 MB).
pub const MAX_FILE_BYTES: usize = 256 << 20;
const MAX_STACK: usize = 100_000;
const MAX_MEMO: usize = 1 << 20;

#[derive(Debug, Error)]
pub enum TorchError {
    #[error("not a PyTorch legacy checkpoint: {0}")]
    Format(String),
    #[error("checkpoint pickle at byte {at}: {msg}")]
    Pickle { at: usize, msg: String },
    #[error("checkpoint too large ({0} bytes; at most {MAX_FILE_BYTES})")]
    TooLarge(usize),
}

/// A float tensor of the state dict, contiguous, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The float tensors of a checkpoint's state dict by name (a DataParallel `module.` prefix
/// removed), and the names of the integer ones (BatchNorm's `num_batches_tracked`), which no
/// forward pass reads.
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    pub tensors: BTreeMap<String, Tensor>,
    pub integer_tensors: Vec<String>,
}

impl StateDict {
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F32,
    I64,
}

impl Dtype {
    fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::I64 => 8,
        }
    }
}

#[derive(Debug, Clone)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// A float (no state dict value needs its value).
    Float,
    Str(String),
    Tuple(Vec<Rc<Value>>),
    List(Vec<Rc<Value>>),
    Dict(Vec<(Rc<Value>, Rc<Value>)>),
    Global(String, String),
    Storage {
        key: String,
        dtype: Dtype,
        numel: usize,
    },
    Tensor {
        key: String,
        dtype: Dtype,
        storage_numel: usize,
        offset: usize,
        shape: Vec<usize>,
        stride: Vec<usize>,
    },
    Mark,
}

impl Value {
    /// Elements a clone of this value copies (for the work budget).
    fn width(&self) -> usize {
        match self {
            Value::Tuple(v) | Value::List(v) => v.len() + 1,
            Value::Dict(v) => 2 * v.len() + 1,
            Value::Tensor { shape, .. } => shape.len() * 2 + 1,
            _ => 1,
        }
    }
}

/// Reads one pickle from the front of `data`.
struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Rc<Value>>,
    memo: BTreeMap<u32, Rc<Value>>,
    work: usize,
    budget: usize,
}

impl<'a> Machine<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
        Machine {
            data,
            pos,
            stack: Vec::new(),
            memo: BTreeMap::new(),
            work: 0,
            // Linear in the input: each opcode is at least a byte, and a clone of a container
            // costs its width, so a hostile file cannot make the machine quadratic.
            budget: 64 * data.len() + 1_000_000,
        }
    }

    fn err<T>(&self, msg: impl Into<String>) -> Result<T, TorchError> {
        Err(TorchError::Pickle {
            at: self.pos,
            msg: msg.into(),
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], TorchError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => {
                let s = &self.data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => self.err(format!("{n} bytes wanted past the end of the file")),
        }
    }

    fn u8(&mut self) -> Result<u8, TorchError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, TorchError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, TorchError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn line(&mut self) -> Result<String, TorchError> {
        let rest = &self.data[self.pos..];
        let Some(n) = rest.iter().take(256).position(|&b| b == b'\n') else {
            return self.err("unterminated text argument");
        };
        let s = std::str::from_utf8(&rest[..n]).map_err(|_| TorchError::Pickle {
            at: self.pos,
            msg: "text argument is not UTF-8".into(),
        })?;
        let s = s.to_string();
        self.pos += n + 1;
        Ok(s)
    }

    fn string(&mut self, n: usize) -> Result<String, TorchError> {
        let at = self.pos;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| TorchError::Pickle {
            at,
            msg: "string is not UTF-8".into(),
        })
    }

    fn charge(&mut self, n: usize) -> Result<(), TorchError> {
        self.work = self.work.saturating_add(n);
        if self.work > self.budget {
            return self.err("pickle does more work than its size allows");
        }
        Ok(())
    }

    fn push(&mut self, v: Value) -> Result<(), TorchError> {
        if self.stack.len() >= MAX_STACK {
            return self.err("pickle stack too deep");
        }
        self.stack.push(Rc::new(v));
        Ok(())
    }

    fn pop(&mut self) -> Result<Rc<Value>, TorchError> {
        match self.stack.pop() {
            Some(v) => Ok(v),
            None => self.err("pop from an empty stack"),
        }
    }

    /// The values above the topmost mark, which is removed.
    fn pop_mark(&mut self) -> Result<Vec<Rc<Value>>, TorchError> {
        let Some(m) = self.stack.iter().rposition(|v| matches!(**v, Value::Mark)) else {
            return self.err("no mark on the stack");
        };
        let items = self.stack.split_off(m + 1);
        self.stack.pop();
        Ok(items)
    }

    fn top_mut(&mut self) -> Result<&mut Value, TorchError> {
        let width = match self.stack.last() {
            Some(v) => v.width(),
            None => return self.err("empty stack"),
        };
        // A shared container is copied before it is changed (the memo keeps the old one, as
        // nothing in a state dict depends on later changes being seen through the memo).
        self.charge(width)?;
        let at = self.pos;
        self.stack
            .last_mut()
            .map(Rc::make_mut)
            .ok_or(TorchError::Pickle {
                at,
                msg: "empty stack".into(),
            })
    }

    fn memo_put(&mut self, idx: u32) -> Result<(), TorchError> {
        let Some(top) = self.stack.last().cloned() else {
            return self.err("memo put from an empty stack");
        };
        if self.memo.len() >= MAX_MEMO && !self.memo.contains_key(&idx) {
            return self.err("pickle memo too large");
        }
        self.memo.insert(idx, top);
        Ok(())
    }

    fn memo_get(&mut self, idx: u32) -> Result<(), TorchError> {
        let Some(v) = self.memo.get(&idx).cloned() else {
            return self.err(format!("memo entry {idx} was never stored"));
        };
        if self.stack.len() >= MAX_STACK {
            return self.err("pickle stack too deep");
        }
        self.stack.push(v);
        Ok(())
    }

    /// Runs to STOP and returns the pickled value.
    fn run(&mut self) -> Result<Rc<Value>, TorchError> {
        loop {
            self.charge(1)?;
            let op = self.u8()?;
            match op {
                0x80 => {
                    // PROTO
                    let p = self.u8()?;
                    if p > 2 {
                        return self.err(format!("pickle protocol {p} (legacy checkpoints use 2)"));
                    }
                }
                b'.' => return self.pop(), // STOP
                b'(' => self.push(Value::Mark)?,
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()))?
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v.into()))?
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(v.into()))?
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 16 {
                        return self.err("integer wider than 128 bits");
                    }
                    let mut v: i128 = 0;
                    for (i, &byte) in b.iter().enumerate() {
                        v |= (byte as i128) << (8 * i);
                    }
                    if n > 0 && n < 16 && b[n - 1] & 0x80 != 0 {
                        v -= 1i128 << (8 * n);
                    }
                    // Only the magic number needs more than 64 bits; it is compared as u128.
                    self.push(match i64::try_from(v) {
                        Ok(i) => Value::Int(i),
                        Err(_) => Value::Str(format!("long:{v:x}")),
                    })?
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    let _ = f64::from_be_bytes(a);
                    self.push(Value::Float)?
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.string(n)?;
                    self.push(Value::Str(s))?
                }
                0x8c => {
                    // SHORT_BINUNICODE (protocol 4, accepted for robustness)
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    self.push(Value::Str(s))?
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    self.push(Value::Str(s))?
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    let s = self.string(n)?;
                    self.push(Value::Str(s))?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Value::Global(module, name))?
                }
                b')' => self.push(Value::Tuple(Vec::new()))?,
                b']' => self.push(Value::List(Vec::new()))?,
                b'}' => self.push(Value::Dict(Vec::new()))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.charge(items.len())?;
                    self.push(Value::Tuple(items))?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return self.err("tuple of more items than the stack holds");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    if items.iter().any(|v| matches!(**v, Value::Mark)) {
                        return self.err("mark inside a short tuple");
                    }
                    self.push(Value::Tuple(items))?
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.charge(items.len())?;
                    self.push(Value::List(items))?
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top_mut()? {
                        Value::List(l) => l.push(v),
                        _ => return self.err("append to a non-list"),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.charge(items.len())?;
                    match self.top_mut()? {
                        Value::List(l) => l.extend(items),
                        _ => return self.err("appends to a non-list"),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top_mut()? {
                        Value::Dict(d) => d.push((k, v)),
                        _ => return self.err("setitem on a non-dict"),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    if !items.len().is_multiple_of(2) {
                        return self.err("setitems with an odd number of values");
                    }
                    self.charge(items.len())?;
                    let mut pairs = Vec::with_capacity(items.len() / 2);
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    match self.top_mut()? {
                        Value::Dict(d) => d.extend(pairs),
                        _ => return self.err("setitems on a non-dict"),
                    }
                }
                b'q' => {
                    let i = self.u8()?;
                    self.memo_put(i.into())?
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?
                }
                b'h' => {
                    let i = self.u8()?;
                    self.memo_get(i.into())?
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i)?
                }
                b'Q' => {
                    // BINPERSID: the storage a tensor refers to
                    let pid = self.pop()?;
                    let v = self.storage(&pid)?;
                    self.push(v)?
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let v = self.reduce(&f, &args)?;
                    self.push(v)?
                }
                b'b' => {
                    // BUILD: sets an object's state; a state dict's `_metadata` is not needed.
                    self.pop()?;
                    if self.stack.is_empty() {
                        return self.err("build on an empty stack");
                    }
                }
                b'0' => {
                    self.pop()?;
                }
                _ => return self.err(format!("unsupported pickle opcode 0x{op:02x}")),
            }
        }
    }

    fn storage(&self, pid: &Value) -> Result<Value, TorchError> {
        let Value::Tuple(t) = pid else {
            return self.err("persistent id is not a tuple");
        };
        let [kind, ty, key, _location, numel, _view] = t.as_slice() else {
            return self.err("persistent id is not ('storage', type, key, location, size, view)");
        };
        if !matches!(&**kind, Value::Str(s) if s == "storage") {
            return self.err("persistent id is not a storage");
        }
        let dtype = match &**ty {
            Value::Global(m, n) if m == "torch" && n == "FloatStorage" => Dtype::F32,
            Value::Global(m, n) if m == "torch" && n == "LongStorage" => Dtype::I64,
            Value::Global(m, n) => return self.err(format!("unsupported storage type {m}.{n}")),
            _ => return self.err("storage type is not a class"),
        };
        let Value::Str(key) = &**key else {
            return self.err("storage key is not a string");
        };
        let Value::Int(numel) = **numel else {
            return self.err("storage size is not an integer");
        };
        let numel = usize::try_from(numel).or_else(|_| self.err("negative storage size"))?;
        Ok(Value::Storage {
            key: key.clone(),
            dtype,
            numel,
        })
    }

    fn ints(&self, v: &Value, what: &str) -> Result<Vec<usize>, TorchError> {
        let Value::Tuple(t) = v else {
            return self.err(format!("tensor {what} is not a tuple"));
        };
        if t.len() > 8 {
            return self.err(format!("tensor {what} has more than 8 dimensions"));
        }
        t.iter()
            .map(|x| match **x {
                Value::Int(i) if i >= 0 => Ok(i as usize),
                _ => self.err(format!("tensor {what} holds a non-integer")),
            })
            .collect()
    }

    fn reduce(&self, f: &Value, args: &Value) -> Result<Value, TorchError> {
        let Value::Global(module, name) = f else {
            return self.err("reduce of a non-class");
        };
        let Value::Tuple(args) = args else {
            return self.err("reduce arguments are not a tuple");
        };
        match (module.as_str(), name.as_str()) {
            ("collections", "OrderedDict") => {
                if !args.is_empty() {
                    return self.err("OrderedDict built with arguments");
                }
                Ok(Value::Dict(Vec::new()))
            }
            ("torch._utils", "_rebuild_tensor_v2") => {
                let [storage, offset, size, stride, ..] = args.as_slice() else {
                    return self.err("_rebuild_tensor_v2 with too few arguments");
                };
                let Value::Storage { key, dtype, numel } = &**storage else {
                    return self.err("tensor without a storage");
                };
                let Value::Int(offset) = **offset else {
                    return self.err("tensor offset is not an integer");
                };
                Ok(Value::Tensor {
                    key: key.clone(),
                    dtype: *dtype,
                    storage_numel: *numel,
                    offset: usize::try_from(offset).or_else(|_| self.err("negative offset"))?,
                    shape: self.ints(size, "size")?,
                    stride: self.ints(stride, "stride")?,
                })
            }
            (m, n) => self.err(format!("refusing to build {m}.{n}")),
        }
    }
}

/// Reads a legacy checkpoint holding a state dict.
pub fn read_state_dict(data: &[u8]) -> Result<StateDict, TorchError> {
    if data.len() > MAX_FILE_BYTES {
        return Err(TorchError::TooLarge(data.len()));
    }
    if data.starts_with(b"PK\x03\x04") {
        return Err(TorchError::Format(
            "this is a zip-format checkpoint (PyTorch 1.6 or later), not the legacy format".into(),
        ));
    }
    let mut pos = 0;
    let next = |pos: &mut usize| -> Result<Rc<Value>, TorchError> {
        let mut m = Machine::new(data, *pos);
        let v = m.run()?;
        *pos = m.pos;
        Ok(v)
    };
    match &*next(&mut pos)? {
        Value::Str(s) if *s == format!("long:{MAGIC:x}") => {}
        _ => return Err(TorchError::Format("magic number missing".into())),
    }
    match &*next(&mut pos)? {
        Value::Int(PROTOCOL_VERSION) => {}
        _ => return Err(TorchError::Format("unknown protocol version".into())),
    }
    let sys = next(&mut pos)?;
    let little = match &*sys {
        Value::Dict(d) => d.iter().any(|(k, v)| {
            matches!(&**k, Value::Str(s) if s == "little_endian")
                && matches!(**v, Value::Bool(true))
        }),
        _ => false,
    };
    if !little {
        return Err(TorchError::Format(
            "checkpoint is not little-endian (or says nothing about it)".into(),
        ));
    }
    let obj = next(&mut pos)?;
    let keys = next(&mut pos)?;
    let Value::List(keys) = &*keys else {
        return Err(TorchError::Format("storage key list is not a list".into()));
    };
    let Value::Dict(entries) = &*obj else {
        return Err(TorchError::Format("the saved object is not a dict".into()));
    };

    // Raw storage data, in key-list order, checked against the types and sizes the tensors'
    // persistent ids declare.
    let mut raw: BTreeMap<String, &[u8]> = BTreeMap::new();
    let types = storage_types(entries)?;
    for k in keys {
        let Value::Str(key) = &**k else {
            return Err(TorchError::Format("storage key is not a string".into()));
        };
        let Some(&(dtype, numel)) = types.get(key) else {
            return Err(TorchError::Format(format!(
                "storage {key} is listed but no tensor uses it"
            )));
        };
        let count = data
            .get(pos..pos + 8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .ok_or_else(|| TorchError::Format(format!("file ends before storage {key}")))?;
        pos += 8;
        if count != numel as u64 {
            return Err(TorchError::Format(format!(
                "storage {key} holds {count} elements, its tensors say {numel}"
            )));
        }
        let bytes = numel
            .checked_mul(dtype.size())
            .filter(|&b| b <= data.len() - pos)
            .ok_or_else(|| TorchError::Format(format!("file ends inside storage {key}")))?;
        raw.insert(key.clone(), &data[pos..pos + bytes]);
        pos += bytes;
    }
    if pos != data.len() {
        return Err(TorchError::Format(format!(
            "{} bytes after the last storage",
            data.len() - pos
        )));
    }

    let mut out = StateDict::default();
    for (k, v) in entries {
        let Value::Str(name) = &**k else {
            return Err(TorchError::Format("state dict key is not a string".into()));
        };
        let name = name.strip_prefix("module.").unwrap_or(name).to_string();
        let Value::Tensor {
            key,
            dtype,
            offset,
            shape,
            stride,
            ..
        } = &**v
        else {
            return Err(TorchError::Format(format!("{name} is not a tensor")));
        };
        let Some(bytes) = raw.get(key) else {
            return Err(TorchError::Format(format!(
                "{name}'s storage {key} is not in the file"
            )));
        };
        let numel = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| TorchError::Format(format!("{name}: shape overflows")))?;
        // Row-major contiguous strides only (what `state_dict()` saves for these layers).
        let mut expect = 1;
        for (d, s) in shape.iter().zip(stride).rev() {
            if *d > 1 && *s != expect {
                return Err(TorchError::Format(format!("{name} is not contiguous")));
            }
            expect *= d;
        }
        if shape.len() != stride.len() {
            return Err(TorchError::Format(format!(
                "{name}: size and stride differ in rank"
            )));
        }
        let end = offset
            .checked_add(numel)
            .and_then(|e| e.checked_mul(dtype.size()))
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| TorchError::Format(format!("{name} reaches past its storage")))?;
        let slice = &bytes[offset * dtype.size()..end];
        match dtype {
            Dtype::F32 => {
                let data = slice
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                out.tensors.insert(
                    name,
                    Tensor {
                        shape: shape.clone(),
                        data,
                    },
                );
            }
            Dtype::I64 => out.integer_tensors.push(name),
        }
    }
    Ok(out)
}

/// Each storage key's type and element count, as the tensors' persistent ids declare them; two
/// tensors that declare one storage differently make the file invalid.
fn storage_types(
    entries: &[(Rc<Value>, Rc<Value>)],
) -> Result<BTreeMap<String, (Dtype, usize)>, TorchError> {
    let mut out: BTreeMap<String, (Dtype, usize)> = BTreeMap::new();
    for (_, v) in entries {
        if let Value::Tensor {
            key,
            dtype,
            storage_numel,
            ..
        } = &**v
        {
            let e = out.entry(key.clone()).or_insert((*dtype, *storage_numel));
            if *e != (*dtype, *storage_numel) {
                return Err(TorchError::Format(format!(
                    "storage {key} is declared with two types or sizes"
                )));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A protocol-2 string (BINUNICODE).
    fn text(out: &mut Vec<u8>, s: &str) {
        out.push(b'X');
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    fn small_ints(out: &mut Vec<u8>, v: &[u8]) {
        out.push(b'(');
        for &i in v {
            out.extend_from_slice(&[b'K', i]);
        }
        out.push(b't');
    }

    /// A tiny legacy checkpoint written opcode by opcode, as `torch.save(...,
    /// _use_new_zipfile_serialization=False)` lays one out: two float tensors and a BatchNorm
    /// step counter, with DataParallel's `module.` prefix. (`scripts/make_torch_seed.py` writes
    /// the same layout with Python's pickler, as a fuzz seed.)
    fn tiny() -> Vec<u8> {
        let mut b = vec![0x80, 2, 0x8a, 10];
        b.extend_from_slice(&MAGIC.to_le_bytes()[..10]);
        b.push(b'.');
        b.extend_from_slice(&[0x80, 2, b'M']);
        b.extend_from_slice(&1001u16.to_le_bytes());
        b.push(b'.');
        b.extend_from_slice(&[0x80, 2, b'}', b'(']);
        text(&mut b, "little_endian");
        b.extend_from_slice(&[0x88, b'u', b'.']);
        // The state dict: (name, storage key, storage class, shape, stride).
        type Entry = (
            &'static str,
            &'static str,
            &'static str,
            &'static [u8],
            &'static [u8],
        );
        let tensors: [Entry; 3] = [
            (
                "module.conv.weight",
                "1001",
                "FloatStorage",
                &[3, 1, 2, 2],
                &[4, 4, 2, 1],
            ),
            ("module.bn.weight", "1002", "FloatStorage", &[3], &[1]),
            (
                "module.bn.num_batches_tracked",
                "1003",
                "LongStorage",
                &[],
                &[],
            ),
        ];
        let numel = |shape: &[u8]| shape.iter().map(|&d| d as usize).product::<usize>();
        b.extend_from_slice(&[0x80, 2]);
        b.extend_from_slice(b"ccollections\nOrderedDict\n)R(");
        for (name, key, class, shape, stride) in tensors {
            text(&mut b, name);
            b.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
            text(&mut b, "storage");
            b.extend_from_slice(format!("ctorch\n{class}\n").as_bytes());
            text(&mut b, key);
            text(&mut b, "cpu");
            b.extend_from_slice(&[b'K', numel(shape) as u8, b'N', b't', b'Q', b'K', 0]);
            small_ints(&mut b, shape);
            small_ints(&mut b, stride);
            b.extend_from_slice(&[0x89, b')', b't', b'R']);
        }
        b.extend_from_slice(&[b'u', b'.', 0x80, 2, b']', b'(']);
        for (_, key, ..) in tensors {
            text(&mut b, key);
        }
        b.extend_from_slice(b"e.");
        for (_, _, class, shape, _) in tensors {
            b.extend_from_slice(&(numel(shape) as u64).to_le_bytes());
            for i in 0..numel(shape) {
                if class == "FloatStorage" {
                    b.extend_from_slice(&(0.5 * i as f32).to_le_bytes());
                } else {
                    b.extend_from_slice(&7i64.to_le_bytes());
                }
            }
        }
        b
    }

    #[test]
    fn reads_a_tiny_checkpoint() {
        let sd = read_state_dict(&tiny()).unwrap();
        let w = sd.get("conv.weight").unwrap();
        assert_eq!(w.shape, [3, 1, 2, 2]);
        assert_eq!(w.data, (0..12).map(|i| 0.5 * i as f32).collect::<Vec<_>>());
        assert_eq!(sd.get("bn.weight").unwrap().data, [0.0, 0.5, 1.0]);
        assert_eq!(sd.integer_tensors, ["bn.num_batches_tracked"]);
    }

    #[test]
    fn refuses_every_truncation_and_unknown_classes() {
        let tiny = tiny();
        for n in 0..tiny.len() {
            assert!(read_state_dict(&tiny[..n]).is_err(), "{n}");
        }
        // A pickle that asks for any other class (e.g. os.system) is refused by name.
        let evil = b"\x80\x02cos\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.";
        let mut m = Machine::new(evil, 0);
        let e = m.run().unwrap_err().to_string();
        assert!(e.contains("refusing to build os.system"), "{e}");
    }

    #[test]
    fn quadratic_memo_games_run_out_of_budget() {
        // A dict stored in the memo, then fetched, extended and stored again, many times over:
        // each change copies the shared dict, which the work budget stops.
        let mut p = vec![0x80, 2, b'}', b'q', 0];
        for _ in 0..20_000 {
            p.extend_from_slice(&[b'h', 0, b'K', 1, b'K', 2, b's', b'q', 0, b'0']);
        }
        p.push(b'N');
        p.push(b'.');
        let mut m = Machine::new(&p, 0);
        let r = m.run();
        assert!(
            r.as_ref()
                .is_err_and(|e| e.to_string().contains("more work")),
            "{r:?}"
        );
    }
}
