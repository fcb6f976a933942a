fn main() {
    let obj: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/flowd"));
    println!("ebpf object: {} bytes", obj.len());
}
