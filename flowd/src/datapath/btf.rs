//! Just enough of the kernel's BTF (/sys/kernel/btf/vmlinux) to find the
//! byte offset of a struct member, anonymous unions and structs included.
//!
//! The drop program reads sk_buff / net_device members with
//! bpf_probe_read_kernel; Rust eBPF has no CO-RE relocations, so user space
//! looks the offsets up here and hands them over in a map. Hand-written
//! because aya's BTF types keep their members private and the BTF crates on
//! crates.io are LGPL (this project is Apache-2.0). The format is the
//! kernel's stable UAPI (include/uapi/linux/btf.h).
use std::path::Path;

use super::Error;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name_off: u32,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    name_off: u32,
    kind: u32,
    /// Referenced type for modifiers and typedefs.
    type_id: u32,
    members: Vec<Member>,
}

/// Parsed type section and string table.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
}

fn bad(what: impl Into<String>) -> Error {
    Error::InvalidConfig(format!("kernel BTF: {}", what.into()))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, Error> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| bad(format!("truncated at byte {off}")))
}

impl Btf {
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let data = std::fs::read(path).map_err(|source| Error::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses little-endian BTF (the only byte order flowd runs on).
    pub fn parse(data: &[u8]) -> Result<Self, Error> {
        let magic = data
            .get(0..2)
            .map(|m| u16::from_le_bytes([m[0], m[1]]))
            .ok_or_else(|| bad("empty"))?;
        if magic != MAGIC {
            return Err(bad(format!("bad magic {magic:#x}")));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let tsec = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or_else(|| bad("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or_else(|| bad("string section out of bounds"))?
            .to_vec();
        // Type id 0 is void.
        let mut types = vec![Type {
            name_off: 0,
            kind: 0,
            type_id: 0,
            members: Vec::new(),
        }];
        let mut p = 0usize;
        while p < tsec.len() {
            let name_off = u32_at(tsec, p)?;
            let info = u32_at(tsec, p + 4)?;
            let size_or_type = u32_at(tsec, p + 8)?;
            p += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 != 0;
            let mut members = Vec::new();
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = p + i * 12;
                        let off = u32_at(tsec, m + 8)?;
                        members.push(Member {
                            name_off: u32_at(tsec, m)?,
                            type_id: u32_at(tsec, m + 4)?,
                            // With kind_flag the top 8 bits are a bitfield size.
                            bit_offset: if kind_flag { off & 0x00ff_ffff } else { off },
                        });
                    }
                    vlen * 12
                }
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                0 | 20.. => return Err(bad(format!("unknown type kind {kind}"))),
                _ => 0,
            };
            p += extra;
            types.push(Type {
                name_off,
                kind,
                type_id: size_or_type,
                members,
            });
        }
        Ok(Self { types, strings })
    }

    fn name(&self, off: u32) -> &[u8] {
        let s = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = s.iter().position(|b| *b == 0).unwrap_or(s.len());
        &s[..end]
    }

    /// Follows typedefs and modifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..32 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.type_id
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// Byte offset of `member` in `struct name`, looking through anonymous
    /// struct/union members. Bitfields are refused.
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, Error> {
        let s = self
            .types
            .iter()
            .find(|t| {
                t.kind == KIND_STRUCT
                    && !t.members.is_empty()
                    && self.name(t.name_off) == name.as_bytes()
            })
            .ok_or_else(|| bad(format!("no struct {name}")))?;
        let bits = self
            .find(s, member.as_bytes(), 0)
            .ok_or_else(|| bad(format!("struct {name} has no member {member}")))?;
        if bits % 8 != 0 {
            return Err(bad(format!("{name}.{member} is a bitfield")));
        }
        Ok(bits / 8)
    }

    fn find(&self, t: &Type, member: &[u8], depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        for m in &t.members {
            let n = self.name(m.name_off);
            if n == member {
                return Some(m.bit_offset);
            }
            if n.is_empty()
                && let Some(inner) = self.resolve(m.type_id)
                && (inner.kind == KIND_STRUCT || inner.kind == KIND_UNION)
                && let Some(o) = self.find(inner, member, depth + 1)
            {
                return Some(m.bit_offset + o);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BTF blob: struct s { int a; union { int b; struct { int c; int d; }; }; }.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0s\0a\0b\0c\0d\0".to_vec();
        let (int, s, a, b, c, d) = (1u32, 5, 7, 9, 11, 13);
        let mut t = Vec::new();
        let mut push = |v: &[u32]| v.iter().for_each(|x| t.extend_from_slice(&x.to_le_bytes()));
        // 1: int (size 4, 32 bits)
        push(&[int, KIND_INT << 24, 4, 32]);
        // 2: anonymous struct { c @0, d @32 }
        push(&[0, KIND_STRUCT << 24 | 2, 8, c, 1, 0, d, 1, 32]);
        // 3: anonymous union { b @0, <2> @0 }
        push(&[0, KIND_UNION << 24 | 2, 8, b, 1, 0, 0, 2, 0]);
        // 4: struct s { a @0, <3> @64 }
        push(&[s, KIND_STRUCT << 24 | 2, 16, a, 1, 0, 0, 3, 64]);
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for v in [
            24u32,
            0,
            t.len() as u32,
            t.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&t);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn members_inside_anonymous_unions_and_structs() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.member_offset("s", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("s", "b").unwrap(), 8);
        assert_eq!(btf.member_offset("s", "c").unwrap(), 8);
        assert_eq!(btf.member_offset("s", "d").unwrap(), 12);
        assert!(btf.member_offset("s", "e").is_err());
        assert!(btf.member_offset("t", "a").is_err());
    }

    #[test]
    fn truncated_blobs_are_errors() {
        let b = blob();
        for n in 0..b.len() {
            let _ = Btf::parse(&b[..n]);
        }
        assert!(Btf::parse(&b[..30]).is_err());
    }

    #[test]
    fn running_kernel_has_sk_buff_members() {
        // Only where the kernel exposes BTF (flowd needs it to load anyway).
        let Ok(btf) = Btf::from_file(VMLINUX) else {
            return;
        };
        for m in ["head", "network_header", "transport_header", "dev"] {
            assert!(btf.member_offset("sk_buff", m).is_ok(), "sk_buff.{m}");
        }
        assert!(btf.member_offset("net_device", "ifindex").is_ok());
        assert!(btf.member_offset("net_device", "name").is_ok());
    }
}
