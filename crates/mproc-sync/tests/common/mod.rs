//! Helpers shared by the primitives' multi-process tests.

/// A pipe the child uses to say "I am there" (e.g. holding the lock).
pub struct Signal1 {
    r: std::os::fd::OwnedFd,
    w: std::os::fd::OwnedFd,
}
impl Signal1 {
    pub fn new() -> Self {
        let (r, w) = rustix::pipe::pipe().unwrap();
        Signal1 { r, w }
    }
    pub fn notify(&self) {
        rustix::io::write(&self.w, b"x").unwrap();
    }
    pub fn wait(&self) {
        let mut b = [0u8];
        assert_eq!(rustix::io::read(&self.r, &mut b).unwrap(), 1);
    }
}
