//! Counts the lines of a built-in sample with memchr.

fn main() {
    let sample = b"one\ntwo\nthree\n";
    println!("worker counted {} lines", memchr::memchr_iter(b'\n', sample).count());
}
